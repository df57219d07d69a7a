"""The compiled recursions equal the NumPy ones, whatever the thread count, with or without numba."""

from __future__ import annotations

import importlib
import logging
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tying.hmm import GaussianHMM, SequenceBatch, compiled

from .helpers import rows_per_unit

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

fb = importlib.import_module("tying.hmm.forward_backward")  # the module, not the function

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
FIELDS = ("log_likelihood", "gamma", "xi_sum", "start")


def _model(rng, K, lengths, *, scale=3.0):
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    log_b = rng.normal(scale=scale, size=(int(np.sum(lengths)), K))
    return start, A, log_b, SequenceBatch.from_lengths(lengths)


def _assert_close(new, ref, rtol=1e-12):
    np.testing.assert_allclose(new.log_likelihood, ref.log_likelihood, rtol=rtol, atol=0)
    # posteriors and counts are sums of positive terms: relative agreement,
    # plus an absolute floor for entries that are themselves rounding noise
    for name in ("gamma", "xi_sum", "start"):
        np.testing.assert_allclose(getattr(new, name), getattr(ref, name), rtol=rtol, atol=1e-300)
    assert new.n_log_space == ref.n_log_space


def _underflowing(K):
    """A model and batch where sequence 1 needs the log-space fallback (scaling gives 0)."""
    start = np.zeros(K)
    start[0] = 1.0
    A = np.full((K, K), 1.0 / K)
    if K > 1:
        A[0] = 0.0
        A[0, 0] = 1.0  # state 0 never leaves, so states 1.. are unreachable
    log_b = np.zeros((9, K))
    log_b[4, 0] = -2000.0  # sequence 1, step 1: the only reachable state emits exp(-2000)
    return start, A, log_b, SequenceBatch.from_lengths([3, 4, 1, 1])


@needs_numba
@pytest.mark.parametrize("K", [1, 2, 8])
def test_compiled_forward_backward_matches_numpy_reference(K):
    rng = np.random.default_rng(K)
    lengths = [1, 37, 5, 120, 1, 64, 2]
    start, A, log_b, batch = _model(rng, K, lengths)
    new = fb.forward_backward(start, A, log_b, batch)
    ref = fb._forward_backward_numpy(start, A, log_b, batch)
    _assert_close(new, ref)
    ll = fb.forward_log_likelihood(start, A, log_b, batch)
    np.testing.assert_allclose(ll, ref.log_likelihood, rtol=1e-12, atol=0)


@needs_numba
@pytest.mark.parametrize("K", [1, 3])
def test_compiled_log_space_fallback_matches_numpy_reference(K):
    start, A, log_b, batch = _underflowing(K)
    ref = fb._forward_backward_numpy(start, A, log_b, batch)
    new = fb.forward_backward(start, A, log_b, batch)
    assert ref.n_log_space == (1 if K > 1 else 0)  # K=1 just scales by exp(-2000)
    _assert_close(new, ref)
    np.testing.assert_allclose(new.log_likelihood[1], -2000.0, rtol=1e-12)
    ll = fb.forward_log_likelihood(start, A, log_b, batch)
    np.testing.assert_allclose(ll, ref.log_likelihood, rtol=1e-12, atol=0)


@needs_numba
def test_compiled_impossible_sequence_gives_minus_inf_like_numpy():
    start, A = np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0]])
    log_b = np.array([[0.0, 0.0], [-np.inf, 0.0], [0.0, 0.0]])  # state 0 cannot emit step 1
    batch = SequenceBatch.from_lengths([2, 1])
    new, ref = (
        fb.forward_backward(start, A, log_b, batch),
        fb._forward_backward_numpy(start, A, log_b, batch),
    )
    assert new.log_likelihood[0] == -np.inf == ref.log_likelihood[0]
    np.testing.assert_array_equal(new.xi_sum, ref.xi_sum)
    np.testing.assert_array_equal(new.gamma, ref.gamma)  # NaN rows where p(x) = 0, as before


@needs_numba
@pytest.mark.parametrize("n_jobs", [2, 3, 7, -1])
def test_thread_count_does_not_change_a_single_bit(n_jobs):
    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 80, size=41)
    start, A, log_b, batch = _model(rng, 5, lengths)
    log_b[int(np.sum(lengths[:7])) + 1] = -3000.0  # one log-space sequence among them
    log_b[int(np.sum(lengths[:7])) + 1, 0] = 0.0
    one = fb.forward_backward(start, A, log_b, batch, n_jobs=1)
    many = fb.forward_backward(start, A, log_b, batch, n_jobs=n_jobs)
    for name in FIELDS:
        assert np.array_equal(getattr(one, name), getattr(many, name)), name
    assert np.array_equal(
        fb.forward_log_likelihood(start, A, log_b, batch, n_jobs=1),
        fb.forward_log_likelihood(start, A, log_b, batch, n_jobs=n_jobs),
    )


@needs_numba
def test_module_default_n_jobs_is_used_and_restorable():
    rng = np.random.default_rng(5)
    start, A, log_b, batch = _model(rng, 4, [30] * 9)
    one = fb.forward_backward(start, A, log_b, batch)
    compiled.set_n_jobs(2)
    try:
        assert compiled.get_n_jobs() == 2
        two = fb.forward_backward(start, A, log_b, batch)
    finally:
        compiled.set_n_jobs(1)
    assert np.array_equal(one.gamma, two.gamma) and np.array_equal(one.xi_sum, two.xi_sum)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_n_jobs_is_refused_and_default_unchanged(bad):
    start, A, log_b, batch = _model(np.random.default_rng(0), 2, [3])
    with pytest.raises(ValueError, match=r"n_jobs must be a positive number of threads or -1"):
        fb.forward_backward(start, A, log_b, batch, n_jobs=bad)
    with pytest.raises(ValueError, match=r"got .*; use n_jobs=1 for one thread"):
        compiled.set_n_jobs(bad)
    assert compiled.get_n_jobs() == 1


def test_without_numba_the_numpy_path_runs_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setenv("TYING_DISABLE_NUMBA", "1")
    monkeypatch.setitem(compiled._STATE, "kernels", None)
    monkeypatch.setitem(compiled._STATE, "told", False)
    rng = np.random.default_rng(2)
    start, A, log_b, batch = _model(rng, 3, [10, 1, 4])
    with caplog.at_level(logging.INFO, logger="tying.hmm.compiled"):
        post = fb.forward_backward(start, A, log_b, batch, n_jobs=2)
        ll = fb.forward_log_likelihood(start, A, log_b, batch)
    assert not compiled.available()
    ref = fb._forward_backward_numpy(start, A, log_b, batch)
    for name in FIELDS:  # the very same code: equal to the bit
        assert np.array_equal(getattr(post, name), getattr(ref, name)), name
    assert np.array_equal(ll, ref.log_likelihood)
    told = [r for r in caplog.records if "NumPy code" in r.getMessage()]
    assert len(told) == 1 and "TYING_DISABLE_NUMBA" in told[0].getMessage()


@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(1, 6),
    lengths=st.lists(st.integers(1, 25), min_size=1, max_size=6),
    scale=st.sampled_from([0.1, 3.0, 300.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_compiled_equals_numpy_on_any_model(K, lengths, scale, seed):
    rng = np.random.default_rng(seed)
    start, A, log_b, batch = _model(rng, K, lengths, scale=scale)
    if rng.random() < 0.3:  # zeros in the transition matrix, as left-right models have
        A = A * (rng.random((K, K)) < 0.6)
        A[np.arange(K), np.arange(K)] += 0.1
        A /= A.sum(1, keepdims=True)
    new = fb.forward_backward(start, A, log_b, batch, n_jobs=2)
    ref = fb._forward_backward_numpy(start, A, log_b, batch)
    # atol only below 1e-250: entries that small are products near underflow
    np.testing.assert_allclose(new.log_likelihood, ref.log_likelihood, rtol=1e-12, atol=1e-12)
    assert new.n_log_space == ref.n_log_space
    # a sequence in log space carries log-alpha's absolute rounding, a few ulps of |ll|
    # (|ll| reaches thousands at scale 300): its posteriors agree to that, relative
    finite = np.abs(ref.log_likelihood[np.isfinite(ref.log_likelihood)])
    slack = 16 * np.finfo(float).eps * finite.max(initial=1.0) if ref.n_log_space else 0.0
    rtol = max(1e-12, slack)
    np.testing.assert_allclose(new.gamma, ref.gamma, rtol=rtol, atol=max(1e-250, slack))
    np.testing.assert_allclose(new.xi_sum, ref.xi_sum, rtol=rtol, atol=1e-250)


@needs_numba
def test_strided_emissions_give_the_same_posteriors():
    rng = np.random.default_rng(8)
    start, A, log_b, batch = _model(rng, 4, [20, 3, 9])
    wide = np.zeros((log_b.shape[0], 2 * log_b.shape[1]))
    wide[:, ::2] = log_b  # a strided view, as a column slice of a bigger array is
    a = fb.forward_backward(start, A, wide[:, ::2], batch)
    b = fb.forward_backward(start, A, np.asfortranarray(log_b), batch)
    c = fb.forward_backward(start, A, log_b, batch)
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(c, name))
        assert np.array_equal(getattr(b, name), getattr(c, name))


@needs_numba
def test_em_fit_with_compiled_kernels_follows_the_numpy_fit(monkeypatch):
    from tying.hmm import GaussianHMM

    rng = np.random.default_rng(9)
    start, A, means, var = (
        np.full(3, 1 / 3),
        rng.dirichlet(np.ones(3) * 4, 3),
        rng.normal(size=(3, 2)),
        np.ones((3, 2)),
    )
    X = rng.normal(size=(300, 2)) + means[rng.integers(0, 3, 300)]
    lengths = [100, 1, 150, 49]

    def fit():
        return GaussianHMM(
            3,
            "diag",
            startprob_init=start,
            transmat_init=A,
            means_init=means,
            covars_init=var,
            n_iter=8,
            tol=-np.inf,
        ).fit(X, lengths)

    fast = fit()
    monkeypatch.setitem(compiled._STATE, "kernels", False)  # as if numba were missing
    slow = fit()
    np.testing.assert_allclose(fast.monitor_.history, slow.monitor_.history, rtol=1e-12)
    np.testing.assert_allclose(fast.means_, slow.means_, rtol=1e-10)
    np.testing.assert_allclose(fast.transmat_, slow.transmat_, rtol=1e-10)


def test_kernels_that_cannot_be_built_fall_back_to_numpy(monkeypatch, caplog):
    import sys

    monkeypatch.delenv("TYING_DISABLE_NUMBA", raising=False)
    monkeypatch.setitem(sys.modules, "tying.hmm._numba_kernels", None)  # import fails
    monkeypatch.delattr(importlib.import_module("tying.hmm"), "_numba_kernels", raising=False)
    monkeypatch.setitem(compiled._STATE, "kernels", None)
    monkeypatch.setitem(compiled._STATE, "told", False)
    start, A, log_b, batch = _model(np.random.default_rng(4), 3, [6, 2])
    with caplog.at_level(logging.INFO, logger="tying.hmm.compiled"):
        post = fb.forward_backward(start, A, log_b, batch)
    ref = fb._forward_backward_numpy(start, A, log_b, batch)
    assert np.array_equal(post.gamma, ref.gamma)
    if "numba" in sys.modules:  # without numba the message names the missing package instead
        assert any("NUMBA_CACHE_DIR" in r.getMessage() for r in caplog.records)


def test_estimator_n_jobs_gives_bit_identical_fits():
    """The estimators pass n_jobs to the compiled recursion; the count never changes a result."""
    from tying.hmm import GaussianHMM

    rng = np.random.default_rng(3)
    lengths = [40, 7, 25, 1, 33]
    X = rng.normal(size=(sum(lengths), 2)) + np.repeat(rng.integers(0, 3, sum(lengths)), 2).reshape(
        -1, 2
    )
    fits = [GaussianHMM(3, n_iter=5, random_state=0, n_jobs=n).fit(X, lengths) for n in (1, 2, -1)]
    for other in fits[1:]:
        assert other.history_ == fits[0].history_
        assert np.array_equal(other.means_, fits[0].means_)
        assert other.score(X, lengths) == fits[0].score(X, lengths)


@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_a_subnormal_scaling_factor_is_recomputed_in_log_space(path, monkeypatch):
    """Found by the property test: a reachable state that emits e^-740 times the best
    (unreachable) one gives a subnormal scaling factor whose inverse overflows; the
    posteriors came out NaN/inf (or raised). Such a sequence is recomputed exactly."""
    from tying.hmm.sequences import SequenceBatch

    if path == "numpy":
        monkeypatch.setenv("TYING_DISABLE_NUMBA", "1")
    elif not compiled.available():
        pytest.skip("numba is not installed")
    start, A = np.array([1.0, 0.0]), np.eye(2)  # state 1 is never reachable
    log_b = np.tile([-740.0, 0.0], (3, 1))  # ... but it is the best emitter
    batch = SequenceBatch.from_lengths([3, 1])
    log_b = np.vstack([log_b, [[0.0, -1.0]]])
    post = fb.forward_backward(start, A, log_b, batch)
    assert post.n_log_space == 1
    np.testing.assert_allclose(post.log_likelihood, [-2220.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(post.gamma, [[1, 0]] * 4, atol=1e-12)
    ll = fb.forward_log_likelihood(start, A, log_b, batch)
    np.testing.assert_allclose(ll, [-2220.0, 0.0], rtol=1e-12)


# ------------------------------------------- fused Gaussian E-step (issue 19)
def _gauss_fit(ctype, X, lengths, K, *, ties=None, n_iter=6, n_jobs=None, **kw):
    from tying.hmm import GaussianHMM

    return GaussianHMM(
        K, ctype, ties=ties, n_iter=n_iter, tol=-np.inf, random_state=0, n_jobs=n_jobs, **kw
    ).fit(X, lengths)


def _gauss_data(seed, K, D, lengths, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(K, D)) + offset
    n = int(np.sum(lengths))
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))


def _assert_fits_agree(fast, slow, rtol=1e-10):
    np.testing.assert_allclose(fast.history_, slow.history_, rtol=rtol, atol=0)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        a, b = getattr(fast, name), getattr(slow, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)


@needs_numba
@pytest.mark.parametrize("ctype", ["spherical", "diag", "full", "tied"])
@pytest.mark.parametrize(
    "ties",
    [None, {"means": [[0, 2]]}, {"covars": [[1, 2]], "transitions": [[0, 3]]}],
    ids=["untied", "tied-means", "tied-covars-rows"],
)
def test_fused_em_follows_the_reference_path(ctype, ties, monkeypatch):
    """The fused compiled E-step (density + forward-backward + statistics in one pass)
    gives the reference path's EM (NumPy density, NumPy forward-backward, statistics
    from gamma) to 1e-10: every iteration's log-likelihood and every fitted parameter;
    lengths mixed, with sequences of length 1, and more than one work unit."""
    if ctype == "tied" and ties is not None and "covars" in ties:
        ties = {"transitions": [[0, 3]]}  # 'tied' already shares one covariance
    rows_per_unit(monkeypatch, 1024)  # several units on small data
    lengths = [1, 300, 7, 1, 2500, 45, 1, 1900, 13]
    X = _gauss_data(1, 4, 3, lengths)
    assert len(compiled.units(np.array(lengths))) - 1 > 1
    fast = _gauss_fit(ctype, X, lengths, 4, ties=ties)
    layout = fast._em_context(X, SequenceBatch.from_lengths(lengths))["layout"]
    assert {u["kind"] for u in layout.units} == {"rows", "lanes"}  # both unit kinds run
    monkeypatch.setitem(compiled._STATE, "kernels", False)  # the reference: no numba
    slow = _gauss_fit(ctype, X, lengths, 4, ties=ties)
    _assert_fits_agree(fast, slow)


@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full"])
@pytest.mark.parametrize(
    ("lengths", "kind"),
    [([50, 4, 30], "rows"), ([50, 4, 30, 20, 1, 7], "lanes"), ([5003, 4, 3001], "rows")],
)
def test_fused_em_recomputes_an_underflowing_sequence_in_log_space(
    ctype, lengths, kind, monkeypatch
):
    """State 0 never leaves and cannot reach state 1; one observation of sequence 1 sits
    1e5 sigma from state 0 (emission ratio exp(-5e9): the scaled recursion gives 0).
    That sequence is recomputed exactly in log space, on both paths, in every iteration."""
    from tying.hmm import GaussianHMM

    D = 2
    covars = np.ones((2, D)) if ctype == "diag" else np.repeat(np.eye(D)[None], 2, 0)
    X = _gauss_data(3, 1, D, lengths)
    X[lengths[0] + 1] = 1e5  # sequence 1, step 1

    def fit(n_iter=4):
        return GaussianHMM(
            2, ctype, startprob_init=[1.0, 0.0], transmat_init=np.eye(2),
            means_init=[[0.0, 0.0], [1e5, 1e5]], covars_init=covars, n_iter=n_iter,
            tol=-np.inf,
        ).fit(X, lengths)  # fmt: skip

    from tying.hmm.forward_backward import LaneLayout

    start = fit(n_iter=0)  # the start values, where the first E-step runs
    batch = SequenceBatch.from_lengths(lengths)
    context = start._em_context(X, batch)
    post = start._estep(X, batch, context)
    assert isinstance(context["layout"], LaneLayout) and post.gamma is None  # the fused path
    assert {u["kind"] for u in context["layout"].units} == {kind}
    assert post.n_log_space == 1
    fast = fit()
    monkeypatch.setitem(compiled._STATE, "kernels", False)
    slow = fit()
    _assert_fits_agree(fast, slow)
    assert np.isfinite(fast.history_).all()


@needs_numba
@pytest.mark.parametrize("ctype", ["spherical", "diag", "full", "tied"])
@pytest.mark.parametrize(
    ("lengths", "K", "min_rows"),
    [
        ([9001], 8, 40_000),  # one long sequence: 64 lanes of rows, the last block partial
        ([5003, 3001, 17], 3, 40_000),  # a few, odd K, sequences starting mid lane block
        ([4100, 1, 2, 700, 3, 5, 7, 9, 11, 8, 1, 6000, 2], 9, 4096),  # mixed: both kinds
        ([4, 1, 2], 13, 40_000),  # short rows unit: 8 lanes, K past one vector of 8
    ],
    ids=["one-long", "few-long", "mixed", "short-rows"],
)
def test_fused_em_on_long_sequences_follows_the_reference_path(
    ctype, lengths, K, min_rows, monkeypatch
):
    """Units of a few long sequences (the rows kernel, its density in lanes of dealt-out
    rows) give the reference path's EM to 1e-10, alone and mixed with lane units."""
    rows_per_unit(monkeypatch, min_rows)
    X = _gauss_data(7, K, 3, lengths)
    kw = {"means_init": _gauss_data(8, K, 3, [K])} if len(X) < K else {}  # k-means needs K rows
    fast = _gauss_fit(ctype, X, lengths, K, n_iter=4, **kw)
    kinds = {u["kind"] for u in fast._em_context(X, SequenceBatch.from_lengths(lengths))[
        "layout"].units}  # fmt: skip
    assert "rows" in kinds and (len(lengths) < 10 or kinds == {"rows", "lanes"})
    monkeypatch.setitem(compiled._STATE, "kernels", False)
    slow = _gauss_fit(ctype, X, lengths, K, n_iter=4, **kw)
    _assert_fits_agree(fast, slow)


@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_fused_em_on_long_sequences_is_bit_identical_for_any_thread_count(ctype, monkeypatch):
    rows_per_unit(monkeypatch, 4000)  # several units of a few long sequences
    lengths = [9000, 7001, 3, 8000, 5, 4500, 1, 2, 3, 4, 5, 6, 7, 8]
    X = _gauss_data(8, 4, 2, lengths)
    lay = _gauss_fit(ctype, X, lengths, 4, n_iter=0)._em_context(
        X, SequenceBatch.from_lengths(lengths))["layout"]  # fmt: skip
    assert sum(u["kind"] == "rows" for u in lay.units) >= 2
    fits = [_gauss_fit(ctype, X, lengths, 4, n_iter=3, n_jobs=n) for n in (1, 2, 3, -1)]
    for other in fits[1:]:
        assert other.history_ == fits[0].history_
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            assert np.array_equal(getattr(other, name), getattr(fits[0], name)), name


@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full", "tied", "spherical"])
def test_fused_em_thread_count_does_not_change_a_single_bit(ctype, monkeypatch):
    rows_per_unit(monkeypatch, 2048)  # several units on small data
    lengths = list(np.random.default_rng(4).integers(1, 900, size=60))
    X = _gauss_data(4, 5, 3, lengths)
    assert len(compiled.units(np.array(lengths))) - 1 >= 4  # more units than some thread counts
    fits = [_gauss_fit(ctype, X, lengths, 5, n_jobs=n) for n in (1, 2, 3, -1)]
    for other in fits[1:]:
        assert other.history_ == fits[0].history_
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            assert np.array_equal(getattr(other, name), getattr(fits[0], name)), name


@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full", "tied"])
def test_fused_em_of_the_goal_shape_is_bit_identical_for_every_thread_count(ctype, monkeypatch):
    """The issue's smaller goal shape (150 sequences of equal length, two units cut on a
    lane block, 72 + 78 sequences), scaled down to 150 x 40 with the unit threshold
    lowered to match: the calling thread and the pool's share the units, the costliest
    first, and no thread count changes a bit."""
    rows_per_unit(monkeypatch, 3_000)  # 6,000 rows: two units, as 150 x 400
    lengths = [40] * 150
    assert compiled.units(np.array(lengths)).tolist() == [0, 72, 150]
    X = _gauss_data(6, 8, 4, lengths)
    fits = [_gauss_fit(ctype, X, lengths, 8, n_iter=4, n_jobs=n) for n in (1, 2, 3, -1)]
    for other in fits[1:]:
        assert other.history_ == fits[0].history_
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            assert np.array_equal(getattr(other, name), getattr(fits[0], name)), name
    monkeypatch.setitem(compiled._STATE, "kernels", False)  # and the reference path agrees
    _assert_fits_agree(fits[0], _gauss_fit(ctype, X, lengths, 8, n_iter=4))


@pytest.mark.parametrize("n_jobs", [2, 3])
@pytest.mark.parametrize("failing", [0, 3])
def test_run_units_runs_each_unit_once_and_reraises_after_every_thread_stops(n_jobs, failing):
    """Every unit runs at most once, the costliest first; after a unit raises (on the
    calling thread or a pool's) no thread starts another, and the exception reaches the
    caller only after the other threads have stopped running units (their outputs are
    not written behind the caller's back)."""
    import threading

    ran, running = [], [0]
    lock = threading.Lock()

    def fn(u):
        with lock:
            running[0] += 1
            ran.append(u)
        try:
            if u == failing:
                raise RuntimeError(f"unit {u} failed")
            threading.Event().wait(0.002)
        finally:
            with lock:
                running[0] -= 1

    cost = [1, 5, 2, 9, 3, 4]
    with pytest.raises(RuntimeError, match=f"unit {failing} failed"):
        compiled._run_units(fn, 6, n_jobs, cost)
    assert running[0] == 0  # nothing still running when the error reaches the caller
    assert len(ran) == len(set(ran)) and failing in ran
    assert len(ran) <= ran.index(failing) + n_jobs  # then at most the units already started
    ran.clear()
    compiled._run_units(lambda u: ran.append(u), 6, n_jobs, cost)
    assert sorted(ran) == list(range(6))
    ran.clear()
    compiled._run_units(lambda u: ran.append(u), 6, 1, cost)
    assert ran == [0, 1, 2, 3, 4, 5]  # one thread: unit order (costs only order threads)


@needs_numba
def test_fused_em_with_a_large_full_model_uses_the_numpy_density(monkeypatch):
    """Above its limit of K·D(D+1)/2 (here lowered to 1024) the fused E-step takes the NumPy
    density (one factor per group, BLAS) and only shifts it into lanes; the fit still
    follows the reference."""
    from tying.hmm import gaussian

    monkeypatch.setattr(gaussian, "_FUSED_FULL_MAX", 1024)
    K, D = 12, 13  # 12 * 91 = 1092 > 1024
    assert not gaussian._lanes_density_pays(K, D, K)
    lengths = [40, 1, 25]
    X = _gauss_data(5, K, D, lengths)
    fast = _gauss_fit("full", X, lengths, K, n_iter=3)
    monkeypatch.setitem(compiled._STATE, "kernels", False)
    slow = _gauss_fit("full", X, lengths, K, n_iter=3)
    _assert_fits_agree(fast, slow)


@needs_numba
@pytest.mark.parametrize("ctype", ["spherical", "diag", "full", "tied"])
@pytest.mark.parametrize("separation", [1e2, 1e5, 1e8, 1e12])
@pytest.mark.parametrize(("lengths", "kind"), [([3, 2], "rows"), ([1] * 5, "lanes")])
def test_fused_density_is_exact_for_far_apart_means(ctype, separation, lengths, kind):
    """The fused kernels evaluate (x - mu) on the raw data, never an expanded quadratic:
    the near state's log-density is right to 1e-9 nats at any separation."""
    from scipy.stats import multivariate_normal

    from tying.hmm import GaussianHMM
    from tying.hmm.forward_backward import LaneLayout

    D = 2
    means = np.array([[0.0, 0.0], [separation, -separation], [separation, 1.0]])
    rng = np.random.default_rng(0)
    B = rng.normal(size=(3, D, D))
    mats = {
        "spherical": np.array([1.0, 0.5, 2.0])[:, None, None] * np.eye(D),
        "diag": np.array([[1.0, 0.5], [2.0, 0.3], [0.7, 1.1]])[:, :, None] * np.eye(D),
        "full": B @ B.transpose(0, 2, 1) + np.eye(D),
        "tied": np.repeat((B @ B.transpose(0, 2, 1) + np.eye(D))[:1], 3, 0),
    }[ctype]
    cov = {"spherical": mats[:, 0, 0], "diag": np.diagonal(mats, axis1=1, axis2=2)}.get(
        ctype, mats[0] if ctype == "tied" else mats
    )
    m = GaussianHMM.from_params(
        np.full(3, 1 / 3), np.full((3, 3), 1 / 3), means, cov, covariance_type=ctype
    )
    X = means[[0, 1, 2, 0, 2]] + rng.normal(size=(5, D))
    layout = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths))
    assert {u["kind"] for u in layout.units} == {kind}
    density = m._density_kernel(np.ascontiguousarray(X), compiled._kernels())
    got = np.empty((5, 3))
    for unit in layout.units:
        T, _, S = unit["XL"].shape
        b, mx = np.empty((T, 3, S)), np.empty((T, S))
        density(unit, b, mx)
        if unit["kind"] == "rows":  # rows dealt out over the lanes in turn
            rows = np.arange(unit["r0"], unit["r1"])
            t, lane = divmod(rows - unit["r0"], S)
            got[rows] = b[t, :, lane] + mx[t, lane][:, None]
            continue
        for lane, s in enumerate(unit["seqs"]):
            o = int(np.sum(lengths[:s]))
            for t in range(lengths[s]):
                got[o + t] = b[t, :, lane] + mx[t, lane]
    want = np.column_stack([multivariate_normal(means[k], mats[k]).logpdf(X) for k in range(3)])
    near = np.abs(want) < 1e3
    np.testing.assert_allclose(got[near], want[near], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@needs_numba
@settings(max_examples=30, deadline=None)
@given(
    ctype=st.sampled_from(["spherical", "diag", "full", "tied"]),
    K=st.integers(1, 5),
    D=st.integers(1, 4),
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_fused_estep_equals_the_reference_statistics(ctype, K, D, lengths, seed):
    """One E-step on any model: log-likelihoods, expected transitions, start posteriors
    and the per-state statistics (sum gamma, sum gamma x, sum gamma x x^T) equal what the
    reference forward-backward's gamma gives, to 1e-10."""
    _assert_estep_matches_reference(ctype, K, D, lengths, seed)


@needs_numba
@settings(max_examples=25, deadline=None)
@given(
    ctype=st.sampled_from(["spherical", "diag", "full", "tied"]),
    K=st.integers(1, 13),
    D=st.integers(1, 5),
    lengths=st.lists(st.integers(1, 6000), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_fused_estep_on_a_few_long_sequences(ctype, K, D, lengths, seed):
    """The same for units of one to three sequences of up to 6,000 steps (the rows
    kernel; 8 or 64 lanes of dealt-out rows for the density, sequences starting
    anywhere in a lane block), K past one vector of 8 states."""
    layout_kinds = {u["kind"] for u in _layout_of(lengths).units}
    assert layout_kinds == {"rows"}
    _assert_estep_matches_reference(ctype, K, D, lengths, seed)


def _layout_of(lengths):
    from tying.hmm.forward_backward import LaneLayout

    X = np.zeros((int(np.sum(lengths)), 1))
    return LaneLayout(X, np.zeros(1), SequenceBatch.from_lengths(lengths))


def _assert_estep_matches_reference(ctype, K, D, lengths, seed):
    from tying.hmm import GaussianHMM

    rng = np.random.default_rng(seed)
    X = _gauss_data(seed % 1000, K, D, lengths)
    m = GaussianHMM(K, ctype, n_iter=0, random_state=int(rng.integers(1000)))
    if len(X) < K:  # k-means needs K rows
        m.set_params(means_init=_gauss_data(seed % 1000 + 1, K, D, [K]))
    m.fit(X, lengths)  # initial values only
    batch = SequenceBatch.from_lengths(lengths)
    context = m._em_context(X, batch)
    post = m._estep(X, batch, context)
    ref = fb._forward_backward_numpy(m.startprob_, m.transmat_, m._log_emission(X), batch)
    xc = X - context["center"]
    np.testing.assert_allclose(post.log_likelihood, ref.log_likelihood, rtol=1e-10)
    for got, want in (
        (post.xi_sum, ref.xi_sum),
        (post.start, ref.start),
        (post.stats.n, ref.gamma.sum(0)),
        (post.stats.sx, ref.gamma.T @ xc),
        (
            post.stats.sxx,
            np.einsum("nk,nd,ne->kde", ref.gamma, xc, xc)
            if ctype in ("full", "tied")
            else ref.gamma.T @ xc**2,
        ),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(want).max()))


def test_units_depend_on_lengths_only_and_cover_every_sequence():
    rng = np.random.default_rng(0)
    for lengths in ([1], [5] * 3, list(rng.integers(1, 3000, 200)), [1] * 5000):
        lengths = np.array(lengths)
        edges = compiled.units(lengths)
        assert edges[0] == 0 and edges[-1] == len(lengths)
        assert np.all(np.diff(edges) >= 1)
        assert np.all(np.diff(edges) <= compiled.MAX_LANES)
        assert np.array_equal(edges, compiled.units(lengths.copy()))


def _lanes_unit(seed, K, D, lengths, full, *, fail=(), drift=()):
    """Kernel inputs for one lanes unit of random emissions; lanes in ``fail`` underflow."""
    from tying.hmm.forward_backward import LaneLayout

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(int(np.sum(lengths)), D))
    with pytest.MonkeyPatch.context() as mp:  # one unit of every lane, however costly
        mp.setattr(compiled, "SPLIT_ROWS", 10**12)
        mp.setattr(compiled, "FOUR_ROWS", 10**12)
        lay = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths))
    (unit,) = lay.units
    T, _, S = unit["XL"].shape
    logb = rng.normal(scale=3.0, size=(T, K, S))
    m = np.zeros((T, S))
    b = np.zeros((T, K, S))
    for t in range(T):
        n = unit["n_act"][t]
        m[t, :n] = logb[t, :, :n].max(0)
        b[t, :, :n] = np.exp(logb[t, :, :n] - m[t, :n])
    for lane in fail:  # a subnormal scaling factor at one step: the lane fails
        b[min(3, unit["lens"][lane] - 1), :, lane] = 1e-300
    for lane in drift:  # factors of 1e-200 (normal) whose product goes far below 1e-308
        b[: unit["lens"][lane], :, lane] = 1e-200
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    E = D if full else 1
    args = (start, A, b, m, unit["n_act"], unit["lens"], unit["XcL"], full)
    n = len(unit["lens"])

    def run(kernel):
        outs = (np.empty(n), np.empty(n, np.bool_), np.empty((K, K)), np.empty(K),
                np.empty(K), np.empty((D, K)), np.empty((D, E, K)))  # fmt: skip
        kernel(*(a.copy() if isinstance(a, np.ndarray) else a for a in args),
               np.empty((T, K, S)), np.empty((T, S)), *outs)  # fmt: skip
        return outs

    return run


@needs_numba
@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 13),  # 1..13: every mix of the kernel's 1-, 2- and 4-term passes
    D=st.integers(1, 6),  # 1..6: the diag statistics' first pass, pairs and a last single
    full=st.booleans(),
    lengths=st.lists(st.integers(1, 60), min_size=4, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    fail=st.sets(st.integers(0, 3), max_size=2),
)
def test_property_lane_kernel_equals_the_first_fused_kernel(K, D, full, lengths, seed, fail):
    """The lane kernel (sums over the lanes at every step) gives what the first fused
    kernel (per-lane sums, kept as ``tests/hmm/reference_kernels.py``) gives, to 1e-12: failed lanes
    exactly, log-likelihoods to 1e-13, and every statistic; lanes of any lengths (padding, lanes
    ending at every step) and lanes whose scaling fails."""
    kernels = compiled._kernels()
    run = _lanes_unit(seed, K, D, lengths, full, fail=fail)
    from .reference_kernels import lanes_fb_stats_v1  # imports numba

    new, ref = run(kernels.lanes_fb_stats), run(lanes_fb_stats_v1)
    assert np.array_equal(new[1], ref[1])  # the same lanes fail
    assert ref[1].sum() == len(fail)
    # log-likelihoods: sums of log scaling factors and density maxima, which can cancel
    # to near 0 (0.00317, 1.8e-15 apart: hypothesis found it), so 1e-13 of 1 too
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-13, atol=1e-13)
    for got, want in zip(new[2:], ref[2:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(want).max()))


@needs_numba
@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 10),
    D=st.integers(1, 5),
    full=st.booleans(),
    # up to 70 lanes (9 blocks), 1-step sequences, lanes ending at every step
    lengths=st.lists(st.integers(1, 40), min_size=4, max_size=70),
    seed=st.integers(0, 2**32 - 1),
    fail=st.sets(st.integers(0, 3), max_size=2),
)
@example(K=3, D=2, full=False, lengths=[1, 1, 1, 1], seed=0, fail=set())  # one step, T = 1
@example(K=8, D=4, full=False, lengths=[400] * 20, seed=1, fail={2})  # 20 x 400, a bad lane
def test_property_lane_kernel_equals_the_stop22_kernel(K, D, full, lengths, seed, fail):
    """The lane kernel with lane-block accumulators (stop 23) gives what the stop-22 kernel
    (dot products over the lanes at every step, kept in ``tests/hmm/reference_kernels.py``)
    gives: the same failed lanes, the log-likelihoods to 1e-13 and every statistic (xi,
    first, nsum, sx, sxx; diag and full) to 1e-12 of its scale, whatever the lane count
    (the lane blocks' sums change only the order of the additions)."""
    kernels = compiled._kernels()
    run = _lanes_unit(seed, K, D, lengths, full, fail=fail)
    from .reference_kernels import lanes_fb_stats_v22  # imports numba

    new, ref = run(kernels.lanes_fb_stats), run(lanes_fb_stats_v22)
    assert np.array_equal(new[1], ref[1])  # the same lanes fail
    assert ref[1].sum() == len(fail)
    # log-likelihoods: sums of log scaling factors and density maxima, which can cancel
    # to near 0 (0.00317, 1.8e-15 apart: hypothesis found it), so 1e-13 of 1 too
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-13, atol=1e-13)
    for got, want in zip(new[2:], ref[2:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize(
    ("n_seq", "T", "want"),
    # written out, not re-derived from the formula under test (K=8, D=4, diag): 1 below
    # 4,000 rows, 2 up to 119,999 (3 would leave one of 2 threads idle a third of the
    # time), 4 from 120,000
    # (7 x 30,000 stays one lane unit: cut into units of two, run one sequence at a time,
    # it cost one thread 1.6x, measured 2026-12-02; 20 x 400 stays one unit: cut 8 + 12
    # it cost one thread 1.20x, more than MAX_COST)
    [(150, 400, 2), (200, 500, 2), (149, 400, 2), (240, 500, 4), (7, 30_000, 1),
     (2000, 500, 4), (3, 10, 1), (9, 400, 1), (20, 400, 1), (40, 400, 2)],
)  # fmt: skip
def test_units_are_few_wide_and_of_equal_rows(n_seq, T, want):
    """One unit below ``SPLIT_ROWS`` rows of estimated work, two from there, four from
    ``FOUR_ROWS`` rows, of equal rows up to one block of lanes, before the MAX_LANES
    split: wide units (long loops over lanes), and 2 or 4 threads that finish together."""
    lengths = np.full(n_seq, T)
    edges = compiled.units(lengths)
    assert np.diff(edges).max() <= compiled.MAX_LANES
    if n_seq > want * compiled.MAX_LANES:  # each unit cut again into MAX_LANES sequences
        assert len(edges) - 1 == want * -(-n_seq // (want * compiled.MAX_LANES))
        return
    rows = np.diff(edges) * T
    assert len(rows) == want
    assert rows.max() - rows.min() <= compiled.LANE_BLOCK * T


@pytest.mark.parametrize(
    ("n_seq", "T"),
    # and fewer, longer sequences: units of two lane blocks or more (stop 21: 50 x 2000
    # had been cut 25/25, 64 lanes where 24 + 26 make 56)
    [(150, 400), (151, 400), (157, 400), (200, 400), (203, 400), (1000, 400), (5000, 400),
     (48, 1900), (40, 1900), (50, 1900), (60, 1900)],
)  # fmt: skip
def test_units_of_lanes_are_cut_on_whole_lane_blocks(n_seq, T):
    """Splitting a batch into units adds no padding lanes: every cut between units of
    many sequences falls on a multiple of LANE_BLOCK (equal-row cuts had split 150
    sequences 75/75, 160 lanes where one unit has 152: 5 % more work on one thread)."""
    lengths = np.random.default_rng(n_seq).integers(T, T + 40, size=n_seq)
    edges = compiled.units(lengths)
    assert len(edges) > 2  # more than one unit
    assert np.all(edges[1:-1] % compiled.LANE_BLOCK == 0)
    padded = sum(-(-int(n) // compiled.LANE_BLOCK) for n in np.diff(edges))
    assert padded == -(-n_seq // compiled.LANE_BLOCK)


@needs_numba
def test_lane_kernel_flags_a_product_of_factors_that_would_go_subnormal():
    """Factors of 1e-200 each (above TINY): the product, kept as mantissa and power of
    two, is rescaled once per step and would drift into the subnormal range (silently
    imprecise); the lane is flagged for the exact log-space path instead, and the
    other lanes are what the first kernel gives."""
    kernels = compiled._kernels()
    run = _lanes_unit(3, 3, 2, [12, 10, 9, 8, 8], False, drift=[1])
    from .reference_kernels import lanes_fb_stats_v1  # imports numba

    new, ref = run(kernels.lanes_fb_stats), run(lanes_fb_stats_v1)
    assert new[1].tolist() == [False, True, False, False, False]
    ok = ~new[1]
    np.testing.assert_allclose(new[0][ok], ref[0][ok], rtol=1e-13)


def test_threads_asking_for_a_pool_at_once_share_one(monkeypatch):
    """Two fits on two threads ask for the kept pool of the same size at once: one pool
    is created and both get it (without the lock each created its own, and one of them
    was dropped with its threads still alive)."""
    import threading

    made = []
    barrier = threading.Barrier(2)

    class SlowPool:  # stands in for ThreadPoolExecutor; the barrier widens the race window
        def __init__(self, **kwargs):
            made.append(self)
            try:
                barrier.wait(timeout=0.5)  # both callers inside creation: the old race
            except threading.BrokenBarrierError:
                pass  # the other caller waits on the lock: creation is not shared

    monkeypatch.setattr(compiled, "_POOLS", {})
    monkeypatch.setattr(compiled.concurrent.futures, "ThreadPoolExecutor", SlowPool)
    got = [None, None]

    def ask(i):
        got[i] = compiled._pool(3)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1, f"{len(made)} pools created for one thread count"
    assert got[0] is got[1] is made[0] is compiled._POOLS["tying-hmm", 3]


@needs_numba
@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(1, 6),
    D=st.integers(1, 9),
    lengths=st.lists(st.integers(1, 12), min_size=4, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_lane_density_diag_equals_the_numpy_log_density(K, D, lengths, seed):
    """The diagonal lane density (features taken two per pass, the last pass adding the
    constant and the row maximum) gives every row's log-density to 1e-12 for any number
    of features (one pass, first pair + last, middle pairs, a last single feature), with
    padding lanes at exactly 0 in both b and m."""
    from tying.hmm.forward_backward import LaneLayout

    rng = np.random.default_rng(seed)
    X = rng.normal(scale=3.0, size=(int(np.sum(lengths)), D))
    means, var = rng.normal(size=(K, D)), rng.uniform(0.2, 3.0, size=(K, D))
    prec = 1.0 / var
    const = -0.5 * (D * np.log(2 * np.pi) + np.log(var).sum(1))
    want = const - 0.5 * (((X[:, None, :] - means) ** 2) * prec).sum(2)  # (N, K)
    (unit,) = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths)).units
    T, _, S = unit["XL"].shape
    b, m = np.full((T, K, S), np.nan), np.full((T, S), np.nan)
    compiled._kernels().lanes_density_diag(unit["XL"], unit["n_act"], means, prec, const, b, m)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for lane, s in enumerate(unit["seqs"]):
        rows = want[starts[s] : starts[s] + lengths[s]]  # (L, K)
        got = b[: lengths[s], :, lane] + m[: lengths[s], lane, None]
        np.testing.assert_allclose(got, rows, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m[: lengths[s], lane], rows.max(1), rtol=1e-12, atol=1e-12)
        assert np.all(b[: lengths[s], :, lane].max(1) == 0.0)  # m is the maximum of the row
    for t in range(T):
        n = unit["n_act"][t]
        assert np.all(b[t, :, n:] == 0.0) and np.all(m[t, n:] == 0.0)


@needs_numba
def test_lane_layout_arrays_share_one_block_without_overlapping(monkeypatch):
    """Every unit's arrays (data lanes, scaling, maxima, emissions, forward) are carved
    from one allocation: pairwise disjoint, 64-byte aligned, kept while K stays, made
    again for another K, and refused before ``prepare`` says which K."""
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 64)  # several units, of both kinds
    lengths = [3, 200, 9, 1, 7, 40, 5, 33, 2, 8, 11, 300]
    X = np.random.default_rng(0).normal(size=(sum(lengths), 3))
    lay = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths))
    assert len(lay.units) > 2 and {u["kind"] for u in lay.units} == {"rows", "lanes"}
    with pytest.raises(RuntimeError, match=r"call prepare\(K=4\) first"):
        lay.scratch(0, 4)
    lay.prepare(4)
    names = ("XL", "XcL", "ic", "m", "b", "alpha", "inv_c")
    arrays = [u[k] for u in lay.units for k in names if u.get(k) is not None]
    for i, a in enumerate(arrays):
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous
        for other in arrays[i + 1 :]:
            assert not np.shares_memory(a, other)
    kept = [lay.scratch(u, 4) for u in range(len(lay.units))]
    lay.prepare(4)
    assert all(lay.scratch(u, 4)[0] is kept[u][0] for u in range(len(lay.units)))
    lay.prepare(2)
    assert all(lay.scratch(u, 2)[0].shape[1] == 2 for u in range(len(lay.units)))


@needs_numba
def test_fused_estep_refuses_a_layout_made_for_other_data():
    """A layout built for another centre or other sequences would give wrong sums with
    no error: the E-step refuses it and names the fix."""
    from tying.hmm.forward_backward import LaneLayout, forward_backward_stats

    X = np.array([[0.0], [1.0], [5.0]])
    batch = SequenceBatch.from_lengths([2, 1])
    layout = LaneLayout(X, np.zeros(1), batch)

    def density(unit, b, m):
        m[:] = 0.0
        b[:] = 0.0

    args = (np.ones(1), np.ones((1, 1)), X)
    with pytest.raises(ValueError, match="build the LaneLayout from the same X, center and batch"):
        forward_backward_stats(*args, np.ones(1), batch, layout, density, None, full=False)
    other = SequenceBatch.from_lengths([1, 2])
    with pytest.raises(ValueError, match="build the LaneLayout from the same X, center and batch"):
        forward_backward_stats(*args, np.zeros(1), other, layout, density, None, full=False)
    moved = (np.ones(1), np.ones((1, 1)), X + 1.0)  # other values, same shape and lengths
    with pytest.raises(ValueError, match=r"layout was made for another X \(shape \(3, 1\)\)"):
        forward_backward_stats(*moved, np.zeros(1), batch, layout, density, None, full=False)
    post = forward_backward_stats(*args, np.zeros(1), batch, layout, density, None, full=False)
    assert post.stats.n.tolist() == [3.0]
    copy = (np.ones(1), np.ones((1, 1)), X.copy())  # equal values, another array: accepted
    post = forward_backward_stats(*copy, np.zeros(1), batch, layout, density, None, full=False)
    assert post.stats.sx.tolist() == [[6.0]]
    center = np.zeros(1)
    layout = LaneLayout(X, center, batch)
    X[2, 0] = 7.0  # the arrays the layout was made from, edited in place
    with pytest.raises(ValueError, match=r"layout was made for another X \(shape \(3, 1\)\)"):
        forward_backward_stats(*args, center, batch, layout, density, None, full=False)
    X[2, 0] = 5.0
    center[0] = 1.0
    with pytest.raises(ValueError, match="build the LaneLayout from the same X, center and batch"):
        forward_backward_stats(*args, center, batch, layout, density, None, full=False)
    with pytest.raises(ValueError, match="read-only"):  # the layout's own copy cannot drift
        layout.X[0, 0] = 1.0


def _fresh_probe(tmp_path, monkeypatch, body="x * 3.0"):
    """A cache=True numba function imported afresh from a file of its own (not yet called)."""
    path = tmp_path / "cold_probe.py"
    path.write_text(f"import numba\n\n@numba.njit(cache=True)\ndef h(x):\n    return {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cold_probe", raising=False)
    return importlib.import_module("cold_probe").h


@needs_numba
def test_a_cold_compile_is_announced_once_with_where_it_is_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(compiled, "_SEEN_COLD", set())
    cold = _fresh_probe(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tying.hmm.compiled"):
        assert compiled.notice_cold_compile(cold, "the test loop")
        assert not compiled.notice_cold_compile(cold, "the test loop")  # once
    (record,) = caplog.records
    assert "compiling the test loop" in record.getMessage()
    assert str(cold._cache.cache_path) in record.getMessage()


@needs_numba
def test_a_stale_cache_entry_is_announced_as_a_cold_compile(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(compiled, "_SEEN_COLD", set())
    assert _fresh_probe(tmp_path, monkeypatch)(2.0) == 6.0  # compiled, saved to the cache
    stale = _fresh_probe(tmp_path, monkeypatch, body="x * 4.0")  # its source changed
    with caplog.at_level(logging.WARNING, logger="tying.hmm.compiled"):
        assert compiled.notice_cold_compile(stale, "the test loop")
    assert stale(2.0) == 8.0


@pytest.mark.parametrize("case", ["cache entry on disk", "compiled here", "not numba"])
def test_no_notice_when_nothing_will_be_compiled_from_cold(case, tmp_path, monkeypatch, caplog):
    if case != "not numba":
        pytest.importorskip("numba")
    monkeypatch.setattr(compiled, "_SEEN_COLD", set())
    if case == "cache entry on disk":
        assert _fresh_probe(tmp_path, monkeypatch)(2.0) == 6.0
        d = _fresh_probe(tmp_path, monkeypatch)  # a new process would see this
        assert not d.signatures
    elif case == "compiled here":
        d = _fresh_probe(tmp_path, monkeypatch)
        d(2.0)
    else:
        d = object()
    with caplog.at_level(logging.WARNING, logger="tying.hmm.compiled"):
        assert not compiled.notice_cold_compile(d, "the test loop")
    assert caplog.records == []


@needs_numba
def test_a_fit_looks_at_its_loop_before_running_it(monkeypatch):
    from tying.hmm import _numba_em

    seen = []
    monkeypatch.setattr(compiled, "notice_cold_compile", lambda d, what: seen.append(d))
    X = np.random.default_rng(0).normal(size=(400, 2))
    GaussianHMM(2, n_iter=2, random_state=0, n_jobs=1).fit(X, [50] * 8)
    assert seen == [_numba_em.em_run]


@pytest.mark.parametrize(
    ("K", "D", "ctype", "n_seq", "T", "want"),
    # written out (2026-12-02 cost model): a fit of costly rows is split where the same
    # rows of 8 states and 4 features are not; stop 23 cut by rows, and 20,000 rows of 32
    # states (2.6 ms an iteration) ran on one thread whatever n_jobs
    [(32, 4, "diag", 50, 400, [0, 24, 50]), (2, 2, "diag", 20, 100, [0, 20]),
     (8, 4, "diag", 20, 100, [0, 20]), (32, 4, "diag", 40, 100, [0, 16, 40]),
     (8, 16, "full", 40, 100, [0, 16, 40]), (8, 4, "tied", 40, 150, [0, 16, 40]),
     (8, 4, "diag", 20, 150, [0, 20]), (2, 1, "diag", 2, 2000, [0, 2]),
     (8, 4, "diag", 2, 2000, [0, 1, 2]), (8, 4, "diag", 3, 2000, [0, 1, 3]),
     # a split that gains nothing is not made: 4 + 4 sequences are two units of 8
     # lanes, each as costly as the one unit
     (8, 4, "diag", 8, 1000, [0, 8]),
     # a few long sequences run one at a time (stop 24's rows kernel, 2.3 lane-steps a
     # row) cost one thread less than one lane unit of 8 padded lanes: 4 x 1000 cut
     # 2 + 2 measured 1.24x cheaper on one thread (2026-12-02)
     (8, 4, "diag", 6, 1000, [0, 3, 6]), (8, 4, "diag", 5, 1000, [0, 2, 5]),
     (8, 4, "diag", 4, 1000, [0, 2, 4]),
     # nor one that costs one thread over 1.15x: 16 lanes cut 8 + 8 (+26 % measured at
     # 10 x 400), 24 cut 16 + 8 and 20 cut 8 + 12 (+20 % measured at 20 x 400)
     (8, 4, "diag", 10, 400, [0, 10]), (8, 4, "diag", 16, 400, [0, 16]),
     (8, 4, "diag", 24, 400, [0, 24]), (32, 4, "diag", 20, 100, [0, 20])],
)  # fmt: skip
def test_units_follow_the_estimated_work_not_the_rows(K, D, ctype, n_seq, T, want):
    """The unit count follows the E-step's estimated work (rows times the cost of a row
    at K, D and the covariance type), few long sequences are a unit each, and a split
    whose costlier unit would cost about what the whole did, or whose units would cost
    one thread over 1.25x the whole, is not made."""
    assert compiled.units(np.full(n_seq, T), K, D, ctype).tolist() == want


def test_row_cost_grows_with_every_dimension_and_names_a_bad_covariance_type():
    """The cost model is 1 at the reference (K=8, D=4, diag), grows with K and D, and
    full/tied rows cost more than diag ones; an unknown covariance type is refused."""
    assert compiled.row_cost(8, 4, "diag") == 1.0
    assert compiled.row_cost(8, 4, "spherical") == 1.0
    for ctype in ("diag", "full", "tied"):
        costs = [[compiled.row_cost(K, D, ctype) for D in (1, 2, 4, 16, 64)] for K in (1, 2, 8, 32)]
        assert np.all(np.diff(costs, axis=0) > 0) and np.all(np.diff(costs, axis=1) > 0)
    assert compiled.row_cost(8, 4, "full") > compiled.row_cost(8, 4, "diag")
    assert compiled.row_cost(8, 4, "tied") > compiled.row_cost(8, 4, "diag")
    with pytest.raises(ValueError, match=r"covariance_type must be one of .*got 'bogus'"):
        compiled.row_cost(8, 4, "bogus")


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=80),
    K=st.integers(1, 40),
    D=st.integers(1, 20),
    ctype=st.sampled_from(["diag", "spherical", "full", "tied"]),
)
def test_property_units_cover_every_sequence_without_extra_padding(lengths, K, D, ctype):
    """Whatever the lengths, K, D and covariance type: the units cover every sequence once,
    in order, each of at most MAX_LANES sequences, at most UNITS per MAX_LANES, and their
    lane blocks (units of LANE_BLOCK // 2 sequences or more) are no more than one unit
    over all the sequences would have, plus one block per unit."""
    lengths = np.array(lengths)
    edges = compiled.units(lengths, K, D, ctype)
    sizes = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == len(lengths) and np.all(sizes >= 1)
    assert sizes.max() <= compiled.MAX_LANES
    assert len(sizes) <= compiled.UNITS * -(-len(lengths) // compiled.MAX_LANES)
    assert np.array_equal(edges, compiled.units(lengths.copy(), K, D, ctype))
    if len(lengths) >= 2 * compiled.LANE_BLOCK and sizes.min() >= compiled.LANE_BLOCK:
        blocks = sum(-(-int(n) // compiled.LANE_BLOCK) for n in sizes)
        assert blocks == -(-len(lengths) // compiled.LANE_BLOCK)  # cuts on whole blocks


@needs_numba
@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 400), min_size=1, max_size=40),
    K=st.integers(1, 12),
    D=st.integers(1, 5),
    ctype=st.sampled_from(["diag", "spherical", "full", "tied"]),
    seed=st.integers(0, 1000),
)
@example(lengths=[400] * 20, K=8, D=4, ctype="diag", seed=0)  # 20 x 400: 8 + 12 sequences
@example(lengths=[2000, 2000], K=3, D=2, ctype="full", seed=1)  # two long: a unit each
def test_property_work_cut_units_give_bit_identical_fits_for_every_thread_count(
    lengths, K, D, ctype, seed
):
    """Units cut by estimated work (the cost model at this K, D and covariance type, its
    threshold lowered so that small data is split as a large fit would be): n_jobs = 1, 2
    and 3 give the same bits, every iteration's log-likelihood and every parameter."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiled, "SPLIT_ROWS", 300)
        mp.setattr(compiled, "FOUR_ROWS", 6_000)
        X = _gauss_data(seed, K, D, lengths)
        fits = [_gauss_fit(ctype, X, lengths, K, n_iter=3, n_jobs=n) for n in (1, 2, 3)]
    for other in fits[1:]:
        assert other.history_ == fits[0].history_
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            assert np.array_equal(getattr(other, name), getattr(fits[0], name)), name


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "K", "lengths", "edges"),
    [("diag", 32, [100] * 40, [0, 16, 40]), ("full", 16, [100] * 40, [0, 16, 40]),
     ("tied", 8, [150] * 40, [0, 16, 40]), ("diag", 16, [1500, 1500], [0, 1, 2])],
)  # fmt: skip
def test_fits_cut_by_work_agree_with_one_unit(ctype, K, lengths, edges, monkeypatch):
    """A fit the cost model splits (costly rows; two long sequences) gives what the same
    fit in one unit gives, to 1e-12 of each parameter's scale: only the order in which
    the units' sums are added differs."""
    X = _gauss_data(11, K, 3, lengths)
    assert compiled.units(np.array(lengths), K, 3, ctype).tolist() == edges
    split = _gauss_fit(ctype, X, lengths, K, n_iter=4, n_jobs=2)
    monkeypatch.setattr(compiled, "SPLIT_ROWS", 10**12)
    whole = _gauss_fit(ctype, X, lengths, K, n_iter=4, n_jobs=2)
    _assert_fits_agree(split, whole, rtol=1e-12)


@pytest.mark.parametrize(
    ("lengths", "want"),
    # stop 23 cut where a sequence's last row crossed a row block: a long first sequence
    # left every other one with it, and the fit ran on one thread whatever n_jobs
    [([5000, 10, 10, 10, 10, 10], [0, 1, 6]), ([10] * 5 + [5000], [0, 5, 6]),
     ([3000, 1000, 1000, 1000], [0, 1, 4]), ([4000] + [100] * 40, [0, 1, 41])],
)  # fmt: skip
def test_a_long_sequence_beside_short_ones_is_a_unit_of_its_own(lengths, want):
    """Each cut falls at the sequence boundary nearest its share of the rows."""
    assert compiled.units(np.array(lengths)).tolist() == want


@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_long_sequences_kept_in_one_lane_unit_follow_the_reference_path(ctype, monkeypatch):
    """Five long sequences stay one lane unit (stop 24; stop 23 ran them one at a time in
    units of two and three): the fit is the reference path's (NumPy, no numba) to 1e-10."""
    lengths = [9000, 8000, 8500, 7000, 9100]
    # (with today's rows kernel they run one at a time, 2 + 3: as costly as with stop
    # 13's, the lane unit is the path under test)
    monkeypatch.setattr(compiled, "ROW_LANE_STEPS", 4.4)
    assert compiled.units(np.array(lengths), 4, 2, ctype).tolist() == [0, 5]
    X = _gauss_data(12, 4, 2, lengths)
    fast = _gauss_fit(ctype, X, lengths, 4, n_iter=3)
    layout = fast._em_context(X, SequenceBatch.from_lengths(lengths))["layout"]
    assert [u["kind"] for u in layout.units] == ["lanes"]
    monkeypatch.setitem(compiled._STATE, "kernels", False)
    slow = _gauss_fit(ctype, X, lengths, 4, n_iter=3)
    _assert_fits_agree(fast, slow)
