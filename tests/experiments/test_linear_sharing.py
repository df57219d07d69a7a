"""B6 rnn-identifiability and C2 tied-autoencoder-pca at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.linear_sharing import rnn_identifiability, tied_autoencoder_pca


def test_rnn_identifiability():
    r = rnn_identifiability("quick", 0)
    assert r.passed
    m = r.measured
    assert m["tied W error"] < 1e-10
    assert m["untied rank deficit"] == m["expected deficit n(n+m-1)T"] > 0
    assert m["untied W_t error"] > 0.3
    assert m["poorly excited rank"] == 1
    curve = r.tables[1].rows
    assert curve[-1]["tied W error"] < curve[0]["tied W error"] / 3
    assert all(row["untied W_t error"] > 0.3 for row in curve)


def test_tied_autoencoder_pca():
    r = tied_autoencoder_pca("quick", 0)
    assert r.passed
    m = r.measured
    assert m["max subspace angle tied (rad)"] < 1e-6
    assert m["|err tied − err untied| / err PCA"] < 1e-6
    assert m["tied W Wᵀ − I (max)"] < 1e-6  # the tied optimum is an orthonormal basis
    params = {row["model"]: row["params"] for row in r.tables[0].rows}
    assert 2 * params["tied AE (W_dec = W_encᵀ)"] == params["untied AE"]


def test_deterministic_for_a_seed():
    assert rnn_identifiability("quick", 3).measured == rnn_identifiability("quick", 3).measured


@pytest.mark.slow
@pytest.mark.parametrize("fn", [rnn_identifiability, tied_autoencoder_pca])
def test_report_size(fn):
    assert fn("report", 0).passed
