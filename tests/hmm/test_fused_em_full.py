"""The compiled EM loop of full and tied covariance models agrees with the general EM
loop to 1e-12 (relative to each parameter's scale), gives the same bits for every
thread count, and hands over to the general loop where it must."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.hmm.gaussian as gaussian_module
from tying.hmm import GaussianHMM, compiled, fused_em, fused_em_full

from .helpers import rows_per_unit

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
PARAMS = ("_startprob", "_transitions", "_means", "_covars")
RTOL = 1e-12


def _data(seed, K, D, lengths):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(K, D))
    mix = rng.normal(size=(K, D, D)) * 0.5 + np.eye(D)  # correlated features per state
    n = int(np.sum(lengths))
    z = rng.integers(0, K, n)
    return centres[z] + np.einsum("nde,ne->nd", mix[z], rng.normal(size=(n, D)))


def _fit(X, lengths, K, ctype, *, n_iter=5, tol=-np.inf, n_jobs=1, **kw):
    return GaussianHMM(K, ctype, n_iter=n_iter, tol=tol, random_state=0, n_jobs=n_jobs, **kw).fit(
        X, lengths
    )


def _general_loop(monkeypatch):
    """From here on, every full/tied fit runs the general EM loop (the reference)."""
    monkeypatch.setattr(fused_em_full.FusedEMFull, "for_model", classmethod(lambda cls, *a: None))


def _count_iterations(monkeypatch) -> list:
    """Record what each compiled call did: (iterations run, whether it handed over)."""
    calls = []
    run = fused_em_full.FusedEMFull.run

    def counted(self, n_max, tol, prev):
        history, failed = run(self, n_max, tol, prev)
        calls.append((len(history), failed))
        return history, failed

    monkeypatch.setattr(fused_em_full.FusedEMFull, "run", counted)
    return calls


def _assert_close(fast, ref):
    """Every parameter within 1e-12 of the reference, relative to that parameter's largest
    entry (an off-diagonal covariance near 0 carries the diagonal's rounding), and every
    iteration's log-likelihood within 1e-12 relative."""
    assert (fast.n_iter_, fast.converged_) == (ref.n_iter_, ref.converged_)
    np.testing.assert_allclose(fast.history_, ref.history_, rtol=RTOL, atol=0)
    for name in PARAMS:
        a, b = getattr(fast, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.abs(b).max(), err_msg=name)


def _fns():
    """The NumPy loop addresses the compiled code calls (checked once per process)."""
    from tying.hmm import _numba_em

    fns = fused_em._fns(_numba_em)
    assert fns is not None, "the compiled EM loop is off here"
    return fns


def _assert_same_bits(a, b):
    assert a.history_ == b.history_
    for name in PARAMS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@needs_numba
@pytest.mark.parametrize("ctype", ["full", "tied"])
@pytest.mark.parametrize(
    ("lengths", "K", "D", "min_rows"),
    [
        ([40] * 150, 8, 4, 3_000),  # the goal shape scaled down: two units
        ([50] * 200, 3, 1, 2_000),  # four units, D = 1
        (list(np.random.default_rng(1).integers(1, 300, 90)), 5, 7, 4_000),  # mixed, odd D
        ([30] * 600, 2, 2, 30_000),  # one unit past 256 lanes: split into lane units
        ([25] * 9, 4, 3, 30_000),  # a single small unit
        ([10] * 40, 1, 2, 100),  # one state
        ([20] * 60, 16, 10, 500),  # K D (D + 1) / 2 = 880: stop 23's largest
        ([30] * 40, 8, 16, 600),  # 1088: the NumPy density's until stop 24
        ([12] * 20, 3, 33, 100),  # odd D past 32: edge tiles and rows
        ([10] * 20, 16, 24, 100),  # 4800: "tied" too (below its limit of 6144)
        # units of a few long sequences (the rows kernel, stop 24): one, and with lanes
        ([3000], 8, 4, 40_000),
        ([1500, 1200] + [20] * 40, 5, 3, 1_000),  # a rows unit next to a lane unit
    ],
    ids=[
        "goal-shape",
        "four-units",
        "mixed-lengths",
        "over-256-lanes",
        "one-unit",
        "K1",
        "K16-D10",
        "K8-D16",
        "K3-D33",
        "K16-D24",
        "rows-one-long",
        "rows-and-lanes",
    ],  # fmt: skip
)
def test_compiled_loop_agrees_with_the_general_loop_for_every_thread_count(
    ctype, lengths, K, D, min_rows, monkeypatch
):
    rows_per_unit(monkeypatch, min_rows)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)  # one call per fit, whatever the load
    X = _data(0, K, D, lengths)
    calls = _count_iterations(monkeypatch)
    fits = [_fit(X, lengths, K, ctype, n_jobs=n) for n in (1, 2, 3, -1)]
    assert calls == [(5, False)] * 4  # every iteration of every fit ran compiled, in one call
    for fit in fits[1:]:
        _assert_same_bits(fit, fits[0])
    _general_loop(monkeypatch)
    _assert_close(fits[0], _fit(X, lengths, K, ctype))


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "kw"),
    [
        (
            "full",
            {"means_prior": 0.5, "means_weight": 2.0, "covars_prior": 0.3, "covars_weight": 7.0},
        ),  # fmt: skip
        (
            "full",
            {"covars_weight": np.arange(1.0, 5.0), "startprob_prior": 2.0, "transmat_prior": 1.5},
        ),  # fmt: skip
        ("tied", {"covars_prior": np.eye(3) * 0.2, "covars_weight": 5.0, "means_weight": 1.0}),
        ("full", {"params": "tmc", "init_params": ""}),  # hmmlearn letters: start kept
        ("full", {"params": "stm", "init_params": ""}),  # covariances kept
        ("full", {"implementation": "log"}),  # hmmlearn-style build: its covariance prior
    ],
    ids=[
        "priors",
        "per-state-weight",
        "tied-priors",
        "no-start",
        "no-covars",
        "hmmlearn-style",
    ],  # fmt: skip
)
def test_priors_and_params_agree_with_the_general_loop(ctype, kw, monkeypatch):
    lengths = [40] * 50
    X = _data(4, 4, 3, lengths)
    K, D = 4, 3
    start = dict(
        startprob_init=np.full(K, 1 / K), transmat_init=np.full((K, K), 1 / K),
        means_init=X[:K] + 0.1, covars_init=np.repeat(np.eye(D)[None], K, 0),
    )  # fmt: skip
    if ctype == "tied":
        start["covars_init"] = np.eye(D)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)  # one call per fit, whatever the load
    calls = _count_iterations(monkeypatch)
    fast = [_fit(X, lengths, K, ctype, n_jobs=n, **start, **kw) for n in (1, 2)]
    assert calls == [(5, False)] * 2
    _assert_same_bits(fast[1], fast[0])
    _general_loop(monkeypatch)
    _assert_close(fast[0], _fit(X, lengths, K, ctype, **start, **kw))


@needs_numba
@pytest.mark.parametrize("ctype", ["full", "tied"])
def test_the_eigenvalue_floor_agrees_with_the_general_loop(ctype, monkeypatch):
    """A feature that is nearly constant makes every covariance (nearly) singular: the
    floor at ``min_covar`` binds in every M-step, in the compiled loop as in the general."""
    lengths = [30] * 40
    X = _data(5, 3, 3, lengths)
    X[:, 2] = 0.5 * X[:, 0] + 1e-7 * np.random.default_rng(0).normal(size=len(X))
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)  # one call per fit, whatever the load
    calls = _count_iterations(monkeypatch)
    fast = _fit(X, lengths, 3, ctype, min_covar=1e-2, n_jobs=2)
    assert calls == [(5, False)]
    lowest = np.linalg.eigvalsh(fast.covars_).min(-1)
    assert np.allclose(lowest, 1e-2, rtol=1e-9, atol=0)  # the floor bound, and held
    _general_loop(monkeypatch)
    ref = _fit(X, lengths, 3, ctype, min_covar=1e-2)
    _assert_close(fast, ref)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compiled_loop_converges_at_the_same_iteration(n_jobs, monkeypatch):
    rows_per_unit(monkeypatch, 2_000)
    lengths = [60] * 80
    X = _data(2, 4, 2, lengths)
    calls = _count_iterations(monkeypatch)
    fit = _fit(X, lengths, 4, "full", n_iter=200, tol=1e-3, n_jobs=n_jobs, n_init=2)
    assert calls and fit.converged_ and 2 < fit.n_iter_ < 200
    _general_loop(monkeypatch)
    _assert_close(fit, _fit(X, lengths, 4, "full", n_iter=200, tol=1e-3, n_init=2))


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "kw", "lengths"),
    [
        ("full", {"ties": {"means": [[0, 1]]}}, [40] * 20),
        ("full", {"ties": {"transitions": [[1, 2]]}}, [40] * 20),
        ("tied", {"ties": {"means": [[0, 2]]}}, [40] * 20),
        ("full", {"ties": {"covars": [[0, 2]]}}, [40] * 20),
        ("diag", {}, [40] * 20),  # the diag loop's, not this one's
    ],
    ids=[
        "tied-means",
        "tied-transitions",
        "tied-type-tied-means",
        "covariance-groups",
        "diag",
    ],  # fmt: skip
)
def test_what_needs_another_loop_does_not_run_this_one(ctype, kw, lengths, monkeypatch):
    calls = _count_iterations(monkeypatch)
    X = _data(3, 3, 2, lengths)
    fit = _fit(X, lengths, 3, ctype, n_iter=2, **kw)
    assert calls == [] and fit.n_iter_ == 2


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "limit"), [("full", "_FUSED_FULL_MAX"), ("tied", "_FUSED_SHARED_MAX")]
)
def test_a_density_too_costly_per_state_runs_the_general_loop(ctype, limit, monkeypatch):
    """Each covariance type has its own limit: "tied" (one factor for every state) gets the
    NumPy density sooner (one triangular product per row for all K states)."""
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)  # one call per fit, whatever the load
    calls = _count_iterations(monkeypatch)
    monkeypatch.setattr(gaussian_module, limit, 8)  # K D (D + 1) / 2 = 9 above it
    lengths = [30] * 20
    fit = _fit(_data(1, 3, 2, lengths), lengths, 3, ctype, n_iter=2)
    assert calls == [] and fit.n_iter_ == 2
    monkeypatch.setattr(gaussian_module, limit, 9)  # at the limit: compiled
    assert _fit(_data(1, 3, 2, lengths), lengths, 3, ctype, n_iter=2).n_iter_ == 2
    assert calls == [(2, False)]


def test_the_lane_density_limits_by_covariance_groups():
    pays = gaussian_module._lanes_density_pays
    assert pays(8, 16, 8) and pays(8, 16, 1)  # the goal's K=8 at D=16: 1088
    assert pays(96, 24, 96) and not pays(96, 24, 1)  # 28,800: one factor per state only
    assert not pays(128, 32, 128)  # 67,584: the NumPy density


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_sequence_that_needs_log_space_hands_the_fit_to_the_general_loop(n_jobs, monkeypatch):
    """State 0 cannot reach state 1; one observation of sequence 1 sits 1e5 sigma from
    state 0, so its scaled recursion fails in every E-step: the compiled loop stops
    before its M-step and the general loop (exact log space) runs the whole fit."""
    lengths = [50, 4, 30, 20, 1, 7]
    X = _data(3, 1, 2, lengths)
    X[lengths[0] + 1] = 1e5

    def fit():
        return GaussianHMM(
            2, "full", startprob_init=[1.0, 0.0], transmat_init=np.eye(2),
            means_init=[[0.0, 0.0], [1e5, 1e5]], covars_init=np.repeat(np.eye(2)[None], 2, 0),
            n_iter=4, tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    calls = _count_iterations(monkeypatch)
    fast = fit()
    assert calls == [(0, True)]  # the first iteration failed: handed over before its M-step
    assert np.isfinite(fast.history_).all() and fast.n_iter_ == 4
    _general_loop(monkeypatch)
    _assert_same_bits(fast, fit())  # the general loop ran every iteration: its bits


@needs_numba
def test_a_handover_mid_fit_continues_from_that_iteration(monkeypatch):
    lengths = [40] * 30
    X = _data(5, 3, 2, lengths)
    run = fused_em_full.FusedEMFull.run
    done = []

    def fail_third(self, n_max, tol, prev):
        if len(done) == 2:  # as em_run returns when a lane failed: no M-step ran
            return [], True
        history, failed = run(self, min(n_max, 2 - len(done)), tol, prev)
        done.extend(history)
        return history, failed

    monkeypatch.setattr(fused_em_full.FusedEMFull, "run", fail_third)
    fast = _fit(X, lengths, 3, "tied", n_iter=6, n_jobs=2)
    assert len(done) == 2 and fast.n_iter_ == 6
    _general_loop(monkeypatch)
    _assert_close(fast, _fit(X, lengths, 3, "tied", n_iter=6))


@needs_numba
# one call for the whole fit, and one iteration per call (what a loaded machine gets: a
# call returns after BATCH_CYCLES of wall-clock cycles, preempted time included)
@pytest.mark.parametrize("batch_cycles", [2**62, 1], ids=["one-call", "a-call-per-iteration"])
def test_a_handover_after_a_converged_iteration_runs_no_further_iteration(
    batch_cycles, monkeypatch
):
    """A covariance with no Cholesky factor after an M-step hands over after it: when that
    M-step's iteration converged, the fit ends there, as the general loop's would.

    The handover is forced on the call whose last iteration converged, not on every call:
    forced on a call the cycle budget ended (3 runs in 10 under load), it handed a fit that
    had not converged to the general loop, whose bits differ in the last place (stop 34).
    """
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", batch_cycles)
    lengths = [60] * 80
    X = _data(2, 4, 2, lengths)
    ref = _fit(X, lengths, 4, "full", n_iter=200, tol=1e-3)
    run = fused_em_full.FusedEMFull.run
    handed = []

    def hand_over_at_the_end(self, n_max, tol, prev):
        history, failed = run(self, n_max, tol, prev)
        gains = np.diff([prev, *history])  # prev NaN (the first call): no gain, NaN
        converged = len(history) > 0 and gains[-1] < tol
        handed.append(converged)
        return history, failed or converged  # as if the last M-step left no Cholesky factor

    monkeypatch.setattr(fused_em_full.FusedEMFull, "run", hand_over_at_the_end)
    fast = _fit(X, lengths, 4, "full", n_iter=200, tol=1e-3)
    assert handed[-1] and not any(handed[:-1])  # handed over once: after converging
    if batch_cycles == 1:
        assert len(handed) == ref.n_iter_
    assert fast.converged_ and fast.n_iter_ == ref.n_iter_
    _assert_same_bits(fast, ref)


@needs_numba
def test_an_error_in_a_helper_thread_is_raised_and_the_model_is_unchanged(monkeypatch):
    from tying.hmm import _numba_em_full

    rows_per_unit(monkeypatch, 300)  # four units
    lengths = [40] * 30
    X = _data(7, 3, 2, lengths)

    entered = []
    real_run = _numba_em_full.em_run

    def worker(*args):
        entered.append(1)
        raise MemoryError("helper out of memory")

    def em_run(*args):  # the helper runs first (else it may be cancelled before it starts)
        deadline = time.monotonic() + 30
        while not entered and time.monotonic() < deadline:
            time.sleep(0.001)
        return real_run(*args)

    monkeypatch.setattr(_numba_em_full, "worker", worker)
    monkeypatch.setattr(_numba_em_full, "em_run", em_run)
    m = GaussianHMM(3, "full", n_iter=5, random_state=0, n_jobs=2)
    with pytest.raises(MemoryError, match="helper out of memory"):
        m.fit(X, lengths)
    assert entered == [1] and "_means" not in vars(m)


# ---------------------------------------------------------------- the compiled pieces
@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    D=st.integers(1, 9),
    G=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
)
def test_factors_agree_with_lapacks(D, G, seed, scale):
    """``linv`` and ``const`` as ``GaussianHMM._density_kernel`` makes them with LAPACK
    (Cholesky, triangular inverse, log-determinant), for any size and scale."""
    from tying.hmm import _numba_em_full

    rng = np.random.default_rng(seed)
    M = rng.normal(size=(G, D, D))
    covars = scale * (M @ M.transpose(0, 2, 1) + 0.1 * np.eye(D))
    gmap = rng.integers(0, G, 5).astype(np.int64)
    linv, const = np.empty((5, D, D)), np.empty(5)
    fns = _fns()
    ok = _numba_em_full.density_constants_full(
        covars, gmap, linv, const, np.empty((G, D)), fns, float(gaussian_module._LOG_2PI)
    )
    L = np.linalg.cholesky(covars)
    ref = np.linalg.inv(L)[gmap]
    logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
    assert ok
    np.testing.assert_allclose(linv, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(
        const, -0.5 * (D * gaussian_module._LOG_2PI + logdet[gmap]), rtol=1e-12, atol=1e-12
    )


@needs_numba
@pytest.mark.parametrize(
    "bad", [np.diag([1.0, -1.0]), np.array([[1.0, 2.0], [2.0, 1.0]]), np.diag([1.0, np.nan])]
)
def test_a_covariance_with_no_cholesky_factor_is_reported_not_used(bad):
    from tying.hmm import _numba_em_full

    fns = _fns()
    ok = _numba_em_full.density_constants_full(
        bad[None].copy(), np.zeros(2, np.int64), np.empty((2, 2, 2)), np.empty(2),
        np.empty((1, 2)), fns, 1.0,
    )  # fmt: skip
    assert not ok


@needs_numba
@settings(max_examples=60, deadline=None)
@given(
    D=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    floor=st.sampled_from([1e-3, 0.1, 1.0, 10.0]),
)
def test_the_eigenvalue_floor_agrees_with_the_general_loops(D, seed, floor):
    """The compiled floor leaves ``S`` as it is when no eigenvalue is below the floor
    (bit for bit), and otherwise gives the general loop's floored matrix to rounding."""
    from tying.hmm import _numba_em_full

    rng = np.random.default_rng(seed)
    M = rng.normal(size=(D, D))
    S = M @ M.T * rng.uniform(0.01, 3.0)
    S = 0.5 * (S + S.T)
    ref = gaussian_module._floor_eigenvalues(S.copy(), floor)
    got = S.copy()
    _numba_em_full._floor_eigenvalues(got, floor)
    if np.linalg.eigvalsh(S).min() > floor * (1 + 1e-9):
        assert np.array_equal(got, S)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@needs_numba
def test_iterations_in_several_calls_give_the_same_bits(monkeypatch):
    """Batches of iterations (a call returns after ``BATCH_CYCLES``) change no bit."""
    lengths = [40] * 60
    X = _data(6, 3, 3, lengths)
    calls = _count_iterations(monkeypatch)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)
    one_call = _fit(X, lengths, 3, "full", n_iter=6, n_jobs=2)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 1)  # one iteration per call
    many_calls = _fit(X, lengths, 3, "full", n_iter=6, n_jobs=2)
    assert calls == [(6, False)] + [(1, False)] * 6
    _assert_same_bits(many_calls, one_call)


@needs_numba
@settings(max_examples=12, deadline=None)
@given(
    ctype=st.sampled_from(["full", "tied"]),
    K=st.integers(1, 6),
    D=st.integers(1, 5),
    lengths=st.lists(st.integers(1, 120), min_size=1, max_size=60),
    seed=st.integers(0, 2**31),
)
def test_any_shape_agrees_with_the_general_loop_and_across_thread_counts(
    ctype, K, D, lengths, seed
):
    """Random shapes and sequence layouts: the same bits on 1 and 2 threads, and the
    general loop's parameters to 1e-12 (a fit the compiled loop hands over, or does not
    take, is compared the same way)."""
    X = _data(seed, K, D, lengths)
    fits = [_fit(X, lengths, K, ctype, n_iter=4, n_jobs=n) for n in (1, 2)]
    _assert_same_bits(fits[1], fits[0])
    with pytest.MonkeyPatch.context() as mp:
        _general_loop(mp)
        ref = _fit(X, lengths, K, ctype, n_iter=4)
    _assert_close(fits[0], ref)


# ---------------------------------------------------------------- stop 24: larger D
def _lane_unit(seed, D, lengths):
    """One lanes unit of ``lengths`` (``LaneLayout``), observations of D correlated features."""
    from tying.hmm.forward_backward import LaneLayout
    from tying.hmm.sequences import SequenceBatch

    X = _data(seed, 3, D, lengths)
    (unit,) = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths)).units
    return unit


def _factors(rng, K, D, scale):
    """``(linv, const)`` of K random covariances (``scale`` times a well-conditioned SPD
    matrix), ``linv`` lower triangular with NaN above its diagonal: a kernel that reads
    there gives NaN."""
    M = rng.normal(size=(K, D, D))
    covars = scale * (M @ M.transpose(0, 2, 1) / D + 0.5 * np.eye(D))
    L = np.linalg.cholesky(covars)
    linv = np.linalg.inv(L)
    linv[:, np.triu_indices(D, 1)[0], np.triu_indices(D, 1)[1]] = np.nan
    logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
    return linv, -0.5 * (D * gaussian_module._LOG_2PI + logdet)


@needs_numba
@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 13),  # four states' passes and a remainder
    D=st.integers(1, 33),  # four rows of L^-1 per pass, every remainder, odd D
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=40),  # 1..5 lane blocks
    seed=st.integers(0, 2**31),
    scale=st.sampled_from([1e-4, 1.0, 1e4]),
    far=st.sampled_from([0.0, 1e3]),  # means far from the data: large quadratic forms
)
def test_property_full_density_equals_the_stop23_kernel(K, D, lengths, seed, scale, far):
    """The lane-block density (four rows of ``L^-1`` per pass, stop 24) gives stop 23's
    loop's log-densities (kept in ``tests/hmm/reference_kernels.py``) to 1e-12 of their
    scale, never reads above ``L^-1``'s diagonal, and leaves padding lanes at exactly 0."""
    from tying.hmm import _numba_kernels

    from .reference_kernels import lanes_density_full_v23  # imports numba

    rng = np.random.default_rng(seed)
    unit = _lane_unit(seed % 1000, D, lengths)
    XL, n_act = unit["XL"], unit["n_act"]
    T, _, S = XL.shape
    means = XL[0, :, :1].T + rng.normal(scale=far + 1.0, size=(K, D))
    linv, const = _factors(rng, K, D, scale)

    def run(kernel):
        b, m = np.full((T, K, S), 7.0), np.full((T, S), 7.0)
        kernel(XL, n_act, means, linv, const, b, m)
        return b, m

    (b, m), (b0, m0) = run(_numba_kernels.lanes_density_full), run(lanes_density_full_v23)
    want = b0 + m0[:, None]
    assert np.isfinite(want).all()
    np.testing.assert_allclose(b + m[:, None], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(m, m0, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    for t in range(T):  # lanes past their end: exact zeros, as before
        assert not b[t, :, n_act[t] :].any() and not m[t, n_act[t] :].any()


@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(1, 10),
    D=st.integers(1, 33),  # 4 x 4 tiles of the second moments and every edge tile
    lengths=st.lists(st.integers(1, 30), min_size=4, max_size=40),  # a lanes unit
    seed=st.integers(0, 2**31),
)
def test_property_full_statistics_equal_the_stop22_kernel(K, D, lengths, seed):
    """The full second moments in 4 x 4 tiles (stop 24) give the stop-22 kernel's statistics
    (``tests/hmm/reference_kernels.py``: sums over the lanes at every step, one pair of
    features at a time) to 1e-12 of each statistic's scale, at any D and lane count."""
    from tying.hmm import _numba_kernels

    from .reference_kernels import lanes_fb_stats_v22  # imports numba

    rng = np.random.default_rng(seed)
    unit = _lane_unit(seed % 1000, D, lengths)
    assert unit["kind"] == "lanes"
    T, _, S = unit["XL"].shape
    n = len(unit["lens"])
    logb = rng.normal(scale=3.0, size=(T, K, S))
    m, b = np.zeros((T, S)), np.zeros((T, K, S))
    for t in range(T):
        a = unit["n_act"][t]
        m[t, :a] = logb[t, :, :a].max(0)
        b[t, :, :a] = np.exp(logb[t, :, :a] - m[t, :a])
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)

    def run(kernel):
        outs = (np.empty(n), np.empty(n, np.bool_), np.empty((K, K)), np.empty(K),
                np.empty(K), np.empty((D, K)), np.full((D, D, K), 7.0))  # fmt: skip
        kernel(start, A, b.copy(), m, unit["n_act"], unit["lens"], unit["XcL"], True,
               np.empty((T, K, S)), np.empty((T, S)), *outs)  # fmt: skip
        return outs

    new, ref = run(_numba_kernels.lanes_fb_stats), run(lanes_fb_stats_v22)
    assert not ref[1].any() and not new[1].any()
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-13)
    lower = np.tril(np.ones((D, D), bool))
    assert (new[6][~lower] == 0).all()  # above the diagonal: 0, as before
    for got, want in zip(new[2:], ref[2:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(want).max()))
