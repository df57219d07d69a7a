"""torchdiffeq's odeint(func, y0, t) habits on tying's odeint name ours (stop 56)."""

import pytest
import torch

from tying.nn.residual_ode import NeuralODE, odeint


def decay(x):
    return -x


@pytest.mark.parametrize(
    "grid", [torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5, 1.0]), [0.0, 1.0], (0.0, 1.0)]
)
def test_a_time_grid_names_t1_and_the_field_form(grid):
    x0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"need a finite t1 > 0, one number: the end time .*not torchdiffeq's time grid t"
        r".*t1=float\(t\[-1\]\)",
    ):
        odeint(decay, x0, grid)
    with pytest.raises(ValueError, match=r"not torchdiffeq's time grid t"):
        NeuralODE(decay, grid, method="rk4")


def test_the_named_recipe_is_torchdiffeq():
    """t1=float(t[-1]) gives torchdiffeq's last row (same rtol/atol defaults)."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    want = torchdiffeq.odeint(lambda _t, x: -x, x0, t)[-1]
    torch.testing.assert_close(odeint(decay, x0, float(t[-1])), want, rtol=1e-6, atol=1e-8)


def test_options_names_steps():
    x0 = torch.ones(1, dtype=torch.float64)
    with pytest.raises(
        TypeError, match=r"odeint: no keyword 'options' here; .*steps=round\(t1 / h\)"
    ):
        odeint(decay, x0, 1.0, method="rk4", options={"step_size": 0.1})
    with pytest.raises(TypeError, match=r"NeuralODE: no keyword 'options' here"):
        NeuralODE(decay, method="rk4", options={"step_size": 0.1})
    with pytest.raises(TypeError, match=r"odeint: no keyword 'event_fn' here; .*odeint_event"):
        odeint(decay, x0, 1.0, event_fn=lambda t, x: x)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'stepz'"):
        odeint(decay, x0, 1.0, stepz=3)


def test_step_size_recipe_matches_torchdiffeq_rk4():
    """options=dict(step_size=h) there is steps=round(t1 / h) here, to the rule's order:
    torchdiffeq's rk4 is the 3/8 rule, ours the classic one (both 4th order)."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    x0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    want = torchdiffeq.odeint(lambda _t, x: -x, x0, t, method="rk4", options={"step_size": 0.05})[
        -1
    ]
    got = odeint(decay, x0, 1.0, method="rk4", steps=round(1.0 / 0.05))
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-8)
