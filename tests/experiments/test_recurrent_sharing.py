"""B11 lstm-tied-gates and D6 network-motifs at quick size (report size: slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tying.experiments.recurrent_sharing import (
    ffl_count,
    lstm_tied_gates,
    network_motifs,
    null_ffl_counts,
)


def test_lstm_tied_gates():
    r = lstm_tied_gates("quick", 0)
    assert r.passed
    m = r.measured
    assert m["params saved (2·H·D)"] == 2 * 8 * 17
    assert m["gap tied"] < m["gap untied"]
    assert m["train MSE tied"] > m["train MSE untied"]  # the cost in expressiveness


def test_network_motifs():
    r = network_motifs("quick", 0)
    assert r.passed
    m = r.measured
    assert abs(m["mean FFL z before"]) < 1.5
    assert m["mean FFL z after"] > 2.0


def test_ffl_count_and_degree_preserving_null():
    a = np.zeros((3, 3))
    a[0, 1] = a[1, 2] = a[0, 2] = 1  # one feed-forward loop
    assert ffl_count(a) == 1
    a[2, 0], a[0, 2] = 1, 0  # a 3-cycle is not one
    assert ffl_count(a) == 0
    rng = np.random.default_rng(0)
    g = (rng.random((20, 20)) < 0.15).astype(float)
    np.fill_diagonal(g, 0)
    counts = null_ffl_counts(g, rng, 30)
    assert counts.shape == (30,) and counts.std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("fn", [lstm_tied_gates, network_motifs])
def test_report_size(fn):
    assert fn("report", 0).passed
