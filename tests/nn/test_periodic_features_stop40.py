"""Stop 40: PeriodicFeatures on float16/bfloat16 coordinates.

The phase ``2πn·x/L`` was taken in the input's dtype: in bfloat16 the features were off
by up to 0.17 from the exact features of the same coordinates, and no longer periodic
(``cos`` at x = 0.25, 1.25, 3.25 with L = 1 read 0.001, 0.02, 0.09), with no error.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import PeriodicFeatures

LOW = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # half a last bit at 1: one rounding


@pytest.mark.parametrize("dtype", list(LOW))
def test_low_precision_features_are_the_exact_features_rounded_once(dtype):
    feats = PeriodicFeatures(1, period=1.0, harmonics=8)
    x = torch.rand(1000, 1, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = feats(x)
    assert got.dtype == dtype
    exact = feats(x.double())  # the same (rounded) coordinates, float64 phase
    # old code: bfloat16 off by 0.17, float16 by 0.029
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=LOW[dtype] * 1.01)


def test_bfloat16_features_repeat_with_the_period():
    feats = PeriodicFeatures(1, period=1.0, harmonics=2)
    x = torch.tensor([[0.25], [1.25], [3.25], [-2.75]], dtype=torch.bfloat16)  # all exact
    out = feats(x).double()
    # every row is the features at 0.25: sin 2πx = 1, cos 2πx = 0, sin 4πx = 0, cos 4πx = -1
    want = torch.tensor([1.0, 0.0, 0.0, -1.0], dtype=torch.float64).expand(4, 4)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


def test_gradients_reach_low_precision_coordinates_in_their_dtype():
    feats = PeriodicFeatures(2, period=2.0, harmonics=3)
    x = torch.rand(5, 2, generator=torch.Generator().manual_seed(1))
    xb = x.bfloat16().requires_grad_()
    feats(xb).sum().backward()
    assert xb.grad.dtype == torch.bfloat16
    x64 = xb.detach().double().requires_grad_()
    feats(x64).sum().backward()
    torch.testing.assert_close(xb.grad.double(), x64.grad, rtol=2**-7, atol=2**-5)


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    dtype=st.sampled_from(list(LOW)),
    period=st.floats(0.1, 10.0),
    harmonics=st.integers(1, 6),
    scale=st.floats(0.5, 20.0),
    seed=st.integers(0, 2**16),
)
def test_property_low_precision_features_within_one_rounding_of_float64(
    dtype, period, harmonics, scale, seed
):
    """The kind of defect: a phase computed in too few bits. Whatever the period, number of
    harmonics and range of coordinates, the features are the float64 features of the same
    coordinates, rounded once to the coordinates' dtype."""
    feats = PeriodicFeatures(2, period=period, harmonics=harmonics, periodic_dims=(1,))
    g = torch.Generator().manual_seed(seed)
    x = ((torch.rand(64, 2, generator=g) * 2 - 1) * scale).to(dtype)
    exact = feats(x.double())
    got = feats(x).double()
    # one rounding of the output, plus the float32 phase's own error (2**-23 of the phase:
    # 1e-5 for a phase of 100, far below a float16 rounding); the pass-through column is exact
    phase = 2 * math.pi * harmonics * float(x.double().abs().max()) / period
    tol = LOW[dtype] * 1.01 + 2.0**-23 * phase * 2
    torch.testing.assert_close(got, exact, rtol=0, atol=tol)
    assert ((got - exact).abs().max() <= LOW[dtype] * 1.01) or phase > 100
