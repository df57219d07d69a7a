"""A custom autograd.Function whose backward mixes examples is refused by ghost clipping (stop 51).

Ghost clipping reads every example's gradient off one backward over the batch. A custom
``autograd.Function`` whose forward is row by row but whose backward reads the whole
batch (``g / g.norm()``) gave norms 0.19 off a per-example loop at B = 3, no error.
Anchor: a loop over the examples, one backward each (``tests.train.models.loop_grads``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.train.models import loop_grads
from tying.train import DPSGD, GhostClipping, ghost_norms, per_example_grads, private_grad

MIXES = (
    r"ghost clipping: the backward of a custom autograd.Function \(BatchNormedBackward\) "
    r"mixes the examples of a batch: example 0's gradient at a \(Linear\)"
)


class BatchNormed(torch.autograd.Function):
    """Identity forward; the backward divides by the gradient's norm over the whole batch."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g / (g.norm() + 1e-3)


class RowNormed(BatchNormed):
    """The same per example (each row by its own norm): no mixing."""

    @staticmethod
    def backward(ctx, g):
        return g / (g.norm(dim=-1, keepdim=True) + 1e-3)


class Reversed(BatchNormed):
    """A gradient-reversal layer (elementwise): no mixing."""

    @staticmethod
    def backward(ctx, g):
        return -0.5 * g


class Net(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fn = nn.Linear(4, 5), nn.Linear(5, 3), fn

    def forward(self, x):
        return self.b(self.fn.apply(torch.tanh(self.a(x))))


def sq_err(out, y):
    return (out - y).pow(2).sum(1)


def _case(fn, B=5):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    return Net(fn).double(), x, torch.randn(B, 3, generator=g, dtype=torch.float64)


def _loop_norms(model, x, y):
    want = loop_grads(model, sq_err, x, y)
    return torch.cat([w.flatten(1) for w in want.values()], 1).norm(dim=1)


def test_a_backward_that_mixes_examples_is_refused_by_ghost_clipping():
    model, x, y = _case(BatchNormed)
    # the anchor: with the batch's backward the norms are not the loop's
    off = (_loop_norms(model, x, y) - _batch_backward_norms(model, x, y)).detach()
    assert float(off.abs().max()) > 1e-2
    # old code: norms 0.19-0.6 off the loop, no error
    with pytest.raises(ValueError, match=MIXES + r".*or use mode='vmap'"):
        ghost_norms(model, sq_err, x, y)
    with pytest.raises(ValueError, match=MIXES):
        GhostClipping(model).clip(sq_err, x, y, 1.0)


def _batch_backward_norms(model, x, y):
    """Each example's gradient norm read off one backward over the batch (what ghost
    clipping's formulas take), by hand: the reference for what the old code returned."""
    hs = torch.tanh(model.a(x))  # (B, 5)
    h = BatchNormed.apply(hs)
    z = model.b(h)  # (B, 3)
    gz, ghs = torch.autograd.grad(sq_err(z, y).sum(), [z, hs])
    pre = ghs * (1 - hs.pow(2))  # through the tanh
    parts = [gz[:, :, None] * h.detach()[:, None, :], gz, pre[:, :, None] * x[:, None, :], pre]
    return torch.cat([p.flatten(1) for p in parts], 1).norm(dim=1)


def test_dpsgd_refuses_it_and_changes_nothing():
    model, x, y = _case(BatchNormed)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPSGD(model, opt, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, mode="ghost")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=MIXES):
        dp.step(sq_err, x, y)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 0 and all(p.grad is None for p in model.parameters())


def test_vmap_gives_the_loops_gradients_for_the_same_function():
    model, x, y = _case(BatchNormed)
    want = loop_grads(model, sq_err, x, y)
    got = per_example_grads(model, sq_err, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


@pytest.mark.parametrize("fn", [RowNormed, Reversed])
def test_a_backward_that_keeps_examples_apart_is_taken(fn):
    model, x, y = _case(fn)
    torch.testing.assert_close(ghost_norms(model, sq_err, x, y), _loop_norms(model, x, y))
    pg = private_grad(model, sq_err, x, y, max_grad_norm=0.5, noise_multiplier=0.0, mode="ghost")
    ref = private_grad(model, sq_err, x, y, max_grad_norm=0.5, noise_multiplier=0.0, mode="vmap")
    for n in ref.grads:
        torch.testing.assert_close(pg.grads[n], ref.grads[n])


def test_a_custom_function_in_the_loss_is_probed_too():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.randn(4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))

    def loss(out, t):  # the custom backward sits between the logits and the loss
        return F.cross_entropy(BatchNormed.apply(out), t, reduction="none")

    with pytest.raises(ValueError, match=r"\(BatchNormedBackward\) mixes the examples"):
        ghost_norms(model, loss, x, y)


def test_the_probe_runs_at_every_call_once_a_custom_function_was_found():
    model, x, y = _case(BatchNormed)
    ghost = GhostClipping(model)
    for _ in range(2):  # a graph with a custom Function is walked (and probed) every time
        with pytest.raises(ValueError, match=MIXES):
            ghost.norms(sq_err, x, y)
    plain = Net(Reversed).double()  # a Function that keeps examples apart: taken each time
    for _ in range(2):
        torch.testing.assert_close(
            GhostClipping(plain).norms(sq_err, x, y), _loop_norms(plain, x, y)
        )
