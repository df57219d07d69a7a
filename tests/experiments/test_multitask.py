"""C6 multitask: the soft-sharing dial runs from independent to hard sharing."""

from __future__ import annotations

import pytest

from tying.experiments.multitask import multitask
from tying.experiments.registry import REGISTRY


def test_registered_under_its_claim_id():
    assert REGISTRY["multitask"].fn is multitask


def test_quick_shows_the_dial():
    r = multitask("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["soft_smallest_lambda_vs_independent_rel"] <= 0.10
    assert m["soft_largest_lambda_vs_hard_rel"] <= 0.05
    assert m["soft_best_mse"] < m["hard_mse"] < m["independent_mse"] < m["fully_shared_mse"]
    assert "multitask_dial" in r.figures


def test_deterministic_for_a_seed():
    assert multitask("quick", 3).measured == multitask("quick", 3).measured


@pytest.mark.slow
def test_report_size():
    assert multitask("report", 0).passed
