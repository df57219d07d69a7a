"""The compiled EM loop (one call per iteration, helper threads that stay in compiled code)
gives the general EM loop's bits, for any thread count, and never hangs."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import numpy as np
import pytest

import tying
import tying.hmm.gaussian as gaussian_module
from tying.hmm import GaussianHMM, SequenceBatch, compiled, fused_em

from .helpers import rows_per_unit

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


def _count_iterations(monkeypatch) -> list:
    """Record what each compiled call did: (iterations run, whether it handed over)."""
    calls = []
    run = fused_em.FusedEM.run

    def counted(self, n_max, tol, prev):
        history, failed = run(self, n_max, tol, prev)
        calls.append((len(history), failed))
        return history, failed

    monkeypatch.setattr(fused_em.FusedEM, "run", counted)
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
        # units of a few long sequences (the rows kernel, stop 24): one, and with lanes
        ([3000], 8, 4, 40_000),
        ([1500, 700, 7], 13, 3, 40_000),  # K past one block of 8, a 7-step sequence
        ([1500, 1200] + [20] * 40, 5, 2, 1_000),  # a rows unit next to a lane unit
    ],
    ids=[
        "goal-shape",
        "four-units",
        "mixed-lengths",
        "over-256-lanes",
        "one-unit",
        "K32-D20",
        "K1",
        "rows-one-long",
        "rows-few-long",
        "rows-and-lanes",
    ],  # fmt: skip
)
def test_compiled_loop_gives_the_general_loops_bits_for_every_thread_count(
    lengths, K, D, min_rows, monkeypatch
):
    """Every iteration's log-likelihood and every parameter, bit for bit, for n_jobs
    1, 2, 3 and -1, against the general loop (one thread); and the compiled loop ran."""
    rows_per_unit(monkeypatch, min_rows)
    # one call per fit whatever the load: the loop returns to Python after BATCH_CYCLES
    # (about 40 ms), which a loaded machine reached within 5 iterations (1 run in 30)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)
    X = _data(0, K, D, lengths)
    calls = _count_iterations(monkeypatch)
    fits = [_fit(X, lengths, K, n_jobs=n) for n in (1, 2, 3, -1)]
    assert calls == [(5, False)] * 4  # every iteration of every fit ran compiled, in one call
    _general_loop(monkeypatch)
    ref = _fit(X, lengths, K)
    for fit in fits:
        _assert_same_bits(fit, ref)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compiled_loop_converges_at_the_same_iteration(n_jobs, monkeypatch):
    """With a real tolerance both loops stop at the same iteration, with the same bits
    (and with restarts: each restart gets its own helper threads)."""
    rows_per_unit(monkeypatch, 2_000)
    lengths = [60] * 80
    X = _data(2, 4, 2, lengths)
    fit = _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_jobs=n_jobs, n_init=2)
    assert fit.converged_ and 2 < fit.n_iter_ < 200
    _general_loop(monkeypatch)
    _assert_same_bits(fit, _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_init=2))


def _count_both_loops(monkeypatch) -> dict:
    """Record the iterations each compiled loop ran: the diag loop (``FusedEM``) and the
    full/tied loop (``FusedEMFull``, whose ``run`` it inherits), told apart by class."""
    from tying.hmm import fused_em_full

    calls = {"diag": [], "full": []}
    run = fused_em.FusedEM.run

    def counted(self, n_max, tol, prev):
        history, failed = run(self, n_max, tol, prev)
        key = "full" if isinstance(self, fused_em_full.FusedEMFull) else "diag"
        calls[key].append((len(history), failed))
        return history, failed

    monkeypatch.setattr(fused_em.FusedEM, "run", counted)
    return calls


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "ties", "lengths", "loop"),
    [
        ("full", None, [40] * 20, "full"),
        ("tied", None, [40] * 20, "full"),
        ("full", {"means": [[0, 1]]}, [40] * 20, None),  # tied full parameters: general
        ("spherical", None, [40] * 20, None),
        ("diag", {"means": [[0, 1]]}, [40] * 20, None),
        ("diag", {"transitions": [[1, 2]]}, [40] * 20, None),
        # units of a few long sequences (rows, not lanes): the compiled loops too (stop 24)
        ("diag", None, [5000, 3], "diag"),
        ("full", None, [5000, 3], "full"),
        ("tied", None, [2000], "full"),
    ],
    ids=[
        "full",
        "tied",
        "full-tied-means",
        "spherical",
        "tied-means",
        "tied-rows",
        "long-sequences",
        "long-sequences-full",
        "long-sequences-tied",
    ],  # fmt: skip
)
def test_each_fit_runs_the_loop_it_needs(ctype, ties, lengths, loop, monkeypatch):
    """Untied full and tied fits run the full/tied compiled loop (every iteration, in one
    call); what neither compiled loop covers (spherical, tied parameters other than
    "tied"'s one covariance) runs the general loop: no compiled call at all. Units of a
    few long sequences (the rows kernel) run in the compiled loops too."""
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 2**62)  # one call whatever the load
    calls = _count_both_loops(monkeypatch)
    X = _data(3, 3, 2, lengths)
    fit = _fit(X, lengths, 3, ctype=ctype, ties=ties, n_iter=2)
    want = {"diag": [], "full": []}
    if loop is not None:
        want[loop] = [(2, False)]
    assert calls == want and fit.n_iter_ == 2


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize(
    "lengths",
    # a unit of lanes; units of a few long sequences (the rows kernel, stop 24), the bad
    # one first and then second
    [[50, 4, 30, 20, 1, 7], [3000, 40], [40, 3000]],
    ids=["lanes", "rows", "rows-second"],
)
def test_a_sequence_that_needs_log_space_hands_the_fit_to_the_general_loop(
    n_jobs, lengths, monkeypatch
):
    """State 0 never leaves and cannot reach state 1; one observation of sequence 1 sits
    1e5 sigma from state 0, so its scaled recursion fails in every E-step. The compiled
    loop stops before its M-step and the general loop (exact log space) runs the whole
    fit: the same bits as the general loop alone."""
    X = _data(3, 1, 2, lengths)
    X[lengths[0] + 1] = 1e5

    def fit():
        return GaussianHMM(
            2, "diag", startprob_init=[1.0, 0.0], transmat_init=np.eye(2),
            means_init=[[0.0, 0.0], [1e5, 1e5]], covars_init=np.ones((2, 2)), n_iter=4,
            tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    calls = _count_iterations(monkeypatch)
    fast = fit()
    assert calls == [(0, True)]  # the first iteration failed: handed over before its M-step
    assert np.isfinite(fast.history_).all() and fast.n_iter_ == 4
    _general_loop(monkeypatch)
    _assert_same_bits(fast, fit())


@needs_numba
def test_a_handover_mid_fit_continues_from_that_iteration(monkeypatch):
    """A failure found at iteration 2 (forced here) leaves the parameters of iteration 2
    untouched: the general loop takes over from there with the same bits."""
    lengths = [40] * 30
    X = _data(5, 3, 2, lengths)
    run = fused_em.FusedEM.run
    done = []

    def fail_third(self, n_max, tol, prev):
        if len(done) == 2:  # as em_run returns when a lane failed: no M-step ran
            return [], True
        history, failed = run(self, min(n_max, 2 - len(done)), tol, prev)
        done.extend(history)
        return history, failed

    monkeypatch.setattr(fused_em.FusedEM, "run", fail_third)
    fast = _fit(X, lengths, 3, n_iter=6, n_jobs=2)
    assert len(done) == 2 and fast.n_iter_ == 6
    _general_loop(monkeypatch)
    _assert_same_bits(fast, _fit(X, lengths, 3, n_iter=6))


def _spy_helpers(monkeypatch, fail=None, wait_for_helper=False) -> dict:
    """Wrap the helpers' compiled loop: record how many entered and left it.

    ``wait_for_helper``: the fitting thread enters its compiled loop only once a
    helper has entered its own (up to 30 s). Without it, on a busy machine the
    fitting thread may finish every unit before the pool starts the helper, which is
    then cancelled: a correct fit, but not the case a test of helpers means to see.
    """
    from tying.hmm import _numba_em

    seen = {"in": 0, "out": 0, "ctl": []}
    real = _numba_em.worker
    if wait_for_helper:
        real_run = _numba_em.em_run

        def em_run(*args):
            deadline = time.monotonic() + 30
            while seen["in"] == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            return real_run(*args)

        monkeypatch.setattr(_numba_em, "em_run", em_run)

    def worker(*args):
        seen["in"] += 1
        seen["ctl"].append(args[0])
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
    rows_per_unit(monkeypatch, 300)  # four units: three helpers could work
    lengths = [40] * 30
    X = _data(7, 3, 2, lengths)
    seen = _spy_helpers(monkeypatch, fail=MemoryError("helper out of memory"), wait_for_helper=True)
    m = GaussianHMM(3, "diag", n_iter=5, random_state=0, n_jobs=2)
    with pytest.raises(MemoryError, match="helper out of memory"):
        m.fit(X, lengths)
    assert (seen["in"], seen["out"]) == (1, 1)
    assert "_means" not in vars(m)


@needs_numba
def test_an_interrupt_between_iterations_stops_every_helper_thread(monkeypatch):
    """Ctrl-C reaches the fitting thread between two compiled iterations: the helpers
    leave their compiled loop before fit re-raises, and the model is unchanged."""
    from tying.hmm import monitor

    rows_per_unit(monkeypatch, 300)
    lengths = [40] * 30
    X = _data(8, 3, 2, lengths)
    seen = _spy_helpers(monkeypatch, wait_for_helper=True)
    report = monitor.ConvergenceMonitor.report

    def interrupted(self, log_prob):
        if len(self.history) == 2:
            raise KeyboardInterrupt
        report(self, log_prob)

    monkeypatch.setattr(monitor.ConvergenceMonitor, "report", interrupted)
    m = GaussianHMM(3, "diag", n_iter=5, random_state=0, n_jobs=3)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, lengths)
    from tying.hmm import _numba_em

    # every helper that started had left its compiled loop before fit re-raised ...
    ctl = seen["ctl"][0]  # one restart: its helpers share one control array
    assert seen["in"] >= 1 and all(c is ctl for c in seen["ctl"])
    assert ctl[_numba_em.LEFT] == seen["in"]
    for _ in range(500):  # ... and its thread returns to the pool soon after
        if seen["out"] == seen["in"]:
            break
        threading.Event().wait(0.01)
    assert seen["out"] == seen["in"]
    assert "_means" not in vars(m)


@needs_numba
def test_a_helper_whose_thread_never_starts_neither_hangs_the_fit_nor_changes_it(monkeypatch):
    """The helpers' pool thread is held by other work for the whole fit: the fitting
    thread runs every unit itself, finishes, and leaves no helper queued behind."""
    lengths = [40] * 150
    rows_per_unit(monkeypatch, 3_000)
    X = _data(9, 4, 3, lengths)
    seen = _spy_helpers(monkeypatch)
    busy, release = threading.Event(), threading.Event()
    blocker = compiled._pool(1, "tying-hmm-em").submit(lambda: (busy.set(), release.wait(60)))
    assert busy.wait(10)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fit = ex.submit(_fit, X, lengths, 4, n_jobs=2).result(timeout=120)
    finally:
        release.set()
        blocker.result(timeout=10)
    assert (seen["in"], seen["out"]) == (0, 0)  # the queued helper was cancelled, not run later
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


def _numpy_loops_disagree(monkeypatch):
    real = fused_em._ufunc_loop
    monkeypatch.setattr(fused_em, "_ufunc_loop", lambda uf: real(np.log))  # exp -> log


def _not_x86(monkeypatch):
    from tying.hmm import _numba_em

    monkeypatch.setattr(_numba_em, "_X86", False)


@needs_numba
@pytest.mark.parametrize(
    "make_it_so, why",
    [
        # NumPy's loops cannot be found or give other bits (another NumPy layout)
        (_numpy_loops_disagree, "other bits"),
        # the spin limits read the cycle counter, which AArch64 user space may not
        # read (SIGILL): on any CPU but x86 the compiled loop stays off
        (_not_x86, "not an x86 CPU"),
    ],
)
def test_the_compiled_loop_turns_off_with_a_reason_when_it_cannot_run(
    monkeypatch, caplog, make_it_so, why
):
    """The general loop runs instead, and an INFO message says why."""
    monkeypatch.setitem(fused_em._STATE, "fns", None)
    make_it_so(monkeypatch)
    calls = _count_iterations(monkeypatch)
    lengths = [30] * 10
    X = _data(12, 2, 2, lengths)
    with caplog.at_level(logging.INFO, logger="tying.hmm.fused_em"):
        fit = _fit(X, lengths, 2, n_iter=3)
    assert calls == [] and fit.n_iter_ == 3
    assert "compiled EM loop is off" in caplog.text and why in caplog.text
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


@needs_numba
def test_compiled_total_log_likelihood_has_numpys_bits():
    """The compiled loop sums each iteration's log-likelihoods as ``ll.sum()`` does
    (NumPy's pairwise sum), at every length around its block and halving points."""
    from tying.hmm import _numba_em

    rng = np.random.default_rng(14)
    sizes = list(range(1, 300)) + [383, 384, 385, 1023, 1024, 1031, 4096, 5000, 65_537]
    for n in sizes:
        a = rng.normal(scale=rng.uniform(1, 1e6), size=n) - 1e4
        assert _numba_em.np_sum(a) == a.sum(), n


@needs_numba
def test_iterations_in_several_calls_give_the_same_bits(monkeypatch):
    """A call runs iterations for a CPU-cycle budget (so Ctrl-C is seen between calls);
    one iteration per call gives the same fit, and the convergence test still stops it
    at the same iteration."""
    rows_per_unit(monkeypatch, 2_000)
    lengths = [60] * 80
    X = _data(2, 4, 2, lengths)
    whole = _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_jobs=2)
    monkeypatch.setattr(fused_em, "BATCH_CYCLES", 1)
    calls = _count_iterations(monkeypatch)
    pieces = _fit(X, lengths, 4, n_iter=200, tol=1e-3, n_jobs=2)
    assert calls == [(1, False)] * pieces.n_iter_ and pieces.converged_
    _assert_same_bits(pieces, whole)


@needs_numba
def test_verbose_prints_each_iteration_as_it_ends(monkeypatch, capsys):
    calls = _count_iterations(monkeypatch)
    lengths = [30] * 10
    X = _data(16, 2, 2, lengths)
    fit = _fit(X, lengths, 2, n_iter=4, verbose=True)
    assert calls == [(1, False)] * 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and lines[-1].split()[0] == "4"
    assert float(lines[-1].split()[1]) == pytest.approx(fit.history_[-1])


@needs_numba
def test_an_integer_tol_converges_as_its_float(monkeypatch):
    lengths = [60] * 20
    X = _data(17, 3, 2, lengths)
    a = _fit(X, lengths, 3, n_iter=100, tol=1)
    b = _fit(X, lengths, 3, n_iter=100, tol=1.0)
    assert a.converged_ and a.n_iter_ < 100
    _assert_same_bits(a, b)


def test_a_ufunc_that_is_not_float64_unary_is_refused_before_any_pointer_is_followed():
    with pytest.raises(RuntimeError, match="unexpected PyUFuncObject layout for np.add"):
        fused_em._ufunc_loop(np.add)
    with pytest.raises(RuntimeError, match="np.logical_not has no float64 loop"):
        fused_em._ufunc_loop(np.logical_not)  # unary, but float64 -> bool


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_compiled_loops_threads_copy_the_lanes_with_the_fits_bits(n_jobs, monkeypatch):
    """A fit's layout is made without its lanes; the first compiled iteration's threads
    copy each unit they take. The lanes then equal a layout copied up front, and the
    fit has the general loop's bits."""
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 300)  # four units
    lengths = list(np.random.default_rng(3).integers(20, 60, 40))
    X = _data(21, 3, 2, lengths)
    batch = SequenceBatch.from_lengths(lengths)
    m = _fit(X, lengths, 3, n_iter=1, n_jobs=n_jobs)
    context = m._em_context(X, batch)
    layout = context["layout"]
    assert not layout.filled
    fused = fused_em.FusedEM.for_model(m, context, m._mstep_fast(context))
    with fused:
        fused.run(1, -np.inf, np.nan)
    assert layout.filled
    ref = LaneLayout(X, context["center"], batch)
    for got, want in zip(layout.units, ref.units, strict=True):
        for name in ("XL", "XcL"):  # padding lanes included
            assert np.array_equal(got[name], want[name]), name
    fit = _fit(X, lengths, 3, n_jobs=n_jobs)
    _general_loop(monkeypatch)
    _assert_same_bits(fit, _fit(X, lengths, 3))


@needs_numba
def test_a_layout_copied_late_holds_the_data_it_was_made_from():
    """The lanes of a layout made with fill=False come from its own read-only copy of X:
    the caller's X edited in place before the copy does not reach them."""
    from tying.hmm.forward_backward import LaneLayout

    lengths = [30] * 40
    X = _data(22, 3, 2, lengths)
    batch = SequenceBatch.from_lengths(lengths)
    want = LaneLayout(X, np.zeros(2), batch)
    late = LaneLayout(X, np.zeros(2), batch, fill=False)
    X += 1.0
    late.fill()
    for got, ref in zip(late.units, want.units, strict=True):
        assert np.array_equal(got["XL"], ref["XL"]) and np.array_equal(got["XcL"], ref["XcL"])


@needs_numba
def test_a_first_iteration_handed_over_finds_its_lanes_copied(monkeypatch):
    """The first compiled iteration hands over (a sequence needs log space, as in
    ``test_a_sequence_that_needs_log_space_hands_the_fit_to_the_general_loop``): the
    lanes its threads copied are marked copied, not copied again by the general loop."""
    from tying.hmm.forward_backward import LaneLayout

    lengths = [50, 4, 30, 20, 1, 7]
    X = _data(3, 1, 2, lengths)
    X[lengths[0] + 1] = 1e5
    calls = _count_iterations(monkeypatch)
    filled_before = []
    real_fill = LaneLayout.fill

    def fill(self, n_jobs=None):
        filled_before.append(self.filled)
        real_fill(self, n_jobs)

    monkeypatch.setattr(LaneLayout, "fill", fill)
    fast = GaussianHMM(
        2, "diag", startprob_init=[1.0, 0.0], transmat_init=np.eye(2),
        means_init=[[0.0, 0.0], [1e5, 1e5]], covars_init=np.ones((2, 2)), n_iter=2,
        tol=-np.inf, n_jobs=2,
    ).fit(X, lengths)  # fmt: skip
    assert calls == [(0, True)]
    assert filled_before == [True, True]  # both general E-steps found the lanes copied
    assert np.isfinite(fast.history_).all()


@needs_numba
def test_unit_plans_are_kept_by_the_lengths_values_not_by_an_arrays_identity(monkeypatch):
    from tying.hmm.forward_backward import _unit_plans

    lengths = np.array([30] * 20 + [7, 3])
    a = _unit_plans(SequenceBatch.from_lengths(lengths.copy()), 2, 8)
    b = _unit_plans(SequenceBatch.from_lengths(lengths.copy()), 2, 8)
    assert a is not b and a[2] is b[2]  # equal values: the kept plan
    lengths[-1] = 4  # edited in place: another key, another plan
    c = _unit_plans(SequenceBatch.from_lengths(lengths), 2, 8)
    assert c[2] is not a[2] and c[2][-1][0]["lens"].tolist() != a[2][-1][0]["lens"].tolist()
    assert _unit_plans(SequenceBatch.from_lengths(lengths), 3, 8)[2] is not c[2]  # D
    rows_per_unit(monkeypatch, 100)  # the unit constants are in the key
    assert _unit_plans(SequenceBatch.from_lengths(lengths), 2, 8)[2] is not c[2]


@needs_numba
def test_what_one_layout_writes_into_its_unit_arrays_never_reaches_the_next_of_those_lengths():
    """The unit plans are kept per lengths and shared: each layout holds its own copies,
    and the kept plan's arrays refuse writes."""
    from tying.hmm.forward_backward import LaneLayout, _unit_plans

    lengths = [30] * 20 + [7, 3]
    X = np.arange(float(sum(lengths)))[:, None]

    def layout():
        return LaneLayout(X, np.zeros(1), SequenceBatch.from_lengths(lengths))

    first = layout()
    expected = {k: first.units[0][k].copy() for k in ("n_act", "lens", "start", "seqs")}
    for k in expected:
        first.units[0][k][:] = -1  # a kernel that wrote where it should not
    second = layout()
    for k, v in expected.items():
        assert np.array_equal(second.units[0][k], v), k
    _, _, plans = _unit_plans(SequenceBatch.from_lengths(lengths), 1, 8)
    with pytest.raises(ValueError, match="read-only"):
        plans[0][0]["n_act"][0] = 0


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_refit_after_editing_x_in_place_fits_the_edited_data(n_jobs, monkeypatch):
    """The kept plans and unit tables hold no data: a second fit of the same lengths, after
    the caller's X was edited in place, equals a fit of the edited data with nothing kept."""
    import importlib

    lane_layout = importlib.import_module("tying.hmm.lane_layout")

    rows_per_unit(monkeypatch, 1_000)
    lengths = [40] * 60
    X = _data(24, 3, 2, lengths)
    first = _fit(X, lengths, 3, n_jobs=n_jobs)
    X[::7] *= 3.0
    X[5] += 100.0
    again = _fit(X, lengths, 3, n_jobs=n_jobs)
    monkeypatch.setattr(lane_layout, "_PLANS", type(lane_layout._PLANS)())
    monkeypatch.setattr(fused_em, "_TABLES", type(fused_em._TABLES)())
    fresh = _fit(X.copy(), lengths, 3, n_jobs=n_jobs)
    _assert_same_bits(again, fresh)
    assert again.history_ != first.history_
    _general_loop(monkeypatch)
    _assert_same_bits(again, _fit(X.copy(), lengths, 3))


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_kept_unit_table_whose_offsets_no_longer_hold_is_rebuilt_not_used(n_jobs, monkeypatch):
    """The compiled loop reads every unit's arrays at the kept table's offsets, unchecked:
    a kept table whose offsets for a unit past the first are not where this fit's arrays
    are (a layout carved another way) must be rebuilt, never read (it swapped the last
    unit's densities and forward variables here: a silently wrong fit)."""
    from tying.hmm import _numba_em

    rows_per_unit(monkeypatch, 1_000)
    monkeypatch.setattr(fused_em, "_TABLES", type(fused_em._TABLES)())
    lengths = [40] * 60
    X = _data(31, 3, 2, lengths)
    first = _fit(X, lengths, 3, n_jobs=n_jobs)
    assert len(fused_em._TABLES) == 1
    ((key, (ut, *rest)),) = fused_em._TABLES.items()
    assert ut.shape[0] >= 2  # several units: the first one's place alone proves nothing
    bad = ut.copy()
    bad[-1, [_numba_em.U_B, _numba_em.U_ALPHA]] = ut[-1, [_numba_em.U_ALPHA, _numba_em.U_B]]
    bad.flags.writeable = False
    fused_em._TABLES[key] = (bad, *rest)
    again = _fit(X, lengths, 3, n_jobs=n_jobs)
    _assert_same_bits(again, first)
    kept = fused_em._TABLES[key][0]
    assert np.array_equal(kept, ut)  # the rebuilt table replaced the bad one


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_refit_of_the_same_lengths_reads_the_kept_unit_table(n_jobs, monkeypatch):
    """The kept table is checked against the fit's offsets and then used, not rebuilt: a
    check that never held would rebuild it on every fit, silently (the same bits)."""
    rows_per_unit(monkeypatch, 1_000)
    monkeypatch.setattr(fused_em, "_TABLES", type(fused_em._TABLES)())
    built = []
    real = fused_em._unit_tables
    monkeypatch.setattr(fused_em, "_unit_tables", lambda *a: built.append(1) or real(*a))
    lengths = [40] * 60
    X = _data(32, 3, 2, lengths)
    fits = [_fit(X, lengths, 3, n_jobs=n_jobs) for _ in range(3)]
    assert len(built) == 1 and len(fused_em._TABLES) == 1
    ((ut, *_),) = fused_em._TABLES.values()
    assert ut.shape[0] >= 2  # several units: every unit's offsets were compared
    for fit in fits[1:]:
        _assert_same_bits(fit, fits[0])


@needs_numba
def test_fits_of_other_k_on_the_same_lengths_get_their_own_unit_tables(monkeypatch):
    lengths = [30] * 40
    X = _data(25, 3, 2, lengths)
    fits = [(K, _fit(X, lengths, K, n_jobs=2)) for K in (2, 3, 2, 3)]
    _general_loop(monkeypatch)
    for K, fit in fits:
        _assert_same_bits(fit, _fit(X, lengths, K))


def _lanes_equal(layout, ref) -> bool:
    return all(
        np.array_equal(got[name], want[name])
        for got, want in zip(layout.units, ref.units, strict=True)
        for name in ("XL", "XcL")
    )


@needs_numba
def test_a_copy_started_on_a_helper_and_finished_by_the_caller_gives_every_lane(monkeypatch):
    """start_fill's helper and fill() on the calling thread share the copy by unit: every
    unit copied once, the lanes equal a copy made up front; repeated, since which thread
    copies which unit varies."""
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 300)  # four units
    lengths = list(np.random.default_rng(4).integers(20, 60, 60))
    X = _data(26, 3, 2, lengths)
    batch = SequenceBatch.from_lengths(lengths)
    ref = LaneLayout(X, np.ones(2), batch)
    for _ in range(20):
        late = LaneLayout(X, np.ones(2), batch, fill=False)
        late.start_fill(3)
        assert late._copy is not None
        late.fill()
        assert late.filled and late.fill_state.tolist() == [2] * len(late.units) + [0]
        assert _lanes_equal(late, ref)


@needs_numba
def test_a_helper_that_dies_holding_a_copy_neither_hangs_the_fit_nor_changes_it(monkeypatch):
    """The helper's copy claims a unit, then raises: the fit's own threads copy that unit
    (the dead flag), and the fit has the bits of an undisturbed fit (for diag, also the
    general loop's)."""
    from tying.hmm import _numba_em
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 300)
    lengths = [40] * 60
    X = _data(27, 3, 2, lengths)
    real, real_start = _numba_em.copy_unit, LaneLayout.start_fill
    main = threading.main_thread()
    died = []

    def dying(fill, u, *args):
        if threading.current_thread() is main:
            return real(fill, u, *args)
        fill[u] = 1  # claimed ...
        died.append(u)
        raise MemoryError("helper out of memory")  # ... and never copied

    def start_and_wait(self, n_jobs=None):  # the fit goes on once the helper has died
        n = len(died)
        real_start(self, n_jobs)
        deadline = time.monotonic() + 30
        while self._copy is not None and len(died) == n and time.monotonic() < deadline:
            time.sleep(0.001)

    monkeypatch.setattr(LaneLayout, "start_fill", start_and_wait)
    runs = [("diag", 2), ("diag", 3), ("full", 2), ("tied", 2)]  # full, tied: their own
    fits = []  # compiled loop waits for the copy too
    for ctype, n_jobs in runs:
        monkeypatch.setattr(_numba_em, "copy_unit", dying)
        fits.append(_fit(X, lengths, 3, ctype=ctype, n_jobs=n_jobs))
        monkeypatch.setattr(_numba_em, "copy_unit", real)
    assert len(died) == len(runs)
    for (ctype, _), fit in zip(runs, fits, strict=True):  # an undisturbed fit, same loop
        _assert_same_bits(fit, _fit(X, lengths, 3, ctype=ctype))
    _general_loop(monkeypatch)  # the diag loop also has the general loop's bits
    for (ctype, _), fit in zip(runs, fits, strict=True):
        if ctype == "diag":
            _assert_same_bits(fit, _fit(X, lengths, 3, ctype=ctype))


@needs_numba
def test_a_layout_copy_stays_off_where_it_cannot_help():
    from tying.hmm.forward_backward import LaneLayout

    X = _data(28, 2, 2, [30] * 40)
    one_unit = LaneLayout(X, np.zeros(2), SequenceBatch.from_lengths([30] * 40), fill=False)
    one_unit.start_fill(2)  # one unit: nothing to share
    long = LaneLayout(X, np.zeros(2), SequenceBatch.from_lengths([600, 600]), fill=False)
    long.start_fill(2)  # units of few long sequences: the NumPy copy
    single = LaneLayout(X, np.zeros(2), SequenceBatch.from_lengths([30] * 40), fill=False)
    single.start_fill(1)
    assert one_unit._copy is None and long._copy is None and single._copy is None


@needs_numba
@pytest.mark.parametrize(
    ("lengths", "min_rows"),
    [
        ([40] * 150, 3_000),  # the goal shape scaled down: 80 and 72 lanes
        ([50] * 200, 5_000),  # 104 and 96 lanes
        (list(np.random.default_rng(5).integers(1, 120, 150)), 4_000),  # mixed lengths
    ],
    ids=["80-72", "104-96", "mixed"],
)
def test_two_unequal_units_balance_by_a_tail_item_with_the_same_bits(
    lengths, min_rows, monkeypatch
):
    """On two threads the costlier unit's last steps' densities are a separate item, made
    first by the thread that then takes the cheaper unit; one thread has no such item.
    Every fit has the general loop's bits (densities are elementwise)."""
    from tying.hmm import _numba_em

    rows_per_unit(monkeypatch, min_rows)
    X = _data(29, 4, 3, lengths)
    batch = SequenceBatch.from_lengths(lengths)
    plans = {}
    for n_jobs in (1, 2):
        m = _fit(X, lengths, 4, n_iter=1, n_jobs=n_jobs)
        context = m._em_context(X, batch)
        plans[n_jobs] = fused_em.FusedEM.for_model(m, context, m._mstep_fast(context)).plan
    ut, order = plans[2]["ut"], plans[2]["order"]
    assert len(ut) == 2 and order[0] < 0  # two units, the tail item first
    big = -1 - order[0]
    assert order[1] == big and 0 < ut[big, _numba_em.U_TAIL] < ut[big, _numba_em.U_T]
    assert (plans[1]["order"] >= 0).all()
    assert (plans[1]["ut"][:, _numba_em.U_TAIL] == plans[1]["ut"][:, _numba_em.U_T]).all()
    fits = [_fit(X, lengths, 4, n_jobs=n) for n in (1, 2, 3)]
    _general_loop(monkeypatch)
    ref = _fit(X, lengths, 4)
    for fit in fits:
        _assert_same_bits(fit, ref)


@needs_numba
@pytest.mark.parametrize(
    ("head", "tail", "rest", "expected_steps"),
    [
        (1000, 100, 800, 11),  # 15 steps (10 cycles each) even them: a quarter of the way
        (1000, 100, 1100, 8),  # the cheaper unit is the costlier now: toward one step
        (10**9, 100, 800, 20),  # one slow item: toward half the unit at most
        (0, 100, 800, 10),  # nothing measured: unchanged
    ],
)
def test_the_tail_item_is_resized_toward_even_threads(head, tail, rest, expected_steps):
    """``_rebalance``: the tail of unit 1 (T=100 steps, 10 in the tail) from the items'
    cycles: a quarter of the way toward the steps that even the two threads at the
    tail's cycles per step, within [1, T/2]."""
    from tying.hmm import _numba_em

    order = np.array([-2, 1, 0], dtype=np.int64)
    ut = np.zeros((2, _numba_em.U_COLS), dtype=np.int64)
    ut[1, _numba_em.U_T], ut[1, _numba_em.U_TAIL] = 100, 90
    ctl = np.zeros(_numba_em.CTL_SIZE + 3, dtype=np.int64)
    ctl[_numba_em.CTL_SIZE :] = tail, head, rest
    _numba_em._rebalance(ctl, order, ut)
    assert ut[1, _numba_em.U_T] - ut[1, _numba_em.U_TAIL] == expected_steps


@needs_numba
def test_two_fits_on_two_threads_at_once_share_the_pools_and_plans_and_keep_their_bits(
    monkeypatch,
):
    """Two n_jobs=2 fits of the same lengths from two threads at once: one helper pool
    thread and one kept plan between them; neither hangs (each queues its lane copy and
    its helper behind the other's), and each has its own data's general-loop bits."""
    rows_per_unit(monkeypatch, 3_000)
    lengths = [40] * 150
    data = [_data(30 + i, 4, 3, lengths) for i in range(2)]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        for _ in range(5):
            futures = [ex.submit(_fit, X, lengths, 4, n_jobs=2) for X in data]
            fits = [f.result(timeout=120) for f in futures]
    _general_loop(monkeypatch)
    for X, fit in zip(data, fits, strict=True):
        _assert_same_bits(fit, _fit(X, lengths, 4))


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("form", ["float64", "float32", "fortran"])
def test_a_fit_centres_and_lays_out_its_checked_x_with_the_reference_bits(
    form, n_jobs, monkeypatch
):
    """The fit's centre comes from the sums its finiteness check made, and its layout reads
    the checked X without a copy: the same bits as the reference path (a second pass for
    the centre, a read-only copy for the layout), for every form of X."""
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 1_000)  # two or more units
    lengths = [40] * 60
    X = _data(26, 3, 2, lengths) * 10.0 + 1e3
    X = {"float64": X, "float32": X.astype(np.float32), "fortran": np.asfortranarray(X)}[form]
    layouts = []
    real_init = LaneLayout.__init__

    def spy(self, *args, **kw):
        real_init(self, *args, **kw)
        layouts.append(self)

    monkeypatch.setattr(LaneLayout, "__init__", spy)
    new = _fit(X, lengths, 3, n_jobs=n_jobs)
    checked = np.ascontiguousarray(X, dtype=np.float64)
    (layout,) = layouts
    assert np.array_equal(layout.X, checked) and not layout.X.flags.writeable
    assert np.shares_memory(layout.X, X) == (form == "float64")  # no copy of its own
    assert np.array_equal(layout.center, gaussian_module._column_means(checked))
    assert "_fit_sums" not in vars(new)

    em_context = GaussianHMM._em_context

    def reference(self, X, batch):  # the path before: no sums taken from the check
        del self._fit_sums
        return em_context(self, X, batch)

    monkeypatch.setattr(GaussianHMM, "_em_context", reference)
    ref = _fit(X, lengths, 3, n_jobs=n_jobs)
    assert not np.shares_memory(layouts[-1].X, X)  # the reference copied
    _assert_same_bits(new, ref)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_fit_refused_after_its_check_keeps_nothing_of_it(n_jobs):
    """A fit refused after X was checked (a bad start value, found after the lanes' copy
    started; a bad tie spec, before) leaves the model as it was, with no sums kept, and
    the next fit gives the bits of a fresh model's fit."""
    lengths = [40] * 60
    X = _data(27, 3, 2, lengths)
    m = _fit(X, lengths, 3, n_jobs=n_jobs)
    before = {k: np.array(getattr(m, k)) for k in PARAMS}
    m.transmat_init = np.full((3, 3), 0.5)  # rows sum to 1.5
    with pytest.raises(ValueError, match=r"transmat_init must sum to 1"):
        m.fit(X, lengths)
    m.transmat_init, m.ties = None, {"means": [[0, 7]]}
    with pytest.raises(tying.TieError):
        m.fit(X, lengths)
    assert "_fit_sums" not in vars(m)
    assert all(np.array_equal(getattr(m, k), v) for k, v in before.items())
    m.ties = None
    _assert_same_bits(m.fit(X, lengths), _fit(X, lengths, 3, n_jobs=n_jobs))


@needs_numba
@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 129])
def test_a_units_private_sums_start_on_a_cache_line(n):
    """A unit's sums are written at every step: they must not share a cache line with
    another thread's (false sharing cost two-thread fits 11 % of their units' time)."""
    from tying.hmm import _numba_em

    for _ in range(20):  # allocations land at different offsets
        a = _numba_em.private_scratch(n)
        assert a.shape == (n,) and a.ctypes.data % 64 == 0
        a[:] = 1.0
