"""The remover named when a tie's source was re-parametrised works from a wrapping model.

A tie records its paths relative to the module the plan was applied to. When that module
is then put in another (an ``nn.Sequential``, a DDP-like ``.module``), the user holds the
outer one; the slot-read refusal named ``model.get_submodule('a')``, an AttributeError
there (stop 61 review). ``count`` already named ``'1.a'``.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import tying


def _old_spectral_norm(mod):
    torch.nn.utils.spectral_norm(mod)


def _old_weight_norm(mod):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.weight_norm(mod)


@pytest.mark.parametrize("how", [_old_spectral_norm, _old_weight_norm, parametrizations.orthogonal])
def test_read_refusal_names_the_module_from_the_wrapping_model(how):
    torch.manual_seed(0)
    ae = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(ae)
    model = nn.Sequential(nn.Identity(), ae)  # the tied block placed in a bigger model
    how(model[1].a)
    with pytest.raises(
        tying.TieError, match=r"get_submodule\('1\.a'\).*model being the Sequential"
    ):
        model[1].b.weight  # noqa: B018
    with pytest.raises(tying.TieError) as err:
        model[1].b.weight  # noqa: B018
    call = re.search(r"remove it \((torch\.nn\.utils\..*?)\): the tie", str(err.value)).group(1)
    eval(call, {"torch": torch, "model": model})  # the advice, as written
    assert model[1].b.weight is model[1].a.weight
    assert tying.verify(model) == 1
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 4)
    (model[1].a(x).sum() + model[1].b(x).sum()).backward()
    opt.step()
    assert model[1].b.weight is model[1].a.weight


def _pair(how):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    how(m.a)
    how(m.b)
    tying.Plan([tying.share("b", like="a")]).apply(m)
    m.eval()
    return m


@pytest.mark.parametrize("how", [parametrizations.weight_norm, parametrizations.orthogonal])
def test_remove_parametrizations_under_cached_is_refused_before_any_change(how):
    # several originals (weight_norm's original0/original1) are first read through the
    # parametrized property, here through cached()'s extra frame as well
    from torch.nn.utils import parametrize

    m = _pair(how)
    x = torch.randn(3, 4)
    out_a = m.a(x)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with parametrize.cached():
        with pytest.raises(tying.TieError, match=r"remove_parametrizations: b\.parametrizations"):
            parametrize.remove_parametrizations(m.b, "weight")
        torch.testing.assert_close(m.b(x), m.b(x))  # forwards under cached() still run
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(m.a(x), out_a)
    assert tying.verify(m) >= 2
