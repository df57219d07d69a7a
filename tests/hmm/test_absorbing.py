"""Models with zero transitions (absorbing states, left-right chains) against hmmlearn's
exact log-space implementation (stop 28 review).

The scaled recursions keep alpha normalised, so a state whose mass falls below float64's
range is dropped to 0 instead of kept tiny. With every transition positive the other
states refill it at the next step; with a zero (an absorbing state) it can stay empty
while later rows favour it, and the scaled likelihood silently followed the paths that
were left: 105 of 200 random models with zeros scored wrong (-5613.24 against -1950.05
in the first one reported). In such models a sequence keeps its scaled result only when
its scaling factors multiply to at least TINY (then a dropped state changes nothing
measurable: ``forward_backward.LOG_TINY``); the others run in exact log space.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.hmm as ours
from tying.hmm.forward_backward import scaling_is_exact

hmm = pytest.importorskip(
    "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
)


def _random_zero_model(rng, K):
    """startprob and transmat with zeros; about half the states absorbing."""
    start = rng.dirichlet(np.ones(K))
    start[rng.random(K) < 0.3] = 0.0
    if start.sum() == 0:
        start[0] = 1.0
    A = rng.dirichlet(np.ones(K), size=K)
    for k in range(K):
        if rng.random() < 0.5:
            A[k] = np.eye(K)[k]
        A[k][rng.random(K) < 0.3] = 0.0
        if A[k].sum() == 0:
            A[k, k] = 1.0
    A[0] = np.eye(K)[0]  # at least one absorbing state
    return start / start.sum(), A / A.sum(1, keepdims=True)


def _segments(rng, K, emit, n_seq=6, n_seg=3, seg=50):
    """Sequences of segments, each drawn from one state's emissions in turn: long runs
    that favour one state, then another (where a dropped state is missed)."""
    return np.concatenate(
        [np.concatenate([emit(k, seg) for k in rng.integers(0, K, n_seg)]) for _ in range(n_seq)]
    ), [n_seg * seg] * n_seq


def _gaussian_case(seed):
    rng = np.random.default_rng(seed)
    K, D = int(rng.integers(2, 5)), int(rng.integers(1, 3))
    start, A = _random_zero_model(rng, K)
    means = rng.normal(0, 10, (K, D))
    var = rng.uniform(0.5, 2.0, (K, D))
    X, lengths = _segments(rng, K, lambda k, n: rng.normal(means[k], np.sqrt(var[k]), (n, D)))
    return K, start, A, means, var, X, lengths


def _set(m, start, A, means, var):
    m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, var
    return m


def _finite_reference(seed):
    K, start, A, means, var, X, lengths = _gaussian_case(seed)
    ref = _set(
        hmm.GaussianHMM(K, "diag", implementation="log", init_params=""), start, A, means, var
    )
    ll = ref.score(X, lengths)
    if not np.isfinite(ll):  # a sequence the model cannot emit: not this test's subject
        pytest.skip("impossible data for this model")
    return K, start, A, means, var, X, lengths, ref, ll


@pytest.mark.parametrize("seed", range(24))
def test_scores_and_posteriors_equal_hmmlearn_log_space(seed):
    K, start, A, means, var, X, lengths, ref, ll = _finite_reference(seed)
    assert not scaling_is_exact(A)
    m = _set(ours.GaussianHMM(K, "diag"), start, A, means, var)
    assert m.score(X, lengths) == pytest.approx(ll, rel=1e-9)
    per_seq = m.score_sequences(X, lengths)
    np.testing.assert_allclose(per_seq.sum(), ll, rtol=1e-9)
    ll2, post = m.score_samples(X, lengths)
    assert ll2 == pytest.approx(ll, rel=1e-9)
    np.testing.assert_allclose(post, ref.predict_proba(X, lengths), atol=1e-8)
    np.testing.assert_allclose(m.predict_proba(X, lengths), post, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 4, 7, 9, 13])  # where hmmlearn stays finite
def test_a_fit_with_zero_transitions_follows_hmmlearn_log_space(seed):
    K, start, A, means, var, X, lengths, _, _ = _finite_reference(seed)
    kw = {"n_iter": 4, "tol": -np.inf, "init_params": ""}
    ref = _set(hmm.GaussianHMM(K, "diag", implementation="log", **kw), start, A, means, var)
    got = _set(ours.GaussianHMM(K, "diag", **kw), start, A, means, var)
    with np.errstate(all="ignore"):  # hmmlearn's 0/0 for a state no row visits
        ref.fit(X, lengths)
    got.fit(X, lengths)
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-9)
    for name in ("startprob_", "transmat_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-7, atol=1e-10)
    # a state no row visits keeps its mean here (hmmlearn: whatever 0/0 leaves)
    visited = got.predict_proba(X, lengths).sum(0) > 1e-6
    np.testing.assert_allclose(got.means_[visited], ref.means_[visited], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("seed", range(8))
def test_categorical_with_zero_transitions_equals_hmmlearn(seed):
    rng = np.random.default_rng(100 + seed)
    K, M = int(rng.integers(2, 5)), 6
    start, A = _random_zero_model(rng, K)
    E = rng.dirichlet(np.full(M, 0.05), size=K)  # peaked: long runs drive a state out
    X, lengths = _segments(rng, K, lambda k, n: rng.choice(M, size=(n, 1), p=E[k]), seg=120)
    ref = hmm.CategoricalHMM(K, n_features=M, implementation="log", init_params="")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, A, E
    ll = ref.score(X, lengths)
    if not np.isfinite(ll):
        pytest.skip("impossible data for this model")
    m = ours.CategoricalHMM.from_params(start, A, E)
    assert m.score(X, lengths) == pytest.approx(ll, rel=1e-9)
    np.testing.assert_allclose(
        m.predict_proba(X, lengths), ref.predict_proba(X, lengths), atol=1e-8
    )


def test_positive_transitions_keep_the_scaled_path():
    A = np.full((3, 3), 1 / 3)
    assert scaling_is_exact(A) and not scaling_is_exact(np.eye(3))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_log_space_equals_the_numpy_log_space(seed, monkeypatch):
    import importlib

    from tying.hmm import compiled
    from tying.hmm.sequences import SequenceBatch

    fb = importlib.import_module("tying.hmm.forward_backward")

    if not compiled.available():
        pytest.skip("numba is not installed")
    K, start, A, means, var, X, lengths = _gaussian_case(seed)
    log_b = ours.GaussianHMM.from_params(start, A, means, var).emission_log_prob(X)
    log_b[5] = -np.inf  # a row no state emits: that sequence has p(x) = 0
    batch = SequenceBatch.from_lengths(lengths)
    new = fb.forward_backward(start, A, log_b, batch)
    ll_new = fb.forward_log_likelihood(start, A, log_b, batch)
    monkeypatch.setitem(compiled._STATE, "kernels", False)
    ref = fb.forward_backward(start, A, log_b, batch)
    np.testing.assert_allclose(new.log_likelihood, ref.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(ll_new, ref.log_likelihood, rtol=1e-12)
    assert new.log_likelihood[0] == -np.inf and np.isnan(new.gamma[: lengths[0]]).all()
    np.testing.assert_allclose(new.gamma, ref.gamma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(new.xi_sum, ref.xi_sum, rtol=1e-10, atol=1e-12)


def _fb():
    import importlib

    return importlib.import_module("tying.hmm.forward_backward")


def _left_right(K=4, seg=60, gap=12.0, n_seq=3):
    """A left-right chain with well separated means, and sequences that walk it: the early
    states' mass falls far below float64's range (dropped by scaling) once the data leave
    them, while every factor stays moderate."""
    A = np.zeros((K, K))
    for k in range(K - 1):
        A[k, k], A[k, k + 1] = 0.95, 0.05
    A[K - 1, K - 1] = 1.0
    start = np.eye(K)[0]
    means, var = gap * np.arange(K, dtype=float)[:, None], np.ones((K, 1))
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [rng.normal(means[k], 1.0, (seg, 1)) for _ in range(n_seq) for k in range(K)]
    )
    return start, A, means, var, X, [K * seg] * n_seq


def test_a_left_right_model_keeps_the_scaled_path_where_a_dropped_state_cannot_matter():
    from tying.hmm.sequences import SequenceBatch

    fb = _fb()
    start, A, means, var, X, lengths = _left_right()
    m = ours.GaussianHMM.from_params(start, A, means, var)
    log_b, batch = m.emission_log_prob(X), SequenceBatch.from_lengths(lengths)
    # the premise: some reachable state's exact log-alpha falls more than 745 below the
    # step's best, so the scaled recursion drops it to 0
    la = fb._forward_log(start, A, batch.pad(log_b), batch.n_active)
    gap = la.max(2, keepdims=True) - la
    assert (np.isfinite(gap) & (gap > 745)).any()
    post = fb.forward_backward(start, A, log_b, batch)
    assert post.n_log_space == 0  # the scaled path, not log space
    ref = _set(hmm.GaussianHMM(4, "diag", implementation="log", init_params=""), start, A,
               means, var)  # fmt: skip
    assert m.score(X, lengths) == pytest.approx(ref.score(X, lengths), rel=1e-12)
    np.testing.assert_allclose(post.gamma, ref.predict_proba(X, lengths), atol=1e-12)


def test_a_sequence_whose_factors_underflow_together_goes_to_log_space():
    # the docs example: scaling kept only the first state's paths (-81385.9, no error)
    from scipy.special import logsumexp
    from scipy.stats import norm

    from tying.hmm.sequences import SequenceBatch

    fb = _fb()
    start, A = np.array([0.5, 0.5]), np.eye(2)
    means, var = np.array([[1.0], [-1.0]]), np.ones((2, 1))
    X = np.array([[-400.0]] + [[3.0]] * 200 + [[0.5]] * 5)  # and a short harmless sequence
    m = ours.GaussianHMM.from_params(start, A, means, var)
    exact = logsumexp([np.log(0.5) + norm.logpdf(X[:201, 0], mu[0], 1).sum() for mu in means])
    batch = SequenceBatch.from_lengths([201, 5])
    post = fb.forward_backward(start, A, m.emission_log_prob(X), batch)
    assert post.n_log_space == 1  # only the sequence that needs it
    assert post.log_likelihood[0] == pytest.approx(exact, rel=1e-12)
    assert m.score_sequences(X, [201, 5])[0] == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("chunk", range(4))
def test_property_random_zero_models_score_every_sequence_as_hmmlearn_log(chunk):
    """Random absorbing/left-right models and data in runs, scored one sequence at a time
    against hmmlearn's exact log space; some sequences must have kept the scaled path
    although a reachable state dropped (the case the LOG_TINY bound covers)."""
    from tying.hmm.sequences import SequenceBatch

    fb = _fb()
    kept_with_drop = 0
    for seed in range(10 * chunk, 10 * chunk + 10):
        rng = np.random.default_rng(1000 + seed)
        K, D = int(rng.integers(2, 7)), int(rng.integers(1, 3))
        start, A = _random_zero_model(rng, K)
        means = rng.normal(0, rng.choice([1.0, 3.0, 10.0, 30.0]), (K, D))
        var = rng.uniform(0.5, 2.0, (K, D))
        seg = int(rng.integers(5, 120))

        def emit(k, n, rng=rng, means=means, var=var, D=D):
            return rng.normal(means[k], np.sqrt(var[k]), (n, D))

        X, lengths = _segments(rng, K, emit, n_seq=4, seg=seg)
        ref = _set(hmm.GaussianHMM(K, "diag", implementation="log", init_params=""), start, A,
                   means, var)  # fmt: skip
        m = ours.GaussianHMM.from_params(start, A, means, var)
        got = m.score_sequences(X, lengths)
        for i, x in enumerate(np.split(X, np.cumsum(lengths)[:-1])):
            want = ref.score(x)
            if not np.isfinite(want):
                assert got[i] == -np.inf
                continue
            assert got[i] == pytest.approx(want, rel=1e-11), (seed, i)
            batch = SequenceBatch.from_lengths([len(x)])
            log_b = m.emission_log_prob(x)
            if fb.forward_backward(start, A, log_b, batch).n_log_space == 0:
                la = fb._forward_log(start, A, batch.pad(log_b), batch.n_active)
                gap = la.max(2, keepdims=True) - la
                kept_with_drop += bool((np.isfinite(gap) & (gap > 745)).any())
    assert kept_with_drop > 0
