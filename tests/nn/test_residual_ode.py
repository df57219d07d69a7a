"""Weight-tied residual net and its neural-ODE limit (B8)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

import tying
from tying.nn import NeuralODE, TiedResidualNet, VectorField, odeint


def _error(depth: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    net = TiedResidualNet(3, 16, depth).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)  # a field strong enough that Euler's error is well above round-off
    x = torch.randn(32, 3, dtype=torch.float64)
    with torch.no_grad():
        exact = odeint(net.field, x, 1.0, method="rk4", steps=2000)
        return float((net(x) - exact).abs().max())


def test_tied_net_converges_to_the_ode_at_first_order():
    errors = [_error(depth) for depth in (10, 20, 40, 80)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.7 < r < 2.3 for r in ratios), ratios  # Euler: halving h halves the error
    assert errors[-1] < 0.2 * errors[0]


def test_untied_net_has_no_single_field():
    torch.manual_seed(1)
    untied = TiedResidualNet(3, 8, 50, tied=False)
    x = torch.randn(16, 3)
    with torch.no_grad():
        gap = float((untied(x) - odeint(untied.field, x, 1.0, method="rk4")).abs().max())
    assert gap > 1e-2  # its steps follow 50 different fields, not step 0's


def test_counts():
    tied, untied = TiedResidualNet(4, 8, 12), TiedResidualNet(4, 8, 12, tied=False)
    per_step = 4 * 8 + 8 + 8 * 4 + 4
    assert tying.count(tied).physical == per_step
    assert tying.count(untied).physical == tying.count(tied).logical == 12 * per_step
    assert tied.steps[7].inner.weight is tied.field.inner.weight


def test_tie_survives_training_and_gradient_is_the_sum_over_steps():
    torch.manual_seed(2)
    net = TiedResidualNet(2, 4, 6).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    net(x).pow(2).sum().backward()
    total = net.field.outer.weight.grad.clone()
    # the same computation with 6 independent copies: their gradients sum to the tied one
    untied = TiedResidualNet(2, 4, 6, tied=False).double()
    for step in untied.steps:
        step.load_state_dict(net.field.state_dict())
    untied(x).pow(2).sum().backward()
    summed = sum(step.outer.weight.grad for step in untied.steps)
    torch.testing.assert_close(total, summed)
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert net.steps[5].outer.weight is net.field.outer.weight


def test_solver_fallback_agrees_with_torchdiffeq(monkeypatch):
    torch.manual_seed(3)
    field = VectorField(3, 8).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        rk4 = odeint(field, x, 1.0, method="rk4", steps=400)
        if importlib.util.find_spec("torchdiffeq") is not None:
            torch.testing.assert_close(odeint(field, x, 1.0), rk4, rtol=1e-5, atol=1e-6)
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
        with pytest.warns(
            RuntimeWarning, match=r"needs torchdiffeq.*rtol=1e-07, atol=1e-09 are not"
        ):
            fallback = NeuralODE(field, method="dopri5", steps=400)(x)
    torch.testing.assert_close(fallback, rk4)


def test_errors():
    with pytest.raises(ValueError, match=r"depth must be a positive int, got 0"):
        TiedResidualNet(2, 4, 0)
    with pytest.raises(ValueError, match=r"t1 must be > 0"):
        TiedResidualNet(2, 4, 3, t1=0.0)
    with pytest.raises(ValueError, match=r"activation must be one of .*'tanh'.*got 'sine'"):
        VectorField(2, 4, activation="sine")
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 2\), got \(3, 5\)"):
        TiedResidualNet(2, 4, 3)(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"method must be 'dopri5' or 'rk4', got 'euler'"):
        odeint(lambda x: -x, torch.ones(1), method="euler")


def test_compiles_with_aot_eager():
    torch.manual_seed(4)
    net = TiedResidualNet(3, 8, 4)
    x = torch.randn(2, 3)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), net(x))


def test_an_infinite_t1_or_a_bad_step_count_is_refused():
    # stop 26: t1=inf was taken (h = inf) and gave inf/NaN states with no error
    with pytest.raises(ValueError, match=r"t1 must be > 0 and finite, got inf"):
        TiedResidualNet(2, 4, 3, t1=float("inf"))
    for t1, steps in [(float("inf"), 8), (1.0, 2.5), (1.0, True)]:
        with pytest.raises(ValueError, match=r"need a finite t1 > 0 and an int steps >= 1"):
            odeint(lambda x: -x, torch.ones(1), t1, method="rk4", steps=steps)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_state_is_refused(method, dtype):
    # each step's update fell below the state's last bit: bf16 rk4 of dx/dt = -x from 1
    # to 0.5 returned 1.0 (e^-0.5 = 0.61) and dopri5 0.996, with no error
    with pytest.raises(ValueError, match=rf"x0 is {dtype}, too coarse .* float32 or float64"):
        odeint(lambda x: -x, torch.ones(2, dtype=dtype), 0.5, method=method)


@pytest.mark.parametrize(
    ("dtype", "depth", "most"), [(torch.bfloat16, 64, 16), (torch.float16, 256, 128)]
)
def test_a_half_precision_residual_stream_with_steps_it_cannot_add_is_refused(dtype, depth, most):
    # stop 37: x + h·f(x) rounded to bfloat16 lost each update below the state's last bit:
    # depth=1024 returned its input unchanged, depth=64 was 0.33 off (a move of 0.89), with
    # no error, where odeint refuses the same state
    torch.manual_seed(0)
    net = TiedResidualNet(3, 16, depth).to(dtype)
    x = torch.randn(8, 3, dtype=dtype)
    with pytest.raises(
        ValueError,
        match=rf"a {dtype} state cannot add up steps of h = t1/depth = 1/{depth} .* "
        rf"run the layer in float32 .* or use depth <= {most} at t1=1",
    ):
        net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the stream stays float32: runs
        assert TiedResidualNet(3, 16, depth)(x.float()).dtype == torch.float32
    # the deepest accepted stack keeps its bits, and within half precision of float64
    ok = TiedResidualNet(3, 16, most)
    ref = copy.deepcopy(ok).double()(x.double())
    out = ok.to(dtype)(x)
    assert out.dtype == dtype
    assert (out.double() - ref).abs().max() < 0.15 * (ref - x.double()).abs().max()


@pytest.mark.parametrize(
    ("rtol", "atol", "match"),
    [
        (-1.0, 1e-9, r"rtol must be a finite number >= 0, got -1.0"),
        (float("nan"), 1e-9, r"rtol must be a finite number >= 0, got nan"),
        (1e-7, float("inf"), r"atol must be a finite number >= 0, got inf"),
        (1e-7, True, r"atol must be a finite number >= 0, got True"),
        (0.0, 0.0, r"rtol and atol are both 0, so no step can meet them"),
    ],
)
def test_tolerances_that_no_step_can_honour_are_refused(rtol, atol, match):
    # rtol=-1 let torchdiffeq accept every step: 0.58 for e^-0.5 = 0.61, no error; NaN or
    # both 0 ended in torchdiffeq's "underflow in dt" AssertionError
    with pytest.raises(ValueError, match=match):
        odeint(lambda x: -x, torch.ones(2, dtype=torch.float64), 0.5, rtol=rtol, atol=atol)
    with pytest.raises(ValueError, match=match):  # at construction, not at the first call
        NeuralODE(VectorField(2, 3), rtol=rtol, atol=atol)


def test_neural_ode_checks_its_settings_at_construction():
    with pytest.raises(ValueError, match=r"method must be 'dopri5' or 'rk4', got 'euler'"):
        NeuralODE(VectorField(2, 3), method="euler")
    for t1 in (0.0, True, float("inf")):
        with pytest.raises(ValueError, match=r"need a finite t1 > 0"):
            NeuralODE(VectorField(2, 3), t1=t1)
    with pytest.raises(ValueError, match=r"t1 must be > 0 and finite, got True"):
        TiedResidualNet(2, 4, 3, t1=True)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_an_empty_batch_is_integrated_to_an_empty_batch(method):
    # dopri5 ended in torchdiffeq's "underflow in dt" AssertionError on a (0, dim) state
    field = VectorField(3, 4).double()
    out = odeint(field, torch.zeros(0, 3, dtype=torch.float64), 0.5, method=method)
    assert out.shape == (0, 3) and out.dtype == torch.float64
