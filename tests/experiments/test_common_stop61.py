"""max_abs_diff reads NumPy arrays and numbers as tensors of their values (stop 61)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.experiments.common import max_abs_diff


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (np.array([0.1, 0.2]), np.array([0.1, 0.25]), 0.25 - 0.2),  # raised AttributeError
        (0.1, 0.3, 0.3 - 0.1),  # 'float' object has no attribute 'shape'
        ([1, 2], [1, 5], 3.0),
        (np.uint8([0]), np.uint8([255]), 255.0),  # no wrap-around, as for tensors
        (np.array([0.5]), torch.tensor([0.25], dtype=torch.float64), 0.25),
    ],
)
def test_arrays_and_numbers_are_compared_as_tensors(a, b, expected):
    assert max_abs_diff(a, b) == expected  # reference: the subtraction in float64


def test_a_read_only_array_is_read_without_a_warning():
    a = np.array([1.0, 2.0])
    a.flags.writeable = False  # torch.as_tensor warns (an error in this suite)
    assert max_abs_diff(a, a) == 0.0


@pytest.mark.parametrize("bad", [["a"], None, {"x": 1}])
def test_what_holds_no_numbers_is_named(bad):
    with pytest.raises(TypeError, match=r"max_abs_diff\(\) compares numbers, got a="):
        max_abs_diff(bad, torch.zeros(1))


def test_shapes_that_would_broadcast_are_still_refused():
    with pytest.raises(ValueError, match=r"expected one shape, got \(1,\) and \(1, 1\)"):
        max_abs_diff(np.array([1.0]), torch.tensor([[1.0]]))
