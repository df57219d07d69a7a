"""B5 bptt-sum and B15 tied-init at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.gradients import bptt_sum, tied_init


def test_bptt_sum():
    r = bptt_sum("quick", 0)
    assert r.passed
    for case in ("RNN over time", "Siamese towers", "cross-layer (ALBERT)"):
        assert r.measured[f"{case}: relative error"] <= 1e-12
        assert r.measured[f"{case}: closest single use"] > 1e-3
    assert r.measured["nn.RNN vs tied"] <= 1e-12
    rows = {row["sharing"]: row for row in r.tables[0].rows}
    rnn = rows["RNN over time"]
    assert rnn["logical params"] == rnn["uses"] * rnn["physical params"]


def test_tied_init():
    r = tied_init("quick", 0)
    assert r.passed
    assert r.measured["all fan_in correct"]
    lo, hi = r.measured["conv, right fan-in: min/max over depth"]
    assert 0.25 <= lo and hi <= 4.0
    assert r.measured["conv, reuse counted: last layer"] < 1e-3
    fans = {row["layer"]: row["tying.fan_in"] for row in r.tables[0].rows}
    assert fans["Conv2d(16 → 32, 3×3, groups=4)"] == 36
    assert fans["LSTM(10, 20)"] == 30


@pytest.mark.slow
@pytest.mark.parametrize("fn", [bptt_sum, tied_init])
def test_report_size(fn):
    assert fn("report", 0).passed
