"""A ported lmfit script: the same name on a FitResult means what it means in lmfit (stop 56).

``result.residual(i)`` was ``(model - y)/σ``, the opposite sign of lmfit's
``ModelResult.residual`` (``(data - model) * weights``); lmfit's result names
(``chisqr``, ``covar``, ...) gave a bare "no attribute" that did not name ours.
"""

import copy
import pickle

import numpy as np
import pytest

import tying.fit

X = np.linspace(0.0, 5.0, 40)
Y = 3 * np.exp(-0.7 * X) + 0.5 + np.random.default_rng(0).normal(0.0, 0.05, 40)
SIGMA = 0.05


def _decay(x, a, k, c):
    return a * np.exp(-k * x) + c


@pytest.fixture(scope="module")
def result():
    return tying.fit.GlobalFit(
        _decay, [(X, Y, SIGMA)], shared=["a", "k", "c"], init={"a": 1.0, "k": 1.0, "c": 0.0}
    ).run()


def test_residual_has_lmfits_sign(result):
    # independent reference: (data - model) * weights, lmfit's ModelResult.residual
    ref = (Y - _decay(X, **{n: result.values[n] for n in "akc"})) / SIGMA
    np.testing.assert_allclose(result.residual(0), ref, rtol=1e-9, atol=1e-9)
    assert np.sum(result.residual(0) ** 2) == pytest.approx(result.chi2, rel=1e-12)


def test_residual_equals_lmfit(result):
    lmfit = pytest.importorskip("lmfit")
    out = lmfit.Model(_decay).fit(Y, x=X, a=1.0, k=1.0, c=0.0, weights=np.full(40, 1 / SIGMA))
    np.testing.assert_allclose(result.residual(0), out.residual, atol=1e-4)


@pytest.mark.parametrize(
    ("lmfit_name", "ours"),
    [
        ("chisqr", r"result\.chi2"),
        ("covar", r"result\.covariance"),
        ("var_names", r"result\.free_names"),
    ],
)
def test_lmfit_result_names_name_ours(result, lmfit_name, ours):
    with pytest.raises(AttributeError, match=rf"no lmfit attribute '{lmfit_name}': read {ours}"):
        getattr(result, lmfit_name)


def test_other_names_and_copies_unchanged(result):
    with pytest.raises(AttributeError, match=r"'FitResult' object has no attribute 'nope'"):
        result.nope  # noqa: B018
    assert not hasattr(result, "chisqr")
    for again in (copy.deepcopy(result), pickle.loads(pickle.dumps(result))):
        np.testing.assert_array_equal(again.residual(0), result.residual(0))
        assert again.chi2 == result.chi2
