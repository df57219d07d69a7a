"""The covariances fit starts from the data: hmmlearn's when built hmmlearn-style (stop 33).

Before, a hmmlearn script that assigned its start probabilities, transitions and means
and let ``init_params="c"`` start the covariances from the data got other numbers than
hmmlearn for ``"diag"`` and ``"spherical"`` models (and GMMHMM ``"diag"``): variances
with ``ddof=0``, floored at ``min_covar``, where hmmlearn takes ``np.cov(X.T) +
min_covar * I``. Code written against our API keeps its own start, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.hmm as ours
from tying.hmm.start_covariance import data_covariance, start_variances

K, D = 3, 2
TYPES = ["spherical", "diag", "full", "tied"]


def _data(seed=3, lengths=(80, 30, 60)):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    X = centres[rng.integers(0, K, sum(lengths))] + rng.normal(size=(sum(lengths), D))
    return X @ np.array([[1.0, 0.4], [0.0, 1.5]]), list(lengths)  # correlated features


def _start():
    rng = np.random.default_rng(2)
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K) * 2, size=K)
    return start, A, rng.normal(scale=3.0, size=(K, D))


def _stored(m, ctype):
    """Per-state variances (spherical, diag) or matrices, from either library."""
    if m.__module__.startswith("hmmlearn"):
        c = np.asarray(m._covars_)
        return c[:, 0] if ctype == "spherical" and c.ndim == 2 else c
    c = m.covars_
    return {"spherical": c[:, 0, 0], "diag": np.diagonal(c, axis1=1, axis2=2), "tied": c[0]}.get(
        ctype, c
    )


@pytest.mark.parametrize("ctype", TYPES)
def test_init_params_c_starts_and_fits_as_hmmlearn(ctype):
    # was (diag, spherical): another start, and the fit's history 5.6% (spherical) or
    # 4.5e-4 (diag) off hmmlearn's after 10 iterations
    hmm = pytest.importorskip("hmmlearn.hmm")
    X, lengths = _data()
    start, A, means = _start()
    out = {}
    for name, module in (("ref", hmm), ("ours", ours)):
        models = []
        for n_iter in (0, 10):
            m = module.GaussianHMM(K, ctype, init_params="c", n_iter=n_iter, tol=-np.inf)
            m.startprob_, m.transmat_, m.means_ = start, A, means
            models.append(m.fit(X, lengths))
        out[name] = models
    (ref0, ref), (got0, got) = out["ref"], out["ours"]
    np.testing.assert_allclose(_stored(got0, ctype), _stored(ref0, ctype), rtol=1e-13)
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-10)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(_stored(got, ctype), _stored(ref, ctype), rtol=1e-8)


def test_gmm_init_params_c_starts_diag_components_as_hmmlearn():
    hmm = pytest.importorskip("hmmlearn.hmm")
    X, _ = _data()
    start, A, _ = _start()
    W = np.array([[0.4, 0.6], [0.5, 0.5], [0.3, 0.7]])
    mu = np.random.default_rng(4).normal(size=(K, 2, D))
    covars = []
    for module in (hmm, ours):
        m = module.GMMHMM(K, 2, covariance_type="diag", init_params="c", n_iter=0, random_state=0)
        m.startprob_, m.transmat_, m.weights_, m.means_ = start, A, W, mu
        covars.append(np.asarray(m.fit(X).covars_))
    np.testing.assert_allclose(covars[1], covars[0], rtol=1e-13)


@pytest.mark.parametrize("ctype", ["spherical", "diag"])
def test_our_own_start_is_kept_when_not_built_hmmlearn_style(ctype):
    X, _ = _data()
    m = ours.GaussianHMM(K, ctype, n_iter=0, random_state=0).fit(X)
    var = np.maximum(X.var(0), 1e-3)
    want = np.full(K, var.mean()) if ctype == "spherical" else np.tile(var, (K, 1))
    assert np.array_equal(_stored(m, ctype), want)


def test_start_variances_of_one_row_are_ones_not_nan():
    X = np.array([[1.0, 2.0]])
    assert start_variances(X, 0.5, hmmlearn=True, spherical=False).tolist() == [1.5, 1.5]
    assert data_covariance(X, 0.5).tolist() == [[1.5, 0.0], [0.0, 1.5]]
