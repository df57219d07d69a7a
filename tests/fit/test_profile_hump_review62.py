"""A profile that comes down between two steps (a second branch past a hump) is sampled
across the gap, so a level crossed on the hump is found, as lmfit's one-stderr steps find
it (review 62: the doubling step jumped it and the end read -inf, "the data do not bound
it")."""

import warnings

import numpy as np
import pytest
from scipy import optimize, special, stats

import tying.fit

X = np.linspace(0, 3, 8)
# 2 exp(-1.3 x) + 0.5 with noise 0.2, rounded: a(k) has a second branch (k < 0) past a = 0
Y = np.array([2.122, 1.611, 1.072, 0.919, 0.759, 1.047, 0.348, 0.465])


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


@pytest.fixture(scope="module")
def res():
    return tying.fit.GlobalFit(
        _decay, [(X, Y)], shared=["a", "k", "c"], init={"a": 1.0, "k": 1.0, "c": 0.0}
    ).run()


def test_the_level_crossed_on_a_hump_is_found(res):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the upper side levels off (said, and kept)
        ci = res.conf_interval(["a"], sigmas=(1, 2, 3))["a"]
    # lmfit 1.3: conf_interval(out, out, p_names=['a'], sigmas=[1, 2, 3]) lower ends
    np.testing.assert_allclose(ci.lower, [1.41084528, 1.02537456, 0.33662366], rtol=1e-6)
    assert ci.upper[1] == ci.upper[2] == np.inf
    assert "lower side" not in ci.message
    # the end is a crossing, by scipy alone: a held there, k and c refitted, lmfit's F-test
    fit = optimize.least_squares(lambda q: _decay(X, ci.lower[2], *q) - Y, [1.3, 0.9])
    f = (2 * fit.cost / res.chi2 - 1) * (len(X) - 3)
    assert stats.f.cdf(f, 1, len(X) - 3) == pytest.approx(special.erf(3 / np.sqrt(2)), abs=1e-6)
