"""B4 and C1 at quick size."""

from __future__ import annotations

import pytest

from tying.experiments import spatial_filters as mod

from .helpers_spatial import check_result


def test_symmetric_filter():
    r = mod.symmetric_filter("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["palindromic response to antisymmetric input"] < 1e-12
    assert r.measured["MSE ratio untied/palindromic at fewest windows"] > 1.3
    assert r.measured["palindromic physical/logical taps"] == (5, 9)


def test_cnn_as_pgm():
    r = mod.cnn_as_pgm("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["trained vs least squares (rel.)"] < 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("fn", [mod.symmetric_filter, mod.cnn_as_pgm])
def test_report_size(fn):
    assert fn("report", 0).passed
