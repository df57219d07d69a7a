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


@pytest.mark.slow
@pytest.mark.parametrize("fn", [pinn_periodic, pinn_optimizers])
def test_report_size(fn):
    assert fn("report", 0).passed
