"""Stop 59: a profile end past ``max_steps`` is NaN (not measured), not ±inf.

``conf_interval(max_steps=2)`` set the 3 σ ends of a well-determined rate to ``-inf`` /
``inf`` (lmfit's ``maxiter`` does the same), which reads as "the data do not bound it":
the ends are 0.646 and 0.818 with the default budget. The warning also gave the same
sentence twice, once per side, without saying which.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit
from tying.fit import FitWarning


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 5, 30)
    y = 3 * np.exp(-0.7 * x) + 0.5 + rng.normal(0, 0.05, 30)
    return tying.fit.GlobalFit(
        lambda x, a, k, c: a * np.exp(-k * x) + c,
        [(x, y, 0.05)],
        shared=["a", "k", "c"],
        init={"a": 1.0, "k": 1.0, "c": 0.0},
    ).run()


def test_an_end_past_the_budget_is_nan_and_names_its_side(result):
    full = result.conf_interval(["k"], sigmas=(1, 3))["k"]
    assert np.all(np.isfinite(full.lower)) and np.all(np.isfinite(full.upper))
    assert full.lower[1] == pytest.approx(0.6462, abs=1e-3)
    match = (
        r"2 steps of the profile of k toward its lower end did not reach 0\.9973 probability "
        r"\(level\(s\) 3 σ set to NaN, not measured\); raise max_steps; 2 steps of the "
        r"profile of k toward its upper end"
    )
    with pytest.warns(FitWarning, match=match):
        short = result.conf_interval(["k"], sigmas=(1, 3), max_steps=2)["k"]
    # the 1 σ ends were reached within the budget and agree; the 3 σ ends were not
    np.testing.assert_allclose([short.lower[0], short.upper[0]], [full.lower[0], full.upper[0]])
    assert np.isnan(short.lower[1]) and np.isnan(short.upper[1])
    assert "toward its upper end" in short.message
    # the advice, followed (the default max_steps=30), measured them above: `full`
