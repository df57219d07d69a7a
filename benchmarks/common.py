"""Shared timing helpers for the benchmarks.

Every benchmark reports a ratio of two timings taken in the same process,
interleaved, so that machine noise hits both sides alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

RESULTS_DIR = pathlib.Path(os.environ.get("TYING_BENCH_OUT", "bench-results"))

#: ``TYING_BENCH_SMOKE=1``: every timing loop runs once, without warm-up, and the
#: benchmarks shrink their shapes (see :func:`smoke`). The figures are then
#: meaningless; the point is that every benchmark still runs end to end, which
#: tests/test_benchmarks.py checks in CI.
SMOKE = os.environ.get("TYING_BENCH_SMOKE", "") not in ("", "0")


def smoke(full: int, small: int) -> int:
    """``small`` under ``TYING_BENCH_SMOKE=1``, else ``full`` (a size or a count)."""
    return small if SMOKE else full


def _loops(repeat: int, warmup: int) -> tuple[int, int]:
    return (1, 0) if SMOKE else (repeat, warmup)


def timeit(
    fn: Callable[[], object],
    *,
    repeat: int = 7,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median time of ``fn()`` in seconds over ``repeat`` runs after ``warmup``.

    Wall time by default; ``clock=time.process_time`` as for :func:`compare`.
    """
    repeat, warmup = _loops(repeat, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def compare(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    *,
    repeat: int = 7,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Time ``ours`` and ``anchor`` interleaved; return their median times (s).

    ``clock=time.process_time`` measures this process's CPU time instead of wall
    time: the steadier figure on a machine shared with other jobs.
    """
    t_ours, t_anchor, _ = pairs(ours, anchor, repeat=repeat, warmup=warmup, clock=clock)
    return t_ours, t_anchor


def pairs(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    *,
    repeat: int = 7,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, list[float]]:
    """Like :func:`compare`, plus the ratio anchor/ours of every interleaved pair.

    The spread of the ratios is the noise of the measurement: load from other jobs
    hits both sides of a pair alike.
    """
    repeat, warmup = _loops(repeat, warmup)
    for _ in range(warmup):
        ours()
        anchor()
    t_ours, t_anchor = [], []
    for _ in range(repeat):
        t0 = clock()
        ours()
        t1 = clock()
        anchor()
        t2 = clock()
        t_ours.append(t1 - t0)
        t_anchor.append(t2 - t1)
    ratios = [a / o for a, o in zip(t_anchor, t_ours, strict=True)]
    return statistics.median(t_ours), statistics.median(t_anchor), ratios


def timed_rounds(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    *,
    n: int,
    repeat: int = 7,
    warmup: int = 2,
) -> tuple[list[float], list[float]]:
    """``n`` rounds of :func:`compare` in CPU time: each side's median time per round.

    The rounds' spread is what a reported ratio's min–max shows.
    """
    t_ours, t_anchor = [], []
    for _ in range(smoke(n, 1)):
        a, b = compare(ours, anchor, repeat=repeat, warmup=warmup, clock=time.process_time)
        t_ours.append(a)
        t_anchor.append(b)
    return t_ours, t_anchor


def load_average() -> list[str]:
    """The machine's 1-, 5- and 15-minute load averages, as ``/proc/loadavg`` writes them."""
    return [f"{x:.2f}" for x in os.getloadavg()]


def write(name: str, rows: list[dict]) -> pathlib.Path:
    """Write ``rows`` to ``bench-results/<name>.json`` and print them as a table."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(rows, indent=2, default=str))
    print(f"\n== {name}")
    for row in rows:
        print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return path


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def steady_allocator() -> bool:
    """Keep glibc from returning freed MB-sized buffers to the OS between iterations.

    With glibc's default dynamic mmap threshold, whether a 2 MB conv output is served
    from fresh (page-faulting) pages depends on the allocation history of the process:
    the same C4 step measured 1.05× or 1.3× the anchor depending on what ran before.
    Pinning the thresholds makes both sides allocate from a warm heap. Returns whether
    it applied (glibc only).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 28)) and bool(
            libc.mallopt(m_trim_threshold, 1 << 30)
        )
    except (OSError, AttributeError):
        return False
