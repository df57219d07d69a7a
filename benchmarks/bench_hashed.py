"""Hashed embeddings at recommender scale, as ratios against anchors in the same run (issue 18).

1. Forward+backward of 8,192 lookups into a V = 10^6, D = 128 table, one thread, vs
   ``nn.Embedding`` (dense gradient) and ``nn.Embedding(sparse=True)`` (what big
   recommender tables use): block mode (ROBE-Z, goal ≥ 1.0× the sparse table at ≤ 1 %
   of its memory), per-entry mode (HashedNets, goal ≥ 0.3×; the issue measured
   0.08–0.10× before), the per-entry hash as it was (``tying.Hashed.hash`` of every
   flat position, for the before/after figure), and quotient-remainder; then whole
   training steps (forward, backward, SGD step) of block mode against the sparse table.
   Ratios are ``anchor time / ours``: above 1 means ours is faster. Times are CPU time of
   this process (``time.process_time``), interleaved, median of the repeats: the
   steadier figure on a machine shared with other jobs.
2. TorchRec's ``EmbeddingBagCollection``: not compared. It is not installed here and its
   CPU kernels (``fbgemm-gpu-cpu`` 1.9) fail to load against torch 2.13; the benchmark
   reports the import error.
3. V = 10^8, D = 128 (51 GB dense) in 64 MB of buckets: a few SGD steps in a fresh
   subprocess, with its peak resident memory (``VmHWM``: ``ru_maxrss`` would carry the
   parent's peak over ``fork``) and step time.

Run: ``python -m benchmarks hashed``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch
from torch import nn

import tying
from benchmarks.bench_nn_spatial import _steady_allocator
from benchmarks.common import compare, write
from tying.nn import HashedEmbedding
from tying.nn.hashed_kernels import fused_available

V, D, N = 10**6, 128, 8192


def _step(module: nn.Module, idx: torch.Tensor, g: torch.Tensor, sgd: bool = False):
    opt = torch.optim.SGD(module.parameters(), lr=1e-3) if sgd else None

    def run():
        for p in module.parameters():
            p.grad = None
        module(idx).backward(g)
        if opt is not None:
            opt.step()

    return run


def _old_entry_lookup(emb: HashedEmbedding, idx: torch.Tensor) -> torch.Tensor:
    """The per-entry lookup as it was before issue 18: hash every flat position i·D + j."""
    cols = torch.arange(emb.embedding_dim)
    bucket, sign = emb.relation.hash(idx.unsqueeze(-1) * emb.embedding_dim + cols)
    return emb.weight_physical[bucket] * sign.to(emb.weight_physical.dtype)


class _OldEntry(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.emb = emb

    def forward(self, idx):
        return _old_entry_lookup(self.emb, idx)


def throughput(repeat: int = 15) -> list[dict]:
    torch.manual_seed(0)
    idx = torch.randint(0, V, (N,))
    g = torch.randn(N, D)
    dense = nn.Embedding(V, D)
    sparse = nn.Embedding(V, D, sparse=True)
    dense_bytes = V * D * 4
    cases = [
        ("block Z=32, B=2^16", HashedEmbedding(V, D, 1 << 16, mode="block", block=32)),
        ("block Z=32, B=2^18", HashedEmbedding(V, D, 1 << 18, mode="block", block=32)),
        ("block Z=32, B=2^20", HashedEmbedding(V, D, 1 << 20, mode="block", block=32)),
        ("entry, B=2^16", HashedEmbedding(V, D, 1 << 16, mode="entry")),
        ("entry, B=2^20", HashedEmbedding(V, D, 1 << 20, mode="entry")),
        ("qr, B=2^20", HashedEmbedding(V, D, 1 << 20, mode="qr")),
    ]
    old = HashedEmbedding(10**5, D, 1 << 16)  # V·D < 2**31-1: the old code's limit
    idx_old = idx % 10**5
    rows = []
    run_sparse = _step(sparse, idx, g)
    run_dense = _step(dense, idx, g)
    t_old, t_sp = compare(
        _step(_OldEntry(old), idx_old, g), run_sparse, repeat=repeat, clock=time.process_time
    )
    rows.append(
        {
            "case": "entry as before issue 18 (V=10^5, B=2^16)",
            "ours_ms": 1e3 * t_old,
            "sparse_ms": 1e3 * t_sp,
            "vs_sparse": t_sp / t_old,
        }
    )
    for name, ours in cases:
        run = _step(ours, idx, g)
        t_ours, t_sp = compare(run, run_sparse, repeat=repeat, clock=time.process_time)
        t_ours2, t_de = compare(run, run_dense, repeat=max(3, repeat // 3), clock=time.process_time)
        rows.append(
            {
                "case": f"{name}, V=10^6 D=128, {N} lookups",
                "ours_ms": 1e3 * t_ours,
                "sparse_ms": 1e3 * t_sp,
                "dense_ms": 1e3 * t_de,
                "vs_sparse": t_sp / t_ours,
                "vs_dense": t_de / t_ours2,
                "memory_vs_dense_table": tying.count(ours).bytes_physical / dense_bytes,
            }
        )
    # a whole training step (SGD): the sparse table's step scatters its 8,192 gradient rows
    # into the table, ours one axpy over the B stored values
    for name, ours in cases[:3]:
        t_ours, t_sp = compare(
            _step(ours, idx, g, sgd=True),
            _step(sparse, idx, g, sgd=True),
            repeat=repeat,
            clock=time.process_time,
        )
        rows.append(
            {
                "case": f"{name}, fwd+bwd+SGD step",
                "ours_ms": 1e3 * t_ours,
                "sparse_ms": 1e3 * t_sp,
                "vs_sparse": t_sp / t_ours,
            }
        )
    return rows


def torchrec() -> dict:
    try:
        from torchrec import EmbeddingBagCollection  # noqa: F401
    except Exception as err:  # ImportError, or fbgemm's OSError/RuntimeError on load
        return {
            "case": "TorchRec EmbeddingBagCollection",
            "skipped": f"{type(err).__name__}: {str(err)[:160]}",
            "note": "not compared: torchrec is not installed here, and its CPU kernels "
            "(fbgemm-gpu-cpu 1.9) do not load against torch 2.13 (issue 18)",
        }
    return {"case": "TorchRec EmbeddingBagCollection", "skipped": "imports, not compared yet"}


_BIG = r"""
import json, time
import torch
torch.set_num_threads(1)
from tying.nn import HashedEmbedding
from tying.nn.hashed_kernels import fused_available
import tying

def hwm_mb():  # peak resident set of this process (VmHWM): exec resets it, fork does not
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

V, D, B, steps, batch = 10**8, 128, 16 * 2**20, 5, 8192
after_import = hwm_mb()
emb = HashedEmbedding(V, D, B, mode="block", block=32)
opt = torch.optim.SGD(emb.parameters(), lr=0.25)
gen = torch.Generator().manual_seed(0)
idx = torch.randint(0, V, (batch,), generator=gen)  # one batch, revisited: the loss must fall
target = torch.randn(batch, D, generator=gen)
losses, times = [], []
for _ in range(steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = (emb(idx) - target).square().sum()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
    losses.append(loss.item() / (batch * D))
c = tying.count(emb)
print(json.dumps({
    "logical_bytes": c.bytes_logical, "bucket_bytes": c.bytes_physical,
    "peak_rss_mb": hwm_mb(), "rss_after_import_mb": after_import,
    "step_ms": 1e3 * sorted(times)[len(times) // 2], "loss_first_last": [losses[0], losses[-1]],
}))
"""


def big_table() -> dict:
    """V = 10^8 rows in 64 MB of buckets: trains, peak RSS (VmHWM) of a fresh subprocess."""
    out = subprocess.run(
        [sys.executable, "-c", _BIG], capture_output=True, text=True, timeout=600, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "case": "block Z=32, V=10^8 D=128 (51 GB dense), B=2^24 (64 MB), SGD, 8192 ids/step",
        "dense_table_GB": res["logical_bytes"] / 1e9,
        "bucket_MB": res["bucket_bytes"] / 2**20,
        "peak_rss_MB": res["peak_rss_mb"],
        "rss_after_import_MB": res["rss_after_import_mb"],
        "step_ms": res["step_ms"],
        "loss_first_last": res["loss_first_last"],
    }


def main() -> None:
    torch.set_num_threads(1)
    steady = _steady_allocator()
    fused = fused_available(torch.zeros(1))  # numba kernels; without them the torch path
    rows = [
        {
            "case": "setup",
            "threads": 1,
            "glibc_mmap_threshold_pinned": steady,
            "fused_numba_kernels": fused,
        }
    ]
    rows += throughput()
    rows.append(torchrec())
    rows.append(big_table())
    write("hashed", rows)


if __name__ == "__main__":
    main()
