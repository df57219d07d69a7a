"""Helpers the experiments share; here, the NaN-keeping aggregates of a check's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tying.experiments.common import largest, smallest, still_gaining


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


def test_still_gaining_reads_the_end_of_a_run():
    falling = list(np.exp(-np.linspace(0, 3, 300)))  # still falling at its last step
    flat = [1.0] * 100 + [0.2] * 200  # settled long before the end
    assert still_gaining(falling)
    assert not still_gaining(flat)
    # the same rule as pinn-optimizers' inline one (best loss down over 10% in the last fifth)
    for n in (300, 600):
        losses = list(np.exp(-np.linspace(0, 0.6, n)))
        cut = n * 4 // 5
        assert still_gaining(losses) == (min(losses[cut:]) < 0.9 * min(losses[:cut]))


def test_still_gaining_counts_a_nan_run_as_unsettled():
    assert still_gaining([1.0, 0.5, 0.4, 0.4, float("nan")])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"losses": [1.0, 0.5]}, "5 or more steps"),
        ({"losses": [1.0] * 10, "tail": 1.0}, r"tail must lie in \(0, 1\), got 1.0"),
        ({"losses": [1.0] * 10, "by": 0.0}, r"by must lie in \(0, 1\), got 0.0"),
        ({"losses": []}, "needs one or more numbers"),
    ],
)
def test_still_gaining_refuses_what_decides_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match):
        still_gaining(**kwargs)
