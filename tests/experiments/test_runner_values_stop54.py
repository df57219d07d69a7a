"""Stop 54: what the page shows of a measured value is what the NaN/inf checks look at.

A value the runner read as text (its ``repr``) was no number to the checks of
``_verdict_problem``: an ``__array__`` object, an ``array.array`` or a ``Decimal``
holding NaN passed, shown as ``array('d', [nan])``. And two keys that read as the same
text (``1`` and ``"1"``) kept one value without a word: the other was dropped from the
page and results.json.
"""

from __future__ import annotations

import array
import decimal

import numpy as np
import pytest

from tying.experiments import Result, Table
from tying.experiments.runner import jsonable, run_experiment


class _ArrayLike:
    """Anything NumPy reads through ``__array__`` (xarray, pandas, a user's container)."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def __array__(self, dtype=None, copy=None):
        return self.values

    def __repr__(self) -> str:
        return "_ArrayLike(...)"


@pytest.mark.parametrize(
    ("value", "shown", "why"),
    [
        (_ArrayLike([0.1, np.nan]), [0.1, "nan"], "hold NaN"),
        (array.array("d", [0.5, float("nan")]), [0.5, "nan"], "hold NaN"),
        (decimal.Decimal("NaN"), "nan", "hold NaN"),
        (decimal.Decimal("sNaN"), "nan", "hold NaN"),
        (_ArrayLike([1.0, np.inf]), [1.0, "inf"], "are infinite"),
        (array.array("f", [float("-inf")]), ["-inf"], "are infinite"),
    ],
)
def test_a_pass_beside_a_nan_or_inf_in_a_number_container_is_no_verdict(
    temp_experiment, value, shown, why
):
    temp_experiment("stop54-nan", lambda size, seed: Result(passed=True, measured={"err": value}))
    rec = run_experiment("stop54-nan")
    assert rec.status == "error" and not rec.passed
    assert why in rec.error and "'err'" in rec.error
    assert rec.measured == {"err": shown}  # its numbers, not its repr


def test_number_containers_without_nan_pass_and_show_their_numbers(temp_experiment):
    measured = {
        "a": _ArrayLike([0.25, 2.0]),
        "b": array.array("i", [1, 2]),
        "c": decimal.Decimal("1.5"),
    }
    temp_experiment("stop54-ok", lambda size, seed: Result(passed=True, measured=measured))
    rec = run_experiment("stop54-ok")
    assert rec.status == "pass", rec.error
    assert rec.measured == {"a": [0.25, 2.0], "b": [1, 2], "c": 1.5}


@pytest.mark.parametrize(
    "result",
    [
        Result(passed=True, measured={1: 0.5, "1": 0.7}),
        Result(passed=True, tables=[Table("t", [{"n": 1, True: 2, "True": 3}])]),
    ],
    ids=["measured", "table"],
)
def test_keys_that_read_as_the_same_text_are_refused_not_merged(temp_experiment, result):
    temp_experiment("stop54-keys", lambda size, seed: result)
    rec = run_experiment("stop54-keys")
    assert rec.status == "error" and "both read as" in rec.error and "own key" in rec.error
    with pytest.raises(ValueError, match=r"the keys 1 and '1' both read as '1'.*own key"):
        jsonable({1: 0.5, "1": 0.7})
