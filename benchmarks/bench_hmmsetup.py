"""A Gaussian HMM fit's serial setup (everything outside the compiled EM loop), before
and after a stop's setup work (issue 19), interleaved in one process.

"Before" is the library at ``BEFORE`` (main just before this stop's setup work), taken
from git into a temporary directory and imported as the package ``tying_before``;
"after" is the checked-out ``tying``. Each pair fits the same data from the same
explicit start values (as the goal rows of ``bench_hmm``: K=8, 4 features, 10 EM
iterations, no random start) with one side, then the other, alternating which goes
first. Per fit: its time (CPU time on one thread, wall on two) and the time spent
inside the compiled ``em_run``; the setup is the difference. Every row first checks
that both sides give the same bits (history and parameters).

Rows: diag at 20 x 400 and diag, full and tied at 150 x 400, each on one thread and on
two (the ``n_jobs`` rows' serial part). The ratio column is before/after of the whole
fit; the saving is the median of the per-pair setup differences, with its IQR.

    python -m benchmarks hmmsetup
"""

from __future__ import annotations

import atexit
import io
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

from benchmarks.bench_hmm import _diag_case, _start_covars
from benchmarks.common import SMOKE, load_average, smoke, write

#: main at the start of stop 23's setup work (2026-12-02; stop 22's was 567c60c)
BEFORE = "7aa4620"
CASES = [  # (covariance type, sequences, steps, n_jobs)
    ("diag", 20, 400, 1),
    ("diag", 20, 400, 2),
    ("diag", 150, 400, 1),
    ("diag", 150, 400, 2),
    ("full", 150, 400, 1),
    ("full", 150, 400, 2),
    ("tied", 150, 400, 1),
    ("tied", 150, 400, 2),
]
PARAMS = ("_startprob", "_transitions", "_means", "_covars")


def _before_package(root: pathlib.Path) -> pathlib.Path | None:
    """``src/tying`` at ``BEFORE`` as the package ``tying_before`` under a temporary
    directory (its imports renamed), or None when git or the commit is not here."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(root), "archive", BEFORE, "src/tying"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    where = pathlib.Path(tempfile.mkdtemp(prefix="tying-before-"))
    atexit.register(shutil.rmtree, where, True)  # the copy lives as long as this process
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(where, filter="data")
    pkg = where / "tying_before"
    (where / "src" / "tying").rename(pkg)
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\btying(?=[. ,\n])", "tying_before", text))
    return where


def _timed_em_run(modules, clock: list, inside: list) -> None:
    """Wrap each compiled ``em_run`` so the time spent in it (by ``clock[0]``, which a
    row sets) adds to ``inside[0]``."""
    for mod in modules:
        run = mod.em_run

        def timed(*args, run=run):
            t = clock[0]()
            try:
                return run(*args)
            finally:
                inside[0] += clock[0]() - t

        mod.em_run = timed


def _row(sides, ctype, n_seq, T, n_jobs, n_pairs, inside, clock) -> dict:
    X, lengths, start, A, means, _ = _diag_case(n_seq=n_seq, T=T)
    covars = _start_covars(ctype, 8, 4)

    def fit(pkg):
        return pkg.GaussianHMM(
            8, ctype, startprob_init=start, transmat_init=A, means_init=means,
            covars_init=covars, n_iter=10, tol=-np.inf, n_jobs=n_jobs,
        ).fit(X, lengths)  # fmt: skip

    fits = {name: fit(pkg) for name, pkg in sides.items()}
    same = None
    if len(fits) == 2:
        a, b = fits.values()
        same = a.history_ == b.history_ and all(
            np.array_equal(getattr(a, p), getattr(b, p)) for p in PARAMS
        )
    for _ in range(3):
        for pkg in sides.values():
            fit(pkg)
    times = {name: [] for name in sides}
    names = list(sides)
    for i in range(n_pairs):
        for name in names if i % 2 == 0 else names[::-1]:
            inside[0] = 0.0
            t = clock()
            fit(sides[name])
            total = clock() - t
            times[name].append((total, total - inside[0]))
    row = {"case": f"{ctype} {n_seq}x{T}", "n_jobs": n_jobs}
    row["clock"] = "cpu" if n_jobs == 1 else "wall"
    after = np.array(times["after"]) * 1e3
    row["setup after ms"] = float(np.median(after[:, 1]))
    row["fit after ms"] = float(np.median(after[:, 0]))
    if "before" in times:
        before = np.array(times["before"]) * 1e3
        saved = before[:, 1] - after[:, 1]
        ratio = before[:, 0] / after[:, 0]
        row["setup before ms"] = float(np.median(before[:, 1]))
        row["saved ms (IQR)"] = (
            f"{np.median(saved):.3f} ({np.percentile(saved, 25):.3f}..{np.percentile(saved, 75):.3f})"
        )
        row["fit before/after (IQR)"] = (
            f"{np.median(ratio):.3f} ({np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f})"
        )
        row["same bits"] = bool(same)
    row["pairs"] = n_pairs
    row["load"] = " ".join(load_average())
    print(row, flush=True)
    return row


def main() -> None:
    import threadpoolctl

    root = pathlib.Path(__file__).resolve().parents[1]
    where = None if SMOKE else _before_package(root)
    if where is not None:
        sys.path.insert(0, str(where))
    import tying.hmm as after
    from tying.hmm import _numba_em, _numba_em_full

    sides = {"after": after}
    modules = [_numba_em, _numba_em_full]
    if where is not None:
        import tying_before.hmm as before
        from tying_before.hmm import _numba_em as b_em
        from tying_before.hmm import _numba_em_full as b_full

        sides = {"before": before, "after": after}
        modules += [b_em, b_full]
    else:
        print(f"no 'before' side: git archive {BEFORE} unavailable or smoke run")
    rows = []
    inside, clock = [0.0], [time.process_time]
    _timed_em_run(modules, clock, inside)
    with threadpoolctl.threadpool_limits(1):
        for ctype, n_seq, T, n_jobs in CASES:
            clock[0] = time.process_time if n_jobs == 1 else time.perf_counter
            n_pairs = smoke(150 if n_seq <= 20 else 60, 2)
            rows.append(_row(sides, ctype, n_seq, T, n_jobs, n_pairs, inside, clock[0]))
    write("hmmsetup", rows)


if __name__ == "__main__":
    main()
