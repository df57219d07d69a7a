"""C8 at quick size."""

from __future__ import annotations

import pytest

from tying.experiments import spatial_hashing as mod

from .helpers_spatial import check_result


def test_hashednets():
    r = mod.hashednets("quick", 0)
    check_result(r)
    assert r.passed
    first, last = r.measured["held-out perplexity, B = V² → smallest B"]
    assert last > 1.5 * first
    assert r.measured["monotone in B"]


@pytest.mark.slow
def test_report_size():
    assert mod.hashednets("report", 0).passed
