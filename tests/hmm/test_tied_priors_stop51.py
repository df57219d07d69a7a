"""A tied mean's prior enters the covariance M-step once, as it enters the mean's.

A means group has one mean and one prior ``N(p, Σ_first / w)`` (``means_weight`` ``w``
on the group's first state's covariance; the mean's update reads it once, see
``tying.hmm.tied_means``). Before stop 51 the covariance update added ``w (mu - p)^2``
for every state of the group, so with ``ties={"means": "all", "covars": "all"}`` and
``means_weight=3`` the variance after one EM step was 0.94 off the maximiser of EM's
objective (12 rows), with no error. The reference here is that objective written out,
``Q + log prior`` over a brute-force E-step, and its derivative in each covariance group
at the fitted covariance: zero for an M-step that maximises it.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from tying.hmm import GaussianHMM

from .helpers import reference_forward_backward, split

CASES = [
    ("diag", {"means": "all", "covars": "all"}),
    ("diag", {"means": [[0, 1]], "covars": [[0, 1]]}),
    ("diag", {"means": [[0, 1]]}),  # covariances untied: only state 0's reads the prior
    ("spherical", {"means": [[1, 2]], "covars": [[0, 1, 2]]}),
    ("full", {"means": [[0, 1]], "covars": [[0, 1]]}),
    ("full", {"means": [[0, 2]], "covars": [[1, 2]]}),  # the prior on state 0's covariance
    ("tied", {"means": [[0, 1]]}),
]


def _matrices(covariance_type, cv):
    cv = np.asarray(cv, dtype=float)
    if covariance_type == "spherical":
        return np.array([v * np.eye(2) for v in cv])
    if covariance_type == "diag":
        return np.array([np.diag(v) for v in cv])
    if covariance_type == "tied":
        return np.repeat(cv[None], 3, axis=0)
    return cv


def _objective(covariance_type, ties, gamma, X, means, C, w, p, cp, cw):
    """EM's objective in the covariances (means fixed): Q + log prior, one prior per group.

    Diagonal types: per feature ``-(cw-1)/2 log v - cp/(2v)`` per covariance group and
    ``-w (mu-p)^2 / (2 v_first)`` per means group; full types: ``-(cw-D)/2 log|S| -
    tr(P S^-1)/2`` with ``P`` filled with ``cp`` and ``-w (mu-p)^T S_first^-1 (mu-p) / 2`` (hmmlearn's MAP update is
    this objective's maximiser for untied states).
    """
    K, D = means.shape
    q = sum(
        gamma[:, k] @ multivariate_normal(means[k], C[k]).logpdf(X).reshape(-1) for k in range(K)
    )
    model = GaussianHMM(K, covariance_type, ties=ties)
    tie = model._ensure_ties()
    if covariance_type == "tied":
        cov_firsts = [0]
    else:
        cov_firsts = tie.firsts("covars").tolist()
    lp = 0.0
    for f in cov_firsts:
        S = C[f]
        if covariance_type in ("diag", "spherical"):
            v = np.diag(S)
            lp += np.sum(-(cw - 1) / 2 * np.log(v) - cp / (2 * v))
        else:
            P = np.broadcast_to(cp, (D, D))  # a scalar prior fills the matrix, as in hmmlearn
            lp += -(cw - D) / 2 * np.linalg.slogdet(S)[1] - np.trace(P @ np.linalg.inv(S)) / 2
    for f in tie.firsts("means").tolist():
        d = means[f] - p
        lp += -w / 2 * d @ np.linalg.solve(C[f], d)
    return q + lp


def _directions(covariance_type, ties, K, D):
    """Symmetric perturbations of one covariance group each, in the type's own family."""
    model = GaussianHMM(K, covariance_type, ties=ties)
    groups = (
        [list(range(K))] if covariance_type == "tied" else model._ensure_ties().groups("covars")
    )
    for g in groups:
        if covariance_type == "spherical":
            units = [np.eye(D)]
        elif covariance_type == "diag":
            units = [np.diag(e) for e in np.eye(D)]
        else:
            units = [np.eye(D)[:, [i]] @ np.eye(D)[[j]] for i in range(D) for j in range(i, D)]
            units = [u + u.T for u in units]
        for u in units:
            E = np.zeros((K, D, D))
            E[g] = u
            yield E


@pytest.mark.parametrize("covariance_type, ties", CASES)
def test_one_em_step_maximises_the_map_objective_in_the_covariances(covariance_type, ties):
    rng = np.random.default_rng(5)
    K, D, lengths = 3, 2, [4, 1, 7]
    X = rng.normal(size=(sum(lengths), D)) * 1.5 + rng.normal(size=D)
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(2 * np.ones(K), K)
    m = GaussianHMM(K, covariance_type, ties=ties)
    tie = m._ensure_ties()
    means = rng.normal(size=(K, D))[tie.group_of["means"]]
    if covariance_type == "spherical":
        cv = np.full(K, 1.3)
    elif covariance_type == "diag":
        cv = rng.uniform(0.5, 2.0, (K, D))[tie.group_of["covars"]]
    elif covariance_type == "tied":
        cv = np.array([[1.2, 0.3], [0.3, 0.9]])
    else:
        cv = np.array(
            [[[1.0, 0.4], [0.4, 1.5]], [[1.0, 0.4], [0.4, 1.5]], [[2.0, -0.3], [-0.3, 0.7]]]
        )
        cv = cv[tie.group_of["covars"]]
    w, p, cp, cw = 3.0, np.array([2.0, -1.0]), 0.5, 3.0 + D
    m = GaussianHMM(
        K,
        covariance_type,
        ties=ties,
        init_params="",
        params="mc",
        n_iter=1,
        tol=-np.inf,
        means_weight=w,
        means_prior=p,
        covars_prior=cp,
        covars_weight=cw,
        min_covar=1e-9,
    )
    m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, cv
    m.fit(X, lengths)

    log_b = np.column_stack(
        [
            multivariate_normal(means[k], _matrices(covariance_type, cv)[k]).logpdf(X)
            for k in range(K)
        ]
    )
    parts = [reference_forward_backward(start, A, b) for b in split(log_b, lengths)]
    gamma = np.vstack([q[1] for q in parts])
    np.testing.assert_allclose(m.history_, [sum(q[0] for q in parts)], rtol=1e-12)

    C = np.asarray(m.covars_)
    args = (covariance_type, ties, gamma, X, np.asarray(m.means_))
    h = 1e-5
    for E in _directions(covariance_type, ties, K, D):
        up = _objective(*args, C + h * E, w, p, cp, cw)
        down = _objective(*args, C - h * E, w, p, cp, cw)
        slope = (up - down) / (2 * h)
        assert abs(slope) < 1e-5, f"d objective / d covariance = {slope:.4g} at the M-step"
    for state, group in enumerate(tie.group_of["means"]):  # the tie still holds
        first = tie.firsts("means")[group]
        assert np.array_equal(m.means_[state], m.means_[first])


def test_an_untied_model_keeps_hmmlearns_update_bit_for_bit():
    """Without ties the prior weight is read as before (hmmlearn's per-state update)."""
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 2))
    kw = dict(
        means_weight=2.0, means_prior=np.array([1.0, -1.0]), covars_prior=0.4, covars_weight=3.0
    )
    start, A = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    means, cv = rng.normal(size=(3, 2)), rng.uniform(0.5, 2, (3, 2))
    ours = GaussianHMM(3, "diag", init_params="", n_iter=1, tol=-np.inf, **kw)
    theirs = hmmlearn.GaussianHMM(3, "diag", init_params="", n_iter=1, **kw)
    for model in (ours, theirs):
        model.startprob_, model.transmat_, model.means_, model.covars_ = start, A, means, cv
        model.fit(X)
    np.testing.assert_allclose(ours.covars_, theirs.covars_, rtol=1e-12)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-12)


def test_a_tied_mean_is_continuous_in_the_covariances_with_a_per_feature_prior():
    """Covariances 1e-9 apart (the precision-weighted step) and equal (the pooled step,
    hmmlearn's per-feature ``(w p + S) / (w + N)``) give the same tied mean; with the
    prior read as ``W^1/2 Λ W^1/2`` they gave means 1.0 apart (before stop 51)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2)) + [1.0, 2.0]
    C = np.array([[1.0, 0.6], [0.6, 1.0]])
    means = {}
    for eps in (0.0, 1e-9):
        m = GaussianHMM(
            3,
            "full",
            ties={"means": [[0, 1]]},
            init_params="",
            params="m",
            n_iter=1,
            tol=-np.inf,
            means_weight=np.array([5.0, 0.1]),
            means_prior=np.array([-3.0, 3.0]),
        )
        m.startprob_, m.transmat_ = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
        m.means_, m.covars_ = (
            [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]],
            [C, C + eps * np.eye(2), np.eye(2)],
        )
        m.fit(X)
        means[eps] = np.asarray(m.means_[0])
    np.testing.assert_allclose(means[1e-9], means[0.0], rtol=1e-6)
