"""A fit's lane memory kept for the next fit (``tying.hmm.arenas``) against fresh memory.

Diag Gaussian HMM fits (K=8, 4 features, 10 EM iterations, explicit start values,
as the goal rows of ``bench_hmm``) run one after another, as a user does when
refitting, bootstrapping or comparing settings: with the kept blocks (the
default) and with none kept (``arenas.KEEP_BYTES = 0``: every fit's blocks come
from the allocator, as before stop 21).

Whether glibc hands a freed block back to the kernel (so that the next fit
page-faults it in again) depends on what the process allocated before, so each
side runs in a fresh process, the sides alternate over a few rounds, and three
sequences of fits are measured:

- ``same``: the same fit (shape and ``n_jobs``) again and again;
- ``threads``: fits alternating ``n_jobs=1`` and ``n_jobs=2`` (what the goal
  benchmark's interleaved pairs do);
- ``shapes``: fits alternating 150 x 400 and 200 x 500 sequences.

Per fit in each sequence: wall time, minor page faults and system time
(``getrusage``), which is where fresh memory costs. The allocator is left as a
user's process has it (glibc's defaults).

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

#: per sequence, the fits it cycles through: (sequences, steps, n_jobs)
SEQUENCES = {
    "same": [(150, 400, 1)],
    "threads": [(150, 400, 1), (150, 400, 2)],
    "shapes": [(150, 400, 1), (200, 500, 1)],
}


def _side(pattern: list, keep: bool, cycles: int) -> dict:
    """``cycles`` turns of ``pattern``'s fits in this process, lane memory kept or not.

    Returns, per fit of the pattern, its times, and the faults and system seconds
    per fit."""
    import threadpoolctl

    from tying.hmm import GaussianHMM, arenas

    if not keep:
        arenas.KEEP_BYTES = 0  # every block from the allocator, as before stop 21
    cases = [_diag_case(n_seq=n, T=T) for n, T, _ in pattern]

    def fit(i):
        X, lengths, start, A, means, _ = cases[i]
        return GaussianHMM(
            8, "diag", startprob_init=start, transmat_init=A, means_init=means,
            covars_init=_start_covars("diag", 8, 4), n_iter=10, tol=-np.inf,
            n_jobs=pattern[i][2],
        ).fit(X, lengths)  # fmt: skip

    out = [{"times": [], "faults": 0, "system": 0.0, "history": None} for _ in pattern]
    with threadpoolctl.threadpool_limits(1):
        for i in range(len(pattern)):
            fit(i)  # compile and warm up
        for _ in range(cycles):
            for i, o in enumerate(out):
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                m = fit(i)
                o["times"].append(time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                o["faults"] += (r1.ru_minflt - r0.ru_minflt) / cycles
                o["system"] += (r1.ru_stime - r0.ru_stime) / cycles
                o["history"] = m.history_
    return {"fits": out}


def _run_side(pattern: list, keep: bool, cycles: int) -> dict:
    """:func:`_side` in a fresh interpreter (its allocation history is the sequence's own)."""
    code = (
        "import json, sys; from benchmarks.bench_hmm_memory import _side; "
        f"json.dump(_side({pattern!r}, {keep}, {cycles}), sys.stdout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )  # fmt: skip
    return json.loads(out.stdout)


def _rows(name: str, pattern: list, rounds: int, cycles: int) -> list[dict]:
    got = {True: [], False: []}
    for _ in range(rounds):  # alternate the sides, each in its own process
        for keep in (True, False):
            got[keep].append(_run_side(pattern, keep, cycles)["fits"])
    rows = []
    for i, (n_seq, T, n_jobs) in enumerate(pattern):
        kept = [t for r in got[True] for t in r[i]["times"]]
        fresh = [t for r in got[False] for t in r[i]["times"]]
        histories = [r[i]["history"] for r in got[True] + got[False]]
        rows.append(
            {
                "case": f"sequence '{name}' ({len(pattern)} fits a turn), its diag HMM EM fit "
                f"K=8, {n_seq}x{T}x4, 10 iter, n_jobs={n_jobs}: lane memory kept vs fresh (wall)",
                "kept_ms": 1e3 * statistics.median(kept),
                "fresh_ms": 1e3 * statistics.median(fresh),
                "speedup": statistics.median(fresh) / statistics.median(kept),
                "faults_per_fit_kept": statistics.mean(r[i]["faults"] for r in got[True]),
                "faults_per_fit_fresh": statistics.mean(r[i]["faults"] for r in got[False]),
                "system_ms_per_fit_kept": 1e3 * statistics.mean(r[i]["system"] for r in got[True]),
                "system_ms_per_fit_fresh": 1e3
                * statistics.mean(r[i]["system"] for r in got[False]),
                "same_history": all(h == histories[0] for h in histories),
                "rounds": rounds,
                "fits_per_round": cycles,
                "load_average_1min": os.getloadavg()[0],
            }
        )
    return rows


def main() -> None:
    rows = []
    names = list(SEQUENCES) if not SMOKE else ["threads"]  # (shapes shrunk by _diag_case)
    for name in names:
        rows += _rows(name, SEQUENCES[name], smoke(3, 1), smoke(8, 1))
    write("hmm_memory", rows)


if __name__ == "__main__":
    main()
