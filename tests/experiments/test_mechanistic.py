"""D5 mechanistic-vs-deep: deep wins in distribution, mechanistic out of it."""

from __future__ import annotations

import pytest

from tying.experiments.mechanistic import mechanistic_vs_deep
from tying.experiments.registry import REGISTRY


def test_registered_under_its_claim_id():
    assert REGISTRY["mechanistic-vs-deep"].fn is mechanistic_vs_deep


def test_quick_deep_wins_inside_mechanistic_outside():
    r = mechanistic_vs_deep("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["rmse_id_deep"] < m["rmse_id_mechanistic"]
    assert m["rmse_ood_deep"] > 2 * m["rmse_ood_mechanistic"]
    assert m["params_mechanistic"] == 41 < m["params_deep"]


@pytest.mark.slow
def test_report_size():
    assert mechanistic_vs_deep("report", 0).passed
