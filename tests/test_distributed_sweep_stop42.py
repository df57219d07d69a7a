"""Stop 42: every public function of ``tying.distributed``, on ranks that hold different values.

The sweep: a tied model whose ranks differ in one tied tensor (``emb.weight``, read by
``head.weight``), one buffer or one untied parameter goes through every name of
``td.__all__``. Each must leave the ranks agreeing (and say from which rank: DDP
broadcasts rank 0's values; a load gives every rank the file's) or refuse on every rank,
naming the tensor, with a timeout on every collective instead of a hang.

What the sweep found: ``td.save`` wrote rank 0's values where rank 1 held others, and
``td.dcp_save`` wrote each replicated tensor from whichever rank DCP's planner picked for
it, so the checkpoint mixed the ranks (``emb.weight`` from rank 1, ``layers.1.bias`` and
the buffer from rank 0: a model no rank held), both with no error. Both now compare every
replicated tensor first; one that differs by design is named in ``rank_local=``.

Then the round trip: a DDP run on 2 ranks, saved, loaded on 1 and on 2 ranks, against the
single-process model trained on the whole batch.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.distributed as td
from tests.test_distributed_stop37 import _cpu_mesh, init, outcome, port, stack

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")

TIE = [tying.share("head.weight", like="emb.weight")]
#: which tensor differs between the ranks, by kind (rank 1 holds rank 0's value + 1)
DIFFERS = {"tied": "emb.weight", "buffer": "stat", "untied": "layers.1.bias"}
#: every public function of tying.distributed, and what it must do with ranks that differ
SWEPT = {
    "ddp": "agree: DDP broadcasts rank 0's parameters and buffers",
    "fully_shard": "refuse, naming the tensor (FSDP2 broadcasts nothing)",
    "save": "refuse, naming the tensor; rank_local=[name] writes rank 0's",
    "dcp_save": "refuse, naming the tensor; rank_local=[name] writes rank 0's",
    "load": "agree: every rank receives the file's values",
    "dcp_load": "agree: every rank receives the checkpoint's values",
    "wrapped_by": "reads no values: the same answer on every rank",
}


def test_every_public_function_is_swept():
    assert set(SWEPT) == set(td.__all__), set(td.__all__) ^ set(SWEPT)


def _model(rank: int, kind: str | None) -> nn.Module:
    """The tied stack with a buffer; ``kind``'s tensor is ``rank`` higher on rank ``rank``."""
    model = stack(TIE)
    model.register_buffer("stat", torch.zeros(3))
    if kind is not None:
        with torch.no_grad():
            dict(model.state_dict(keep_vars=True))[DIFFERS[kind]].view(-1)[0] += rank
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _agree(model: nn.Module) -> list[str]:
    """Names of the tensors whose values differ between the two ranks."""
    out = []
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous()
        seen = [torch.zeros_like(t) for _ in range(2)]
        dist.all_gather(seen, t)
        if not torch.equal(seen[0], seen[1]):
            out.append(name)
    return out


def _sweep_worker(rank: int, out: str) -> None:
    result: dict = {}
    for kind in DIFFERS:
        model = _model(rank, kind)
        result[f"{kind}/ddp"] = outcome(lambda m=model: td.ddp(m))
        result[f"{kind}/ddp/differ"] = _agree(model)
        model = _model(rank, kind)
        result[f"{kind}/fully_shard"] = outcome(lambda m=model: td.fully_shard(m, mesh=_cpu_mesh()))
        result[f"{kind}/fully_shard/wrapped"] = td.wrapped_by(model)
        result[f"{kind}/wrapped_by"] = td.wrapped_by(model)
        for helper in ("save", "dcp_save"):
            save = getattr(td, helper)
            target = os.path.join(out, f"{kind}-{helper}")
            model = _model(rank, kind)
            result[f"{kind}/{helper}"] = outcome(lambda m=model, s=save, t=target: s(m, t))
            result[f"{kind}/{helper}/written"] = os.path.exists(target)
            dist.barrier()
            # named rank-local: rank 0's value is written, whatever DCP's planner picks
            local = target + "-local"
            result[f"{kind}/{helper}/rank_local"] = outcome(
                lambda m=model, s=save, t=local, k=kind: s(m, t, rank_local=[DIFFERS[k]])
            )
            dist.barrier()
            if result[f"{kind}/{helper}/rank_local"] != "ok":
                continue
            back = _model(0, None)
            if helper == "save":
                tying.load(back, local)
            else:
                td.dcp_load(back, local)
            want = _state(_model(0, kind))
            result[f"{kind}/{helper}/rank0s"] = [
                k for k, v in _state(back).items() if not torch.equal(v, want[k])
            ]
        for helper in ("load", "dcp_load"):
            model = _model(rank, kind)
            given = os.path.join(out, "file.safetensors" if helper == "load" else "ckpt")
            result[f"{kind}/{helper}"] = outcome(
                lambda m=model, h=helper, g=given: getattr(td, h)(m, g)
            )
            result[f"{kind}/{helper}/differ"] = _agree(model)
            result[f"{kind}/{helper}/tied"] = (
                model.head.weight.data_ptr() == model.emb.weight.data_ptr()
            )
    # a rank_local name that is no tensor: refused on every rank, the old file kept
    old = os.path.join(out, "file.safetensors")
    names = ["stat", "layers.1.bais"] if rank == 1 else ["stat"]
    result["typo"] = outcome(lambda: td.save(_model(rank, "buffer"), old, rank_local=names))
    with open(os.path.join(out, f"sweep{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def _all_workers(rank: int, port_: int, out: str) -> None:
    """Every worker of this file in turn, on one process group: one spawn for the three
    tests (stop 52: the spawn of two processes was most of each test's time)."""
    init(rank, port_)
    for worker in (_sweep_worker, _round_trip_worker, _tp_worker):
        worker(rank, out)
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """``(folder, the file's bytes before)``: two spawned ranks ran every worker there."""
    out = tmp_path_factory.mktemp("sweep42")
    source = _model(0, None)
    tying.save(source, out / "file.safetensors")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        td.dcp_save(source, out / "ckpt")
    finally:
        dist.destroy_process_group()
    before = (out / "file.safetensors").read_bytes()
    mp.start_processes(_all_workers, args=(port(), str(out)), nprocs=2, start_method="forkserver")
    return out, before


def test_every_public_function_makes_the_ranks_agree_or_refuses_naming_the_tensor(ran):
    tmp_path, before = ran
    for r in range(2):
        got = json.loads((tmp_path / f"sweep{r}.json").read_text())
        for kind, name in DIFFERS.items():
            assert got[f"{kind}/ddp"] == "ok" and got[f"{kind}/ddp/differ"] == [], (r, kind, got)
            assert got[f"{kind}/fully_shard"].startswith(
                f"TieError: tying.distributed.fully_shard: the ranks hold different values "
                f"({name} differs between rank 0 and rank 1)"
            ), (r, kind, got[f"{kind}/fully_shard"])
            assert got[f"{kind}/fully_shard/wrapped"] is None and got[f"{kind}/wrapped_by"] is None
            for helper in ("save", "dcp_save"):
                assert got[f"{kind}/{helper}"].startswith(
                    f"TieError: tying.distributed.{helper}: the ranks hold different values "
                    f"({name} differs between rank 0 and rank 1)"
                ), (r, kind, helper, got[f"{kind}/{helper}"])
                assert "rank_local=[...]" in got[f"{kind}/{helper}"]
                assert got[f"{kind}/{helper}/written"] is False
                assert got[f"{kind}/{helper}/rank_local"] == "ok", got[
                    f"{kind}/{helper}/rank_local"
                ]
                assert got[f"{kind}/{helper}/rank0s"] == [], (r, kind, helper, got)
            for helper in ("load", "dcp_load"):
                assert got[f"{kind}/{helper}"] == "ok", (r, kind, helper, got[f"{kind}/{helper}"])
                assert got[f"{kind}/{helper}/differ"] == [] and got[f"{kind}/{helper}/tied"]
        want = (
            "TieError: tying.distributed.save: rank_local names 'layers.1.bais', which is not "
            "a tensor of the model's state dict; closest: layers.1.bias"
            if r == 1
            else "RuntimeError: tying.distributed.save: rank 1 could not check its model"
        )
        assert got["typo"].startswith(want), (r, got["typo"])
    assert (tmp_path / "file.safetensors").read_bytes() == before


X = torch.arange(24).reshape(4, 6) % 12  # (B, T): the whole batch, half per rank


def _steps(model: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _round_trip_worker(rank: int, out: str) -> None:
    result: dict = {}
    model = _model(0, None)
    _steps(td.ddp(model), X[2 * rank : 2 * rank + 2])
    td.save(model, os.path.join(out, "trained.safetensors"))
    td.dcp_save(model, os.path.join(out, "trained-dcp"))
    for helper, target in (("load", "trained.safetensors"), ("dcp_load", "trained-dcp")):
        back = _model(rank, "untied")  # another value on each rank, before the load
        getattr(td, helper)(back, os.path.join(out, target))
        tying.verify(back)
        result[helper] = {k: v.tolist() for k, v in _state(back).items()}
        result[helper + "/tied"] = back.head.weight.data_ptr() == back.emb.weight.data_ptr()
    with open(os.path.join(out, f"trip{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_a_two_rank_save_loads_on_one_and_two_ranks_as_the_single_process_run(ran):
    """Anchor: the single-process model trained on the whole batch (DDP averages the two
    halves' gradients, which for a mean loss over equal halves is the whole batch's)."""
    tmp_path = ran[0]
    reference = _model(0, None)
    _steps(reference, X)
    want = _state(reference)
    one = _model(1, "untied")
    tying.load(one, tmp_path / "trained.safetensors")
    tying.verify(one)
    assert one.head.weight.data_ptr() == one.emb.weight.data_ptr()
    states = [_state(one)]
    for r in range(2):
        got = json.loads((tmp_path / f"trip{r}.json").read_text())
        for helper in ("load", "dcp_load"):
            assert got[helper + "/tied"] is True
            states.append({k: torch.tensor(v) for k, v in got[helper].items()})
    for state in states:
        assert set(state) == set(want)
        for k, v in want.items():
            torch.testing.assert_close(state[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(want["emb.weight"], _state(_model(0, None))["emb.weight"])  # trained


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    n=st.integers(1, 4),
    touched=st.integers(0, 7),
    in_optim=st.booleans(),
    local=st.booleans(),
)
def test_the_digests_differ_exactly_when_a_compared_tensor_differs(n, touched, in_optim, local):
    """The kind of defect: a replicated tensor (parameter, buffer or optimizer state) left
    out of the comparison. Against brute force: the digests of two states differ exactly
    when a tensor that is not rank-local differs in its bytes."""
    from tying.distributed_agreement import replicated_digests

    touched %= n

    def state(nudge: bool) -> dict:
        model = {f"t{i}": torch.full((2,), float(i)) for i in range(n)}
        optim = {"state": {f"t{i}": {"exp_avg": torch.full((2,), -float(i))} for i in range(n)}}
        target = optim["state"][f"t{touched}"]["exp_avg"] if in_optim else model[f"t{touched}"]
        if nudge:
            target[1] += 1e-7  # the last mantissa bits only
        return {"model": model, "optim": optim}

    skip = {f"t{touched}"} if local else set()
    digests = []
    for nudge in (False, True):
        s = state(nudge)
        digests.append(
            replicated_digests(s["model"], skip)
            + replicated_digests({"optim": s["optim"]}, {f"optim.state.{k}" for k in skip})
        )
    names = {name for name, _ in digests[0]}
    assert len(names) == 2 * n - (2 if local else 0)
    a, b = state(False), state(True)
    pairs = [(f"model.{k}", a["model"][k], b["model"][k]) for k in a["model"]] + [
        (f"optim.{k}", a["optim"]["state"][k]["exp_avg"], b["optim"]["state"][k]["exp_avg"])
        for k in a["optim"]["state"]
    ]
    brute = any(
        not torch.equal(x, y)
        for name, x, y in pairs
        if not (local and name.endswith(f".t{touched}"))
    )
    assert (digests[0] != digests[1]) is brute


def _tp_worker(rank: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    result: dict = {}
    mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
    for seeds in ("alike", "apart"):  # apart: each rank its own embedding, a plain tensor
        model = stack(TIE, seed=0 if seeds == "alike" else rank)
        parallelize_module(
            model, mesh["tp"], {"layers.0": ColwiseParallel(), "layers.1": RowwiseParallel()}
        )
        before = {n: p for n, p in model.named_parameters()}
        result[seeds] = outcome(lambda m=model: td.ddp(m, device_mesh=mesh["dp"]))
        result[seeds + "/wrapped"] = td.wrapped_by(model)
        after = dict(model.named_parameters())
        result[seeds + "/unchanged"] = after.keys() == before.keys() and all(
            after[n] is p for n, p in before.items()
        )
        result[seeds + "/dtensor"] = isinstance(model.layers[0].weight, DTensor)
    with open(os.path.join(out, f"tp{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_ddp_of_a_tensor_parallel_model_is_refused_before_wrapping(ran):
    """``td.ddp(model, device_mesh=mesh["dp"])`` of a tensor-parallel model wrapped ranks
    whose replicated embedding differed (compared within the one-rank data group only),
    trained one step, and was refused at the second forward as "parameters changed after
    wrapping": torch's DDP + TP swaps the DTensor parameters at every forward. Now it is
    refused before wrapping, naming the DTensors and td.fully_shard, model unchanged."""
    tmp_path = ran[0]
    for r in range(2):
        got = json.loads((tmp_path / f"tp{r}.json").read_text())
        for seeds in ("alike", "apart"):
            assert got[seeds].startswith(
                "TieError: tying.distributed.ddp: the model holds tensor-parallel parameters "
                "(DTensors: layers.0.weight, layers.0.bias, layers.1.weight, layers.1.bias)"
            ), (r, seeds, got[seeds])
            assert "td.fully_shard(model, mesh=mesh['dp'])" in got[seeds]
            assert got[seeds + "/wrapped"] is None
            assert got[seeds + "/unchanged"] is True and got[seeds + "/dtensor"] is True
