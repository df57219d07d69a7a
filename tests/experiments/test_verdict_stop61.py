"""A pass beside only None or empty measured values is no verdict (stop 61)."""

from __future__ import annotations

import numpy as np
import pytest

from tying.experiments.registry import Result
from tying.experiments.runner import run_experiment
from tying.experiments.verdict import verdict_problem


@pytest.mark.parametrize(
    "measured",
    [
        {"gap": None},
        {"gap": None, "note": ""},
        {"curve": [], "b": {"c": None}},
        {"a": np.array([])},
    ],
)
def test_a_pass_beside_only_empty_values_is_no_verdict(temp_experiment, measured):
    temp_experiment("stop61-empty", lambda size, seed: Result(passed=True, measured=measured))
    rec = run_experiment("stop61-empty")  # was PASS beside an empty cell
    assert rec.status == "error" and not rec.passed
    assert "reported a pass with no measured value (every value of Result.measured" in rec.error
    assert "Put the numbers its check compared in Result(measured={...})" in rec.error


@pytest.mark.parametrize(
    "measured",
    [{"eps at 1": 2.5, "eps at 0": None, "note": "inf"}, {"winner": "tied"}, {"ok": False}],
)
def test_a_pass_beside_a_value_stands(measured):
    assert verdict_problem("x", Result(passed=True, measured=measured)) is None


def test_a_fail_beside_empty_values_stays_a_fail():
    assert verdict_problem("x", Result(passed=False, measured={"gap": None})) is None
