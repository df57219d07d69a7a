"""A fitted covariance held at min_covar by data that vary less than it is flagged.

Stop 59: min_covar (1e-3 by default) floors every fitted variance after every M-step
(hmmlearn uses it only at the start). Two regimes of daily-return-like data (standard
deviation 0.01, variance 1e-4) fitted with every variance 1e-3 and a log-likelihood of
988 where the data's own variances give 1271, with no warning; hmmlearn fits 1e-4.
"""

import warnings

import numpy as np
import pytest

from tying.hmm import GMMHMM, CovarianceFloorWarning, GaussianHMM

RNG = np.random.default_rng(0)
SMALL = np.concatenate([RNG.normal(0, 0.01, (200, 1)), RNG.normal(0.1, 0.01, (200, 1))])


def _quiet_fit(model, X):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    return [w for w in caught if w.category is CovarianceFloorWarning]


@pytest.mark.parametrize("ct", ["diag", "spherical", "full", "tied"])
def test_small_scale_data_held_at_the_floor_warn_and_the_advice_frees_them(ct):
    kw = dict(covariance_type=ct, n_iter=50, random_state=1)
    with pytest.warns(CovarianceFloorWarning, match=r"held at the floor min_covar=0\.001: the ro"):
        floored = GaussianHMM(2, **kw).fit(SMALL)
    assert np.allclose(np.linalg.eigvalsh(floored.covars_).min(), 1e-3)  # the floor's
    assert round(floored.score(SMALL)) == 988
    freed = GaussianHMM(2, min_covar=1e-7, **kw)  # the value the message names
    assert _quiet_fit(freed, SMALL) == []
    assert round(freed.score(SMALL)) == 1271  # the data's variances, ~1e-4 as in hmmlearn
    assert np.linalg.eigvalsh(freed.covars_).max() < 2e-4


def test_the_message_names_the_state_the_variance_and_a_floor_below_it():
    with pytest.warns(CovarianceFloorWarning) as caught:
        GaussianHMM(2, n_iter=50, random_state=1).fit(SMALL)
    text = str(caught[0].message)
    assert caught[0].filename == __file__  # points at the line that called fit
    assert "state 1 (and 1 more)" in text and "variance of about 9.24e-05" in text
    assert "hmmlearn applies it only at the start" in text and "min_covar=1e-07" in text


def test_under_error_filters_the_fit_is_refused_and_the_model_unchanged():
    m = GaussianHMM(2, n_iter=50, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CovarianceFloorWarning)
        with pytest.raises(CovarianceFloorWarning):
            m.fit(SMALL)
    assert not hasattr(m, "monitor_") and "_covars" not in vars(m)


def test_covariances_the_data_cannot_determine_keep_the_floor_silently():
    rng = np.random.default_rng(1)
    # a state on one repeated value, and a constant feature: no positive ML variance
    point = np.concatenate([rng.normal(0, 1, (80, 1)), np.full((40, 1), 6.0)])
    m = GaussianHMM(2, n_iter=30, random_state=0)
    assert _quiet_fit(m, point) == []
    assert m.covars_.min() == 1e-3  # the floor did bind: that is what it is for
    const = np.column_stack([rng.normal(0, 1, 120), np.full(120, 3.0)])
    for ct in ("diag", "full"):
        m = GaussianHMM(2, ct, n_iter=10, tol=-np.inf, random_state=0)
        assert _quiet_fit(m, const) == []
        assert np.isclose(np.linalg.eigvalsh(m.covars_).min(), 1e-3)
    # unit-scale data never reach the floor: no warning, no extra cost
    assert _quiet_fit(GaussianHMM(2, n_iter=10, tol=-np.inf, random_state=0), SMALL * 100) == []


def test_a_gmm_component_held_at_the_floor_warns_and_the_advice_frees_it():
    kw = dict(n_iter=50, tol=1e-2, random_state=1)
    with pytest.warns(CovarianceFloorWarning, match=r"component \d of state \d .*min_covar=1e-07"):
        floored = GMMHMM(2, 2, **kw).fit(SMALL)
    assert round(floored.score(SMALL)) == 988  # hmmlearn's GMMHMM: 1274
    freed = GMMHMM(2, 2, min_covar=1e-7, **kw)
    assert _quiet_fit(freed, SMALL) == []
    assert round(freed.score(SMALL)) == 1273
