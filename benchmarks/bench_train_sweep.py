"""DP-SGD step vs Opacus hooks mode over models a reviewer would try (issue 19, DP-SGD row).

``python -m benchmarks train`` holds the named goal rows; this sweeps around them so
that no shape is chosen toward the goal: MLPs of widths 16..1024 and depths 1..6,
batches 8..1024, a small CNN with and without GroupNorm, an embedding+linear model,
``mode="vmap"`` everywhere and ``mode="ghost"`` where it applies (Linear/Embedding
models), on 1 and 2 torch threads.

Every case first checks that ours and Opacus compute the same clipped gradient
(σ = 0, float64, :func:`benchmarks.bench_train._same_clipped_grad`). Each step pair
is interleaved; the ratios are Opacus' time over ours per pair, median (10th-90th
percentile), wall and CPU (``time.process_time``, all threads). ``/proc/loadavg`` is
recorded before and after each case: the machine is shared.

Run: ``python -m benchmarks train_sweep`` (all), or ``TYING_SWEEP=quick`` for the
1-thread small-model rows only.
"""

from __future__ import annotations

import copy
import os
import pathlib
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_train import _ce, _opacus_step, _ours_step, _same_clipped_grad, _spread, cnn
from benchmarks.common import SMOKE, pairs, write

#: wall-clock seconds of timed steps per case and clock (both sides together)
BUDGET_S = 2.0


def _load() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def mlp(width: int, depth: int) -> nn.Sequential:
    """``depth`` Linear layers: width -> width ... -> 10, ReLU between."""
    sizes = [width] * depth + [10]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class MLPNet(nn.Module):
    """The same MLP as a class of one's own (what a reviewer writes; not an nn.Sequential).

    Stop 22: such a model took ``vmap(grad(...))`` at 0.69-0.78x Opacus; it now takes the
    watched expanded way (``tying.train.per_example``).
    """

    def __init__(self, width: int, depth: int, sizes: tuple[int, ...] | None = None):
        super().__init__()
        sizes = list(sizes) if sizes else [width] * depth + [10]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class CNNNet(nn.Module):
    """The CNN rows' model (:func:`benchmarks.bench_train.cnn` without GroupNorm) as a class
    of one's own, pooling and activations as functions (stop 23)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def own_ce(out, y):
    """Cross-entropy written by hand: not a torch loss the step recognises, so each
    example's loss is computed alone (vmap) or probed for mixing (ghost), as before."""
    return torch.logsumexp(out, 1) - out.gather(1, y[:, None])[:, 0]


def embed_linear(vocab: int, d: int, T: int) -> nn.Sequential:
    """Bag of tokens: Embedding -> Flatten -> Linear(T*d, 10)."""
    return nn.Sequential(nn.Embedding(vocab, d), nn.Flatten(), nn.Linear(T * d, 10))


def cases() -> list[tuple[str, str, callable, int]]:
    """(name, kind, model builder, B); kind picks the input."""
    out = []
    for w in (16, 64, 256, 1024):  # widths at depth 2, B = 64
        out.append((f"MLP w={w} depth=2", "mlp", lambda w=w: mlp(w, 2), 64))
    for d in (1, 4, 6):  # depths at width 64
        out.append((f"MLP w=64 depth={d}", "mlp", lambda d=d: mlp(64, d), 64))
    for B in (8, 32, 256, 1024):  # batches at 64, depth 2
        out.append(("MLP w=64 depth=2", "mlp", lambda: mlp(64, 2), B))
    out.append(("MLP w=16 depth=1", "mlp", lambda: mlp(16, 1), 8))
    out.append(("MLP w=256 depth=3", "mlp", lambda: mlp(256, 3), 256))
    out.append(("MLP w=1024 depth=2", "mlp", lambda: mlp(1024, 2), 256))
    out.append(("CNN conv 1-8-16 + Linear", "img", lambda: cnn(False), 64))
    out.append(("CNN conv+GroupNorm 1-8-16 + Linear", "img", lambda: cnn(True), 64))
    out.append(("Embedding 1000x32, T=16 + Linear", "tok", lambda: embed_linear(1000, 32, 16), 64))
    # stop 22: the small rows again as a class of one's own, and with a loss of one's own
    out.append(("MLP class w=16 depth=1", "mlp", lambda: MLPNet(16, 1), 8))
    out.append(("MLP class w=64 depth=2", "mlp", lambda: MLPNet(64, 2), 32))
    out.append(("MLP w=16 depth=1, own loss", "mlp-own", lambda: mlp(16, 1), 8))
    out.append(("MLP w=64 depth=2, own loss", "mlp-own", lambda: mlp(64, 2), 32))
    return out


def _in_features(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features


def _data(kind: str, model: nn.Module, B: int):
    g = torch.Generator().manual_seed(1)
    if kind == "img":
        x = torch.randn(B, 1, 28, 28, generator=g)
    elif kind == "tok":
        x = torch.randint(0, 1000, (B, 16), generator=g)
    else:
        x = torch.randn(B, _in_features(model), generator=g)
    return x, torch.randint(0, 10, (B,), generator=g)


def one(name: str, kind: str, build, B: int, mode: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model_a = build()
    model_b = copy.deepcopy(model_a)
    x, y = _data(kind, model_a, B)
    load0 = _load()
    loss_fn = own_ce if kind == "mlp-own" else _ce
    err = _same_clipped_grad(model_a, x, y, loss_fn, 1.0, mode)

    def loss_sum(out, y_):
        return loss_fn(out, y_).sum()

    _, _, theirs = _opacus_step(model_b, x, y, loss_sum, 1.0, 1.0, 0.01)
    ours = _ours_step(model_a, x, y, loss_fn, 1.0, 1.0, 0.01, mode)
    t0 = time.perf_counter()
    for _ in range(2):  # warm-up, and an estimate of a pair's time
        ours()
        theirs()
    per_pair = max((time.perf_counter() - t0) / 2, 1e-4)
    repeat = max(7, min(61, int(BUDGET_S / per_pair)))
    t_ours, t_opacus, wall = pairs(ours, theirs, repeat=repeat, warmup=1)
    c_ours, c_opacus, cpu = pairs(ours, theirs, repeat=repeat, warmup=0, clock=time.process_time)
    return {
        "case": f"{name}, B={B}",
        "mode": mode,
        "threads": threads,
        "ours_ms": 1e3 * t_ours,
        "opacus_hooks_ms": 1e3 * t_opacus,
        "speed_wall_pairs": _spread(wall),
        "speed_cpu_pairs": _spread(cpu),
        "pairs": repeat,
        "loadavg": f"{load0} -> {_load()}",
        "clipped_grad_max_rel_diff": err,
    }


def main() -> None:
    quick = os.environ.get("TYING_SWEEP", "") == "quick"
    todo = cases()
    if SMOKE:
        todo = [todo[0], todo[-6], todo[-5], todo[-4], todo[-1]]  # + CNN-GN, embed, class, own
    rows = []
    for threads in (1,) if quick or SMOKE else (1, 2):
        for name, kind, build, B in todo:
            if quick and B * sum(p.numel() for p in build().parameters()) > 2**23:
                continue
            modes = ["vmap"] + (["ghost"] if kind != "img" else [])
            for mode in modes:
                row = one(name, kind, build, B, mode, threads)
                rows.append(row)
                print(
                    f"  {row['case'][:40]:40s} {mode:5s} {threads} thr: wall "
                    f"{row['speed_wall_pairs']:17s} CPU {row['speed_cpu_pairs']:17s} ours "
                    f"{row['ours_ms']:.3g} ms  load {row['loadavg']}",
                    flush=True,
                )
    torch.set_num_threads(2)
    write("train_sweep", rows)


if __name__ == "__main__":
    main()
