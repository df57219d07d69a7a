"""B7 at quick size."""

from __future__ import annotations

import pytest

from tying.experiments import spatial_siamese as mod

from .helpers_spatial import check_result


def test_siamese():
    r = mod.siamese("quick", 0)
    check_result(r)
    assert r.passed
    assert r.measured["max |grad − (left use + right use)|"] < 1e-6
    logical, physical = r.measured["tied logical/physical params"]
    assert logical == 2 * physical


@pytest.mark.slow
def test_report_size():
    assert mod.siamese("report", 0).passed
