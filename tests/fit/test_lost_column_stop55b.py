"""A Levenberg-Marquardt step that leaves a parameter no effect on the model (stop 55).

A random global Gaussian fit (5 data sets, shared centre, a width per group, a local
amplitude; seed 78 of a 600-case sweep against lmfit): the Schur LM's second step (gain
ratio small but accepted, as MINPACK accepts one over 1e-4) cut ``width[g1]`` from 0.34 to
-2.5e-4, where the peak underflows to 0 at every x. The columns of that width and of its
data sets' amplitudes were then exactly 0, no derivative could bring them back, and the fit
stopped with ``success=False`` at chi2 5539 where lmfit's leastsq (whose step landed at
-3.5e-3, inside the support) reaches 244. The step is now taken back and damped.
"""

from __future__ import annotations

import lmfit
import numpy as np
import pytest

import tying.fit.solvers as solvers
from tying.fit import GlobalFit


def _peak(x, center, width, amplitude):
    return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2)


def _case():
    rng = np.random.default_rng(78)
    k, n = int(rng.integers(3, 7)), int(rng.integers(30, 80))
    groups = [f"g{i % 2}" for i in range(k)]
    x = np.linspace(0, 1, n)
    sig = float(rng.uniform(0.01, 0.1))
    c = rng.uniform(0.3, 0.7)
    w = {g: rng.uniform(0.02, 0.2) for g in ("g0", "g1")}
    a = rng.uniform(0.5, 3, k)
    ys = [_peak(x, c, w[groups[i]], a[i]) + rng.normal(0, sig, n) for i in range(k)]
    init = {
        "center": c + rng.normal(0, 0.1),
        "width": {g: w[g] * np.exp(rng.normal(0, 1.2)) for g in w},
        "amplitude": a * rng.uniform(0.3, 3, k),
    }
    return x, ys, sig, groups, init


def _lmfit_chi2(x, ys, sig, groups, init):
    p = lmfit.Parameters()
    p.add("c", init["center"])
    for g, v in init["width"].items():
        p.add(f"w_{g}", v)
    for i, v in enumerate(init["amplitude"]):
        p.add(f"a{i}", v)

    def residual(p):
        return np.concatenate(
            [
                (_peak(x, p["c"].value, p[f"w_{g}"].value, p[f"a{i}"].value) - y) / sig
                for i, (g, y) in enumerate(zip(groups, ys, strict=True))
            ]
        )

    return lmfit.minimize(residual, p, method="leastsq").chisqr


def test_a_step_into_the_underflow_is_taken_back_and_lmfit_chi2_reached():
    x, ys, sig, groups, init = _case()
    data = [(x, y, sig, {"grp": g}) for g, y in zip(groups, ys, strict=True)]
    res = GlobalFit(
        _peak, data, shared=["center"], per_group={"width": "grp"}, local=["amplitude"],
        init=init,
    ).run()  # fmt: skip
    reference = _lmfit_chi2(x, ys, sig, groups, init)
    assert res.success, res.message
    # before: success=False at chi2 5539 with width[g1] = -2.5e-4 (lmfit: 243.8)
    assert res.chi2 <= reference * (1 + 1e-6)
    assert abs(res.values["width"]["g1"]) > 0.05


@pytest.mark.parametrize(
    ("before", "after", "lost"),
    [
        ([1.0, 2.0], [0.0, 2.0], True),  # a column underflowed to 0
        ([1.0, 2.0], [1e-101, 2.0], True),
        ([1.0, 2.0], [1e-9, 2.0], False),  # b of a*x + b**2 shrinking towards 0
        ([0.0, 2.0], [0.0, 3.0], False),  # a column 0 from the start is not lost
        ([np.inf, 2.0], [1.0, 3.0], False),  # an overflowing column is named elsewhere
    ],
)
def test_lost_columns_reads_only_a_collapse_past_lost_column(before, after, lost):
    assert solvers._lost_columns(np.array(before), np.array(after)) is lost
