"""Helpers the experiments share; here, the NaN-keeping aggregates of a check's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tying.experiments.common import largest, smallest


@pytest.mark.parametrize("where", [0, 1, 2])
def test_largest_and_smallest_keep_a_nan_wherever_it_is(where):
    values = [1e-16, 3e-16, 2e-16]
    values[where] = float("nan")
    assert math.isnan(largest(values)) and math.isnan(smallest(values))
    assert math.isnan(largest(iter(values)))  # generators too
    # what they replace: the builtins drop a NaN that is not first
    if where:
        assert not math.isnan(max(values))


def test_largest_and_smallest_equal_the_builtins_without_nan():
    values = [0.25, 1e-300, 7, np.float32(0.5), -0.0, np.int64(3)]
    assert largest(values) == max(values) and smallest(values) == min(values)
    assert type(largest(values)) is float


@pytest.mark.parametrize("fn", [largest, smallest])
def test_no_numbers_is_an_error_not_a_check(fn):
    with pytest.raises(ValueError, match=r"needs one or more numbers, got 0.*decide nothing"):
        fn([])
