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


# ---- stop 30: the compiled kernels check each sequence's factors themselves (kernels.kept)
def _needs_kernels():
    from tying.hmm import compiled

    if not compiled.available():
        pytest.skip("numba is not installed")


def _docs_case(n_harmless, D=1):
    """The docs example (a sequence whose scaled result kept only one state's paths) and
    ``n_harmless`` short sequences: 1 gives a rows unit (few sequences), 4 a lane unit."""
    start, A = np.array([0.5, 0.5]), np.eye(2)
    means, var = np.array([[1.0] * D, [-1.0] * D]), np.ones((2, D))
    X = np.concatenate([np.full((1, D), -400.0), np.full((200, D), 3.0)]
                       + [np.full((5, D), 0.5 + i) for i in range(n_harmless)])  # fmt: skip
    return start, A, means, var, X, [201] + [5] * n_harmless


def _spy_general_loop(monkeypatch):
    """Record each entry into the general EM loop (``BaseHMM._em``)."""
    from tying.hmm.base import BaseHMM

    calls, em = [], BaseHMM._em

    def spy(self, *args, **kw):
        calls.append(args[-1] if args else kw.get("start"))
        return em(self, *args, **kw)

    monkeypatch.setattr(BaseHMM, "_em", spy)
    return calls


@pytest.mark.parametrize("ctype", ["diag", "full"])
@pytest.mark.parametrize("n_harmless", [1, 4])
def test_the_fused_e_step_sends_an_underflowing_sequence_to_log_space(ctype, n_harmless):
    """The compiled E-step (lanes or rows kernel) does not keep the docs example's scaled
    result: its factors multiply to e**-1200 while none is below TINY, which the kernels
    did not check before stop 30. Its log-likelihood and the statistics equal hmmlearn's
    exact log space."""
    _needs_kernels()
    from tying.hmm.forward_backward import _moments
    from tying.hmm.sequences import SequenceBatch

    start, A, means, var, X, lengths = _docs_case(n_harmless, D=2)
    covars = var if ctype == "diag" else np.stack([np.diag(v) for v in var])
    m = ours.GaussianHMM.from_params(start, A, means, covars, covariance_type=ctype)
    batch = SequenceBatch.from_lengths(lengths)
    context = m._em_context(X, batch)
    kinds = {u["kind"] for u in context["layout"].units}
    assert kinds == ({"rows"} if n_harmless == 1 else {"lanes"})
    post = m._estep(X, batch, context)
    assert post.n_log_space == 1
    ref = _set(hmm.GaussianHMM(2, ctype, implementation="log", init_params=""), start, A,
               means, covars)  # fmt: skip
    want_ll = [ref.score(x) for x in np.split(X, np.cumsum(lengths)[:-1])]
    np.testing.assert_allclose(post.log_likelihood, want_ll, rtol=1e-12)
    gamma = ref.predict_proba(X, lengths)
    n, sx, sxx = _moments(gamma, X - context["center"], ctype == "full")
    np.testing.assert_allclose(post.stats.n, n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.stats.sx, sx, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(post.stats.sxx, sxx, rtol=1e-10, atol=1e-9)


def test_the_scaled_kernels_refuse_a_product_below_tiny_only_with_a_zero_transition():
    """``fb_scaled`` and ``forward_scaled`` on the docs example: not kept with the
    identity (state 0's paths were dropped), kept once every transition is positive
    (a dropped state is refilled: ``EXACT_SCALING_MIN_TRANSITION``)."""
    _needs_kernels()
    from tying.hmm import compiled

    k = compiled._kernels()
    start, A, means, var, X, lengths = _docs_case(1)
    log_b = ours.GaussianHMM.from_params(start, A, means, var).emission_log_prob(X)
    starts, lens = np.array([0, 201]), np.array(lengths)
    b, m = np.empty_like(log_b), np.empty(len(X))
    k.shift_rows(log_b, b, m)
    np.exp(b, out=b)
    for trans, refused in ((A, True), (np.full((2, 2), 0.5), False)):
        ll, bad = np.empty(2), np.zeros(2, np.bool_)
        k.fb_scaled(start, trans, b, m, 0, starts, lens, 0, 2, np.empty((len(X), 2)), ll,
                    np.empty((2, 2, 2)), bad)  # fmt: skip
        assert bad.tolist() == [refused, False]
        ll2 = np.empty(2)
        k.forward_scaled(start, trans, log_b, starts, lens, 0, 2, ll2)
        assert np.isnan(ll2[0]) == refused and np.isfinite(ll2[1])
        assert k.scaling_fragile(trans) == refused


@pytest.mark.parametrize("ctype", ["diag", "full"])
@pytest.mark.parametrize("n_seq", [3, 6])
def test_a_left_right_fit_stays_in_the_compiled_loop(ctype, n_seq, monkeypatch):
    """A left-right chain whose sequences all keep their scaled results: the compiled
    loop runs every iteration (before stop 30 such a model went to the general loop,
    32x slower at stop 28, 4x at stop 29), and the fit equals hmmlearn's exact log
    space."""
    _needs_kernels()
    start, A, means, var, X, lengths = _left_right(n_seq=n_seq)
    covars = var if ctype == "diag" else var[:, :, None]
    kw = {"n_iter": 5, "tol": -np.inf, "init_params": ""}
    ref = _set(hmm.GaussianHMM(4, ctype, implementation="log", **kw), start, A, means, covars)
    ref.fit(X, lengths)
    calls = _spy_general_loop(monkeypatch)
    got = _set(ours.GaussianHMM(4, ctype, **kw), start, A, means, covars).fit(X, lengths)
    assert calls == []
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9,
                                   atol=1e-12, err_msg=name)  # fmt: skip


@pytest.mark.parametrize("n_harmless", [1, 4])
def test_a_fit_with_an_underflowing_sequence_hands_over_and_equals_hmmlearn_log(
    n_harmless, monkeypatch
):
    """The compiled loop reports the docs sequence as a failed lane; the general loop
    takes over from that E-step and recomputes it in log space: hmmlearn's log-space
    fit, to 1e-12."""
    _needs_kernels()
    start, A, means, var, X, lengths = _docs_case(n_harmless)
    kw = {"n_iter": 3, "tol": -np.inf, "init_params": ""}
    ref = _set(hmm.GaussianHMM(2, "diag", implementation="log", **kw), start, A, means, var)
    ref.fit(X, lengths)
    calls = _spy_general_loop(monkeypatch)
    got = _set(ours.GaussianHMM(2, "diag", **kw), start, A, means, var).fit(X, lengths)
    assert calls == [0]  # handed over at the first E-step
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-10)


@pytest.mark.parametrize("chunk", range(2))
def test_property_the_fused_e_step_of_random_zero_models_equals_hmmlearn_log(chunk):
    """Random absorbing/left-right models, lane and rows units: every sequence's
    log-likelihood and the statistics equal hmmlearn's exact log space; some sequences
    must have gone to log space, and some kept their scaled result."""
    _needs_kernels()
    from tying.hmm.forward_backward import _moments
    from tying.hmm.sequences import SequenceBatch

    n_log = n_kept = 0
    for seed in range(8 * chunk, 8 * chunk + 8):
        rng = np.random.default_rng(2000 + seed)
        K, D = int(rng.integers(2, 6)), int(rng.integers(1, 3))
        start, A = _random_zero_model(rng, K)
        means = rng.normal(0, rng.choice([3.0, 10.0, 30.0]), (K, D))
        var = rng.uniform(0.5, 2.0, (K, D))

        def emit(k, n, rng=rng, means=means, var=var, D=D):
            return rng.normal(means[k], np.sqrt(var[k]), (n, D))

        n_seq = int(rng.choice([2, 6]))  # rows units, lane units
        X, lengths = _segments(rng, K, emit, n_seq=n_seq, seg=int(rng.integers(20, 150)))
        ref = _set(hmm.GaussianHMM(K, "diag", implementation="log", init_params=""), start, A,
                   means, var)  # fmt: skip
        want = np.array([ref.score(x) for x in np.split(X, np.cumsum(lengths)[:-1])])
        if not np.isfinite(want).all():
            continue  # a sequence the model cannot emit: not this test's subject
        m = ours.GaussianHMM.from_params(start, A, means, var)
        batch = SequenceBatch.from_lengths(lengths)
        context = m._em_context(X, batch)
        post = m._estep(X, batch, context)
        np.testing.assert_allclose(post.log_likelihood, want, rtol=1e-11, err_msg=str(seed))
        n, sx, sxx = _moments(ref.predict_proba(X, lengths), X - context["center"], False)
        scale = np.abs(X - context["center"]).max()
        np.testing.assert_allclose(post.stats.n, n, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(post.stats.sx, sx, rtol=1e-9, atol=1e-9 * scale)
        np.testing.assert_allclose(post.stats.sxx, sxx, rtol=1e-9, atol=1e-9 * scale**2)
        n_log += post.n_log_space
        n_kept += len(lengths) - post.n_log_space
    assert n_log > 0 and n_kept > 0


def test_a_long_sequence_of_a_forgetting_chain_with_zeros_fits_as_hmmlearn_log(monkeypatch):
    """A rows unit long enough for the diag loop's windows layout (2 x 1000), a chain that
    forgets (Dobrushin 0.8) but has zeros: the compiled loop runs the rows kernel (the
    windows refuse such a matrix), every sequence keeps its scaled result (its factors
    multiply to about e**-600), and the fit equals hmmlearn's exact log space."""
    _needs_kernels()
    from tying.hmm._numba_windows import FORGET, dobrushin
    from tying.hmm.sequences import SequenceBatch

    rng = np.random.default_rng(5)
    A = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    assert dobrushin(A) <= FORGET
    start, means = np.array([1.0, 0.0, 0.0]), np.array([[0.0, 0.0], [6.0, 2.0], [-4.0, 5.0]])
    var = np.ones((3, 2))
    states, s = [], 0
    for _ in range(2000):
        states.append(s)
        s = rng.choice(3, p=A[s])
    X = means[states] + rng.normal(size=(2000, 2))
    lengths = [1000, 1000]
    m = ours.GaussianHMM.from_params(start, A, means, var)
    batch = SequenceBatch.from_lengths(lengths)
    context = m._em_context(X, batch)
    assert ["win" in u for u in context["layout"].units] == [True]
    assert m._estep(X, batch, context).n_log_space == 0
    kw = {"n_iter": 4, "tol": -np.inf, "init_params": ""}
    ref = _set(hmm.GaussianHMM(3, "diag", implementation="log", **kw), start, A, means, var)
    ref.fit(X, lengths)
    calls = _spy_general_loop(monkeypatch)
    got = _set(ours.GaussianHMM(3, "diag", **kw), start, A, means, var).fit(X, lengths)
    assert calls == []
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-9)
    np.testing.assert_allclose(got.transmat_, ref.transmat_, rtol=1e-9, atol=1e-14)


def test_the_kernels_and_scaling_is_exact_agree_on_which_models_are_fragile():
    """``_numba_scaled.scaling_fragile`` (what every kernel asks) is ``not
    scaling_is_exact`` on random matrices with zeros, zero columns, tiny entries, NaN."""
    _needs_kernels()
    from tying.hmm._numba_scaled import scaling_fragile

    rng = np.random.default_rng(30)
    seen = set()
    for _ in range(3000):
        K = int(rng.integers(1, 6))
        A = rng.random((K, K))
        A[rng.random((K, K)) < 0.2] = 0.0
        if rng.random() < 0.3:
            A[:, rng.integers(K)] = 0.0
        if rng.random() < 0.1:
            A[rng.integers(K), rng.integers(K)] = rng.choice([1e-260, 1e-240, np.nan, np.inf])
        exact = scaling_is_exact(A)
        assert scaling_fragile(A) == (not exact), A
        seen.add(exact)
    assert seen == {True, False}


@pytest.mark.parametrize("seed", range(6))
def test_a_state_no_state_enters_keeps_the_scaled_path_and_hmmlearns_numbers(seed):
    """A column of zeros (a state only the start reaches) leaves the model exact: every
    sequence keeps its scaled result (no log space), and the scores and posteriors equal
    hmmlearn's exact log space, also where that state's mass underflowed at the start."""
    from tying.hmm.sequences import SequenceBatch

    rng = np.random.default_rng(300 + seed)
    K, D = int(rng.integers(3, 6)), 2
    A = rng.dirichlet(np.ones(K), size=K)
    A[:, 0] = 0.0  # nobody enters state 0 ...
    A /= A.sum(1, keepdims=True)
    start = rng.dirichlet(np.ones(K))  # ... but a sequence may start there
    assert scaling_is_exact(A)
    means = rng.normal(0, 10, (K, D))
    var = rng.uniform(0.5, 2.0, (K, D))
    X, lengths = _segments(rng, K, lambda k, n: rng.normal(means[k], np.sqrt(var[k]), (n, D)))
    X[0] = means[0] + 300.0  # state 0 far from everything at step 0 of sequence 0
    m = ours.GaussianHMM.from_params(start, A, means, var)
    post = _fb().forward_backward(start, A, m.emission_log_prob(X), SequenceBatch.from_lengths(
        lengths))  # fmt: skip
    assert post.n_log_space == 0
    ref = _set(hmm.GaussianHMM(K, "diag", implementation="log", init_params=""), start, A,
               means, var)  # fmt: skip
    want = [ref.score(x) for x in np.split(X, np.cumsum(lengths)[:-1])]
    np.testing.assert_allclose(post.log_likelihood, want, rtol=1e-12)
    np.testing.assert_allclose(post.gamma, ref.predict_proba(X, lengths), atol=1e-11)


@pytest.mark.parametrize("numba_on", [True, False])
def test_log_space_posteriors_are_normalised_per_step(numba_on, monkeypatch):
    """At |log p(x)| ~ 1.6e5 log-alpha and log-beta carry ~1e-11 absolute rounding each
    step, and ``exp(la + lb - log p(x))`` summed to 1 - 1.1e-9 per row (the docs example
    with 2 dims: 200.99999978 for 201 rows, stop 29). Each step is now normalised by its
    own sum, compiled and NumPy alike: gamma's rows and each step's xi sum to 1."""
    from tying.hmm import compiled
    from tying.hmm.sequences import SequenceBatch

    if numba_on:
        _needs_kernels()
    else:
        monkeypatch.setitem(compiled._STATE, "kernels", False)
    start, A, means, var, X, lengths = _docs_case(1, D=2)
    m = ours.GaussianHMM.from_params(start, A, means, var)
    post = _fb().forward_backward(start, A, m.emission_log_prob(X),
                                  SequenceBatch.from_lengths(lengths))  # fmt: skip
    assert post.n_log_space == 1 and abs(post.log_likelihood[0]) > 1e5
    np.testing.assert_allclose(post.gamma.sum(1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(post.xi_sum.sum(), sum(L - 1 for L in lengths), rtol=1e-14)
