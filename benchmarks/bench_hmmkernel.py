"""The lane kernel's fixed cost per step (issue 19, stop 23): Gaussian HMM EM (diag at
the named shapes and at shapes of few lanes per unit; full and tied, which run the same
kernel) against hmmlearn ``implementation="scaling"``, before and after stop 23's kernel
work, interleaved in one process.

"Before" is the library at ``BEFORE`` (main at the start of stop 23), taken from git
into a temporary directory and imported as ``tying_before`` (as ``bench_hmmsetup``
does; its numba cache there is cold, so the first fits compile); "after" is the
checked-out ``tying``. Each round fits the same data from the same explicit start
values (K, D as named, 10 EM iterations, one thread) with before, after and hmmlearn,
in a rotating order; CPU time (``time.process_time``). Per shape: hmmlearn's time
over ours, after and before (median and min-max of the rounds), after's gain over
before, the largest difference of any fitted parameter between the two relative to
that parameter's scale (the summation order changed: not the same bits), and
whether after's fit is bit-identical on 1 and 2 threads.

    python -m benchmarks hmmkernel
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import bench_hmmsetup
from benchmarks.bench_hmm import _diag_case, _start_covars
from benchmarks.common import SMOKE, load_average, smoke, write

BEFORE = "7aa4620"  # main at the start of stop 23 (2026-12-02)
#: covariance type, K, D, sequences, length: the named shapes first, then the ones of few
#: lanes per unit; full and tied run the same lane kernel (``full=True``)
SHAPES = (
    ("diag", 8, 4, 150, 400), ("diag", 8, 4, 200, 500), ("diag", 8, 4, 20, 400),
    ("diag", 8, 4, 50, 2000), ("diag", 8, 1, 150, 400), ("diag", 8, 16, 150, 400),
    ("diag", 4, 4, 150, 400), ("diag", 16, 4, 150, 400), ("diag", 8, 4, 1000, 50),
    ("diag", 8, 4, 8, 400), ("full", 8, 4, 150, 400), ("full", 8, 4, 20, 400),
    ("tied", 8, 4, 150, 400),
)  # fmt: skip
PARAMS = ("startprob_", "transmat_", "means_", "covars_")


def _row(sides, ctype, K, D, n_seq, T, rounds) -> dict:
    from hmmlearn import hmm

    X, lengths, start, A, means, _ = _diag_case(K=K, D=D, n_seq=n_seq, T=T)
    covars = _start_covars(ctype, K, D)

    def ours(pkg, n_jobs=1):
        return pkg.GaussianHMM(
            K, ctype, startprob_init=start, transmat_init=A, means_init=means,
            covars_init=covars, n_iter=10, tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    def anchor():
        m = hmm.GaussianHMM(
            K, ctype, init_params="", n_iter=10, tol=-np.inf, covars_prior=0.0,
            implementation="scaling",
        )  # fmt: skip
        m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, covars
        m.fit(X, lengths)

    runs = {name: (lambda pkg=pkg: ours(pkg)) for name, pkg in sides.items()}
    runs["hmmlearn"] = anchor
    fits = {name: ours(pkg) for name, pkg in sides.items()}
    two = ours(sides["after"], n_jobs=2)
    row = {"case": f"{ctype} K={K}, D={D}, {len(lengths)}x{lengths[0]}, 10 iter, 1 thread (CPU)"}
    row["threads_bit_identical"] = bool(
        fits["after"].history_ == two.history_
        and all(np.array_equal(getattr(fits["after"], p), getattr(two, p)) for p in PARAMS)
    )
    if "before" in fits:
        row["max_rel_diff_vs_before"] = max(
            float(np.max(np.abs(getattr(fits["after"], p) - getattr(fits["before"], p))))
            / max(float(np.max(np.abs(getattr(fits["before"], p)))), 1e-300)
            for p in PARAMS
        )
    for f in runs.values():
        f()  # warm-up (and the cold compile of the before side)
    times = {name: [] for name in runs}
    names = list(runs)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t = time.process_time()
            runs[name]()
            times[name].append(time.process_time() - t)
    ref = np.array(times["hmmlearn"])
    for name in sides:
        r = ref / np.array(times[name])
        row[f"vs_hmmlearn_{name}"] = float(np.median(r))
        row[f"vs_hmmlearn_{name}_spread"] = f"{r.min():.2f}-{r.max():.2f}"
        row[f"{name}_ms"] = float(np.median(times[name]) * 1e3)
    if "before" in sides:
        g = np.array(times["before"]) / np.array(times["after"])
        row["after_gain"] = float(np.median(g))
        row["after_gain_spread"] = f"{g.min():.2f}-{g.max():.2f}"
    row["hmmlearn_ms"] = float(np.median(ref) * 1e3)
    row["rounds"] = rounds
    row["load_1_5_15"] = " ".join(load_average())
    return row


def _line(row) -> str:
    """The goal line of a row: ours vs hmmlearn after (and before), and the gain."""
    text = f"{row['case']}: {row['vs_hmmlearn_after']:.2f}x ({row['vs_hmmlearn_after_spread']})"
    if "vs_hmmlearn_before" in row:
        text += (
            f", before {row['vs_hmmlearn_before']:.2f}x ({row['vs_hmmlearn_before_spread']})"
            f", after/before {row['after_gain']:.3f} ({row['after_gain_spread']})"
            f", max rel diff {row['max_rel_diff_vs_before']:.1e}"
        )
    return text + f", 2-thread bits equal {row['threads_bit_identical']}, load {row['load_1_5_15']}"


def main() -> None:
    import pathlib

    import threadpoolctl

    root = pathlib.Path(__file__).resolve().parents[1]
    bench_hmmsetup.BEFORE = BEFORE  # its git-archive helper reads the commit from there
    where = None if SMOKE else bench_hmmsetup._before_package(root)
    if where is not None:
        sys.path.insert(0, str(where))
    import tying.hmm as after

    sides = {"after": after}
    if where is not None:
        import tying_before.hmm as before

        sides = {"before": before, "after": after}
    else:
        print(f"no 'before' side: git archive {BEFORE} unavailable or smoke run")
    rows = []
    with threadpoolctl.threadpool_limits(1):
        for ctype, K, D, n_seq, T in SHAPES:
            rounds = smoke(7 if n_seq * T <= 20_000 else 5, 1)
            rows.append(_row(sides, ctype, K, D, n_seq, T, rounds))
            print(_line(rows[-1]), flush=True)
    write("hmmkernel", rows)
    print("\n== goal rows (>= 10x hmmlearn scaling)")
    for row in rows:
        print(_line(row))


if __name__ == "__main__":
    main()
