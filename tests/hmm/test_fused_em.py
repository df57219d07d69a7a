"""The compiled EM loop (one call per iteration, helper threads that stay in compiled code)
gives the general EM loop's bits, for any thread count, and never hangs."""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import numpy as np
import pytest

from tying.hmm import GaussianHMM, SequenceBatch, compiled, fused_em

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
PARAMS = ("_startprob", "_transitions", "_means", "_covars")


def _data(seed, K, D, lengths):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(K, D))
    n = int(np.sum(lengths))
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))


def _fit(X, lengths, K, *, ctype="diag", n_iter=5, tol=-np.inf, n_jobs=1, **kw):
    return GaussianHMM(K, ctype, n_iter=n_iter, tol=tol, random_state=0, n_jobs=n_jobs, **kw).fit(
        X, lengths
    )


def _general_loop(monkeypatch):
    """From here on, every fit runs the general EM loop (the reference)."""
    monkeypatch.setattr(fused_em.FusedEM, "for_model", classmethod(lambda cls, *a: None))


def _count_steps(monkeypatch) -> list:
    calls = []
    step = fused_em.FusedEM.step

    def counted(self):
        calls.append(1)
        return step(self)

    monkeypatch.setattr(fused_em.FusedEM, "step", counted)
    return calls


def _assert_same_bits(a, b):
    assert a.history_ == b.history_
    assert (a.n_iter_, a.converged_) == (b.n_iter_, b.converged_)
    for name in PARAMS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@needs_numba
@pytest.mark.parametrize(
    ("lengths", "K", "D", "min_rows"),
    [
        ([40] * 150, 8, 4, 3_000),  # the goal shape scaled down: two units, 72 + 78 lanes
        ([50] * 200, 3, 1, 2_000),  # four units, D = 1
        (list(np.random.default_rng(1).integers(1, 300, 90)), 5, 7, 4_000),  # mixed, odd D
        ([30] * 600, 2, 2, 30_000),  # one unit past 256 lanes: split into lane units
        ([25] * 9, 4, 3, 30_000),  # a single small unit
        ([20] * 50, 32, 20, 500),  # large K and D: NumPy's 8-way pairwise sum of log prec
        ([10] * 40, 1, 2, 100),  # one state
    ],
    ids=["goal-shape", "four-units", "mixed-lengths", "over-256-lanes", "one-unit", "K32-D20",
         "K1"],  # fmt: skip
)
def test_compiled_loop_gives_the_general_loops_bits_for_every_thread_count(
    lengths, K, D, min_rows, monkeypatch
):
    """Every iteration's log-likelihood and every parameter, bit for bit, for n_jobs
    1, 2, 3 and -1, against the general loop (one thread); and the compiled loop ran."""
    monkeypatch.setattr(compiled, "MIN_ROWS", min_rows)
    X = _data(0, K, D, lengths)
    steps = _count_steps(monkeypatch)
    fits = [_fit(X, lengths, K, n_jobs=n) for n in (1, 2, 3, -1)]
    assert len(steps) == 4 * 5  # every iteration of every fit ran compiled
    _general_loop(monkeypatch)
    ref = _fit(X, lengths, K)
    for fit in fits:
        _assert_same_bits(fit, ref)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compiled_loop_converges_at_the_same_iteration(n_jobs, monkeypatch):
    """With a real tolerance both loops stop at the same iteration, with the same bits
    (and with restarts: each restart gets its own helper threads)."""
    monkeypatch.setattr(compiled, "MIN_ROWS", 2_000)
    lengths = [60] * 80
    X = _data(2, 4, 2, lengths)
    fit = _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_jobs=n_jobs, n_init=2)
    assert fit.converged_ and 2 < fit.n_iter_ < 200
    _general_loop(monkeypatch)
    _assert_same_bits(fit, _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_init=2))


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "ties", "lengths"),
    [
        ("full", None, [40] * 20),
        ("tied", None, [40] * 20),
        ("spherical", None, [40] * 20),
        ("diag", {"means": [[0, 1]]}, [40] * 20),
        ("diag", {"transitions": [[1, 2]]}, [40] * 20),
        ("diag", None, [5000, 3]),  # units of a few long sequences (rows, not lanes)
    ],
    ids=["full", "tied", "spherical", "tied-means", "tied-rows", "long-sequences"],
)
def test_what_needs_the_general_loop_runs_it(ctype, ties, lengths, monkeypatch):
    steps = _count_steps(monkeypatch)
    X = _data(3, 3, 2, lengths)
    fit = _fit(X, lengths, 3, ctype=ctype, ties=ties, n_iter=2)
    assert steps == [] and fit.n_iter_ == 2


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_sequence_that_needs_log_space_hands_the_fit_to_the_general_loop(n_jobs, monkeypatch):
    """State 0 never leaves and cannot reach state 1; one observation of sequence 1 sits
    1e5 sigma from state 0, so its scaled recursion fails in every E-step. The compiled
    loop stops before its M-step and the general loop (exact log space) runs the whole
    fit: the same bits as the general loop alone."""
    lengths = [50, 4, 30, 20, 1, 7]
    X = _data(3, 1, 2, lengths)
    X[lengths[0] + 1] = 1e5

    def fit():
        return GaussianHMM(
            2, "diag", startprob_init=[1.0, 0.0], transmat_init=np.eye(2),
            means_init=[[0.0, 0.0], [1e5, 1e5]], covars_init=np.ones((2, 2)), n_iter=4,
            tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    steps = _count_steps(monkeypatch)
    fast = fit()
    assert steps == [1]  # tried once, handed over
    assert np.isfinite(fast.history_).all() and fast.n_iter_ == 4
    _general_loop(monkeypatch)
    _assert_same_bits(fast, fit())


@needs_numba
def test_a_handover_mid_fit_continues_from_that_iteration(monkeypatch):
    """A failure found at iteration 2 (forced here) leaves the parameters of iteration 2
    untouched: the general loop takes over from there with the same bits."""
    lengths = [40] * 30
    X = _data(5, 3, 2, lengths)
    step = fused_em.FusedEM.step
    calls = []

    def fail_third(self):
        calls.append(1)
        if len(calls) == 3:  # as em_step returns when a lane failed: no M-step ran
            return None
        return step(self)

    monkeypatch.setattr(fused_em.FusedEM, "step", fail_third)
    fast = _fit(X, lengths, 3, n_iter=6, n_jobs=2)
    assert len(calls) == 3 and fast.n_iter_ == 6
    _general_loop(monkeypatch)
    _assert_same_bits(fast, _fit(X, lengths, 3, n_iter=6))


def _spy_helpers(monkeypatch, fail=None) -> dict:
    """Wrap the helpers' compiled loop: record how many entered and left it."""
    from tying.hmm import _numba_em

    seen = {"in": 0, "out": 0}
    real = _numba_em.worker

    def worker(*args):
        seen["in"] += 1
        try:
            if fail is not None:
                raise fail
            return real(*args)
        finally:
            seen["out"] += 1

    monkeypatch.setattr(_numba_em, "worker", worker)
    return seen


@needs_numba
def test_an_error_in_a_helper_thread_is_raised_and_the_model_is_unchanged(monkeypatch):
    monkeypatch.setattr(compiled, "MIN_ROWS", 300)  # four units: three helpers could work
    lengths = [40] * 30
    X = _data(7, 3, 2, lengths)
    seen = _spy_helpers(monkeypatch, fail=MemoryError("helper out of memory"))
    m = GaussianHMM(3, "diag", n_iter=5, random_state=0, n_jobs=2)
    with pytest.raises(MemoryError, match="helper out of memory"):
        m.fit(X, lengths)
    assert seen == {"in": 1, "out": 1}
    assert "_means" not in vars(m)


@needs_numba
def test_an_interrupt_between_iterations_stops_every_helper_thread(monkeypatch):
    """Ctrl-C reaches the fitting thread between two compiled iterations: the helpers
    leave their compiled loop before fit re-raises, and the model is unchanged."""
    from tying.hmm import monitor

    monkeypatch.setattr(compiled, "MIN_ROWS", 300)
    lengths = [40] * 30
    X = _data(8, 3, 2, lengths)
    seen = _spy_helpers(monkeypatch)
    report = monitor.ConvergenceMonitor.report

    def interrupted(self, log_prob):
        if len(self.history) == 2:
            raise KeyboardInterrupt
        report(self, log_prob)

    monkeypatch.setattr(monitor.ConvergenceMonitor, "report", interrupted)
    m = GaussianHMM(3, "diag", n_iter=5, random_state=0, n_jobs=3)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, lengths)
    assert seen["in"] == seen["out"] >= 1  # every helper that started has left
    assert "_means" not in vars(m)


@needs_numba
def test_a_helper_whose_thread_never_starts_neither_hangs_the_fit_nor_changes_it(monkeypatch):
    """The helpers' pool thread is held by other work for the whole fit: the fitting
    thread runs every unit itself, finishes, and leaves no helper queued behind."""
    lengths = [40] * 150
    monkeypatch.setattr(compiled, "MIN_ROWS", 3_000)
    X = _data(9, 4, 3, lengths)
    seen = _spy_helpers(monkeypatch)
    busy, release = threading.Event(), threading.Event()
    blocker = fused_em._pool(1).submit(lambda: (busy.set(), release.wait(60)))
    assert busy.wait(10)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fit = ex.submit(_fit, X, lengths, 4, n_jobs=2).result(timeout=120)
    finally:
        release.set()
        blocker.result(timeout=10)
    assert seen == {"in": 0, "out": 0}  # the queued helper was cancelled, not run later
    _general_loop(monkeypatch)
    _assert_same_bits(fit, _fit(X, lengths, 4))


@needs_numba
def test_numpys_exp_and_log_loops_called_directly_give_numpys_bits():
    from tying.hmm import _numba_em

    fns = fused_em._fns(_numba_em)
    assert fns is not None
    rng = np.random.default_rng(11)
    for fn, data, ufunc, x in (
        (fns[0], fns[1], np.exp, rng.uniform(-750, 5, (37, 8, 16))),
        (fns[2], fns[3], np.log, np.exp(rng.uniform(-700, 700, (5, 1001)))),
    ):
        y = x.copy()
        _numba_em.ufunc_in_place(fn, data, y)
        assert np.array_equal(y, ufunc(x))


@needs_numba
def test_loops_that_disagree_with_numpy_turn_the_compiled_loop_off(monkeypatch, caplog):
    """If NumPy's loops cannot be found or give other bits (another NumPy layout), the
    general loop runs, and an INFO message says why."""
    monkeypatch.setitem(fused_em._STATE, "fns", None)
    real = fused_em._ufunc_loop
    monkeypatch.setattr(fused_em, "_ufunc_loop", lambda uf: real(np.log))  # exp -> log
    steps = _count_steps(monkeypatch)
    lengths = [30] * 10
    X = _data(12, 2, 2, lengths)
    with caplog.at_level(logging.INFO, logger="tying.hmm.fused_em"):
        fit = _fit(X, lengths, 2, n_iter=3)
    assert steps == [] and fit.n_iter_ == 3
    assert "compiled EM loop is off" in caplog.text and "other bits" in caplog.text
    monkeypatch.setitem(fused_em._STATE, "fns", None)  # found and checked afresh later


@needs_numba
def test_atomic_counter_counts_every_add_of_two_threads():
    """The helpers claim units with an atomic add: no claim is lost or given twice."""
    import numba

    from tying.hmm import _numba_em

    @numba.njit(nogil=True)
    def claim(ctl, n, out):
        for _ in range(n):
            out[_numba_em.atomic_add(ctl, 0, 1)] += 1

    ctl = np.zeros(1, dtype=np.int64)
    out = np.zeros(400_000, dtype=np.int64)
    threads = [threading.Thread(target=claim, args=(ctl, 200_000, out)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ctl[0] == 400_000 and np.all(out == 1)


@needs_numba
def test_the_fit_layout_is_planned_once_per_fit(monkeypatch):
    lengths = [40] * 20
    X = _data(13, 3, 2, lengths)
    m = _fit(X, lengths, 3, n_iter=1)
    context = m._em_context(X, SequenceBatch.from_lengths(lengths))
    a = fused_em.FusedEM.for_model(m, context, m._mstep_fast(context))
    b = fused_em.FusedEM.for_model(m, context, m._mstep_fast(context))
    assert a.plan is b.plan
