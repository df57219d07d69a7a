"""Stop 41: scalar settings given as tensors that require grad (a learned end time, period
or margin). ``odeint(t1=<tensor>)`` gave rk4's gradient to ``t1`` but none from dopri5
(``torch.tensor([0, t1])`` cut the graph), with no error; ``NeuralODE``,
``TiedResidualNet``, ``PeriodicFeatures`` and ``SharedBoundary`` stored ``float(...)``
and dropped it too; ``contrastive_loss`` warned on a learned margin.

The anchor: ``d x(t1) / d t1 = f(x(t1))`` for ``dx/dt = f(x)``, and dx/dt = -k·x in closed
form (``x(t1) = x0·e^(-k·t1)``, ``d/dt1 = -k·x(t1)``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import (
    NeuralODE,
    PeriodicFeatures,
    SharedBoundary,
    TiedResidualNet,
    VectorField,
    contrastive_loss,
    odeint,
)


class _Decay(torch.nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x):
        return -self.k * x


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_gradient_to_a_learned_end_time_matches_the_closed_form(method):
    t1 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([2.0], dtype=torch.float64)
    x1 = odeint(_Decay(1.5), x0, t1=t1, method=method, steps=200)
    (grad,) = torch.autograd.grad(x1.sum(), t1)  # dopri5: "One of the differentiated
    # Tensors appears to not have been used in the graph" before
    exact = -1.5 * 2.0 * math.exp(-1.5 * 0.7)
    assert abs(float(grad) - exact) < 1e-6 * abs(exact)
    assert abs(float(x1.detach()) - 2.0 * math.exp(-1.05)) < 1e-8


def test_a_float32_end_time_reaches_a_float64_solve():
    t1 = torch.tensor(0.5, requires_grad=True)  # float32, as a learned scalar often is
    x1 = odeint(_Decay(1.0), torch.ones(1, dtype=torch.float64), t1=t1)
    assert x1.dtype == torch.float64
    (grad,) = torch.autograd.grad(x1.sum(), t1)
    assert abs(float(grad) + math.exp(-0.5)) < 1e-6


@pytest.mark.parametrize(
    "build",
    [
        lambda t1: NeuralODE(VectorField(2, 3), t1=t1),
        lambda t1: TiedResidualNet(2, 3, 4, t1=t1),
    ],
    ids=["NeuralODE", "TiedResidualNet"],
)
def test_modules_refuse_an_end_time_whose_gradient_they_would_drop(build):
    with pytest.raises(ValueError, match=r"t1 is stored as a float, so a t1 tensor that"):
        build(torch.tensor(0.5, requires_grad=True))
    assert build(torch.tensor(0.5)).t1 == 0.5  # a fixed tensor is its value, as before


@pytest.mark.parametrize("bad", [torch.tensor(True), torch.tensor(-1.0), torch.tensor([1.0, 2.0])])
def test_end_time_tensors_are_checked_like_numbers(bad):
    with pytest.raises(ValueError, match="need a finite t1 > 0"):
        odeint(_Decay(1.0), torch.ones(1), t1=bad)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    k=st.floats(0.1, 3.0),
    t1=st.floats(0.05, 2.0),
    method=st.sampled_from(["dopri5", "rk4"]),
)
def test_property_end_time_gradient_is_the_field_at_the_end(k, t1, method):
    """Guards the kind (a graph to t1 cut by one solver path), against d x(t1)/dt1 = f(x)."""
    torch.manual_seed(0)
    field = VectorField(2, 4).double()
    t = torch.tensor(t1, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([[k, -k]], dtype=torch.float64)
    x1 = odeint(field, x0, t1=t, method=method, steps=400)
    (grad,) = torch.autograd.grad(x1.sum(), t)
    with torch.no_grad():
        expected = float(field(x1).sum())
    assert abs(float(grad) - expected) < 1e-5 * max(1.0, abs(expected))


@pytest.mark.parametrize(
    "build",
    [lambda p: PeriodicFeatures(2, p), lambda p: SharedBoundary(2, p)],
    ids=["PeriodicFeatures", "SharedBoundary"],
)
def test_a_period_that_requires_grad_is_refused_not_detached(build):
    # float(period) kept 2.0 and the tensor never got a gradient, with no error
    with pytest.raises(ValueError, match=r"period is stored as a float, so a period tensor"):
        build(torch.tensor(2.0, requires_grad=True))
    assert build(torch.tensor(2.0)).period == 2.0
    with pytest.raises(ValueError, match="period must be > 0"):
        build(torch.tensor([1.0, 2.0]))


def test_a_learned_margin_gets_its_gradient_without_a_warning():
    # the margin check read the tensor as a float: torch's "Converting a tensor with
    # requires_grad=True to a scalar" warning (an error under -W error)
    margin = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    za, zb = torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    loss = contrastive_loss(za, zb, torch.tensor([0, 0]), margin=margin)
    loss.backward()
    d = math.sqrt(3.0)  # both pairs differ, at distance √3 < margin
    assert abs(float(loss.detach()) - (2.5 - d) ** 2) < 1e-6
    assert abs(float(margin.grad) - 2 * (2.5 - d)) < 1e-6
