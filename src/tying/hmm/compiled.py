"""Compiled (numba) kernels for the HMM recursions, and how many threads they use.

The NumPy forward-backward in :mod:`tying.hmm.forward_backward` loops over
time steps in Python and vectorises over sequences; for a few hundred
sequences of 8 states each step is a few microseconds of arithmetic under
tens of microseconds of interpreter and NumPy call overhead. The kernels here
run one sequence at a time entirely in compiled code, so that overhead is
gone, and each sequence writes only its own rows of the outputs: sequences
are spread over threads (``nogil`` kernels on a thread pool) and the
per-sequence sums reduced afterwards in sequence order, so the results are
bit-identical whatever the number of threads.

The pair HMM's anti-diagonal DP (:mod:`tying.hmm.pair_dp`) stays NumPy: its
cost is four log-sum-exps per cell, which NumPy evaluates with SIMD over a
whole anti-diagonal, and the same recursion compiled per cell measured 3x
slower (``benchmarks/bench_hmm.py``, ``bench_pair_compiled``).

numba is optional. Without it (or with ``TYING_DISABLE_NUMBA=1`` in the
environment) every caller runs the NumPy code it had before, which gives the
same results to 1e-12 relative; a single INFO log message says so.

Example:
    >>> from tying.hmm import compiled
    >>> compiled.set_n_jobs(2)
    >>> compiled.get_n_jobs()
    2
    >>> compiled.set_n_jobs(1)
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading

import numpy as np

from tying.core.cpus import usable_cpus

__all__ = ["available", "get_n_jobs", "resolve_n_jobs", "row_cost", "set_n_jobs"]

log = logging.getLogger(__name__)

_STATE: dict = {"n_jobs": 1, "kernels": None, "told": False}
#: the compiled functions :func:`notice_cold_compile` has looked at (each is looked at once)
_SEEN_COLD: set = set()


def available() -> bool:
    """Whether the compiled kernels can be used (numba importable and not disabled).

    Returns:
        True when numba imports and ``TYING_DISABLE_NUMBA`` is not set to a true value.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _kernels() is not None


def set_n_jobs(n_jobs: int) -> None:
    """Set the default number of threads the compiled recursions spread sequences over.

    Results do not depend on it (per-sequence work is independent and sums are
    reduced in sequence order). ``-1`` means every core this process may use.

    Args:
        n_jobs: a positive number of threads, or -1.

    Raises:
        ValueError: when ``n_jobs`` is 0, below -1 or not an integer.

    Example:
        >>> set_n_jobs(1)
    """
    _STATE["n_jobs"] = resolve_n_jobs(n_jobs)


def get_n_jobs() -> int:
    """The default number of threads (1 unless :func:`set_n_jobs` changed it).

    Returns:
        The positive thread count.

    Example:
        >>> get_n_jobs() >= 1
        True
    """
    return _STATE["n_jobs"]


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Validate an ``n_jobs`` argument; None means the module default.

    Args:
        n_jobs: a positive integer, -1 (all cores) or None.

    Returns:
        A positive thread count.

    Raises:
        ValueError: for 0, values below -1 and non-integers.

    Example:
        >>> resolve_n_jobs(None) == get_n_jobs()
        True
        >>> resolve_n_jobs(0)
        Traceback (most recent call last):
        ...
        ValueError: n_jobs must be a positive number of threads or -1 (all cores), got 0; use n_jobs=1 for one thread
    """
    if n_jobs is None:
        return _STATE["n_jobs"]
    if (
        isinstance(n_jobs, bool)
        or not isinstance(n_jobs, int | np.integer)
        or n_jobs == 0
        or n_jobs < -1
    ):
        raise ValueError(
            f"n_jobs must be a positive number of threads or -1 (all cores), got {n_jobs!r}; "
            f"use n_jobs=1 for one thread"
        )
    if n_jobs == -1:
        return usable_cpus()
    return int(n_jobs)


def _disabled_by_env() -> bool:
    return os.environ.get("TYING_DISABLE_NUMBA", "").strip().lower() not in ("", "0", "false", "no")


def _kernels():
    """The compiled kernels (built on first use), or None when numba is unavailable."""
    if _STATE["kernels"] is None:
        reason = None
        if _disabled_by_env():
            reason = "TYING_DISABLE_NUMBA is set"
        else:
            try:
                import numba  # noqa: F401
            except ImportError:
                reason = "numba is not installed (pip install 'tying[fast]')"
        if reason is not None:
            _STATE["kernels"] = False
            if not _STATE["told"]:
                _STATE["told"] = True
                log.info("tying.hmm: %s; the HMM recursions run the NumPy code", reason)
        else:
            try:
                from tying.hmm import _numba_kernels
            except (ImportError, RuntimeError) as err:  # e.g. no writable cache directory
                _STATE["kernels"] = False
                if not _STATE["told"]:
                    _STATE["told"] = True
                    log.info(
                        "tying.hmm: numba cannot build the kernels (%s); the HMM recursions "
                        "run the NumPy code (set NUMBA_CACHE_DIR to a writable directory)",
                        err,
                    )
            else:
                _STATE["kernels"] = _numba_kernels
    return _STATE["kernels"] or None


def notice_cold_compile(dispatcher, what: str) -> bool:
    """Say, once, that ``dispatcher`` (a numba function) is about to be compiled from cold.

    A cache=True function with no signature compiled in this process and no fresh entry
    in numba's cache directory (none, or one written for other sources: see
    :mod:`tying._numba_cache`) will be compiled on its next call: a fit then pauses for
    tens of seconds with nothing on the screen (measured 2026-12-02: 26 s for the diag EM
    loop, 16 s more for the full/tied one). This logs a WARNING naming the pause and
    where the result is cached, so later processes load it instead. Never raises.

    Args:
        dispatcher: the numba dispatcher about to be called.
        what: what it is, for the message.

    Returns:
        Whether the message was logged.

    Example:
        >>> class Cold:  # a stand-in for a numba dispatcher with no cache entry
        ...     signatures = []
        >>> notice_cold_compile(Cold(), "an example loop")
        False
    """
    key = id(dispatcher)
    if key in _SEEN_COLD:
        return False
    _SEEN_COLD.add(key)
    try:
        if dispatcher.signatures:  # compiled (or loaded) in this process already
            return False
        cache = dispatcher._cache
        where = cache.cache_path
        # numba's FunctionCache internals: the entries of an index written for these
        # sources (none when it is missing, or stale: see tying._numba_cache)
        if cache._cache_file._load_index():
            return False
    except Exception:  # not a cached numba dispatcher, or numba's internals moved
        return False
    log.warning(
        "tying.hmm: compiling %s with numba; the first fit pauses for about 15-30 s. "
        "This happens once: the result is cached in %s for later processes",
        what,
        where,
    )
    return True


def _chunks(n_items: int, n_jobs: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of items, a few per thread for load balance."""
    if n_jobs <= 1 or n_items <= 1:
        return [(0, n_items)]
    n_chunks = min(n_items, 4 * n_jobs)
    edges = np.linspace(0, n_items, n_chunks + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _run_chunks(fn, n_items: int, n_jobs: int) -> None:
    """Call ``fn(lo, hi)`` over the ranges of :func:`_chunks`, on ``n_jobs`` threads.

    ``fn`` writes only the outputs of items ``lo..hi-1``, so the order in which
    chunks finish does not matter.
    """
    ranges = _chunks(n_items, n_jobs)
    if len(ranges) == 1:
        fn(*ranges[0])
        return
    pool = _pool(n_jobs)
    for f in [pool.submit(fn, lo, hi) for lo, hi in ranges]:
        f.result()  # re-raises a worker's exception here


#: Work units of the fused E-step are cut from the sequence lengths, K, D and the
#: covariance type alone (never from ``n_jobs``), and their partial sums are added in
#: unit order, so results are bit-identical for every thread count. How many units:
#: by the E-step's estimated work (:func:`row_cost`), counted in rows of the reference
#: model (K=8, D=4, diag: 27.5 ns per row and iteration on one thread, 2026-12-02).
#: One unit below ``SPLIT_ROWS`` of that work, two from there, four from ``FOUR_ROWS``
#: rows (raw rows: four units serve four threads, and narrow units cost one thread
#: more; stop 23 measured 150 x 400 in four units slower on two threads than in two).
#: A power of two, so that 2 or 4 threads get equal work (3 units on 2 threads cap
#: them at 1.5x). Units of about equal rows, each of at most ``MAX_LANES`` sequences
#: (the lane arrays' padding); cuts between lane units fall on whole blocks of
#: ``LANE_BLOCK`` sequences where units are wide enough, so splitting adds no padding
#: lanes. A split costs one thread a little: every step of the recursion runs a few
#: dozen loops over a unit's lanes, each with a fixed cost, about 4-11 lane-steps per
#: unit and step (measured at K=2..32, D=4..16, diag/full/tied, 2026-12-02): +2 % at
#: 2 x 32 lanes, +14-35 % at 2 x 16, +16-33 % at 2 x 8 (``bench_hmm split``).
#: ``SPLIT_ROWS``: below about 4,000 rows of the reference (110 us of E-step per
#: iteration, 55 us per unit) a second thread's hand-over (waking it for the fit,
#: one spin-wait per iteration) and the split's own cost take what it saves.
UNITS, SPLIT_ROWS, FOUR_ROWS, MAX_LANES, LANE_BLOCK = 4, 4_000, 120_000, 256, 8
#: Two units only where the costlier one is at most ``1 / MIN_GAIN`` of the whole in
#: one unit (:func:`_unit_steps`): a split that leaves one thread nearly all of the
#: work, or only adds padding lanes (8 sequences of 1,000 steps cut 4 + 4 are two units
#: of 8 lanes, each as costly as the one they came from), is not made; nor one whose
#: units together cost one thread more than ``MAX_COST`` times the whole (the units
#: are the same whatever n_jobs, so the default n_jobs=1 pays for them: 16 lanes cut
#: 8 + 8 cost +26 %). 1.15, not more: a split that costs one thread more cannot reach
#: 1.8x on two (20 x 400 cut 8 + 12 cost one thread 1.20x, reading 9.65x hmmlearn
#: against 11.6x in one unit, for 1.31x on two threads; K=32 50 x 400 cut 24 + 26 costs
#: 1.11x and gains 1.69x on two; 2026-12-02 15:25 UTC, quiet, /work/s24 splitprobe).
MIN_GAIN, MAX_COST = 1.25, 1.15
#: a unit's fixed cost per step, in lane-steps (measured 4-11, 2026-12-02), and a row
#: of a unit of few sequences (one sequence at a time, ``_numba_rows``) in lane-steps
#: of the lane kernels: 1 x 16,000 against 64 x 250 (1 thread, 10 iterations, quiet,
#: 2026-12-02 after the stop 24 rows kernel): 2.3 at K=8 D=4 (was 4.4 with the stop 13
#: kernel), 4.0 at K=4, 1.85 at K=16, 1.4 at K=32, 2.6 at D=1, 1.8 at D=16
STEP_LANES, ROW_LANE_STEPS = 6, 2.3

#: ns per row and EM iteration on one thread, ``c0 + c1 K + c2 K^2 + c3 K D + c4 K D^2
#: + c5 D^2``, fitted to 1-thread fits of 16,000 rows (64 x 250, one unit) at K = 2, 4,
#: 8, 16, 32 and D = 1, 4, 16 (2026-12-02, ``benchmarks.bench_hmm costs``); within 20 %
#: of the measured times for diag, 10 % for tied, 41 % for full (whose K=8..32, D=16
#: fits cost more than the model says). Spherical runs diag's kernels.
ROW_NS = {
    "diag": (2.87, 1.02, 0.121, 0.240, 0.0, 0.0),
    "full": (2.03, 1.55, 0.133, 0.216, 0.156, 0.0),
    "tied": (3.38, 0.975, 0.143, 0.606, 0.054, 0.085),
}
ROW_NS["spherical"] = ROW_NS["diag"]


def row_cost(K: int, D: int, covariance_type: str = "diag") -> float:
    """Estimated E-step work of one row, relative to a row of K=8, D=4, diag.

    Args:
        K: states.
        D: features.
        covariance_type: ``"diag"``, ``"spherical"``, ``"full"`` or ``"tied"``.

    Returns:
        The ratio of :data:`ROW_NS`'s estimates (1.0 for K=8, D=4, diag).

    Raises:
        ValueError: for another covariance type.

    Example:
        >>> row_cost(8, 4)
        1.0
        >>> round(row_cost(32, 4), 1)  # a row of 32 states is about 7 of 8 states
        7.2
    """
    if covariance_type not in ROW_NS:
        raise ValueError(
            f"covariance_type must be one of {sorted(ROW_NS)}, got {covariance_type!r}"
        )

    def ns(K, D, c):
        return c[0] + c[1] * K + c[2] * K * K + c[3] * K * D + c[4] * K * D * D + c[5] * D * D

    return ns(K, D, ROW_NS[covariance_type]) / ns(8, 4, ROW_NS["diag"])


_POOLS: dict[tuple[str, int], concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n_jobs: int, kind: str = "tying-hmm") -> concurrent.futures.ThreadPoolExecutor:
    """The kept pool of ``n_jobs`` threads: starting threads on every E-step costs more
    than a small E-step (one pool per thread count and ``kind``, for the life of the
    process; the compiled EM loop's helpers, which hold a thread for a whole fit, use a
    pool of their own kind so that they never make another fit's E-step units wait).

    Safe to call from several threads at once (two fits on two threads): the lock
    makes the first caller create the pool and every other caller get that one,
    instead of each creating its own and all but one being dropped unclosed.
    """
    pool = _POOLS.get((kind, n_jobs))  # the common case, without taking the lock
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.get((kind, n_jobs))
            if pool is None:
                pool = _POOLS[kind, n_jobs] = concurrent.futures.ThreadPoolExecutor(
                    max_workers=n_jobs, thread_name_prefix=kind
                )
    return pool


def units(lengths: np.ndarray, K: int = 8, D: int = 4, covariance_type: str = "diag") -> np.ndarray:
    """Edges ``[s0, s1, ...]`` of the contiguous sequence ranges of the fused E-step.

    A sequence is never split; a long one may be a unit of its own. Depends on the
    lengths, K, D and the covariance type only (the E-step's estimated work, see
    :data:`SPLIT_ROWS`), never on the thread count, so neither do the partial sums.

    Args:
        lengths: the sequences' lengths.
        K: states of the model the units are for.
        D: features.
        covariance_type: the model's covariance type.

    Returns:
        The int64 edges, ``0`` first and ``len(lengths)`` last.

    Raises:
        ValueError: for an unknown covariance type (see :func:`row_cost`).

    Example:
        >>> units(np.full(5, 25_000)).tolist()  # run one at a time: cheaper than 8 lanes
        [0, 1, 2, 4, 5]
        >>> units(np.full(3, 25_000)).tolist()  # run one at a time: one thread each
        [0, 1, 3]
        >>> units(np.full(10, 5)).tolist()
        [0, 10]
        >>> units(np.full(150, 400)).tolist()  # two units, cut on a block of 8 lanes
        [0, 72, 150]
        >>> units(np.full(50, 2000)).tolist()  # 24 + 32 lanes, not 32 + 32
        [0, 24, 50]
        >>> units(np.full(2, 2000)).tolist()  # few long sequences: one each
        [0, 1, 2]
        >>> units(np.full(40, 60)).tolist(), units(np.full(40, 60), K=32).tolist()
        ([0, 40], [0, 16, 40])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    work = total * row_cost(K, D, covariance_type)  # in rows of the reference model
    n_units = min(4 if total >= FOUR_ROWS else 2 if work >= SPLIT_ROWS else 1, max(1, UNITS))
    cuts = _cuts(ends, n, n_units)
    whole = _unit_steps(lengths) if n <= MAX_LANES else 0.0  # more: cut anyway
    while n_units > 1 and whole > 0:  # the most units that gain, and cost one thread little
        steps = [_unit_steps(p) for p in np.split(lengths, cuts)]
        if whole >= MIN_GAIN * max(steps) and sum(steps) <= MAX_COST * whole:
            break
        n_units //= 2
        cuts = _cuts(ends, n, n_units)
    edges = []
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]]), strict=True):
        edges.extend(range(int(lo), int(hi), MAX_LANES))  # MAX_LANES: whole lane blocks
    return np.array(edges + [n], dtype=np.int64)


def _unit_steps(lens: np.ndarray) -> float:
    """Estimated E-step cost of one unit of sequences of lengths ``lens``, in lane-steps:
    lanes in blocks of LANE_BLOCK, sorted longest first (each block runs as long as its
    longest sequence), plus the unit's fixed cost per step; a unit of fewer than
    ``LANE_BLOCK // 2`` sequences runs one sequence at a time (``ROW_LANE_STEPS`` a row)."""
    if len(lens) < LANE_BLOCK // 2:
        return ROW_LANE_STEPS * float(lens.sum())
    ordered = np.sort(lens)[::-1]
    return float(LANE_BLOCK * ordered[::LANE_BLOCK].sum() + STEP_LANES * ordered[0])


def _cuts(ends: np.ndarray, n: int, n_units: int) -> np.ndarray:
    """Where ``n_units`` units of about equal rows start (after the first), on whole
    lane blocks where every unit keeps lanes."""
    total = int(ends[-1])
    if n_units <= 1 or n <= 1:
        return np.zeros(0, dtype=np.int64)
    # equal rows per unit (threads finish together): each cut at the sequence boundary
    # nearest its share of the rows (a long first sequence is a unit of its own; the
    # first row block that a sequence's last row fell in left it with all the others)
    targets = total * np.arange(1, n_units) / n_units
    at = np.clip(np.searchsorted(ends[:-1], targets), 0, n - 2)  # ends[at] >= target
    below = np.clip(at - 1, 0, n - 2)
    nearer = np.abs(ends[below] - targets) <= np.abs(ends[at] - targets)
    cuts = np.unique(np.where(nearer, below, at) + 1)
    # lane units: cut on whole blocks of lanes (50 sequences in two units: 24 + 26 make
    # 24 + 32 lanes, where 25 + 25 padded them to 64; 20 make 8 + 16, not 16 + 16),
    # unless a unit would be left with too few sequences for lanes (or none)
    if n >= 2 * LANE_BLOCK:
        blocks = np.rint(cuts / LANE_BLOCK).astype(np.int64) * LANE_BLOCK
        if np.diff(np.concatenate([[0], blocks, [n]])).min() >= LANE_BLOCK // 2:
            cuts = blocks
    return cuts


def _run_units(fn, n_units: int, n_jobs: int, cost=None) -> None:
    """Call ``fn(u)`` for every unit ``u``, on the calling thread and ``n_jobs - 1``
    threads of a kept pool.

    Each thread takes the next unit when it is free (load balance), the costliest
    first when ``cost`` (one number per unit) is given; the calling thread starts
    first (the pool's threads take tens of microseconds to wake), so it takes the
    costliest unit and is rarely left waiting for the others at the end. ``fn``
    writes only unit ``u``'s outputs, so the order they finish in does not
    matter. The calling thread works too instead of waiting: one thread fewer to
    wake on every E-step. After a unit raises, no thread starts another; the
    exception is re-raised here, after every thread has stopped writing.
    """
    n_jobs = min(n_jobs, n_units)
    if n_jobs <= 1:
        for u in range(n_units):
            fn(u)
        return
    order = range(n_units) if cost is None else np.argsort(-np.asarray(cost), kind="stable")
    taken = iter([int(u) for u in order])
    lock = threading.Lock()
    failed = []  # after a failure (or Ctrl-C on the caller) no thread starts another unit

    def take_units():
        while True:
            with lock:
                u = None if failed else next(taken, None)
            if u is None:
                return
            try:
                fn(u)
            except BaseException:
                failed.append(u)
                raise

    futures = [_pool(n_jobs - 1).submit(take_units) for _ in range(n_jobs - 1)]
    try:
        take_units()
    finally:
        concurrent.futures.wait(futures)  # nothing writes after this returns or raises
    for f in futures:
        f.result()  # re-raises a worker's exception here
