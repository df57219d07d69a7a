"""torch.nn.utils.weight_norm on a tied slot is refused by name (stop 56).

weight_norm reads the slot, then deletes it from the module's ``_parameters``, where a
tied slot is not: the call failed with a bare ``KeyError: 'weight'`` that named no tie.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tying


def _weight_norm(module):
    with warnings.catch_warnings():  # torch deprecates it in favour of parametrizations
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.weight_norm(module)


@pytest.mark.parametrize("relation", [None, tying.Transposed()], ids=["Same", "Transposed"])
def test_weight_norm_on_a_tied_slot_names_the_tie_and_changes_nothing(relation):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    kw = {} if relation is None else {"relation": relation}
    tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    x = torch.randn(3, 4)
    before = m(x).detach()
    with pytest.raises(
        tying.TieError, match=r"weight_norm: 2\.weight is a tied slot .*free\('2\.weight'\)"
    ):
        _weight_norm(m[2])
    assert not m[2]._forward_pre_hooks and set(m[2]._parameters) == {"bias"}
    torch.testing.assert_close(m(x), before)
    assert tying.verify(m) == 1
    # the fix the message names works
    tying.Plan([tying.free("2.weight")]).apply(m)
    _weight_norm(m[2])
    torch.testing.assert_close(m(x), before)
