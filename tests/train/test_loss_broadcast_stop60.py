"""Stop 60: one example's loss broadcast against a captured tensor of the batch, then reduced.

``(w * F.cross_entropy(out, y, reduction="none")).sum()`` with per-example weights ``w``
captured from outside the call: each example's loss is computed alone under
``mode="vmap"``, so it read all of ``w`` and returned one number, ``w.sum()`` times the
example's loss: per-example gradients 4.2x-5.4x off a per-example loop (B = 6), no error.
The unreduced ``ce * w`` was refused since stop 36 by its ``(B,)`` shape; the reduced one
is now refused at the broadcast, and the advice (the weights in ``y``) equals the loop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import DPSGD, per_example_grads

B = 6
_G = torch.Generator().manual_seed(5)
X = torch.randn(B, 4, generator=_G, dtype=torch.float64)
Y = torch.randint(0, 3, (B,), generator=_G)
W = torch.rand(B, generator=_G, dtype=torch.float64) + 0.5


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _ce(o, t):
    return F.cross_entropy(o, t, reduction="none")


REDUCED = {
    "sum": lambda o, t: (W * _ce(o, t)).sum(),
    "mean": lambda o, t: (_ce(o, t) * W).mean(),
    "target table": lambda o, t: (o - F.one_hot(Y, 3).double()).square().sum(),
    # a contraction returns no B rows: 6.48x the loop at B = 6 (final read of stop 60)
    "einsum": lambda o, t: torch.einsum("b,b->", W, _ce(o, t)),
    "tensordot": lambda o, t: torch.tensordot(W, _ce(o, t), dims=1),
}


@pytest.mark.parametrize("kind", list(REDUCED))
def test_a_reduced_loss_over_a_captured_batch_tensor_is_refused(kind):
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"loss_fn broadcasts one example's \(1,.*6 rows.*in y"):
        per_example_grads(net, REDUCED[kind], X, Y)  # was: w.sum() times each gradient
    dp = DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    with pytest.raises(ValueError, match=r"loss_fn broadcasts one example's"):
        dp.step(REDUCED[kind], X, Y, n_data=60)
    assert dp.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_the_advice_weights_in_y_equals_the_loop():
    net = _net()
    inside = lambda o, t: _ce(o, t[:, 0].long()) * t[:, 1]  # noqa: E731
    yw = torch.stack([Y.double(), W], 1)
    got = per_example_grads(net, inside, X, yw)
    for b in range(B):
        loss = W[b] * F.cross_entropy(net(X[b : b + 1]), Y[b : b + 1])
        want = torch.autograd.grad(loss, list(net.parameters()))
        for (name, _), g in zip(net.named_parameters(), want):
            torch.testing.assert_close(got[name][b], g, rtol=1e-10, atol=1e-12)


def test_a_table_with_b_rows_read_per_example_is_not_refused():
    """A prototype table that happens to have B rows, read as the message says
    (out[:, None] - table), equals the loop; one example's own (1, ...) arithmetic too."""
    net, protos = _net(), torch.randn(B, 3, dtype=torch.float64)
    loss = lambda o, t: (o[:, None] - protos).square().sum(-1).amin(-1)  # noqa: E731
    with pytest.raises(ValueError, match=r"out\[:, None\] - table"):
        per_example_grads(net, lambda o, t: (o - protos).square().sum(), X, Y)
    got = per_example_grads(net, loss, X, Y)
    for b in range(B):
        want = torch.autograd.grad(
            loss(net(X[b : b + 1]), Y[b : b + 1]).sum(), list(net.parameters())
        )
        for (name, _), g in zip(net.named_parameters(), want):
            torch.testing.assert_close(got[name][b], g, rtol=1e-10, atol=1e-12)
    got = per_example_grads(net, lambda o, t: (_ce(o, t) * 2.0).sum(), X[:1], Y[:1])  # B = 1
    assert got["0.weight"].shape == (1, 5, 4)


def test_an_einsum_over_the_example_s_own_rows_is_not_refused():
    # the example's rows with the example's rows: nothing of the batch is read
    net = _net()
    got = per_example_grads(net, lambda o, t: torch.einsum("bc,bc->b", o, o), X, Y)
    net.zero_grad()
    net(X[2:3]).square().sum().backward()
    torch.testing.assert_close(got["0.weight"][2], net[0].weight.grad)
