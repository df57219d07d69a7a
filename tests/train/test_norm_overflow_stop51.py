"""A finite per-example gradient whose squares overflow is clipped, not refused (stop 51).

``torch.linalg.vector_norm`` sums squares unscaled in the tensor's dtype: entries ~1e20
in float32 (squares 1e40, past 3.4e38) gave a norm of inf, and the DP step refused the
batch as "not finite"; :func:`per_example_norms` returned inf with no error. Ghost
clipping's Gram products overflowed the same way. Anchor: a float64 loop, one backward
per example, its norms taken with each example scaled by its largest entry.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tying.train import (
    DPSGD,
    ghost_norms,
    per_example_grads,
    per_example_norms,
    private_grad,
)

PAST = r"gradient norms of examples \[0, 1, 2\] \(\['6e\+38', '6e\+38', '6e\+38'\]\) are past torch.float32's"
NOT_FINITE = r"the per-example gradients of examples \[1\] are not finite \(norms \[inf\]\)"


def _big(o, t):  # d loss / d out ~1e10; with inputs ~1e10 the weight gradient is ~1e20
    return 1e10 * (o * t).sum(-1)


def _loop(model, loss_fn, x, y, C):
    """float64 reference: clipped sum and norms, one backward per example."""
    params = list(model.parameters())
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms = []
    for b in range(len(y)):
        g = torch.autograd.grad(loss_fn(model(x[b : b + 1]), y[b : b + 1]).sum(), params)
        g = [v.double() for v in g]
        s = max(float(v.abs().max()) for v in g)
        norm = s * float(torch.cat([(v / s).flatten() for v in g]).norm())
        norms.append(norm)
        for t, v in zip(total, g):
            t += min(1.0, C / (norm + 1e-6)) * v
    return torch.tensor(norms, dtype=torch.float64), total


def _tied_autoencoder():
    torch.manual_seed(0)
    ae = nn.ModuleDict({"enc": nn.Linear(4, 3), "dec": nn.Linear(3, 4)})
    plan = tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())])
    plan.apply(ae)
    return nn.Sequential(ae.enc, nn.Identity(), ae.dec)  # no tanh: it would saturate


def _linear(dtype):
    torch.manual_seed(0)
    return nn.Linear(4, 3).to(dtype)


CASES = {
    # (model, inputs scale, loss): float32 squares past 3.4e38; float64 squares past 1.8e308
    "linear-float32": (lambda: _linear(torch.float32), 1e10, _big),
    "tied-float32": (_tied_autoencoder, 1e10, _big),
    "linear-float64": (lambda: _linear(torch.float64), 1e80, lambda o, t: 1e80 * (o * t).sum(-1)),
}


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
@pytest.mark.parametrize("case", list(CASES))
def test_overflowing_squares_are_clipped_as_the_float64_loop_does(case, mode):
    make, scale, loss_fn = CASES[case]
    model = make()
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g, dtype=dtype) * scale
    y = torch.randn(5, model(x[:1]).shape[1], generator=g, dtype=dtype)
    want_norms, want = _loop(model, loss_fn, x, y, 1.0)
    assert float(want_norms.min()) > 1e19  # squares past the dtype's range
    # old code: ValueError "the per-example gradients of examples [0, 1, 2, 3, 4] are not
    # finite (norms [inf, ...])"
    pg = private_grad(
        model, loss_fn, x, y, max_grad_norm=1.0, noise_multiplier=0.0, mode=mode, denominator=1.0
    )
    torch.testing.assert_close(pg.norms.double(), want_norms, rtol=1e-5, atol=0)
    for got, w in zip(pg.grads.values(), want):
        torch.testing.assert_close(got.double(), w, rtol=1e-5, atol=1e-6)
    norms = ghost_norms(model, loss_fn, x, y) if mode == "ghost" else None
    if norms is not None:
        torch.testing.assert_close(norms.double(), want_norms, rtol=1e-5, atol=0)


def test_per_example_norms_of_overflowing_squares_are_right():
    model = _linear(torch.float32)
    x, y = torch.randn(4, 4) * 1e10, torch.randn(4, 3)
    want, _ = _loop(model, _big, x, y, 1.0)
    # old code: tensor([inf, inf, inf, inf]), no error
    got = per_example_norms(per_example_grads(model, _big, x, y))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_dpsgd_steps_where_the_squares_overflow(mode):
    model = _linear(torch.float32)
    x, y = torch.randn(4, 4) * 1e10, torch.randn(4, 3)
    _, want = _loop(model, _big, x, y, 1.0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=0.5, mode=mode)
    dp.step(_big, x, y)  # old code: refused, "not finite"
    for p, b, w in zip(model.parameters(), before, want):
        torch.testing.assert_close((b - p).double(), w / 4, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_gradient_that_is_not_finite_is_still_refused(mode):
    model = _linear(torch.float32)
    x = torch.tensor([[1.0, 2.0, 0.0, 1.0], [float("inf"), 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match=NOT_FINITE):
        private_grad(
            model, lambda o, t: (o * t).sum(-1), x, torch.ones(3, 3), max_grad_norm=1.0,
            noise_multiplier=0.0, mode=mode,
        )  # fmt: skip


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_norm_past_the_dtypes_range_is_refused_by_name(mode):
    model = nn.Linear(4, 1)
    x = torch.full((3, 4), 3e38)  # each weight gradient 3e38: its norm 6e38, past float32
    with pytest.raises(ValueError, match=PAST + r".*train in float64"):
        private_grad(
            model, lambda o, t: (o * t).sum(-1), x, torch.ones(3, 1), max_grad_norm=1.0,
            noise_multiplier=0.0, mode=mode,
        )  # fmt: skip
