"""A mean tied across states whose covariances differ takes the exact M-step.

Before stop 50 the M-step pooled a means group's statistics, ``(Σ S_k) / (Σ N_k)``,
which maximises EM's Q only when the group's covariances are equal. With unequal
covariances a fit stopped with ``converged_=True`` where moving the shared mean raised
the log-likelihood by 8.8 nats (score -1784.12; the exact step reaches -1633.40). The
references here are a brute-force log-space E-step and the precision-weighted mean
``(Σ N_k Λ_k + w Λ_first)^{-1} (Σ Λ_k S_k + w Λ_first p)``, written out by hand.
"""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from tying.hmm import GMMHMM, GaussianHMM

from .helpers import reference_forward_backward, split

pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")


def _scale_mixture(n=600, seed=0):
    """Rows around one location 1.0: half narrow, half wide and skewed."""
    rng = np.random.default_rng(seed)
    narrow = rng.random(n) < 0.5
    return np.where(narrow, rng.normal(1.0, 0.5, n), 1.0 + np.abs(rng.normal(0, 8, n)))[:, None]


def _as_matrices(covariance_type, covars, K, D):
    c = np.asarray(covars, dtype=float)
    if covariance_type == "spherical":
        return np.array([v * np.eye(D) for v in c])
    if covariance_type == "diag":
        return np.array([np.diag(v) for v in c])
    return c


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full"])
def test_a_converged_tied_mean_is_a_stationary_point(covariance_type):
    X = _scale_mixture()
    m = GaussianHMM(
        2, covariance_type, ties={"means": "all"}, n_iter=500, tol=1e-10, random_state=0
    ).fit(X)
    assert m.converged_
    assert np.all(np.diff(m.history_) >= -1e-9 * np.abs(m.history_[1:]))

    def score_at(shift):
        covars = np.asarray(m.covars_)
        if covariance_type == "spherical":
            covars = covars[:, 0, 0]
        elif covariance_type == "diag":
            covars = np.array([np.diag(c) for c in covars])
        moved = GaussianHMM.from_params(
            m.startprob_,
            m.transmat_,
            m.means_ + shift,
            covars,
            covariance_type=covariance_type,
            ties={"means": "all"},
        )
        return moved.score(X)

    h = 1e-4
    slope = (score_at(h) - score_at(-h)) / (2 * h)
    assert abs(slope) < 1e-2, f"d score / d mean = {slope} at a converged fit (was -23.3)"
    assert score_at(-0.75) < m.score(X)  # the pooled fit's shift no longer helps
    assert m.score(X) > -1700  # the pooled M-step stopped at -1784.12


def _one_step_reference(covariance_type, start, A, means, cv, X, lengths, groups, w, prior):
    """Brute-force E-step, then the tied means' exact M-step with the old covariances."""
    K, D = means.shape
    C = _as_matrices(covariance_type, cv, K, D)
    log_b = np.column_stack(
        [multivariate_normal(means[k], C[k]).logpdf(X).reshape(-1) for k in range(K)]
    )
    parts = [reference_forward_backward(start, A, b) for b in split(log_b, lengths)]
    ll = sum(p[0] for p in parts)
    gamma = np.vstack([p[1] for p in parts])
    N, S = gamma.sum(0), gamma.T @ X
    want = means.copy()
    for g in groups:
        lam = [np.linalg.inv(C[k]) for k in g]
        A_ = sum(N[k] * L for k, L in zip(g, lam)) + w * lam[0]
        b_ = sum(L @ S[k] for k, L in zip(g, lam)) + w * lam[0] @ prior
        want[g] = np.linalg.solve(A_, b_)
    return ll, want


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full"])
@pytest.mark.parametrize("w", [0.0, 2.5])
@pytest.mark.parametrize("lengths", [[7, 1, 12], [1] * 6])
def test_one_em_step_of_tied_means_over_unequal_covariances_is_exact(covariance_type, w, lengths):
    rng = np.random.default_rng(len(lengths) + int(10 * w))
    K, D = 3, 2
    X = rng.normal(size=(sum(lengths), D)) + rng.integers(0, 2, size=(sum(lengths), 1)) * 2
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K)
    means = rng.normal(size=(K, D))
    means[1] = means[0]  # states 0 and 1 share a mean; covariances untied
    if covariance_type == "spherical":
        cv = np.array([0.5, 3.0, 1.0])
    elif covariance_type == "diag":
        cv = np.array([[0.5, 2.0], [3.0, 0.7], [1.0, 1.0]])
    else:
        cv = np.array([[[1.0, 0.6], [0.6, 1.0]], [[3.0, -0.5], [-0.5, 0.8]], np.eye(2)])
    prior = np.array([0.3, -0.2])
    m = GaussianHMM(
        K,
        covariance_type,
        ties={"means": [[0, 1]]},
        init_params="",
        params="m",
        n_iter=1,
        tol=-np.inf,
        means_weight=w,
        means_prior=prior,
    )
    m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, cv
    m.fit(X, lengths)
    ll, want = _one_step_reference(
        covariance_type, start, A, means, cv, X, lengths, [[0, 1], [2]], w, prior
    )
    np.testing.assert_allclose(m.history_, [ll], rtol=1e-12)
    np.testing.assert_allclose(m.means_, want, rtol=1e-10, atol=1e-12)
    assert np.array_equal(m.means_[0], m.means_[1]), "the tie no longer holds"


def test_equal_covariances_keep_the_pooled_mean():
    """A means group over one covariance (covars tied alike, or "tied") is pooled, exactly."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    for covariance_type, ties in (
        ("diag", {"means": [[0, 1]], "covars": [[0, 1]]}),
        ("tied", {"means": [[0, 1]]}),
    ):
        m = GaussianHMM(
            3, covariance_type, ties=ties, init_params="", params="m", n_iter=1, tol=-np.inf
        )
        m.startprob_ = [0.4, 0.3, 0.3]
        m.transmat_ = np.full((3, 3), 1 / 3)
        m.means_ = [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
        m.covars_ = np.ones((3, 2)) if covariance_type == "diag" else np.eye(2)
        gamma = m.predict_proba(X)
        m.fit(X)
        N, S = gamma.sum(0), gamma.T @ X
        np.testing.assert_allclose(m.means_[0], (S[0] + S[1]) / (N[0] + N[1]), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_gmm_component_tied_over_unequal_covariances_takes_the_exact_step(covariance_type):
    rng = np.random.default_rng(7)
    K, M, D, lengths = 2, 2, 2, [15, 1, 30]
    X = rng.normal(size=(sum(lengths), D)) * 2
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K)
    W = rng.dirichlet(np.ones(M), K)
    mu = np.repeat(rng.normal(size=(1, M, D)), K, axis=0)  # one codebook of means
    if covariance_type == "diag":
        cv = rng.uniform(0.5, 2.0, (K, M, D))
        C = np.array([[np.diag(c) for c in ck] for ck in cv])
    else:
        cv = np.array(
            [[np.eye(D) * s + 0.3 for s in (0.8, 1.5)], [np.eye(D) * s for s in (2.0, 0.6)]]
        )
        C = cv
    m = GMMHMM(
        K,
        n_mix=M,
        covariance_type=covariance_type,
        ties={"means": "all"},
        init_params="",
        params="m",
        n_iter=1,
        tol=-np.inf,
    )
    m.startprob_, m.transmat_, m.weights_, m.means_, m.covars_ = start, A, W, mu, cv
    m.fit(X, lengths)
    comp = np.stack(
        [
            np.column_stack(
                [
                    np.log(W[k, j]) + multivariate_normal(mu[k, j], C[k, j]).logpdf(X)
                    for j in range(M)
                ]
            )
            for k in range(K)
        ],
        axis=1,
    )  # (N, K, M)
    log_b = logsumexp(comp, axis=2)
    parts = [reference_forward_backward(start, A, b) for b in split(log_b, lengths)]
    gamma = np.vstack([p[1] for p in parts])
    resp = gamma[:, :, None] * np.exp(comp - log_b[:, :, None])  # (N, K, M)
    for j in range(M):
        lam = [np.linalg.inv(C[k, j]) for k in range(K)]
        A_ = sum(resp[:, k, j].sum() * lam[k] for k in range(K))
        b_ = sum(lam[k] @ (resp[:, k, j] @ X) for k in range(K))
        want = np.linalg.solve(A_, b_)
        np.testing.assert_allclose(m.means_[:, j], np.repeat(want[None], K, 0), rtol=1e-10)
