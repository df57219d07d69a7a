"""GMMHMM: brute-force likelihood, tied codebook = untied when states agree, EM monotone, hmmlearn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from tying.hmm import GMMHMM, GaussianHMM

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

SEMI = {"means": "all", "covars": "all"}  # the tied-mixture (semi-continuous) HMM


def _codebook(rng, M=3, D=2, full=False):
    means = rng.normal(scale=3.0, size=(M, D))
    if full:
        B = rng.normal(size=(M, D, D))
        return means, B @ B.transpose(0, 2, 1) + 0.5 * np.eye(D)
    return means, rng.uniform(0.5, 2.0, size=(M, D))


def _semi(rng, K=3, M=3, D=2, full=False):
    means, cov = _codebook(rng, M, D, full)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    W = rng.dirichlet(np.ones(M), size=K)
    return start, A, W, np.repeat(means[None], K, 0), np.repeat(cov[None], K, 0)


def _sample(rng, means, cov, n, full=False):
    M, D = means.shape
    mix = rng.integers(0, M, n)
    if full:
        return np.array([rng.multivariate_normal(means[m], cov[m]) for m in mix])
    return means[mix] + rng.normal(size=(n, D)) * np.sqrt(cov[mix])


@pytest.mark.parametrize("ctype", ["diag", "full"])
@pytest.mark.parametrize("ties", [None, SEMI, {"weights": [[0, 2]]}])
def test_score_equals_brute_force_over_every_state_and_mixture_path(ctype, ties):
    rng = np.random.default_rng(0)
    full = ctype == "full"
    start, A, W, means, cov = _semi(rng, K=2, M=2, D=2, full=full)
    if ties and "weights" in ties:
        start, A, W, means, cov = _semi(rng, K=3, M=2, D=2, full=full)
        W[2] = W[0]
    m = GMMHMM.from_params(start, A, W, means, cov, covariance_type=ctype, ties=ties)
    X = _sample(rng, means[0], cov[0], 4, full)
    K, M = W.shape
    dens = np.array(
        [
            [
                multivariate_normal(means[k, j], cov[k, j] if full else np.diag(cov[k, j])).pdf(X)
                for j in range(M)
            ]
            for k in range(K)
        ]
    )  # (K, M, T)
    total = 0.0
    for path in itertools.product(range(K), repeat=len(X)):
        for mix in itertools.product(range(M), repeat=len(X)):
            p = start[path[0]]
            for t, (k, j) in enumerate(zip(path, mix)):
                if t:
                    p *= A[path[t - 1], k]
                p *= W[k, j] * dens[k, j, t]
            total += p
    np.testing.assert_allclose(m.score(X), np.log(total), rtol=1e-12)


@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_tied_codebook_whose_states_agree_equals_the_untied_model(ctype):
    rng = np.random.default_rng(1)
    full = ctype == "full"
    start, A, W, means, cov = _semi(rng, full=full)
    X = _sample(rng, means[0], cov[0], 120, full)
    lengths = [70, 50]
    tied = GMMHMM.from_params(start, A, W, means, cov, covariance_type=ctype, ties=SEMI)
    free = GMMHMM.from_params(start, A, W, means, cov, covariance_type=ctype)
    np.testing.assert_allclose(tied.score(X, lengths), free.score(X, lengths), rtol=1e-13)
    np.testing.assert_allclose(
        tied.predict_proba(X, lengths), free.predict_proba(X, lengths), atol=1e-12
    )
    assert np.array_equal(tied.predict(X, lengths), free.predict(X, lengths))
    # one EM step: the tied codebook is the pooled (mass-weighted) update of the untied ones
    kw = dict(
        covariance_type=ctype,
        n_iter=1,
        startprob_init=start,
        transmat_init=A,
        weights_init=W,
        means_init=means,
        covars_init=cov,
    )
    t1 = GMMHMM(3, 3, ties=SEMI, **kw).fit(X, lengths)
    f1 = GMMHMM(3, 3, **kw).fit(X, lengths)
    assert t1.history_ == pytest.approx(f1.history_, rel=1e-13)
    np.testing.assert_allclose(t1.weights_, f1.weights_, rtol=1e-10)  # weights are not tied
    post = free.predict_proba(X, lengths)
    log_w = np.log(W)
    comp = np.stack(
        [
            multivariate_normal(means[0, j], cov[0, j] if full else np.diag(cov[0, j])).logpdf(X)
            for j in range(3)
        ],
        1,
    )
    r = post[:, :, None] * np.exp(
        log_w[None]
        + comp[:, None, :]
        - np.log(np.exp(log_w[None] + comp[:, None, :]).sum(2, keepdims=True))
    )
    pooled = (r.sum(1)[:, :, None] * X[:, None, :]).sum(0) / r.sum((0, 1))[:, None]
    np.testing.assert_allclose(t1.group_params("means")[0], pooled, rtol=1e-9)
    assert np.array_equal(t1.means_[0], t1.means_[2])


@pytest.mark.parametrize("ctype", ["diag", "full"])
@pytest.mark.parametrize("ties", [None, SEMI, {"weights": "all", "transitions": [[0, 1]]}])
def test_em_log_likelihood_never_decreases(ctype, ties):
    rng = np.random.default_rng(2)
    means, cov = _codebook(rng, 4, 2, ctype == "full")
    X = _sample(rng, means, cov, 300, ctype == "full")
    m = GMMHMM(3, 3, covariance_type=ctype, ties=ties, n_iter=20, tol=-np.inf, random_state=0).fit(
        X, [150, 100, 50]
    )
    h = np.array(m.history_)
    assert len(h) == 20 and h[-1] > h[0]
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))


def test_semi_continuous_stores_one_codebook_and_counts_it_once():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 2))
    m = GMMHMM(4, 5, ties=SEMI, n_iter=2, random_state=0).fit(X)
    assert m.group_params("means").shape == (1, 5, 2) and m.group_params("covars").shape == (
        1,
        5,
        2,
    )
    untied = GMMHMM(4, 5, n_iter=2, random_state=0).fit(X)
    # free: 3 start + 4·3 transitions + 4·4 weights + one codebook (5·2 + 5·2) vs four
    assert m.n_free_parameters() == 3 + 12 + 16 + 20
    assert untied.n_free_parameters() == 3 + 12 + 16 + 80


def test_one_mixture_component_is_a_gaussian_hmm():
    rng = np.random.default_rng(4)
    start, A = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), size=3)
    means, var = rng.normal(size=(3, 2)), rng.uniform(0.5, 2, (3, 2))
    X = rng.normal(size=(80, 2))
    g = GMMHMM(
        3,
        1,
        startprob_init=start,
        transmat_init=A,
        weights_init=np.ones((3, 1)),
        means_init=means[:, None],
        covars_init=var[:, None],
        n_iter=5,
        tol=-np.inf,
    ).fit(X)
    h = GaussianHMM(
        3,
        "diag",
        startprob_init=start,
        transmat_init=A,
        means_init=means,
        covars_init=var,
        n_iter=5,
        tol=-np.inf,
    ).fit(X)
    np.testing.assert_allclose(g.history_, h.history_, rtol=1e-12)
    np.testing.assert_allclose(g.means_[:, 0], h.means_, rtol=1e-10)


@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_untied_gmmhmm_matches_hmmlearn(ctype):
    """Same script, same numbers; covariances are left out of EM here on purpose.

    hmmlearn's GMMHMM updates a covariance around the *previous* means (its
    statistics are gathered in the E-step); ours is the exact M-step around the
    new means, so fitted covariances differ by design (see docs/hmm.md).
    """
    hmm = pytest.importorskip("hmmlearn.hmm", reason="hmmlearn not installed")
    import tying.hmm as ours

    rng = np.random.default_rng(5)
    full = ctype == "full"
    start, A, W, means, cov = _semi(rng, K=2, M=2, D=2, full=full)
    means = means + rng.normal(scale=0.3, size=means.shape)  # states differ
    X = _sample(rng, means[0], cov[0], 150, full)
    fitted = []
    for module in (hmm, ours):
        m = module.GMMHMM(
            n_components=2,
            n_mix=2,
            covariance_type=ctype,
            init_params="",
            params="stwm",
            n_iter=8,
            tol=-np.inf,
        )
        m.startprob_, m.transmat_, m.weights_, m.means_, m.covars_ = start, A, W, means, cov
        scored = m.score(X)
        fitted.append((scored, m.fit(X)))
    (s_ref, ref), (s_ours, got) = fitted
    np.testing.assert_allclose(s_ours, s_ref, rtol=1e-10)
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-9)
    for name in ("weights_", "means_", "covars_", "transmat_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-6, atol=1e-9)


def test_bad_settings_and_assignments_are_named():
    with pytest.raises(ValueError, match="n_mix must be a positive integer, got 0"):
        GMMHMM(2, 0).fit(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GMMHMM(2, 2, covariance_type="tied").fit(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="covars_prior=0.5 is not supported"):
        GMMHMM(2, 2, covars_prior=0.5).fit(np.zeros((5, 1)))
    m = GMMHMM(2, 2, ties=SEMI)
    with pytest.raises(ValueError, match=r"weights_ must sum to 1"):
        m.weights_ = [[0.5, 0.6], [0.5, 0.5]]
    with pytest.raises(ValueError, match=r"means_: states 0 and 1 are tied"):
        m.means_ = np.arange(8.0).reshape(2, 2, 2)
    with pytest.raises(ValueError, match=r"covars_\[0, 1\]: variances must be positive"):
        m.covars_ = np.array([[[1.0], [-1.0]], [[1.0], [-1.0]]])


def test_sample_draws_from_the_state_and_its_mixture_weights():
    # state 0 uses only codebook entry 0 (at -10), state 1 only entry 1 (at +10)
    m = GMMHMM.from_params(
        [1.0, 0.0],
        [[0.0, 1.0], [1.0, 0.0]],
        [[1.0, 0.0], [0.0, 1.0]],
        np.array([[[-10.0], [10.0]]] * 2),
        np.full((2, 2, 1), 0.01),
        ties=SEMI,
    )
    X, states = m.sample(40, random_state=0)
    assert states.tolist() == [0, 1] * 20
    assert np.all(np.sign(X[:, 0]) == np.where(states == 0, -1, 1))


def test_each_em_iteration_computes_the_mixture_densities_once(monkeypatch):
    """The M-step re-uses the E-step's component tables (the parameters do not change in
    between): one density pass per iteration, not two."""
    X = np.random.default_rng(0).normal(size=(300, 2))
    calls = []
    log_parts = GMMHMM._log_parts

    def spy(self, X):
        calls.append(len(X))
        return log_parts(self, X)

    monkeypatch.setattr(GMMHMM, "_log_parts", spy)
    GMMHMM(2, n_mix=2, n_iter=4, tol=-np.inf, random_state=0).fit(X)
    assert len(calls) == 4
