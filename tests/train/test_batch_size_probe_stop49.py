"""mode="vmap" probes a forward's batch-size dependence at every new batch size (stop 49).

The probe of stop 47 ran once per input signature, at the first step's batch size. A
forward that reads the size only past a threshold (``if x.shape[0] > t: h = h / 2``)
passed it at B <= t, and every later step at B > t took each example's gradient of the
forward on that example alone (no halving) while the model trained is the batched one
(halved): a wrong clipped sum, no error. Anchor: plain PyTorch, one backward per example
through the *batched* forward (what Opacus' hooks and ghost clipping differentiate).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tying.train import DPSGD

# stop 56: these steps vary the batch size without n_data on purpose (DPSGD warns once)
pytestmark = pytest.mark.filterwarnings("ignore:DPSGD.step without n_data:UserWarning")

DEPENDS = "the forward depends on the batch it runs in"


class Threshold(nn.Module):
    """Two Linear layers that halve the hidden rows when the batch holds more than ``t``."""

    def __init__(self, t):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.t = nn.Linear(4, 5), nn.Linear(5, 3), t
        self.double()

    def forward(self, x):  # (B, 4) -> (B, 3)
        h = torch.tanh(self.a(x))  # (B, 5)
        if x.shape[0] > self.t:
            h = h / 2
        return self.b(h)


def loss_fn(o, t):
    return F.cross_entropy(o, t, reduction="none")


def _batch(B, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (B,), generator=g
    )


def clipped_sum_through_the_batch(model, x, y, C):
    """Σ_b clip_C(g_b), g_b the gradient of example b's loss through the batched forward."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for b in range(len(y)):
        g = torch.autograd.grad(loss_fn(model(x), y)[b], params)
        norm = float(torch.cat([v.flatten() for v in g]).norm())
        for s, v in zip(total, g):
            s += min(1.0, C / (norm + 1e-6)) * v
    return total


def _dp(model):
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    return DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.5, sample_rate=0.5)


def test_a_dependence_past_the_first_batch_size_is_refused_at_the_size_it_shows():
    model = Threshold(t=6)
    dp = _dp(model)
    dp.step(loss_fn, *_batch(4, 0))  # B = 4 <= 6: the forward is the same alone
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch(8, 1)
    # old code: the signature was probed at B = 4, so B = 8 ran with the un-halved gradient
    with pytest.raises(ValueError, match=f"{DEPENDS}.*on the batch of 8"):
        dp.step(loss_fn, x, y)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 1 and dp.history == [(0.5, 0.0, 1)]


def test_a_forward_without_the_dependence_still_runs_at_every_new_size():
    model = Threshold(t=10**9)  # never halves
    dp = _dp(model)
    for seed, B in enumerate((3, 5, 1, 7)):
        x, y = _batch(B, seed)
        want = [
            p.detach() - s / B
            for p, s in zip(model.parameters(), clipped_sum_through_the_batch(model, x, y, 0.5))
        ]
        dp.step(loss_fn, x, y)
        for p, w in zip(model.parameters(), want):
            torch.testing.assert_close(p.detach(), w, rtol=1e-9, atol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(t=st.integers(1, 6), sizes=st.lists(st.integers(1, 8), min_size=2, max_size=5))
def test_no_step_runs_with_a_gradient_other_than_the_batched_forwards(t, sizes):
    """Whatever the order of batch sizes: a step either equals the batched forward's
    clipped mean (the brute-force anchor) or is refused, and refused only where the
    forward really differs alone (B > t)."""
    model = Threshold(t)
    dp = _dp(model)
    for seed, B in enumerate(sizes):
        x, y = _batch(B, seed)
        want = [
            p.detach() - s / B
            for p, s in zip(model.parameters(), clipped_sum_through_the_batch(model, x, y, 0.5))
        ]
        before = [p.detach().clone() for p in model.parameters()]
        try:
            dp.step(loss_fn, x, y)
        except ValueError as err:
            assert DEPENDS in str(err) and B > t
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
            continue
        for p, w in zip(model.parameters(), want):
            torch.testing.assert_close(p.detach(), w, rtol=1e-9, atol=1e-12)


class MixesPast(Threshold):
    """Centres the hidden rows over the batch (mixes examples) when it holds more than ``t``."""

    def forward(self, x):  # (B, 4) -> (B, 3)
        h = torch.tanh(self.a(x))  # (B, 5)
        if x.shape[0] > self.t:
            h = h - h.mean(0)
        return self.b(h)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_mixing_past_the_first_batch_size_is_refused_in_both_modes(mode):
    model = MixesPast(t=6)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.5, sample_rate=0.5, mode=mode)
    dp.step(loss_fn, *_batch(4, 0))
    before = [p.detach().clone() for p in model.parameters()]
    # old code (ghost): the signature was probed at B = 4 only, so B = 8 ran with norms
    # and a clipped sum that were no example's own
    match = DEPENDS if mode == "vmap" else "ghost clipping: the forward mixes examples"
    with pytest.raises(ValueError, match=match):
        dp.step(loss_fn, *_batch(8, 1))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 1


def test_grad_sample_module_refuses_mixing_past_the_first_batch_size():
    from tying.train import grad_sample_module

    model = MixesPast(t=6)
    gsm = grad_sample_module(model, loss_reduction="sum")
    gsm(_batch(4, 0)[0])  # B = 4: the rows are each example's own
    # old code: probed at B = 4 only, so at B = 8 Opacus' hooks read row b as example b's
    with pytest.raises(ValueError, match="grad_sample_module: the forward mixes examples"):
        gsm(_batch(8, 1)[0])
