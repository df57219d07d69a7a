"""B5 bptt-sum and B15 tied-init at quick size (report size: slow)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import tying
from tying.experiments.gradients import _compare, bptt_sum, tied_init


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


def test_a_nan_gradient_of_any_tensor_reaches_the_check():
    """Stop 31: the worst error over a block's tensors was a running max(), which keeps
    0.0 against NaN: a NaN bias gradient (weight first) reported error 0 and B5 passed."""
    torch.manual_seed(0)
    untied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)).double()
    untied[1].load_state_dict(untied[0].state_dict())
    tied = copy.deepcopy(untied)
    tying.Plan([tying.share("1", like="0")]).apply(tied)
    x = torch.randn(4, 3, dtype=torch.float64)

    def loss(m):  # the tied model's bias gradient is NaN, its weight gradient is right
        nan = float("nan") if m is tied else 0.0
        return m(x).sum() + nan * m[0].bias.sum()

    case = _compare(untied, tied, ["0", "1"], loss)
    assert math.isnan(case["rel error"]) and math.isnan(case["closest single use"])
    assert not case["rel error"] <= 1e-12  # so bptt_sum's check fails
