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

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tying
import tying.distributed as td
from tests.test_distributed_stop37 import _cpu_mesh, _train, init, outcome, port, stack

TIE = [tying.share("head.weight", like="emb.weight")]


def _worker(rank: int, port_: int, out: str) -> None:
    init(rank, port_)
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
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


def test_fully_shard_refuses_ranks_holding_different_values(tmp_path):
    mp.spawn(_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="spawn")
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
