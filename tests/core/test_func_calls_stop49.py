"""Stop 49: ``functional_call(..., tie_weights=False)`` on a copied, unpickled or pruned model.

A tied slot cannot keep a value of its own, so a ``tie_weights=False`` call that gives its
source another tensor is refused (stop 47). To tell "another tensor" from the model's own,
the slot remembers the source tensor it last read. Two states lacked that memory:

- a fresh ``copy.deepcopy`` or ``pickle`` round trip (the record is per process): its first
  ``functional_call(copy, {"a.weight": nn.Parameter(w)}, x, tie_weights=False)`` took the
  foreign Parameter for the model's own and every tied use read ``w``, where plain torch
  keeps the partner at the model's value. Found by the state machine of
  ``test_stateful_stop49.py``: ``build('Flipped')``, ``deepcopy_is_independent(call_first=True)``.
- a pruned source (``weight_orig`` and a mask): the record was skipped, so a swapped
  ``a.weight_orig`` reached the slot silently.

Now a copy starts with its own source tensor (taken through deepcopy's memo, or from the
unpickled source module), and a pruned source is watched as ``weight_orig``.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune

import tying
from tests.core.test_stateful_stop49 import CASES, by_hand, plain_forward, tied

X = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(2, 6)


def _src(name: str) -> str:
    return "a." + CASES[name][1]


def test_the_machines_sequence_a_fresh_deepcopy_refuses_a_foreign_parameter():
    net = tied("Flipped")
    net(X)  # the invariant read before the copy
    copied = copy.deepcopy(net)  # no read of the copy before the call
    before = [(n, p, p.detach().clone()) for n, p in copied.named_parameters()]
    foreign = nn.Parameter(torch.zeros_like(copied.a.weight))
    with pytest.raises(tying.TieError, match=r"tie_weights=False\) replaced a\.weight"):
        functional_call(copied, {"a.weight": foreign}, (X,), tie_weights=False)
    assert [(n, p) for n, p, _ in before] == list(copied.named_parameters())
    assert all(torch.equal(p, v) for _, p, v in before)
    with torch.no_grad():
        assert torch.equal(copied(X), net(X))  # the copy computes as the original
    own = functional_call(copied, dict(copied.named_parameters()), (X,), tie_weights=False)
    with torch.no_grad():
        assert torch.equal(own, copied(X))


@pytest.mark.parametrize("order", ["source first", "target first"])
def test_an_unpickled_model_refuses_a_foreign_parameter_for_its_source(order):
    m = _Two(order)
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    c = pickle.loads(pickle.dumps(m))
    x = torch.ones(1, 3)
    with pytest.raises(tying.TieError, match="tie_weights=False"):
        functional_call(c, {"a.weight": nn.Parameter(torch.zeros(3, 3))}, (x,), tie_weights=False)
    assert c.b.weight is c.a.weight and tying.verify(c) == 1


class _Two(nn.Module):
    def __init__(self, order: str):
        super().__init__()
        if order == "target first":  # pickle meets the slot before its source module
            self.b = nn.Linear(3, 3)
        self.a = nn.Linear(3, 3)
        if order != "target first":
            self.b = nn.Linear(3, 3)

    def forward(self, x):
        return self.b(self.a(x))


def _pruned(name: str):
    net = tied(name)
    prune.l1_unstructured(net.a, CASES[name][1], amount=0.4)
    return net


def test_a_pruned_sources_swapped_orig_is_refused_under_tie_weights_false():
    net = _pruned("Transposed")
    net(X)
    before = [(n, p.detach().clone()) for n, p in net.named_parameters()]
    new = torch.randn(net.a.weight_orig.shape, dtype=torch.float64)
    with pytest.raises(tying.TieError, match=r"replaced a\.weight, the source the tied slot"):
        functional_call(net, {"a.weight_orig": new}, (X,), tie_weights=False)
    assert all(torch.equal(p, v) for (_, p), (_, v) in zip(net.named_parameters(), before))
    # tie_weights=True: the slot reads (new orig) * mask, as computed by hand
    got = functional_call(net, {"a.weight_orig": new}, (X,))
    leaves = {**dict(net.named_parameters()), "a.weight": new * net.a.weight_mask}
    want = plain_forward(net, X, leaves, (new * net.a.weight_mask).T, leaves["a.weight"])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    name=st.sampled_from(sorted(CASES)),
    # (a pruned module after a forward cannot be deep-copied in plain torch either)
    state=st.sampled_from(["read", "deepcopy", "pickle", "pruned", "assign", "new Parameter"]),
    as_parameter=st.booleans(),
)
def test_tie_weights_false_never_serves_a_foreign_source(name, state, as_parameter):
    """Whatever state the model is in (no read since the last change), a tie_weights=False call that gives the source
    another tensor is refused and changes nothing; given the model's own tensors it
    computes what plain torch computes from the same values."""
    net = _pruned(name) if state.startswith("pruned") else tied(name)
    net(X)
    if state == "deepcopy":
        net = copy.deepcopy(net)
    elif state == "pickle":
        net = pickle.loads(pickle.dumps(net))
    elif state == "assign":
        net.load_state_dict({k: v * 2 for k, v in net.state_dict().items()}, assign=True)
    elif state == "new Parameter":
        setattr(net.a, CASES[name][1], nn.Parameter(getattr(net.a, CASES[name][1]) * 3))
    key = _src(name) + ("_orig" if state.startswith("pruned") else "")
    own = net.get_parameter(key)
    new = torch.full_like(own.detach(), 0.25)
    new = nn.Parameter(new) if as_parameter else new
    before = [(n, p, p.detach().clone()) for n, p in net.named_parameters()]
    with pytest.raises(tying.TieError, match="tie_weights=False"):
        functional_call(net, {key: new}, (X,), tie_weights=False)
    assert [(n, p) for n, p, _ in before] == list(net.named_parameters())
    assert all(torch.equal(p, v) for _, p, v in before)
    got = functional_call(net, dict(net.named_parameters()), (X,), tie_weights=False)
    leaves = dict(net.named_parameters())
    source = getattr(net.a, CASES[name][1])  # orig * mask when pruned
    leaves["a.weight"], leaves["a.bias"] = net.a.weight, net.a.bias
    want = plain_forward(net, X, leaves, by_hand(name, net, source), net.a.weight)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["load_state_dict(assign=True)", "a new Parameter"])
def test_the_models_own_tensors_run_after_the_source_was_replaced(how):
    """The source replaced outside any call, with no read since: the record of the model's
    own source was stale, and a call given ``dict(model.named_parameters())`` was refused
    as if it replaced the source ("replaced a.weight")."""
    m = _Two("source first")
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    x = torch.ones(2, 3)
    m(x)
    if how == "a new Parameter":
        m.a.weight = nn.Parameter(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))
    else:
        m.load_state_dict({k: v + 1 for k, v in m.state_dict().items()}, assign=True)
    got = functional_call(m, dict(m.named_parameters()), (x,), tie_weights=False)
    w, a_b, b_b = m.a.weight, m.a.bias, m.b.bias  # plain torch from the same values
    torch.testing.assert_close(got, (x @ w.T + a_b) @ w.T + b_b, rtol=0, atol=0)
    with pytest.raises(tying.TieError, match=r"replaced a\.weight"):  # a foreign one still
        functional_call(m, {"a.weight": nn.Parameter(torch.zeros(3, 3))}, (x,), tie_weights=False)
