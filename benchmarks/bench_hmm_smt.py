"""Do slow ``n_jobs=2`` fits come with the two vCPUs sharing one physical core? (issue 19)

The goal rows' control (``bench_hmm._spin_kernel``) is four independent multiply-add
chains: it leaves half of a core's two FMA pipes idle, so two such threads on the two
hardware threads (SMT siblings) of ONE physical core still run about 2x, and the control
cannot tell two cores from one. This benchmark runs, after every interleaved pair of
fits (full K=8 D=4 150 x 400, 10 iterations, ``n_jobs=2`` and ``n_jobs=1``, the order
alternated), two probes of 2 threads against 1 (wall, about 5 ms a thread):

- ``throughput``: eight independent 4-wide chains (both FMA pipes of a core busy): about
  2x on two cores, about 1x on two siblings of one core;
- ``latency``: one scalar chain (a core's pipes mostly idle): about 2x on either.

A throughput probe near 1x with the latency probe near 2x is two vCPUs sharing one core.
The rows give the pair ratios' median and how many pairs fall below 1.8x, the probes'
medians beside the slow pairs (below 1.6x), the fits' median beside the moments the
throughput probe read below 1.5x, and the Spearman correlations.

``python -m benchmarks hmm_smt`` (``TYING_SMT_SECONDS``, default 300) writes
``bench-results/hmm_smt.json``; run it on a quiet machine: it keeps both cores busy.
"""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np

from benchmarks.bench_hmm import _diag_case, _start_covars
from benchmarks.common import SMOKE, write


def _probes():
    import numba

    @numba.njit(nogil=True, fastmath=True, cache=False)
    def throughput(n):  # 32 values: eight 4-wide FMA chains, both pipes busy
        a = np.ones(32)
        for _ in range(n):
            for j in range(32):
                a[j] = a[j] * 1.0000001 + 1e-9
        return a.sum()

    @numba.njit(nogil=True, fastmath=False, cache=False)
    def latency(n):  # one dependent scalar chain: a pipe mostly idle
        s = 1.0
        for _ in range(n):
            s = s * 1.0000001 + 1e-9
        return s

    return throughput, latency


def _wall(fn, n, k):
    threads = [threading.Thread(target=fn, args=(n,)) for _ in range(k)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _calibrated(fn, seconds=0.005):
    fn(10)
    n = 1000
    while _wall(fn, n, 1) < seconds:
        n *= 2
    return n


def _two_vs_one(fn, n):
    return (_wall(fn, n, 1) + _wall(fn, n, 1)) / _wall(fn, n, 2)


def run(seconds: float, ctype: str = "full") -> list[dict]:
    from scipy.stats import spearmanr
    from threadpoolctl import threadpool_limits

    from tying.hmm import GaussianHMM

    throughput, latency = _probes()
    n_thr, n_lat = _calibrated(throughput), _calibrated(latency)
    X, lengths, start, A, means, _ = _diag_case(K=8, D=4, n_seq=150, T=400)
    covars = _start_covars(ctype, 8, 4)

    def fit(n_jobs):
        t0 = time.perf_counter()
        GaussianHMM(8, ctype, startprob_init=start, transmat_init=A, means_init=means,
                    covars_init=covars, n_iter=10, tol=-np.inf, n_jobs=n_jobs).fit(X, lengths)  # fmt: skip
        return time.perf_counter() - t0

    out = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget's ConvergenceWarning: 10 iterations asked
        fit(1), fit(2)
        end = time.time() + seconds
        i = 0
        while time.time() < end or i < 3:
            if i % 2:
                one, two = fit(1), fit(2)
            else:
                two, one = fit(2), fit(1)
            out.append((one / two, _two_vs_one(throughput, n_thr), _two_vs_one(latency, n_lat)))
            i += 1
    r = np.asarray(out)
    slow, shared = r[:, 0] < 1.6, r[:, 1] < 1.5

    def med(v):
        return float(np.median(v)) if len(v) else None

    def rho(a, b):
        return float(spearmanr(a, b).statistic) if len(a) >= 3 and np.ptp(a) and np.ptp(b) else None

    return [
        {
            "case": f"{ctype} K=8 D=4 150x400, 10 iter: n_jobs=2 vs 1 (wall), one pair at a time",
            "pairs": len(r),
            "seconds": seconds,
            "fit_ratio_median": med(r[:, 0]),
            "pairs_below_1_8": int((r[:, 0] < 1.8).sum()),
            "throughput_probe_median": med(r[:, 1]),
            "latency_probe_median": med(r[:, 2]),
            "pairs_below_1_6": int(slow.sum()),
            "throughput_probe_beside_pairs_below_1_6": med(r[slow, 1]),
            "latency_probe_beside_pairs_below_1_6": med(r[slow, 2]),
            "throughput_probe_below_1_5": int(shared.sum()),
            "fit_ratio_while_throughput_probe_below_1_5": med(r[shared, 0]),
            "latency_probe_while_throughput_probe_below_1_5": med(r[shared, 2]),
            "spearman_fit_vs_throughput_probe": rho(r[:, 0], r[:, 1]),
            "spearman_fit_vs_latency_probe": rho(r[:, 0], r[:, 2]),
            "load_average_1min": os.getloadavg()[0],
        }
    ]


def main() -> None:
    seconds = 1.0 if SMOKE else float(os.environ.get("TYING_SMT_SECONDS", "300"))
    write("hmm_smt", run(seconds))


if __name__ == "__main__":
    main()
