"""B12 gnn-hops at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.graph_sharing import gnn_hops


def test_gnn_hops():
    r = gnn_hops("quick", 0)
    assert r.passed
    rows = {row["hops K"]: row for row in r.tables[0].rows}
    assert rows[4]["shared: params"] == 16 * 4 + 4 + 4  # one W, 4 hop scales, bias
    assert rows[4]["per hop: params"] == 5 * 16 * 4 + 4
    assert rows[4]["shared: test accuracy"] > rows[0]["shared: test accuracy"] + 0.15


@pytest.mark.slow
def test_report_size():
    assert gnn_hops("report", 0).passed
