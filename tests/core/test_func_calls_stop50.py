"""torch's ``_reparametrize_module`` used directly (not through ``functional_call``) on a
tied model, checked against the same model tied by hand (``b.weight = a.weight``).

Its default is ``tie_weights=False``: plain PyTorch then replaces the source alone and the
hand-tied partner keeps the model's own tensor. A tied slot cannot keep a value of its own,
and it used to read the given value silently (no ``_functional_call`` frame on the stack:
the context manager's generator is suspended while its body runs).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

import tying
import tying.core.func_calls as func_calls

RELATIONS = {"same": tying.Same(), "transposed": tying.Transposed()}


def _model(relation):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    tying.Plan([tying.share("2.weight", like="0.weight", relation=relation)]).apply(m)
    return m


def _by_hand(p, x, relation, w2=None):
    """The anchor: the tied model's forward written out, ``w2`` the partner's weight."""
    if w2 is None:
        w2 = p["0.weight"] if type(relation) is tying.Same else p["0.weight"].T
    h = F.linear(F.linear(x, p["0.weight"], p["0.bias"]), p["1.weight"], p["1.bias"])
    return F.linear(h, w2, p["2.bias"])


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_reparametrize_module_with_tie_weights_false_is_refused(name):
    relation = RELATIONS[name]
    m, x = _model(relation), torch.randn(3, 4)
    own = {k: v.detach().clone() for k, v in m.named_parameters()}
    w = torch.randn(4, 4)
    # plain torch on a hand-tied model: the partner keeps the model's own tensor
    hand = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    hand.load_state_dict({**own, "2.weight": own["0.weight"]})
    hand[2].weight = hand[0].weight
    with _reparametrize_module(hand, {"0.weight": w}):  # tie_weights=False: its default
        untied = hand(x)
    assert torch.allclose(untied, _by_hand({**own, "0.weight": w}, x, relation, own["0.weight"]))
    assert not torch.allclose(untied, _by_hand({**own, "0.weight": w}, x, relation))
    with pytest.raises(
        tying.TieError,
        match=r"_reparametrize_module\(\.\.\., tie_weights=False\) replaced 0\.weight",
    ):
        with _reparametrize_module(m, {"0.weight": w}):
            m(x)
    assert m[0].weight is not w and torch.equal(m[0].weight, own["0.weight"])
    assert tying.verify(m) == 1
    assert torch.allclose(m(x), _by_hand(own, x, relation))  # the model reads on unchanged


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_reparametrize_module_keeps_the_tie_when_asked_or_given_its_own(name):
    relation = RELATIONS[name]
    m, x = _model(relation), torch.randn(3, 4)
    own = {k: v.detach().clone() for k, v in m.named_parameters()}
    w = torch.randn(4, 4)
    with _reparametrize_module(m, {"0.weight": w}, tie_weights=True):
        got = m(x)
    assert torch.allclose(got, _by_hand({**own, "0.weight": w}, x, relation))
    with _reparametrize_module(m, dict(m.named_parameters())):  # its own tensors: no change
        got = m(x)
    assert torch.allclose(got, _by_hand(own, x, relation))


def test_a_source_replaced_outside_any_call_asks_the_garbage_collector_nothing(monkeypatch):
    """The search for a suspended ``_reparametrize_module`` (a walk of every object) runs
    only when the source last read is still held elsewhere; ``model.a.weight = ...`` and an
    assign load read on at the cost of a frame walk."""
    calls = []
    real = func_calls._suspended_reparametrize
    monkeypatch.setattr(
        func_calls, "_suspended_reparametrize", lambda s: calls.append(s) or real(s)
    )
    m, x = _model(tying.Transposed()), torch.randn(2, 4)
    m(x)
    m[0].weight = nn.Parameter(torch.randn(4, 4))
    m(x)
    m.load_state_dict({k: v.detach().clone() for k, v in m.state_dict().items()}, assign=True)
    m(x)
    assert calls == []
    assert torch.equal(m[2].weight, m[0].weight.T)
