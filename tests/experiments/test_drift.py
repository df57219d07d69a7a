"""D9 concept-drift: the jump is detected fast, no false alarms, the reset recovers."""

from __future__ import annotations

import pytest

from tying.experiments.drift import concept_drift
from tying.experiments.registry import REGISTRY


def test_registered_under_its_claim_id():
    assert REGISTRY["concept-drift"].fn is concept_drift


def test_quick_detects_and_the_reset_helps():
    r = concept_drift("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["detected_page_hinkley"] == m["drifts"] == 8
    assert m["median_delay_page_hinkley"] <= 10
    assert m["false_alarms_per_1000_steps_page_hinkley"] <= 0.5
    assert m["loss_after_drift_reset"] < 0.5 * m["loss_after_drift_no_reset"]


@pytest.mark.slow
def test_report_size():
    assert concept_drift("report", 0).passed
