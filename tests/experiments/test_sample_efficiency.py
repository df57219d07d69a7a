"""A3 sample-efficiency at quick size (report size, the seed's 7,600 vs 10: slow)."""

from __future__ import annotations

import math

import pytest

from tying.experiments.sample_efficiency import _images_needed, sample_efficiency


def test_images_needed_interpolates_in_log_log():
    # error = 1/n crosses 1/50 at n = 50, between grid points 10 and 100
    assert _images_needed([10, 100], [0.1, 0.01], 0.02) == pytest.approx(50)
    assert math.isnan(_images_needed([10, 100], [0.1, 0.05], 0.01))


def test_sample_efficiency_ratio_is_the_number_of_positions():
    r = sample_efficiency("quick", 0)
    assert r.passed
    assert r.measured["positions"] == 100
    assert 1 / 1.35 <= r.measured["ratio / positions"] <= 1.35


@pytest.mark.slow
def test_report_size_reproduces_the_seeds_numbers():
    r = sample_efficiency("report", 0)
    assert r.passed and r.measured["positions"] == 760
    assert 6_000 <= r.measured["images needed, unshared"] <= 9_500
    assert 7 <= r.measured["images needed, shared"] <= 14
