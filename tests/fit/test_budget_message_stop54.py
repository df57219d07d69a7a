"""A trf fit stopped by its budget says ``max_iter=... reached`` and the fix (stop 54).

MINPACK's and the Schur LM's budget stops named ``max_iter`` and what to do; trf's gave
scipy's "The maximum number of function evaluations is exceeded." (``success=False``
and warned, but naming neither the argument nor the fix).
"""

import numpy as np
import pytest

from tying.fit import ConvergenceWarning, GlobalFit

X = np.linspace(0, 4, 30)
Y = 2 * np.exp(-0.7 * X) + np.random.default_rng(0).normal(0, 0.02, 30)


@pytest.mark.parametrize(
    ("datasets", "roles", "bounds"),
    [
        ([(X, Y)], {"shared": ["a", "k"]}, None),
        ([(X, Y)], {"shared": ["a", "k"]}, {"k": (0.0, 5.0)}),
        ([(X, Y), (X, 2 * Y)], {"shared": ["k"], "local": ["a"]}, None),
    ],
    ids=["dense", "dense-bounded", "global-lsmr"],
)
def test_a_trf_budget_stop_names_max_iter(datasets, roles, bounds):
    fit = GlobalFit(lambda x, a, k: a * np.exp(-k * x), datasets, solver="trf", max_iter=3,
                    init={"a": 1.0, "k": 1.0}, bounds=bounds, **roles)  # fmt: skip
    with pytest.warns(ConvergenceWarning, match=r"did not converge: max_iter=3 reached"):
        res = fit.run()
    assert not res.success
    assert "max_iter=3 reached before ftol/xtol/gtol were met" in res.message
    assert "raise max_iter" in res.table()
