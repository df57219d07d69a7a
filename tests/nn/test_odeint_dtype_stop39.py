"""Stop 39: odeint's state dtype.

An integer or bool ``x0`` failed inside torchdiffeq with "`t` must be a floating point
Tensor" (a ``t`` the caller never passed) and was cast silently by ``rk4``; a complex
``x0`` (a legitimate ODE state, which torchdiffeq integrates) was refused the same way,
because the times were built in the state's dtype.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import NeuralODE, odeint

pytest.importorskip("torchdiffeq")


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_odeint_refuses_a_non_float_state_naming_it(method, dtype):
    x0 = torch.ones(3, dtype=dtype)
    with pytest.raises(
        ValueError, match=rf"odeint: x0 must be a floating-point .*got {dtype}.*x0\.float\(\)"
    ):
        odeint(lambda x: -x, x0, 0.5, method=method)


def test_odeint_dopri5_integrates_a_complex_state_as_torchdiffeq_does():
    import torchdiffeq

    x0 = torch.tensor([1 + 1j, 0.5 - 2j], dtype=torch.complex128)
    lam = complex(-0.3, 1.0)
    got = odeint(lambda x: lam * x, x0, 0.7)
    exact = x0 * complex(math.exp(-0.3 * 0.7) * math.cos(0.7), math.exp(-0.3 * 0.7) * math.sin(0.7))
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-9)
    # the anchor, called with real times as its API asks
    t = torch.tensor([0.0, 0.7], dtype=torch.float64)
    anchor = torchdiffeq.odeint(lambda _t, x: lam * x, x0, t, rtol=1e-7, atol=1e-9)[-1]
    assert torch.allclose(got, anchor, rtol=0, atol=1e-12)


def test_neural_ode_complex_state_matches_rk4():
    field = torch.nn.Linear(2, 2, bias=False, dtype=torch.complex128)
    x = torch.randn(4, 2, dtype=torch.complex128)
    adaptive = NeuralODE(field, t1=0.5)(x)
    fixed = NeuralODE(field, t1=0.5, method="rk4", steps=400)(x)
    assert torch.allclose(adaptive, fixed, rtol=1e-5, atol=1e-7)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    re=st.floats(-2.0, 0.5),
    im=st.floats(-3.0, 3.0),
    t1=st.floats(0.05, 1.5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.complex64, torch.complex128]),
    method=st.sampled_from(["dopri5", "rk4"]),
)
def test_odeint_linear_decay_matches_closed_form_for_every_float_or_complex_dtype(
    re, im, t1, dtype, method
):
    # dx/dt = λ x has x(t1) = x0 e^{λ t1}: any float or complex state must reach it
    lam = complex(re, im) if dtype.is_complex else re
    x0 = torch.tensor([1.0, -0.5, 2.0]).to(dtype)
    got = odeint(lambda x: lam * x, x0, t1, method=method, steps=200)
    factor = complex(math.exp(re * t1) * math.cos(im * t1), math.exp(re * t1) * math.sin(im * t1))
    exact = x0.to(torch.complex128) * (factor if dtype.is_complex else math.exp(re * t1))
    tol = 1e-4 if dtype in (torch.float32, torch.complex64) else 1e-6
    assert got.dtype == dtype
    assert torch.allclose(got.to(torch.complex128), exact, rtol=tol, atol=tol)
