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
    assert r.passed
    m = r.measured
    assert m["clean: L-BFGS / Adam error"] < 1 / 3
    assert m["noisy gradients: L-BFGS / Adam error"] > 3


def test_pinn_optimizers_verdict_follows_from_the_measured_numbers():
    # every number the check compares is on the page: the fourth condition's was not
    r = pinn_optimizers("quick", 1)
    m = r.measured
    verdict = (
        m["clean: L-BFGS / Adam error"] < 1 / 3
        and m["noisy/clean error growth, L-BFGS"] > 3 * m["noisy/clean error growth, Adam"]
        and m["noisy gradients: L-BFGS / Adam error"] > 3
        and m["Adam error, noisy gradients / noisy data"] < 3
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
@pytest.mark.parametrize("fn", [pinn_periodic, pinn_optimizers])
def test_report_size(fn):
    assert fn("report", 0).passed
