"""DP-SGD on models written as a class of one's own, vs Opacus hooks (issue 19, stop 23).

The named DP-SGD row is a plain ``nn.Sequential``; most people write their own
``nn.Module`` class, and a reviewer will try that. These rows time one full DP step,
``mode="vmap"`` and ``mode="ghost"``, against Opacus' hooks mode on the same models
written as classes (``benchmarks.bench_train_sweep.MLPNet`` / ``CNNNet``):

- the named shape, MLP 256-512-512-10 at B = 256, 2 threads;
- an MLP of width 64, depth 2 at B = 64, and the small CNN at B = 64, 1 thread;
- the smallest: MLP 16-10 at B = 8, as a class and (as a Sequential) with a loss
  written by hand, 1 thread.

Each row first checks the same clipped gradient as Opacus (float64, σ = 0). Ratios are
Opacus' step time over ours per interleaved pair, median (10th-90th percentile), wall
and CPU (``time.process_time``). Ghost mode refuses models with convolutions: that row
records the refusal. Run: ``python -m benchmarks train_own``.
"""

from __future__ import annotations

from benchmarks.bench_train_sweep import CNNNet, MLPNet, mlp, one
from benchmarks.common import SMOKE, smoke, write

# (name, input kind, model builder, B, threads)
CASES = [
    ("MLP class 256-512-512-10", "mlp", lambda: MLPNet(0, 0, (256, 512, 512, 10)), 256, 2),
    ("MLP class w=64 depth=2", "mlp", lambda: MLPNet(64, 2), 64, 1),
    ("CNN class conv 1-8-16 + Linear", "img", CNNNet, 64, 1),
    ("MLP class w=16 depth=1", "mlp", lambda: MLPNet(16, 1), 8, 1),
    ("MLP w=16 depth=1, own loss", "mlp-own", lambda: mlp(16, 1), 8, 1),
]


def rows() -> list[dict]:
    out = []
    for name, kind, build, B, threads in CASES:
        if SMOKE and B * sum(p.numel() for p in build().parameters()) > 2**23:
            name, build, B = name + " (smoke: w=16)", lambda: MLPNet(16, 1), smoke(B, 8)
        for mode in ("vmap", "ghost"):
            try:
                out.append(one(name, kind, build, B, mode, threads))
            except ValueError as refused:  # ghost mode and a convolution
                out.append(
                    {"case": f"{name}, B={B}", "mode": mode, "threads": threads,
                     "refused": str(refused)[:120]}
                )  # fmt: skip
    return out


def report(rows_: list[dict]) -> None:
    print("== own-class models (stop 23), vs Opacus hooks: speed median (10th-90th pct)")
    for r in rows_:
        if "refused" in r:
            print(f"  {r['case'][:42]:42s} {r['mode']:5s} {r['threads']} thr: refused")
            continue
        print(
            f"  {r['case'][:42]:42s} {r['mode']:5s} {r['threads']} thr: wall "
            f"{r['speed_wall_pairs']:17s} CPU {r['speed_cpu_pairs']:17s} ours "
            f"{r['ours_ms']:.3g} ms Opacus {r['opacus_hooks_ms']:.3g} ms  load {r['loadavg']}"
        )


def main() -> None:
    got = rows()
    write("train_own", got)
    report(got)


if __name__ == "__main__":
    main()
