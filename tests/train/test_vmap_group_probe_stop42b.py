"""``mode="vmap"`` refuses forwards that mix only some examples, as ghost clipping does.

vmap hands the forward each example as a batch of one, so its per-example gradients are
those of a model that reads no other example, while the model trained on batches does.
The vmap way's probe moved example 0 and then the last one only: a forward in which
examples 1 and 2 read each other, or every row reads ``h[B // 2]``, was accepted and
each example got the gradient of another model than the one trained, with no error. It
now also moves the examples by each bit of their index, as ghost clipping's probe does.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying.train.per_example as pex
from tests.train.models import Reads, loop_grads, sq_err
from tying.train import DPSGD, per_example_grads, private_grad


def _pair(k, i):
    """Row ``k`` adds ``c`` times row ``i`` (an index read, so the rows way stops and the
    vmap way runs, whatever ``c``; ``i`` wraps so that one example alone runs too)."""

    def mix(h, c):
        rows = torch.arange(h.shape[0], device=h.device)
        return h + c * (rows == k).to(h.dtype)[:, None] * h[i % h.shape[0]]

    return mix


# mixes that move neither when example 0 nor when the last example is moved
SOME = {
    "examples 1 and 2 only": lambda h, c: torch.cat([h[:1], h[1:3] + c * h[1:3].flip(0), h[3:]]),
    "every example reads the middle one": lambda h, c: h + c * h[h.shape[0] // 2],
    "example 1 reads example 2": _pair(1, 2),
}


def _batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    return x, torch.randn(B, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("B", [5, 8])
@pytest.mark.parametrize("name", sorted(SOME))
def test_vmap_refuses_a_forward_that_mixes_some_examples(name, B):
    torch.manual_seed(0)
    model = Reads(SOME[name]).double()
    x, y = _batch(B)
    match = r"per-example gradients: the forward mixes examples: giving examples .*\(mode='vmap'"
    with pytest.raises(ValueError, match=match):
        per_example_grads(model, sq_err, x, y)
    with pytest.raises(ValueError, match=match):
        private_grad(model, sq_err, x, y, max_grad_norm=1.0, noise_multiplier=0.0, mode="vmap")


def test_a_refused_vmap_step_changes_nothing():
    torch.manual_seed(0)
    model = Reads(SOME["every example reads the middle one"]).double()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1, mode="vmap")  # fmt: skip
    with pytest.raises(ValueError, match=r"giving examples 0, 2, 4, 6 the inputs of other"):
        dp.step(sq_err, *_batch(8))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n
    assert dp._vmap_plan()._vetted == set()  # refused, not recorded as vetted


def test_the_vmap_group_probe_runs_once_per_signature():
    """The probe's 2 * ceil(log2 B) extra forwards are paid at the first step only."""

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(4, 3), 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x).tanh() * 1.5

    torch.manual_seed(0)
    model = Counting().double()
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1, mode="vmap")  # fmt: skip
    dp._vmap_plan()._rows_stopped = True  # the vmapped way
    x, y = _batch(8)
    dp.step(sq_err, x, y)
    first = model.calls
    # the step, the two single moves, 2 * log2(8) group moves, and (stop 47) the batch and
    # the examples alone of the batch-size probe
    assert first == 1 + 3 + 2 * 3 + 2
    dp.step(sq_err, x, y)
    assert model.calls - first == 1


@settings(derandomize=True, deadline=None, max_examples=25)
@given(B=st.integers(3, 9), k=st.integers(0, 8), i=st.integers(0, 8))
def test_property_vmap_refuses_any_pair_that_mixes_and_else_equals_the_loop(B, k, i):
    """Example k reading example i, for any pair k != i: refused by the vmap way; the same
    forward with c = 0 (the same index reads, no mixing) is accepted and its per-example
    gradients equal a plain PyTorch loop's, one backward per example."""
    k, i = k % B, i % B
    x, y = _batch(B, seed=k + 10 * i)
    torch.manual_seed(B)
    clean = Reads(_pair(k, i), 0.0).double()
    got = per_example_grads(clean, sq_err, x, y)
    want = loop_grads(clean, sq_err, x, y)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
    if k == i:  # row k scaled: reads no other example (its position only)
        return
    mixing = Reads(_pair(k, i), 0.5).double()
    with pytest.raises(ValueError, match="per-example gradients: the forward mixes examples"):
        per_example_grads(mixing, sq_err, x, y)


def test_the_vmap_way_is_the_way_taken_here():
    """The forwards above stop the rows way (an index read), so the vmap way's probe is the
    one that answers: guard against this file testing another way."""
    model = Reads(_pair(1, 2), 0.0).double()
    pe = pex._PerExample(model)
    x, y = _batch(5)
    pe(sq_err, (x,), y)
    assert pe._rows_stopped and len(pe._vetted) == 1
