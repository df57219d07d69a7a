"""Stop 59: a key figure writing ``nan`` beside a PASS; the verdict checks' new home.

- The summary row's key figure is text the check never compared: a pass whose key
  figure read ``greedy ≠ beam on nan%`` (D3 formats ``float('nan')`` when it has no
  half-trained snapshot) was reported as PASS beside it. The measured-text NaN check
  of stop 58 looked at ``measured`` only.
- The verdict checks moved from runner.py (985 lines) to ``tying.experiments.verdict``,
  the measured-value reading to ``tying.experiments.values``, and output.py's signal
  holding to ``tying.experiments.interrupts``; the import paths in use stay.
"""

from __future__ import annotations

import doctest

import pytest

import tying.experiments.interrupts as interrupts_module
import tying.experiments.values as values_module
from tying.experiments import Result
from tying.experiments.runner import jsonable, run_experiment
from tying.experiments.values import jsonable as values_jsonable
from tying.experiments.verdict import verdict_problem


@pytest.mark.parametrize(
    "key", ["greedy ≠ beam on nan%", "ratio nan", "-nan vs 0.3", "gap NAN (upper-case format)"]
)
def test_a_pass_beside_a_key_figure_writing_nan_is_no_verdict(temp_experiment, key):
    temp_experiment(
        "stop59-key", lambda size, seed: Result(passed=True, measured={"x": 1.0}, key_figure=key)
    )
    rec = run_experiment("stop59-key")
    assert rec.status == "error" and not rec.passed
    assert "its key figure" in rec.error and "writes a NaN ('nan')" in rec.error
    assert rec.key_figure == key  # the page still shows what the experiment said


@pytest.mark.parametrize("key", ["NaN-free, banana", "ε = inf (no noise)", "0.5 ± 0.1", ""])
def test_a_key_figure_without_the_word_nan_still_passes(temp_experiment, key):
    temp_experiment(
        "stop59-ok", lambda size, seed: Result(passed=True, measured={"x": 1.0}, key_figure=key)
    )
    assert run_experiment("stop59-ok").status == "pass"


def test_a_fail_beside_a_nan_key_figure_stays_a_fail(temp_experiment):
    temp_experiment(
        "stop59-fail",
        lambda size, seed: Result(passed=False, measured={"x": 1.0}, key_figure="nan%"),
    )
    assert run_experiment("stop59-fail").status == "fail"


def test_the_moved_names_are_the_same_objects_and_still_judge():
    assert jsonable is values_jsonable
    assert verdict_problem("a", Result(passed=True, measured={"x": 1.0})) is None
    assert "hold NaN" in verdict_problem("a", Result(passed=True, measured={"x": float("nan")}))
    for module in (values_module, interrupts_module):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
    from tying.experiments.output import _interrupt_deferred

    assert _interrupt_deferred is interrupts_module.interrupt_deferred
