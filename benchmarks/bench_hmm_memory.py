"""A fit's lane memory kept for the next fit (``tying.hmm.arenas``) against fresh memory.

The same diag Gaussian HMM fit (K=8, 4 features, 10 EM iterations, explicit start
values, as the goal rows of ``bench_hmm``) run again and again, as a user does
when refitting, bootstrapping or comparing seeds: with the kept blocks (the
default) and with none kept (``arenas.KEEP_BYTES = 0``: every fit's blocks come
from the allocator, as before stop 21). Each side runs its fits in a row in a
fresh process (whether glibc hands a freed block back to the kernel depends on
the process's allocation history, so interleaving the sides in one process
would measure neither), the sides alternate over a few rounds; wall time, 1
and 2 threads, both ends of the goal's range, with each side's minor page
faults and system time per fit (``getrusage``), which is where fresh memory
costs. The allocator is left as a user's process has it (glibc's defaults).

    python -m benchmarks hmm_memory
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.bench_hmm import _diag_case, _start_covars
from benchmarks.common import SMOKE, smoke, write


def _side(n_seq: int, T: int, n_jobs: int, keep: bool, fits: int) -> dict:
    """``fits`` fits in a row in this process, with the lane memory kept or not."""
    import threadpoolctl

    from tying.hmm import GaussianHMM, arenas

    X, lengths, start, A, means, _ = _diag_case(n_seq=n_seq, T=T)
    if not keep:
        arenas.KEEP_BYTES = 0  # every block from the allocator, as before stop 21

    def fit():
        return GaussianHMM(
            8, "diag", startprob_init=start, transmat_init=A, means_init=means,
            covars_init=_start_covars("diag", 8, 4), n_iter=10, tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    times, faults, system = [], 0, 0.0
    with threadpoolctl.threadpool_limits(1):
        fit()  # compile and warm up
        for _ in range(fits):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            m = fit()
            times.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            faults += r1.ru_minflt - r0.ru_minflt
            system += r1.ru_stime - r0.ru_stime
    return {"times": times, "faults": faults / fits, "system": system / fits,
            "history": m.history_}  # fmt: skip


def _run_side(n_seq, T, n_jobs, keep, fits) -> dict:
    """:func:`_side` in a fresh interpreter: what glibc does depends on the process's history."""
    code = (
        "import json, sys; from benchmarks.bench_hmm_memory import _side; "
        f"json.dump(_side({n_seq}, {T}, {n_jobs}, {keep}, {fits}), sys.stdout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )  # fmt: skip
    return json.loads(out.stdout)


def _case(n_seq: int, T: int, n_jobs: int, rounds: int, fits: int) -> dict:
    got = {True: [], False: []}
    for _ in range(rounds):  # alternate the sides, each in its own process
        for keep in (True, False):
            got[keep].append(_run_side(n_seq, T, n_jobs, keep, fits))
    kept = [t for r in got[True] for t in r["times"]]
    fresh = [t for r in got[False] for t in r["times"]]
    per_round = [
        statistics.median(f["times"]) / statistics.median(k["times"])
        for k, f in zip(got[True], got[False], strict=True)
    ]
    return {
        "case": f"diag HMM EM, K=8, {n_seq}x{T}x4, 10 iter, n_jobs={n_jobs}: lane memory "
        "kept for the next fit vs fresh memory (wall, fits in a row, one process a side)",
        "kept_ms": 1e3 * statistics.median(kept),
        "fresh_ms": 1e3 * statistics.median(fresh),
        "speedup": statistics.median(fresh) / statistics.median(kept),
        "speedup_rounds": f"{min(per_round):.2f}-{max(per_round):.2f}",
        "faults_per_fit_kept": statistics.mean(r["faults"] for r in got[True]),
        "faults_per_fit_fresh": statistics.mean(r["faults"] for r in got[False]),
        "system_ms_per_fit_kept": 1e3 * statistics.mean(r["system"] for r in got[True]),
        "system_ms_per_fit_fresh": 1e3 * statistics.mean(r["system"] for r in got[False]),
        "same_history": all(
            r["history"] == got[True][0]["history"] for r in got[True] + got[False]
        ),
        "rounds": rounds,
        "fits_per_round": fits,
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    rows = []
    shapes = ((150, 400), (200, 500)) if not SMOKE else ((150, 400),)  # (shrunk by _diag_case)
    for n_seq, T in shapes:
        for n_jobs in (1, 2):
            rows.append(_case(n_seq, T, n_jobs, smoke(3, 1), smoke(12, 2)))
    write("hmm_memory", rows)


if __name__ == "__main__":
    main()
