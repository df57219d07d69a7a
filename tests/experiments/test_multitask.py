"""C6 multitask: the soft-sharing dial runs from independent to hard sharing."""

from __future__ import annotations

import pytest

from tying.experiments.multitask import multitask
from tying.experiments.registry import REGISTRY


def test_registered_under_its_claim_id():
    assert REGISTRY["multitask"].fn is multitask


def test_quick_shows_the_dial():
    r = multitask("quick", 0)
    m = r.measured
    assert r.passed, m
    assert m["soft_smallest_lambda_vs_independent_rel"] <= 0.10
    assert m["soft_largest_lambda_vs_hard_rel"] <= 0.05
    assert m["soft_best_mse"] < m["hard_mse"] < m["independent_mse"] < m["fully_shared_mse"]
    assert "multitask_dial" in r.figures


def test_deterministic_for_a_seed():
    assert multitask("quick", 3).measured == multitask("quick", 3).measured


@pytest.mark.slow
def test_report_size():
    assert multitask("report", 0).passed


def test_fits_run_to_convergence_and_say_so():
    # stop 35: a cap of 50 L-BFGS iterations stopped the λ = 1e3 fits still moving
    m = multitask("quick", 0).measured
    assert m["fits not converged (restart moves test MSE > moved_tol)"] == "0 of 14"
    assert m["largest relative test-MSE change on restarting L-BFGS"] < 1e-2


def test_a_fit_stopped_at_its_cap_fails_the_check(monkeypatch):
    import dataclasses

    import tying.experiments.multitask as mod

    short = dataclasses.replace(mod.CONFIGS["quick"], lbfgs_iters=50)
    monkeypatch.setitem(mod.CONFIGS, "quick", short)
    r = multitask("quick", 0)
    assert r.measured["fits not converged (restart moves test MSE > moved_tol)"] == "2 of 14"
    assert not r.passed
    assert "2 of 14 fits moved" in r.notes
