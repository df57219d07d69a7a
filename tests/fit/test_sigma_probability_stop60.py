"""lmfit's probabilities given as sigma: the advice names the level of the p given (stop 60).

The hint printed p = 0.95's level (1.9600) whatever p was; for p = 0.68 or 0.5 the formula
it gave leads to a sigma below 1, refused again; sigmas=(0.6827, 0.9545) was advised one
level only; conf_interval(probs=[...]) named no level.
"""

import re

import numpy as np
import pytest
from scipy import special, stats

from tying.fit import GlobalFit
from tying.fit.uncertainty import probabilities_advice


@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 2, 40)
    data = [(x, 2.0 * np.exp(-1.5 * x) + rng.normal(0, 0.02, 40), 0.02)]
    return GlobalFit(
        lambda x, a, k: a * np.exp(-k * x), data, shared=["a", "k"], init={"a": 1.0, "k": 1.0}
    ).run()


def test_eval_uncertainty_names_the_level_of_the_probability_given(res):
    x = np.linspace(0, 2, 3)
    with pytest.raises(ValueError, match=r"got 0.9973; .*: pass sigma=3$"):
        res.eval_uncertainty(0, x, sigma=0.9973)
    # the advice, followed, is p = 0.9973's band: Student's t quantiles, as lmfit's
    t = stats.t.ppf((1 + np.array([0.9973, special.erf(np.sqrt(0.5))])) / 2, res.nfree)
    np.testing.assert_allclose(
        res.eval_uncertainty(0, x, sigma=3),
        t[0] / t[1] * res.eval_uncertainty(0, x, sigma=1),
        rtol=1e-4,
    )


@pytest.mark.parametrize("p", [0.68, 0.5])
def test_a_probability_below_one_sigma_is_named_as_such(res, p):
    with pytest.raises(ValueError, match=rf"p = {p} is 0\.\d+ σ, below the lowest level"):
        res.eval_uncertainty(0, np.linspace(0, 2, 3), sigma=p)


@pytest.mark.parametrize(
    ("sigmas", "advice"),
    [((0.6827, 0.9545), "(1, 2)"), ((1, 0.95), "(1, 1.96)"), ((0.95,), "(1.96,)")],
)
def test_conf_interval_advises_every_level(res, sigmas, advice):
    with pytest.raises(ValueError, match=": pass sigmas=" + re.escape(advice)):
        res.conf_interval(["k"], sigmas=sigmas)
    followed = res.conf_interval(["k"], sigmas=eval(advice))["k"]  # noqa: S307 (our own text)
    assert followed.sigmas == pytest.approx(sorted(eval(advice)))  # noqa: S307


def test_conf_interval_probs_keyword_names_the_levels(res):
    with pytest.raises(TypeError, match=r"'probs': .*erfinv\(p\): pass sigmas=\(1, 2\)"):
        res.conf_interval(["k"], probs=[0.6827, 0.9545])


def test_probabilities_advice_reads_only_probabilities():
    assert probabilities_advice([0.6827, 0.95]) == "pass sigmas=(1, 1.96)"
    assert probabilities_advice(0.95, "sigma") == "pass sigma=1.96"
    assert probabilities_advice([True]) == probabilities_advice("x") == ""
    assert probabilities_advice([2, 0.95]) == ""  # 2 is no probability
    assert probabilities_advice([2, 0.95], sigmas_too=True) == "pass sigmas=(2, 1.96)"
