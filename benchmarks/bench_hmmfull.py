"""Full and tied Gaussian HMM EM at larger D against hmmlearn (issue 19, stop 24).

``bench_hmm.bench_cov_shapes`` alone: K=8, 150 sequences x 400 steps, D = 8, 16, 32,
10 EM iterations from the same explicit start, one thread; our fit vs hmmlearn
``implementation="scaling"`` in CPU time, three interleaved pairs after a warm-up pair
(median ratio and spread, with the machine's load). About four minutes, most of it
hmmlearn's. Written to ``bench-results/hmmfull.json``; the goal is >= 10x (stop 24
aimed at >= 12x for full D=16).

    python -m benchmarks hmmfull
"""

from __future__ import annotations

from benchmarks.bench_hmm import bench_cov_shapes
from benchmarks.common import smoke, write


def main() -> None:
    # every BLAS loaded before the limit (threadpoolctl limits only those already loaded)
    import hmmlearn.hmm  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    rows: list[dict] = []
    with threadpool_limits(limits=1):
        bench_cov_shapes(rows, repeat=smoke(3, 1))
    write("hmmfull", rows)
    print("\n== full/tied vs hmmlearn scaling (1 thread, CPU time; goal >= 10x)")
    for row in rows:
        met = "met" if row["speedup"] >= 10 else f"MISSED by {10 / row['speedup']:.2f}x"
        print(f"  {row['case']}: {row['speedup']:.2f}x ({row['speedup_spread']}) {met}, "
              f"ours {row['ours_s'] * 1e3:.0f} ms, load {row['load_average_1min']:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
