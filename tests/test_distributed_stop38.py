"""Stop 38: ``td.fully_shard`` refuses ranks whose models hold different values.

FSDP2 shards each rank's own tensors and broadcasts nothing (DDP broadcasts rank 0's).
Ranks seeded apart, or a checkpoint loaded on rank 0 only, gave a sharded model that was
a mix of the ranks' values (rank 0's rows of one tensor, rank 1's init for the others),
trained with no error. The ranks now compare a digest of every parameter and persistent
buffer at wrap time, and all refuse, naming the first tensor that differs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tying
import tying.distributed as td
from tests.test_distributed_stop37 import _cpu_mesh, _train, init, outcome, port, stack

TIE = [tying.share("head.weight", like="emb.weight")]


def _worker(rank: int, out: str) -> None:
    result = {}
    # every rank seeded with its own rank
    model = stack(TIE, seed=rank)
    result["seeded_apart"] = outcome(lambda: _train(td.fully_shard(model, mesh=_cpu_mesh())))
    result["seeded_apart/wrapped"] = td.wrapped_by(model)
    # a trained checkpoint loaded on rank 0 only
    model = stack(TIE, seed=0)
    if rank == 0:
        with torch.no_grad():
            model.layers[1].bias.add_(1.0)
    result["loaded_on_rank0"] = outcome(lambda: _train(td.fully_shard(model, mesh=_cpu_mesh())))
    # DDP broadcasts rank 0's values: ranks seeded apart still wrap, and end up alike
    model = stack(TIE, seed=rank)
    wrapped = td.ddp(model)
    emb = model.emb.weight.detach().clone()
    seen = [torch.zeros_like(emb) for _ in range(2)]
    dist.all_gather(seen, emb)
    result["ddp_alike_after_wrap"] = bool(torch.equal(seen[0], seen[1]))
    _train(wrapped)
    # the same seed on every rank: wraps and trains; on the meta device (init after
    # sharding, FSDP2's own recipe): wraps
    model = stack(TIE, seed=0)
    result["alike"] = outcome(lambda: _train(td.fully_shard(model, mesh=_cpu_mesh())))
    with torch.device("meta"):
        meta = stack([], seed=rank)
    result["meta"] = outcome(lambda: td.fully_shard(meta, mesh=_cpu_mesh()))
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def _all_workers(rank: int, port_: int, out: str) -> None:
    """Every worker of this file in turn, on one process group: one spawn for the five
    tests (stop 52: the spawn of two processes was most of each test's time)."""
    init(rank, port_)
    for worker in (_worker, _tp_worker, _static_graph_worker, _no_sync_worker, _ignored_worker):
        worker(rank, out)
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The folder where two spawned ranks ran every worker, each writing its results."""
    out = tmp_path_factory.mktemp("stop38")
    mp.start_processes(_all_workers, args=(port(), str(out)), nprocs=2, start_method="forkserver")
    return out


def test_fully_shard_refuses_ranks_holding_different_values(ran):
    tmp_path = ran
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(results):
        assert got["seeded_apart"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(emb.weight differs between rank 0 and rank 1). FSDP2 shards each rank's own"
        ), (r, got["seeded_apart"])
        assert got["seeded_apart/wrapped"] is None
        assert got["loaded_on_rank0"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(layers.1.bias differs between rank 0 and rank 1)"
        ), (r, got["loaded_on_rank0"])
        assert got["ddp_alike_after_wrap"] is True
        assert got["alike"] == "ok", got["alike"]
        assert got["meta"] == "ok", got["meta"]


# --- tensor parallelism under td.fully_shard, and td.ddp(init_sync=False) -----------------

X = torch.arange(24).reshape(4, 6) % 12  # (B, T): the whole batch, split over data ranks


def _steps(model: torch.nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _max_diff(got: dict, want: dict) -> float:
    assert set(got) == set(want)
    return max((got[k] - want[k]).abs().max().item() for k in want)


def _tp_worker(rank: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    result = {}
    # the anchor: one process, the whole batch
    ref = stack(TIE)
    _steps(ref, X)
    want = _full(ref)
    # (data, tensor) ranks: (1, 2) splits two layers over both ranks, (2, 1) shards the
    # data over both ranks with layers that are DTensors on a one-rank mesh
    for shape in ((1, 2), (2, 1)):
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("dp", "tp"))
        x = X if shape[0] == 1 else X[2 * rank : 2 * rank + 2]
        for seeds in ("alike",) if shape[0] == 1 else ("alike", "apart"):
            model = stack(TIE, seed=0 if seeds == "alike" else rank)
            plan = {"layers.0": ColwiseParallel(), "layers.1": RowwiseParallel()}
            parallelize_module(model, mesh["tp"], plan)

            def go(model=model, mesh=mesh, x=x):
                td.fully_shard(model, units=["layers.*"], mesh=mesh["dp"])
                _steps(model, x)
                tying.verify(model)
                return _max_diff(_full(model), want)

            key = f"{shape[0]}x{shape[1]}/{seeds}"
            try:
                result[key] = go()
            except Exception as err:  # the message goes back to the test
                result[key] = f"{type(err).__name__}: {err}"
    # DDP with init_sync=False broadcasts nothing
    model = stack(TIE, seed=rank)
    result["init_sync/apart"] = outcome(lambda: td.ddp(model, init_sync=False))
    result["init_sync/apart/wrapped"] = td.wrapped_by(model)
    model = stack(TIE, seed=0)
    wrapped = td.ddp(model, init_sync=False)
    _steps(wrapped, X[2 * rank : 2 * rank + 2])
    result["init_sync/alike"] = _max_diff(_full(model), want)
    with open(os.path.join(out, f"tp{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_tensor_parallel_layers_shard_and_ddp_init_sync_false_compares_values(ran):
    """TP then ``td.fully_shard`` (the 2-D recipe) raised ``.numpy() is not supported for
    tensor subclasses`` in the value check, refusing every tensor-parallel model; now each
    DTensor's local shard is compared and training matches one process. ``td.ddp(model,
    init_sync=False)`` (DDP broadcasts nothing) wrapped ranks seeded apart, which then
    trained their own values with averaged gradients; now refused like FSDP2."""
    tmp_path = ran
    results = [json.loads((tmp_path / f"tp{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(results):
        for key in ("1x2/alike", "2x1/alike"):
            assert isinstance(got[key], float), (r, key, got[key])
            assert got[key] < 1e-6, (r, key, got[key])  # as one process on the whole batch
        assert got["2x1/apart"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(emb.weight differs between rank 0 and rank 1)"
        ), (r, got["2x1/apart"])
        assert got["init_sync/apart"].startswith(
            "TieError: tying.distributed.ddp: the ranks hold different values (emb.weight "
            "differs between rank 0 and rank 1). DDP with init_sync=False broadcasts nothing"
        ), (r, got["init_sync/apart"])
        assert "or drop init_sync=False" in got["init_sync/apart"]
        assert got["init_sync/apart/wrapped"] is None
        assert got["init_sync/alike"] < 1e-6, (r, got["init_sync/alike"])


def _static_graph_worker(rank: int, out: str) -> None:
    result = {}
    ref = stack(TIE)
    _steps(ref, X)
    want = _full(ref)
    model = stack(TIE)
    wrapped = td.ddp(model, static_graph=True)
    mine = X[2 * rank : 2 * rank + 2]  # (2, T): this rank's half, one row per micro-batch
    before = _full(model)
    with wrapped.no_sync():
        result["first_no_sync"] = outcome(lambda: wrapped(mine[:1]))
    result["unchanged"] = _max_diff(_full(model), before)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    # one synchronised step, then a step of two micro-batches, the first under no_sync
    opt.zero_grad()
    wrapped(mine).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    with wrapped.no_sync():
        (wrapped(mine[:1]).pow(2).mean() / 2).backward()
    (wrapped(mine[1:]).pow(2).mean() / 2).backward()
    opt.step()
    tying.verify(model)
    result["trained"] = _max_diff(_full(model), want)
    with open(os.path.join(out, f"sg{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_static_graph_no_sync_before_a_synced_step_is_named_before_torch_asserts(ran):
    """``td.ddp(model, static_graph=True)`` with ``no_sync()`` in the first iteration failed
    in the backward with torch's ``expect_autograd_hooks_ INTERNAL ASSERT FAILED ... please
    report a bug to PyTorch``, after which the wrapper failed every later step (as plain
    DDP does). Now the forward is refused first, naming the fix, and the wrapper still
    trains, as one process would on the whole batch."""
    tmp_path = ran
    for r in range(2):
        got = json.loads((tmp_path / f"sg{r}.json").read_text())
        assert got["first_no_sync"].startswith(
            "RuntimeError: tying.distributed.ddp: a training forward under no_sync() before "
            "the first synchronised one, with static_graph=True"
        ), (r, got["first_no_sync"])
        assert "run one step outside no_sync() first" in got["first_no_sync"]
        assert got["unchanged"] == 0.0
        assert got["trained"] < 1e-6, (r, got["trained"])


class _Checkpointed(torch.nn.Module):
    """``stack``'s layout, whose head may run in a reentrant activation checkpoint."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(12, 6)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(6, 6) for _ in range(3)])
        self.head = torch.nn.Linear(6, 12, bias=False)
        tying.Plan(TIE).apply(self)

    def forward(self, x, checkpointed: bool = False):  # (B, T) -> (B, T, vocab)
        from torch.utils.checkpoint import checkpoint

        h = self.emb(x)
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return checkpoint(self.head, h, use_reentrant=True) if checkpointed else self.head(h)


def _micro_step(model, opt, mine: torch.Tensor, nested: str, no_sync) -> None:
    """One step of two micro-batches (one row each); the first, under ``no_sync`` when
    given, reads the tie in a nested backward: two backward passes of one forward, or a
    reentrant checkpoint around the head."""
    import contextlib

    opt.zero_grad()
    with no_sync() if no_sync is not None else contextlib.nullcontext():
        if nested == "twice":
            out = model(mine[:1])  # (1, T, vocab)
            (out.pow(2).mean() / 2).backward(retain_graph=True)
            (out.abs().mean() / 2).backward()
        else:
            (model(mine[:1], checkpointed=True).pow(2).mean() / 2).backward()
    (model(mine[1:]).pow(2).mean() / 2).backward()
    opt.step()


def _no_sync_worker(rank: int, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    result = {}
    mine = X[2 * rank : 2 * rank + 2]  # (2, T)
    for nested in ("twice", "checkpoint"):
        # the anchors: plain DDP, and one process stepping on both ranks' micro-batches
        ref = _Checkpointed()
        opt = torch.optim.SGD(ref.parameters(), lr=0.5)
        for _ in range(2):
            opt.zero_grad()
            for r in range(2):  # each rank's two micro-batches, averaged over the ranks
                theirs = X[2 * r : 2 * r + 2]
                if nested == "twice":
                    o = ref(theirs[:1])
                    (o.pow(2).mean() / 4).backward(retain_graph=True)
                    (o.abs().mean() / 4).backward()
                else:
                    (ref(theirs[:1], checkpointed=True).pow(2).mean() / 4).backward()
                (ref(theirs[1:]).pow(2).mean() / 4).backward()
            opt.step()
        want = _full(ref)
        for name, wrap in (("plain", DistributedDataParallel), ("td", td.ddp)):
            model = _Checkpointed()
            wrapped = wrap(model)
            opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)

            def go(wrapped=wrapped, opt=opt, model=model, nested=nested, want=want):
                for _ in range(2):
                    _micro_step(wrapped, opt, mine, nested, wrapped.no_sync)
                return _max_diff(_full(model), want)

            try:
                result[f"{nested}/{name}"] = go()
            except Exception as err:  # the message goes back to the test
                result[f"{nested}/{name}"] = f"{type(err).__name__}: {err}"
        # the nested use in a synchronised backward: DDP reduces only the first part
        model = _Checkpointed()
        wrapped = td.ddp(model)
        opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
        result[f"{nested}/synced"] = outcome(
            lambda w=wrapped, o=opt, n=nested: _micro_step(w, o, mine, n, None)
        )
    with open(os.path.join(out, f"ns{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_a_nested_backward_under_no_sync_trains_as_plain_ddp(ran):
    """Under ``no_sync()`` DDP reduces nothing, and the next synchronised backward
    all-reduces the whole accumulated gradient; so two backward passes of one forward, or
    a reentrant checkpoint around a tie's use, in a ``no_sync`` micro-batch train as one
    process (plain DDP does). ``td.ddp`` refused them ("accumulated twice since the last
    forward"); now it trains them as plain DDP, and still refuses them in a synchronised
    backward, where DDP would all-reduce only the first part."""
    tmp_path = ran
    for r in range(2):
        got = json.loads((tmp_path / f"ns{r}.json").read_text())
        for nested in ("twice", "checkpoint"):
            for name in ("plain", "td"):
                value = got[f"{nested}/{name}"]
                assert isinstance(value, float), (r, nested, name, value)
                assert value < 1e-6, (r, nested, name, value)  # as one process
            assert got[f"{nested}/synced"].startswith(
                "TieError: tying.distributed.ddp: the gradient of emb.weight (tied, read by "
                "emb.weight, head.weight) was accumulated twice since the last forward"
            ), (r, nested, got[f"{nested}/synced"])


def _ignored_worker(rank: int, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    result = {}

    def nudged(name: str):  # rank 1's value of ``name`` is 1e-3 off rank 0's
        model = stack(TIE)
        with torch.no_grad():
            model.get_parameter(name).view(-1)[0] += rank * 1e-3
        return model

    def shard(model):
        ignored = {model.layers[1].weight}  # e.g. each rank's own expert
        mesh = _cpu_mesh()
        return td.fully_shard(model, units=["layers.*"], mesh=mesh, ignored_params=ignored)

    model = nudged("layers.1.weight")
    result["fsdp/ignored"] = outcome(lambda: _steps(shard(model), X[2 * rank : 2 * rank + 2]))
    kept = model.layers[1].weight.detach().clone()  # FSDP2 neither shards nor reduces it
    seen = [torch.zeros_like(kept) for _ in range(2)]
    dist.all_gather(seen, kept)
    result["fsdp/ignored/rank_local"] = not torch.equal(seen[0], seen[1])
    result["fsdp/other"] = outcome(lambda: shard(nudged("layers.0.weight")))
    for name in ("layers.1.weight", "emb.weight"):
        model = nudged(name)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, ["layers.1.weight"]
        )
        result[f"ddp/{name}"] = outcome(lambda m=model: td.ddp(m, init_sync=False))
    # one rank built on the meta device, the other with values: named as such
    with torch.device("meta" if rank == 1 else "cpu"):
        model = stack(TIE)
    result["meta_on_rank1"] = outcome(lambda: td.fully_shard(model, mesh=_cpu_mesh()))
    with open(os.path.join(out, f"ig{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()


def test_tensors_the_wrapper_ignores_may_differ_between_ranks(ran):
    """FSDP2's ``ignored_params`` (and DDP's ignored parameters) are neither sharded,
    broadcast nor reduced: rank-local by design (each rank's own experts). The value check
    refused ranks whose ignored tensors differed; now it skips them, and still refuses a
    difference in any other tensor. A rank whose model is on the meta device is named."""
    tmp_path = ran
    for r in range(2):
        got = json.loads((tmp_path / f"ig{r}.json").read_text())
        assert got["fsdp/ignored"] == "ok", (r, got["fsdp/ignored"])
        assert got["fsdp/ignored/rank_local"] is True
        assert got["fsdp/other"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(layers.0.weight differs between rank 0 and rank 1)"
        ), (r, got["fsdp/other"])
        assert got["ddp/layers.1.weight"] == "ok", (r, got["ddp/layers.1.weight"])
        assert got["ddp/emb.weight"].startswith(
            "TieError: tying.distributed.ddp: the ranks hold different values (emb.weight "
        ), (r, got["ddp/emb.weight"])
        assert got["meta_on_rank1"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(emb.weight differs between rank 0 and rank 1: on the meta device on rank 1 only)"
        ), (r, got["meta_on_rank1"])
