"""Stop 60 (second pass): numerical extremes against hmmlearn's log implementation."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM

K, D, SCALE = 3, 2, 1e-150


def _tiny_scale_fit(**kw):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(c, 1, (60, D)) for c in (0, 50, -80)]) * SCALE
    m = GaussianHMM(K, "tied", n_iter=4, tol=-np.inf, init_params="", min_covar=1e-303, **kw)
    m.startprob_ = np.full(K, 1 / K)
    m.transmat_ = np.full((K, K), 0.5 / K) + 0.5 * np.eye(K)
    m.means_ = X[[0, 90, 179]] + 0.1 * SCALE
    m.covars_ = np.eye(D) * SCALE**2
    return m, X


def test_default_covars_prior_in_force_is_named_not_no_prior():
    # init_params="" selects hmmlearn's defaults, so covars_prior=1e-2 is added to every
    # entry of the tied covariance: on data of scale 1e-150 the matrix is singular to
    # rounding. The refusal said "no prior is set"; it names the default and the fix.
    m, X = _tiny_scale_fit()
    with pytest.raises(
        ValueError,
        match=r"not positive definite .*no prior was passed, but hmmlearn's default "
        r"covars_prior=0\.01 is in force \(.*init_params was given\).*pass covars_prior=0",
    ):
        m.fit(X, [90, 90])


def test_following_the_default_prior_advice_fits():
    m, X = _tiny_scale_fit(covars_prior=0)
    m.fit(X, [90, 90])
    cov = m.covars_[0] / SCALE**2
    assert np.all(np.linalg.eigvalsh(cov) > 0.1)
    assert np.all(np.diff(m.monitor_.history) >= -1e-9 * np.abs(m.monitor_.history[1:]))
