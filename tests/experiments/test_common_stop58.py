"""Stop 58: ``max_abs_diff`` is the true largest difference whatever the two dtypes are.

torch's own arithmetic gave a wrong difference without a word: uint8 ``0 - 255`` wrapped
to 1, int8 ``-128 - 127`` to 1, an int64 ``2**24 + 1`` against float32 ``2**24`` was
computed in float32 and read 0, float16 ``65504 - (-65504)`` overflowed to inf, and bool
raised. A check "quantized outputs agree to <= 1" passed on outputs 255 apart.
"""

from __future__ import annotations

import pytest
import torch

from tying.experiments.common import max_abs_diff


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (torch.tensor([0, 7], dtype=torch.uint8), torch.tensor([255, 7], dtype=torch.uint8), 255.0),
        (torch.tensor([-128], dtype=torch.int8), torch.tensor([127], dtype=torch.int8), 255.0),
        (torch.tensor([2**24 + 1]), torch.tensor([2.0**24]), 1.0),
        (
            torch.tensor([65504.0], dtype=torch.float16),
            torch.tensor([-65504.0], dtype=torch.float16),
            131008.0,
        ),
        (torch.tensor([True, False]), torch.tensor([False, False]), 1.0),
        (torch.tensor([1 + 1j]), torch.tensor([1 + 2j], dtype=torch.complex128), 1.0),
    ],
)
def test_the_difference_is_the_true_one(a, b, diff):
    assert max_abs_diff(a, b) == diff
    assert max_abs_diff(b, a) == diff


def test_float_tensors_of_one_dtype_give_what_they_gave():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        a, b = torch.randn(50, generator=g, dtype=dtype), torch.randn(50, generator=g, dtype=dtype)
        assert max_abs_diff(a, b) == float((a - b).abs().max())
    a32, b64 = torch.randn(5, generator=g), torch.randn(5, generator=g, dtype=torch.float64)
    assert max_abs_diff(a32, b64) == float((a32 - b64).abs().max())  # torch promotes the same
    nan = torch.tensor([float("nan")])
    assert max_abs_diff(nan, torch.zeros(1)) != max_abs_diff(nan, torch.zeros(1))  # NaN kept
