"""B8 cross-layer-sharing at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.depth_sharing import cross_layer_sharing


def test_cross_layer_sharing():
    r = cross_layer_sharing("quick", 0)
    assert r.passed
    m = r.measured
    assert m["params untied / tied at equal width"] == 8.0
    assert m["error tied wide"] < m["error untied narrow"]
    assert 0.9 < m["convergence order"] < 1.1
    rows = r.tables[0].rows
    assert rows[2]["physical params"] <= rows[0]["physical params"]  # the same budget
    ode = [row["max |stack − ODE|"] for row in r.tables[1].rows]
    assert all(a > b for a, b in zip(ode, ode[1:]))


@pytest.mark.slow
def test_report_size():
    assert cross_layer_sharing("report", 0).passed
