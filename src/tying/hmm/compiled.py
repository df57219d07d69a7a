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

__all__ = ["available", "get_n_jobs", "resolve_n_jobs", "set_n_jobs"]

log = logging.getLogger(__name__)

_STATE: dict = {"n_jobs": 1, "kernels": None, "told": False}


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
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
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


#: Work units of the fused E-step are cut from the sequence lengths alone
#: (never from ``n_jobs``), and their partial sums are added in unit order, so
#: results are bit-identical for every thread count. ``total // MIN_ROWS``
#: units of equal rows, at least 1 and at most ``UNITS``, each of at most
#: ``MAX_LANES`` sequences (the lane arrays' padding). Few, wide units are
#: faster: the recursion's loops run over more lanes, so their fixed cost per
#: loop is spread over more work (diag, K=8, 200 x 500 steps: 2 units instead
#: of 4 cut the recursion from 4.3 to 3.2 ms per iteration, 4 instead of 16
#: had cut 14% of the EM). But they cap the threads a fit can use at the
#: number of units: 2 up to 120,000 rows, 4 from 160,000.
UNITS, MIN_ROWS, MAX_LANES = 4, 40_000, 256

_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n_jobs: int) -> concurrent.futures.ThreadPoolExecutor:
    """The kept pool of ``n_jobs`` threads: starting threads on every E-step costs more
    than a small E-step (one pool per thread count, for the life of the process).

    Safe to call from several threads at once (two fits on two threads): the lock
    makes the first caller create the pool and every other caller get that one,
    instead of each creating its own and all but one being dropped unclosed.
    """
    pool = _POOLS.get(n_jobs)  # the common case, without taking the lock
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.get(n_jobs)
            if pool is None:
                pool = _POOLS[n_jobs] = concurrent.futures.ThreadPoolExecutor(
                    max_workers=n_jobs, thread_name_prefix="tying-hmm"
                )
    return pool


def units(lengths: np.ndarray) -> np.ndarray:
    """Edges ``[s0, s1, ...]`` of the contiguous sequence ranges of the fused E-step.

    A sequence is never split; a long one may be a unit of its own. Depends on
    the lengths only, so the partial sums do not depend on the thread count.

    Example:
        >>> units(np.full(4, 25_000)).tolist()
        [0, 2, 4]
        >>> units(np.full(10, 5)).tolist()
        [0, 10]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return np.zeros(1, dtype=np.int64)
    ends = np.cumsum(lengths)
    n_units = min(UNITS, max(1, int(ends[-1]) // MIN_ROWS))
    rows = -(-int(ends[-1]) // n_units)  # equal rows per unit: threads finish together
    key = (ends - 1) // rows  # the row block holding a sequence's last row
    first = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1])
    group_start = np.repeat(first, np.diff(np.concatenate([first, [len(lengths)]])))
    key = key * (len(lengths) + 1) + (np.arange(len(lengths)) - group_start) // MAX_LANES
    cut = np.flatnonzero(np.diff(key)) + 1
    return np.concatenate([[0], cut, [len(lengths)]]).astype(np.int64)


def _run_units(fn, n_units: int, n_jobs: int) -> None:
    """Call ``fn(u)`` for every unit ``u``, on ``n_jobs`` threads of a kept pool.

    The pool's queue hands each free thread the next unit (load balance);
    ``fn`` writes only unit ``u``'s outputs, so the order they finish in does
    not matter.
    """
    n_jobs = min(n_jobs, n_units)
    if n_jobs <= 1:
        for u in range(n_units):
            fn(u)
        return
    pool = _pool(n_jobs)
    for f in [pool.submit(fn, u) for u in range(n_units)]:
        f.result()  # re-raises a worker's exception here
