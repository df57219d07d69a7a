"""A computed tie (Scaled, Flipped, Mirrored, Hashed, Rotated) read once outside the DP step,
then per-example gradients of a batch of one (stop 60).

``tying.core`` checks, at each read of a computed slot, that the value it handed out last
was not written to: it reads that value under ``torch.no_grad()`` (``.detach()``, its
storage). After any plain forward (an evaluation, a logged public loss), that value was
still alive and needed a gradient, and the per-example transform's guard against hidden
parameter reads took the check for a read of "a tensor derived from trainable
parameter(s) before the step": ``per_example_grads`` and ``DPSGD.step`` refused a batch
of one row (which Poisson sampling draws) with advice that did not apply; a batch of more
rows passed. A read that makes no gradient drops no example's share of one, so it is
let through; the gradients equal a per-example loop.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tests.train.models import loop_grads, mse
from tying.train import DPSGD, per_example_grads


def _linears(relation, like=True):
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6)).double()
    rule = (
        tying.share("2.weight", like="0.weight", relation=relation)
        if like
        else tying.share("2.weight", relation=relation)
    )
    tying.Plan([rule]).apply(net)
    return net


def _convs(relation):
    net = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1), nn.Flatten()
    ).double()
    tying.Plan([tying.share("2.weight", like="0.weight", relation=relation)]).apply(net)
    return net


MODELS = {
    "scaled": lambda: _linears(tying.Scaled(init=0.5)),
    "scaled_own": lambda: _linears(tying.Scaled(init=0.5), like=False),
    "flipped": lambda: _linears(tying.Flipped()),
    "mirrored": lambda: _linears(tying.Mirrored(), like=False),
    "hashed": lambda: _linears(tying.Hashed(buckets=7), like=False),
    "rotated_conv": lambda: _convs(tying.Rotated()),
    "transposed": lambda: _linears(tying.Transposed()),
}


def _case(kind: str):
    torch.manual_seed(0)
    model = MODELS[kind]()
    g = torch.Generator().manual_seed(1)
    shape = (3, 2, 4, 4) if kind.endswith("conv") else (3, 6)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    out = model(x)  # a plain forward outside the step (an evaluation): its value stays alive
    return model, x, torch.randn(out.shape, generator=g, dtype=torch.float64), out


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_per_example_grads_after_a_plain_forward_equal_the_loop(kind, B):
    model, x, y, _alive = _case(kind)
    got = per_example_grads(model, mse, x[:B], y[:B])  # B = 1 was refused
    want = loop_grads(model, mse, x[:B], y[:B])
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


def test_dpsgd_steps_on_one_row_after_a_logged_public_loss():
    model, x, y, out = _case("scaled")
    mse(out, y).mean().backward()  # a public loss's backward for logging, then cleared
    model.zero_grad(set_to_none=True)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1e6, sample_rate=1 / 3)  # fmt: skip
    want = loop_grads(model, mse, x[:1], y[:1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dp.step(mse, x[:1], y[:1], n_data=3)  # was refused: "a tensor derived from ..."
    for name, p in model.named_parameters():  # sigma 0, no clipping: plain SGD on the row
        torch.testing.assert_close(p.detach(), before[name] - 0.1 * want[name][0])
    assert dp.steps == 1


def test_a_tensor_derived_before_the_step_is_still_refused():
    """The guard still refuses what it is for: a product of a weight made before the step
    and read by the forward (its share of each example's gradient would be missing)."""

    class Held(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4).double()
            self.kept = self.lin.weight * 2.0  # derived once, outside forward

        def forward(self, x):
            return self.lin(x) @ self.kept

    model = Held()
    x = torch.randn(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"a tensor derived from trainable parameter\(s\) "
                       r"lin.weight before the step"):  # fmt: skip
        per_example_grads(model, mse, x, torch.zeros(1, 4, dtype=torch.float64))


class _GradlessRead(nn.Module):
    """A forward that reads a weight without a gradient: a logged statistic under
    torch.no_grad(), or a detached copy."""

    def __init__(self, how: str):
        super().__init__()
        self.a, self.b, self.how = nn.Linear(4, 4), nn.Linear(4, 3), how

    def forward(self, x):
        if self.how == "no_grad":
            with torch.no_grad():
                self.stat = self.a.weight.norm()
        else:
            self.stat = self.a.weight.detach().abs().max()
        return self.b(torch.tanh(self.a(x)))


@pytest.mark.parametrize("how", ["no_grad", "detach"])
def test_ghost_norms_take_a_read_without_gradient(how):
    """Ghost clipping's guard refused these reads ("a.weight is read by Tensor.norm outside
    the forward of the nn.Linear ... its share ... would be missing"): they add no share."""
    from tying.train import ghost_norms

    torch.manual_seed(0)
    model = _GradlessRead(how).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    want = torch.cat([g.flatten(1) for g in loop_grads(model, mse, x, y).values()], 1)
    torch.testing.assert_close(ghost_norms(model, mse, x, y), want.norm(dim=1))
