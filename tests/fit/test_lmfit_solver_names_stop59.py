"""Stop 59: lmfit's method names given as ``solver=`` get the solver meant.

``solver="leastsq"`` (lmfit's default method) was refused with "solver must be one of
('lm', 'trf')", naming neither the one meant nor why lmfit's scalar minimisers are absent.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit

X = np.linspace(0.0, 5.0, 20)
DATA = [(X, 2 * X + 1 + 0.01 * np.cos(3 * X))]


def _fit(solver):
    return tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, DATA, shared=["a", "b"], init={"a": 1.0, "b": 0.0},
        solver=solver,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given", "meant", "match"),
    [
        ("leastsq", "lm", r"got 'leastsq': lmfit's 'leastsq' \(MINPACK's .*\) is solver='lm'"),
        ("least_squares", "trf", r"got 'least_squares': lmfit's .* is solver='trf'"),
        ("TRF", "trf", r"got 'TRF': solver names are lower case; pass solver='trf'"),
        ("nelder", None, r"got 'nelder'; .* least-squares solver only: lmfit's scalar"),
    ],
)
def test_lmfit_method_names_name_the_solver_meant(given, meant, match):
    with pytest.raises(ValueError, match=r"solver must be one of \('lm', 'trf'\), " + match):
        _fit(given).run()
    if meant is not None:  # the advice, followed, fits
        res = _fit(meant).run()
        assert res.success and res.solver == meant
        assert res.values["a"] == pytest.approx(2.0, abs=1e-2)
