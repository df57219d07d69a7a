"""D10 dp-sgd: right norms on a tied model, the naive budget understated, accuracy vs ε."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

from tying.experiments.dp_sgd import dp_sgd  # noqa: E402
from tying.experiments.registry import REGISTRY  # noqa: E402


def test_registered_under_its_claim_id():
    assert REGISTRY["dp-sgd"].fn is dp_sgd
    assert REGISTRY["dp-sgd"].requires == ("opacus",)


def test_quick_shows_the_claim():
    r = dp_sgd("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["ghost_vs_explicit_max_rel_err"] <= 1e-6 < m["no_cross_terms_max_rel_err"]
    assert m["true_over_naive_at_100000_steps"] > 100  # orders of magnitude
    assert m["epsilon_naive_run"] < m["epsilon_prv_run"] <= m["epsilon_rdp_run"]
    runs = r.tables[0].rows
    assert math.isinf(runs[0]["epsilon (RDP)"])  # σ = 0 buys no privacy
    assert m["accuracy_most_private"] <= m["accuracy_sigma1"] <= m["accuracy_nonprivate"] + 0.02


@pytest.mark.slow
def test_report_size():
    assert dp_sgd("report", 0).passed
