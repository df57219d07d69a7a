"""B8 cross-layer-sharing at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.depth_sharing import cross_layer_sharing


@pytest.fixture(scope="module")
def quick():
    return cross_layer_sharing("quick", 0)


def test_cross_layer_sharing(quick):
    r = quick
    assert r.passed
    m = r.measured
    assert m["params untied / tied at equal width"] == 8.0
    assert m["error tied wide"] < m["error untied narrow"]
    assert 0.9 < m["convergence order"] < 1.1
    rows = r.tables[0].rows
    assert rows[2]["physical params"] <= rows[0]["physical params"]  # the same budget
    ode = [row["max |stack − ODE|"] for row in r.tables[1].rows]
    assert all(a > b for a, b in zip(ode, ode[1:]))


def test_cross_layer_sharing_shows_every_number_its_check_compares(quick):
    # the tied-narrow error and the shallowest ODE error decided the check but were not shown
    m = quick.measured
    untied, narrow, _ = quick.tables[0].rows  # untied, tied at the same width, tied wide
    assert m["error tied narrow"] == narrow["test error (rel. MSE, mean)"]
    ode = quick.tables[1].rows
    first, last = ode[0], ode[-1]
    assert m[f"ODE error at L={first['depth L']}"] == first["max |stack − ODE|"]
    assert m[f"ODE error at L={last['depth L']}"] < m[f"ODE error at L={first['depth L']}"] / 10
    assert m["error tied narrow"] > m["error untied narrow"]
    assert "Check:" in quick.notes


@pytest.mark.slow
def test_report_size():
    assert cross_layer_sharing("report", 0).passed


def test_cross_layer_sharing_says_its_runs_were_still_gaining(quick):
    # stop 36: the errors compared are at a budget of Adam steps, not at convergence; with
    # 16x the steps every error falls and the tied wide stack's edge shrinks (it still wins)
    m = quick.measured
    assert m["runs still gaining at the step budget"] == "6 of 6"
    assert "6 of 6 runs were still gaining" in quick.notes
    assert "not at convergence" in quick.notes
