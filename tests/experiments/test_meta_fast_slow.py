"""C7 meta-fast-slow: adapting a few fast weights on meta-trained slow weights beats scratch."""

from __future__ import annotations

import pytest

from tying.experiments.meta_fast_slow import meta_fast_slow
from tying.experiments.registry import REGISTRY


def test_registered_under_its_claim_id():
    assert REGISTRY["meta-fast-slow"].fn is meta_fast_slow


def test_quick_few_shot_beats_scratch():
    r = meta_fast_slow("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["meta_over_scratch"] < 0.5
    assert m["tasks_where_meta_wins"] >= 2 / 3
    assert m["meta_mse"] < 0.5 * m["fast_on_untrained_slow_mse"]  # the slow weights carry it
    assert m["fast_params_per_task"] == 41 and m["all_params"] == 1761


@pytest.mark.slow
def test_report_size():
    assert meta_fast_slow("report", 0).passed
