"""Ties under torch.distributed on CPU (gloo, 2 processes): DDP and FSDP2 match a
single-process run, ties hold on every rank, each physical tensor is reduced once,
and a sharded checkpoint restores on another world size."""

from __future__ import annotations

import json
import math
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import tying
import tying.distributed as td

WORLD = 2
STEPS = 3


class LM(nn.Module):
    def __init__(self, vocab: int = 16, d: int = 8, n: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for _ in range(n)
        )
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, x):  # (B, T) -> (B, T, V)
        h = self.embed(x)
        for layer in self.layers:
            h = h + torch.tanh(layer(h))
        return self.head(h)


PLAN = tying.Plan(
    [
        tying.share("layers.*", like="layers.0"),
        tying.free("layers.*.1"),
        tying.share("head.weight", like="embed.weight"),
    ]
)


def _cpu_mesh():
    """A CPU device mesh over the group: FSDP2's default mesh is CUDA's wherever a GPU is
    seen, and these gloo tests then crashed on a GPU machine (SIGSEGV, torch 2.11)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (dist.get_world_size(),))


def _build():
    torch.manual_seed(0)
    m = LM()
    PLAN.apply(m)
    return m


def _batch():
    return torch.randint(0, 16, (4, 5), generator=torch.Generator().manual_seed(1))


def _reference() -> dict[str, torch.Tensor]:
    m = _build()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = _batch()
    for _ in range(STEPS):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


MODES = ("ddp", "fsdp-root", "fsdp-layers")


def _worker(rank: int, port: int, out: str) -> None:
    """Every mode in turn on one process group: one spawn for the three (stop 52: a spawn
    of two processes is most of each mode's time)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    for mode in MODES:
        _train(rank, mode, out)
    dist.destroy_process_group()
    # skip interpreter finalization, where gloo's worker threads can abort (pytorch PR #179291)
    os._exit(0)


def _train(rank: int, mode: str, out: str) -> None:
    import torch.distributed as dist

    reduced = [0]
    m = _build()
    if mode == "ddp":
        model = td.ddp(m)

        def count_hook(state, bucket):
            reduced[0] += bucket.buffer().numel()
            fut = torch.futures.Future()
            dist.all_reduce(bucket.buffer().div_(WORLD))
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, count_hook)
    else:
        # FSDP2's gradient reduce-scatter: reduce_scatter_single in torch 2.13,
        # reduce_scatter_tensor before (the same input position)
        rs_name = next(
            n for n in ("reduce_scatter_single", "reduce_scatter_tensor") if hasattr(dist, n)
        )
        real_rs, real_ar = getattr(dist, rs_name), dist.all_reduce

        def rs(*a, **k):
            reduced[0] += k.get("input", a[1] if len(a) > 1 else None).numel()
            return real_rs(*a, **k)

        def ar(tensor, *a, **k):
            reduced[0] += tensor.numel()
            return real_ar(tensor, *a, **k)

        setattr(dist, rs_name, rs)
        dist.all_reduce = ar
        units = {"fsdp-root": [], "fsdp-layers": ["layers.*"]}[mode]
        model = td.fully_shard(m, units=units, mesh=_cpu_mesh())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = _batch()[rank::WORLD]
    for _ in range(STEPS):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    if mode != "ddp":
        setattr(dist, rs_name, real_rs)
        dist.all_reduce = real_ar
    holds = m.head.weight is m.embed.weight or mode != "ddp"
    holds = holds and all(type(m.layers[i][0]).__name__.find("Tied") >= 0 for i in range(1, 4))
    td.save(model, os.path.join(out, f"{mode}.safetensors"))
    with open(os.path.join(out, f"{mode}-{rank}.json"), "w") as fh:
        json.dump({"reduced_per_step": reduced[0] / STEPS, "ties_hold": bool(holds)}, fh)
    dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The folder where two spawned ranks trained every mode once and saved each."""
    out = tmp_path_factory.mktemp("trained")
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="forkserver"
    )
    return out


def _physical_numel(padded: bool) -> int:
    total = 0
    for p in _build().parameters():
        rows = p.shape[0]
        rows = math.ceil(rows / WORLD) * WORLD if padded else rows
        total += rows * (p.numel() // max(p.shape[0], 1))
    return total


@pytest.mark.parametrize("mode", MODES)
def test_matches_single_process_and_reduces_each_tensor_once(mode, trained):
    results = [json.loads((trained / f"{mode}-{r}.json").read_text()) for r in range(WORLD)]
    assert all(r["ties_hold"] for r in results)
    physical = _physical_numel(padded=mode != "ddp")
    untied_logical = tying.count(_build()).logical
    for r in results:
        # each physical tensor once per step; an untied copy would add the tied uses again
        assert r["reduced_per_step"] == physical < untied_logical
    fresh = LM()  # an untied model, restored from the rank-0 checkpoint on world size 1
    tying.load(fresh, trained / f"{mode}.safetensors")
    tying.verify(fresh)
    assert fresh.head.weight is fresh.embed.weight
    ref = _reference()
    got = fresh.state_dict()
    assert sorted(got) == sorted(ref)
    worst = max(float((got[k] - ref[k]).abs().max()) for k in ref)
    assert worst <= 1e-5, worst


def test_helpers_need_a_process_group():
    with pytest.raises(RuntimeError, match="needs an initialised default process group"):
        td.ddp(_build())


def test_the_readme_torchrun_example_runs(tmp_path):
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_distributed.py"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    out = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "ckpt.safetensors")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Gloo can abort (SIGABRT, "terminate called without an active exception") while the
    # interpreter tears its worker threads down after a clean run (pytorch PR #179291);
    # that is not ours to fix, so judge the run by what it did, which is all printed first.
    teardown_abort = (
        out.returncode == -6 or "terminate called without an active exception" in out.stderr
    )
    assert out.returncode == 0 or teardown_abort, out.stderr[-2000:]
    assert "restored 10 ties; 5.71x sharing" in out.stdout
    assert (
        "rank 0 destroyed" in out.stdout or "rank 1 destroyed" in out.stdout or out.returncode == 0
    )


def _refusals_worker(rank: int, port: int, out: str) -> None:
    """Both refusals in one spawn (stop 52: the spawn is most of each one's time): a failed
    write on rank 0, then a tie that sharding cannot keep (its failed forward leaves FSDP's
    collectives half-way, so it comes last and the process leaves without tearing down)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    model = td.ddp(_build())
    try:
        # a folder where the file should be: rank 0's write fails
        td.save(model, out)
        msg = "returned"
    except Exception as err:
        msg = f"{type(err).__name__}: {err}"
    np.save(os.path.join(out, f"save-{rank}.npy"), np.array(msg))
    # rank 0 lives on, as a training loop that caught the error would: on the old code its
    # next collective met rank 1 still inside save, which then returned as if saved
    dist.barrier()
    torch.manual_seed(0)
    m = LM()
    # embed reads the head's tensor, but the head's unit runs last: cannot hold
    tying.Plan([tying.share("embed.weight", like="head.weight")]).apply(m)
    td.fully_shard(m, units=["head"], mesh=_cpu_mesh())
    try:
        m(_batch()[rank::WORLD])
        msg = ""
    except tying.TieError as err:
        msg = str(err)
    np.save(os.path.join(out, f"bad-{rank}.npy"), np.array(msg))
    os._exit(0)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    out = tmp_path_factory.mktemp("refusals")
    ctx = mp.start_processes(
        _refusals_worker,
        args=(_free_port(), str(out)),
        nprocs=WORLD,
        start_method="forkserver",
        join=False,
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # the old code left rank 1 at a barrier
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank was still waiting 120 s after rank 0's write failed")
    return out


def test_a_failed_write_on_rank_0_raises_on_every_rank_instead_of_hanging(refusals):
    first, other = (str(np.load(refusals / f"save-{r}.npy")) for r in range(WORLD))
    assert first.startswith(("IsADirectoryError", "ValueError", "OSError")), first
    assert other.startswith("RuntimeError: tying.distributed.save: rank 0 could not write")
    assert first.split(": ", 1)[1] in other


def test_a_tie_that_sharding_cannot_keep_fails_at_the_first_forward(refusals):
    for r in range(WORLD):
        msg = str(np.load(refusals / f"bad-{r}.npy"))
        assert "embed.weight reads head.weight, whose FSDP unit 'head' is still sharded" in msg


def test_units_given_as_one_str_is_one_pattern():
    # stop 32: units="layers.*" was read letter by letter ("unit pattern 'l' matches no
    # module"); with one-letter module names the letters became the units
    import torch.distributed as dist

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = td.fully_shard(_build(), units="layers.*", mesh=_cpu_mesh())
        assert [type(layer).__name__.startswith("FSDP") for layer in model.layers] == [True] * 4
        assert model(_batch()).shape == (4, 5, 16)
    finally:
        dist.destroy_process_group()
