"""Stop 39: ``laplacian_penalty`` of float16 members overflowed in its squares.

``(a - b)²`` past ``|a - b| = 256`` is inf in float16, so a penalty of 180 came back inf
(and its gradient NaN) though 180 fits; half members are now squared and summed in
float32 and the penalty rounded once to their dtype.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.soft import laplacian_penalty


def _reference(a: torch.Tensor, b: torch.Tensor, lam: float) -> float:
    return 0.5 * lam * float(((a.detach().double() - b.double()) ** 2).sum())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_penalty_that_fits_is_not_inf(dtype):
    a = torch.full((4,), 300.0, dtype=dtype, requires_grad=True)
    b = torch.zeros(4, dtype=dtype)
    got = laplacian_penalty([a, b], [(0, 1)], lam=1e-3)
    assert got.dtype == dtype
    assert got.detach().item() == pytest.approx(_reference(a, b, 1e-3), rel=1e-2) == 180.0
    got.backward()
    assert torch.allclose(a.grad.float(), torch.full((4,), 0.3), rtol=1e-2)  # lam * (a - b)


def test_float32_members_are_computed_as_before():
    torch.manual_seed(0)
    a, b = torch.randn(50), torch.randn(50)
    got = laplacian_penalty({"a": a, "b": b}, [("a", "b")], lam=0.7)
    assert got.dtype == torch.float32
    assert torch.equal(got, 0.5 * 0.7 * (a - b).pow(2).sum())


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    scale=st.floats(1e-3, 2e3),
    lam=st.floats(1e-4, 1.0),
    n=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_half_penalty_matches_a_float64_reference(dtype, scale, lam, n, seed):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(n, generator=g) * scale).to(dtype)
    b = (torch.randn(n, generator=g) * scale).to(dtype)
    want = _reference(a, b, lam)
    got = laplacian_penalty([a, b], [(0, 1)], lam=lam)
    assert got.dtype == dtype
    if want > torch.finfo(dtype).max:
        assert got.isinf()  # only a penalty that does not fit is inf
    else:
        eps = torch.finfo(dtype).eps  # one rounding to the members' dtype (and float32 sums)
        assert got.item() == pytest.approx(want, rel=eps, abs=torch.finfo(dtype).tiny)
