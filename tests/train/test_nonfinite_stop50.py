"""A NaN/inf loss or a noisy gradient past the dtype's range is refused (stop 50).

- An example whose loss is NaN or inf while its gradient is finite (``torch.where(bad,
  nan, loss)``: the constant branch has gradient 0) was averaged in as an example of norm
  0: counted in the denominator, moving nothing, no error.
- ``noise_multiplier * max_grad_norm`` past float32's range (1e39) gave an inf noise, and
  a DP step wrote inf/NaN parameters, no error; a noisy mean past float16's 65504 did so
  when cast back to a float16 parameter.
Anchor: plain PyTorch, one backward per example (the clipped mean of the finite case).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import DPSGD, private_grad

NOT_FINITE_LOSS = r"the losses of examples \[2\] are not finite \(\[{}\]\)"
NOT_FINITE_STEP = "the noisy gradient of '(weight|bias)' is not finite in torch.float{}"


def ce(o, t):
    return F.cross_entropy(o, t, reduction="none")


def _masked(value):
    def loss(o, t):  # example 2 (target 2) gets a constant NaN/inf loss: its gradient is 0
        losses = ce(o, t)
        return torch.where(t == 2, torch.full_like(losses, value), losses)

    return loss


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g, dtype=dtype), torch.tensor([0, 1, 2, 0, 1, 1])


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Linear(4, 3).to(dtype)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_inf_loss_with_a_finite_gradient_is_refused(mode, value):
    x, y = _data()
    # old code: the step ran, example 2 counted with a gradient of 0
    with pytest.raises(ValueError, match=NOT_FINITE_LOSS.format(value)):
        private_grad(
            _model(), _masked(value), x, y, max_grad_norm=1.0, noise_multiplier=0.0, mode=mode
        )


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_dpsgd_refuses_a_nan_loss_and_changes_nothing(mode):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPSGD(model, opt, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, mode=mode)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=NOT_FINITE_LOSS.format("nan")):
        dp.step(_masked(float("nan")), *_data())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert dp.steps == 0 and dp.history == []


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_finite_losses_still_give_the_loops_clipped_mean(mode):
    model, (x, y) = _model(), _data()
    C = 0.7
    params = list(model.parameters())
    want = [torch.zeros_like(p) for p in params]
    for b in range(len(y)):
        g = torch.autograd.grad(ce(model(x[b : b + 1]), y[b : b + 1]).sum(), params)
        norm = float(torch.cat([v.flatten() for v in g]).norm())
        for s, v in zip(want, g):
            s += min(1.0, C / (norm + 1e-6)) * v / len(y)
    pg = private_grad(model, ce, x, y, max_grad_norm=C, noise_multiplier=0.0, mode=mode)
    for (name, _), w in zip(model.named_parameters(), want):
        torch.testing.assert_close(pg.grads[name], w)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_noise_past_float32s_range_is_refused_and_the_step_not_counted(mode):
    model = _model(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(3)
    dp = DPSGD(
        model, opt, noise_multiplier=10.0, max_grad_norm=1e38, sample_rate=0.5, mode=mode,
        generator=gen,
    )  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    state = gen.get_state()
    # old code: std 1e39 drew inf, and the parameters became inf/NaN with no error
    with pytest.raises(ValueError, match=NOT_FINITE_STEP.format(32) + r".*= 1e\+39"):
        dp.step(ce, *_data(torch.float32))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())
    assert dp.steps == 0 and torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match=NOT_FINITE_STEP.format(32)):
        private_grad(model, ce, *_data(torch.float32), max_grad_norm=1e38, noise_multiplier=10.0)


def test_a_noisy_mean_past_float16s_range_is_refused():
    model = _model(torch.float16)
    x, y = _data(torch.float16)
    # std 1e6 / 6 examples: far past float16's 65504 once cast back to the parameter
    with pytest.raises(ValueError, match=NOT_FINITE_STEP.format(16)):
        private_grad(
            model, ce, x, y, max_grad_norm=1e4, noise_multiplier=100.0, mode="ghost",
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip


def test_a_huge_bound_without_noise_is_not_refused():
    model, (x, y) = _model(torch.float32), _data(torch.float32)
    pg = private_grad(model, ce, x, y, max_grad_norm=1e38, noise_multiplier=0.0)
    loss = ce(model(x), y).mean()  # nothing clipped: the plain mean gradient
    want = torch.autograd.grad(loss, [model.weight])[0]
    torch.testing.assert_close(pg.grads["weight"], want)


def test_the_lower_level_calls_refuse_a_nan_loss_too():
    from tying.train import GhostClipping, per_example_grads

    x, y = _data()
    nan_loss = _masked(float("nan"))
    # old code: example 2 came back with a gradient (and a norm) of 0
    with pytest.raises(ValueError, match=NOT_FINITE_LOSS.format("nan")):
        per_example_grads(_model(), nan_loss, x, y)
    with pytest.raises(ValueError, match=NOT_FINITE_LOSS.format("nan")):
        GhostClipping(_model()).norms(nan_loss, x, y)
    with pytest.raises(ValueError, match=NOT_FINITE_LOSS.format("nan")):
        GhostClipping(_model()).clip(nan_loss, x, y, 1.0)
