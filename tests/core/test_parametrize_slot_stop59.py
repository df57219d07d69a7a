"""``torch.nn.utils.parametrize`` on a tied slot is refused by name, with an untie that works (stop 59).

``register_parametrization(model[2], "weight", P)`` (and ``parametrizations.orthogonal``,
``spectral_norm``, ``weight_norm``, built on it) looked the slot up in the module's
``_parameters``, missed it (a property serves it) and raised torch's ``ValueError: Module
'TiedLinear(...)' does not have a parameter, a buffer, or a parametrized element with name
'weight'``: it named no fix. Now a ``TieError`` names the slot, its source and the untie,
which, followed, lets the parametrization through; other tensors of a tied module are
parametrized as usual.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import tying


class _Sym(nn.Module):
    def forward(self, X):  # (n, n) -> (n, n) symmetric
        return X.triu() + X.triu(1).T


def _tied(relation=None):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    kw = {} if relation is None else {"relation": relation}
    tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    return m


TOOLS = {
    "register_parametrization": lambda mod: parametrize.register_parametrization(
        mod, "weight", _Sym()
    ),
    "orthogonal": parametrizations.orthogonal,
}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("relation", [None, tying.Transposed()], ids=["Same", "Transposed"])
def test_parametrizing_a_tied_slot_names_the_untie_that_works(tool, relation):
    m = _tied(relation)
    x = torch.randn(3, 4)
    before = m(x)
    with pytest.raises(
        tying.TieError,
        match=r"^torch\.nn\.utils\.parametrize: 2\.weight is a tied slot of TiedLinear "
        r"\(reads 0\.weight via .*Nothing was changed\. Untie it first",
    ) as err:
        TOOLS[tool](m[2])
    assert torch.equal(m(x), before) and tying.verify(m) == 1
    assert not parametrize.is_parametrized(m[2])
    path = re.search(r"tying\.free\('([^']+)'\)", str(err.value)).group(1)
    tying.Plan([tying.free(path)]).apply(m)  # the advice, followed
    TOOLS[tool](m[2])
    assert parametrize.is_parametrized(m[2], "weight")


def test_other_tensors_of_a_tied_module_are_parametrized_as_usual():
    m = _tied()
    parametrize.register_parametrization(m[2], "bias", nn.Identity())
    assert parametrize.is_parametrized(m[2], "bias") and tying.verify(m) == 1
    assert m[2].weight is m[0].weight
