"""Stop 54: the check helpers refuse what would give a number that compared nothing.

``max_abs_diff`` broadcast two tensors of different shapes (``(n,)`` against ``(n, 1)``,
or a one-element tensor against all of another) and returned a difference between
elements that do not correspond; ``largest``/``smallest`` read a complex error as its
real part (a warning nobody sees in a report) and the text "0.5" as a number.
"""

from __future__ import annotations

import math

import pytest
import torch

from tying.experiments.common import largest, max_abs_diff, smallest


def test_max_abs_diff_refuses_tensors_of_different_shapes():
    out = torch.tensor([1.0, 1.0, 1.0])
    # broadcasting compared the one reference value with every output: 0, a "pass"
    with pytest.raises(ValueError, match=r"expected one shape, got \(3,\) and \(1,\); reshape"):
        max_abs_diff(out, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"got \(2,\) and \(2, 1\)"):
        max_abs_diff(torch.tensor([0.0, 1.0]), torch.tensor([[0.0], [1.0]]))
    with pytest.raises(ValueError, match="two empty tensors"):
        max_abs_diff(torch.zeros(0), torch.zeros(0))


def test_max_abs_diff_of_one_shape_is_the_elementwise_maximum():
    a, b = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[1.5, -2.0], [0.5, 0.0]])
    assert max_abs_diff(a, b) == 3.0
    assert math.isnan(max_abs_diff(a, torch.full((2, 2), float("nan"))))


@pytest.mark.parametrize("values", [[1e-3 + 5j, 0.0], ["0.5", "nan"], [None, 1.0]])
@pytest.mark.parametrize("fn", [largest, smallest])
def test_largest_and_smallest_refuse_values_that_are_no_real_numbers(fn, values):
    with pytest.raises(TypeError, match=rf"{fn.__name__}\(\) needs real numbers, got"):
        fn(values)


def test_largest_and_smallest_take_ints_bools_and_scalars():
    assert largest([1, True, torch.tensor(2.5)]) == 2.5 and smallest([3, False]) == 0.0
