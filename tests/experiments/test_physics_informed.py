"""B14 pinn-periodic and D4 pinn-optimizers at quick size (report size: slow)."""

from __future__ import annotations

import pytest

from tying.experiments.physics_informed import pinn_optimizers, pinn_periodic


def test_pinn_periodic():
    r = pinn_periodic("quick", 0)
    assert r.passed
    m = r.measured
    assert m["hard mismatch"] < 1e-12
    assert 1e-6 < m["soft mismatch"] < 0.1
    rows = {row["PINN"].split(":")[0]: row for row in r.tables[0].rows}
    assert rows["hard"]["max |u_x(0,t) − u_x(L,t)|"] < 1e-10  # slopes too, by construction


def test_pinn_optimizers():
    r = pinn_optimizers("quick", 0)
    m = r.measured
    assert m["clean: L-BFGS / Adam error"] < 1 / 3
    assert m["noisy gradients: L-BFGS / Adam error"] > 3
    # stop 35: both Adam runs on fixed points are still gaining at 300 steps (at 1,500 the
    # clean ratio reads 1.33, Adam ahead): no pass is given on them
    assert m["Adam runs still gaining at the step budget (fixed points)"] == "2 of 2"
    assert not r.passed
    assert "2 of 2 were" in r.notes and "5x the Adam steps" in r.notes


def test_pinn_optimizers_verdict_follows_from_the_measured_numbers():
    # every number the check compares is on the page: the fourth condition's was not
    r = pinn_optimizers("quick", 1)
    m = r.measured
    verdict = (
        m["clean: L-BFGS / Adam error"] < 1 / 3
        and m["noisy/clean error growth, L-BFGS"] > 3 * m["noisy/clean error growth, Adam"]
        and m["noisy gradients: L-BFGS / Adam error"] > 3
        and m["Adam error, noisy gradients / noisy data"] < 3
        and m["Adam runs still gaining at the step budget (fixed points)"].startswith("0 of")
    )
    assert verdict == r.passed
    assert "Check:" in r.notes and "< 3× its error on noisy data" in r.notes


def test_pinn_periodic_notes_state_the_check():
    # a FAIL at another seed (soft mismatch 0.106 at report size, seed 1) must say which bound
    r = pinn_periodic("quick", 2)
    assert "1e-6 < soft mismatch < 0.1" in r.notes and "< 0.2 soft" in r.notes
    m = r.measured
    verdict = (
        m["hard mismatch"] < 1e-12
        and 1e-6 < m["soft mismatch"] < 0.1
        and m["hard residual"] < 0.15
        and m["soft residual"] < 0.15
        and m["hard error"] < 0.05
        and m["soft error"] < 0.2
    )
    assert verdict == r.passed


@pytest.mark.slow
def test_report_size():
    assert pinn_periodic("report", 0).passed


@pytest.mark.slow
def test_pinn_optimizers_report_size_gives_no_pass_on_runs_still_gaining():
    # stop 35: with 3,000 Adam steps the report check failed (clean ratio 0.41, Adam's
    # noisy/clean growth 461): the 600-step pass rested on Adam runs still gaining
    r = pinn_optimizers("report", 0)
    assert r.measured["Adam runs still gaining at the step budget (fixed points)"] == "3 of 6"
    assert not r.passed
