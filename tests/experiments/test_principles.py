"""A1 param-counts, A2 conv-is-tied-lc, A5 rnn-unrolled at quick size (report size: slow)."""

from __future__ import annotations

import pytest
import torch

import tying
from tying.experiments.common import UnrolledRNN
from tying.experiments.principles import conv_is_tied_lc, param_counts, rnn_unrolled


def test_param_counts_are_the_seeds_numbers():
    r = param_counts("quick", 0)
    assert r.passed
    assert r.measured["fully connected"] == 9_437_184 == (32 * 32 * 3) ** 2
    assert r.measured["conv 3→16"] == 448 == 16 * (3 * 3 * 3 + 1)
    counted = {row["formula"]: row["counted from the layer"] for row in r.tables[0].rows}
    assert counted["HW·c'·k²c"] == 32 * 32 * 3 * 27
    assert set(r.figures) == {"counts"}


def test_conv_is_tied_lc():
    r = conv_is_tied_lc("quick", 0)
    assert r.passed
    assert r.measured["largest difference tied vs conv"] <= 1e-10
    assert r.measured["untied spread after one step"] > 1e-3
    assert r.measured["params tied LC"] == r.measured["params conv"]
    assert r.measured["params untied LC"] == 64 * r.measured["params conv"]  # 8×8 positions


def test_rnn_unrolled():
    r = rnn_unrolled("quick", 0)
    assert r.passed
    assert r.measured["max |tied − RNN|"] <= 1e-12
    assert r.measured["physical params"] == r.measured["nn.RNN params"]
    assert r.measured["logical params"] == 20 * r.measured["nn.RNN params"]


def test_unrolled_rnn_tie_holds_after_an_optimizer_step():
    net = UnrolledRNN(3, 4, steps=5)
    tying.Plan([tying.share("steps.*", like="steps.0")]).apply(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(2, 5, 3)).sum().backward()
    opt.step()
    assert all(s.hh.weight is net.steps[0].hh.weight for s in net.steps)
    tying.verify(net)


@pytest.mark.slow
@pytest.mark.parametrize("fn", [param_counts, conv_is_tied_lc, rnn_unrolled])
def test_report_size(fn):
    assert fn("report", 0).passed
