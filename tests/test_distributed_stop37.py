"""Stop 37: ranks whose models are tied differently are refused by ``td.ddp`` and
``td.fully_shard`` on every rank.

DDP broadcasts rank 0's values into the tensors each rank was built with, and FSDP2 shards
each rank's own; neither looks at the ties. Ranks whose models were tied by different plans
(``layers.1`` like ``layers.0`` on one rank, ``layers.2`` on the other; ``Transposed``
against ``Same``) hold tensors of the same shapes, so both wrapped them and the ranks trained
different functions with no error. A rank whose model failed a check of its own (a broken
tie, another shape) raised alone, and the other ranks waited in the wrapper's first
collective until the process group's timeout. Both wrappers now check every rank's model
first, then compare the ranks' models (paths, shapes, dtypes, ties, frozen parameters), and
raise on every rank or on none."""

from __future__ import annotations

import datetime
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import tying
import tying.distributed as td

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


class Stack(nn.Module):
    """An embedding, ``n`` square layers and a head the embedding can be tied to."""

    def __init__(self, vocab: int = 12, d: int = 6, n: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([nn.Linear(d, d) for _ in range(n)])
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, x):  # (B, T) -> (B, T, vocab)
        h = self.emb(x)
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.head(h)


def stack(rules, seed: int = 0, **kw) -> Stack:
    torch.manual_seed(seed)
    model = Stack(**kw)
    if rules:
        tying.Plan(rules).apply(model)
    return model


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout: a rank left in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    torch.set_num_threads(1)


def outcome(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as err:  # the message goes back to the test
        return f"{type(err).__name__}: {err}"


def _cpu_mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (2,))


def _wrap(helper: str, model: nn.Module):
    return td.ddp(model) if helper == "ddp" else td.fully_shard(model, mesh=_cpu_mesh())


def _train(wrapped: nn.Module) -> None:
    x = torch.arange(12).reshape(2, 6)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        wrapped(x).pow(2).mean().backward()
        opt.step()


# rank 0's rules, rank 1's rules: every pair holds tensors of the same shapes on both ranks
CASES = {
    "other_layer": (
        [tying.share("layers.1", like="layers.0")],
        [tying.share("layers.2", like="layers.0")],
    ),
    "other_relation": (
        [tying.share("layers.1.weight", like="layers.0.weight", relation=tying.Transposed())],
        [tying.share("layers.1.weight", like="layers.0.weight")],
    ),
    "other_rotation": (
        [tying.share("layers.1.weight", like="layers.0.weight", relation=tying.Rotated(k=1))],
        [tying.share("layers.1.weight", like="layers.0.weight", relation=tying.Rotated(k=3))],
    ),
    # a hashed layer whose seed came from each rank's own random state
    "other_hash_seed": (
        [tying.share("layers.2.weight", relation=tying.Hashed(8, seed=3))],
        [tying.share("layers.2.weight", relation=tying.Hashed(8, seed=4))],
    ),
}


def _mismatch_worker(rank: int, port: int, out: str) -> None:
    init(rank, port)
    result = {}
    for name, rules in CASES.items():
        for helper in ("ddp", "fully_shard"):
            model = stack(rules[rank])
            result[f"{name}/{helper}"] = outcome(lambda h=helper, m=model: _train(_wrap(h, m)))
            result[f"{name}/{helper}/wrapped"] = td.wrapped_by(model)
    # one rank tied, the other not: another parameter count (DDP raised on one rank only)
    model = stack([tying.share("head.weight", like="emb.weight")] if rank == 0 else [])
    result["untied/ddp"] = outcome(lambda: _train(td.ddp(model)))
    # another vocabulary size on rank 1
    model = stack([], vocab=12 if rank == 0 else 13)
    result["shape/ddp"] = outcome(lambda: _train(td.ddp(model)))
    # a frozen layer on rank 1 only
    model = stack([])
    model.layers[2].requires_grad_(rank == 0)
    result["frozen/ddp"] = outcome(lambda: _train(td.ddp(model)))
    # a model rank 1 alone refuses (a layer already wrapped): the other must not wait in DDP
    model = stack([tying.share("head.weight", like="emb.weight")])
    if rank == 1:
        model.layers[2] = nn.DataParallel(model.layers[2])
    result["broken/ddp"] = outcome(lambda: _train(td.ddp(model)))
    # the same model on both ranks still trains
    model = stack([tying.share("head.weight", like="emb.weight")])
    result["same/ddp"] = outcome(lambda: _train(td.ddp(model)))
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()
    # skip interpreter finalization, where gloo's worker threads can abort (pytorch PR #179291)
    os._exit(0)


def test_ranks_tied_differently_are_refused_on_every_rank(tmp_path):
    mp.start_processes(
        _mismatch_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(results):
        # used to train: each rank computed another function of the tensors it held
        for name in CASES:
            for helper in ("ddp", "fully_shard"):
                assert got[f"{name}/{helper}"].startswith(
                    f"TieError: tying.distributed.{helper}: the ranks' models are tied "
                    f"differently ("
                ), (r, name, helper, got[f"{name}/{helper}"])
                assert got[f"{name}/{helper}/wrapped"] is None  # nothing was wrapped
        assert (
            "layers.1.weight: rank 0 tied to layers.0.weight via Same(), rank 1 untied"
            in (got["other_layer/ddp"])
        )
        assert (
            "rank 0 tied to layers.0.weight via Transposed(dims=[0, 1]), rank 1 tied to "
            in (got["other_relation/fully_shard"])
        )
        assert (
            "Rotated(dims=[-2, -1], k=1), rank 1 tied to layers.0.weight via Rotated("
            in (got["other_rotation/ddp"])
        )
        assert (
            "head.weight: rank 0 tied to emb.weight via Same(), rank 1 untied"
            in (got["untied/ddp"])
        )
        # used to raise on one rank inside DDP and leave the other waiting until its timeout
        assert got["shape/ddp"].startswith(
            "TieError: tying.distributed.ddp: the ranks' models differ (emb.weight: rank 0 "
            "parameter of shape (12, 6), torch.float32, rank 1 parameter of shape (13, 6)"
        ), got["shape/ddp"]
        assert (
            "the ranks froze different parameters (requires_grad=False: rank 0: none; "
            in (got["frozen/ddp"])
        )
        assert got["same/ddp"] == "ok"
    assert results[1]["broken/ddp"].startswith(
        "TieError: tying.distributed.ddp: the model at 'layers.2' is already wrapped by "
        "DataParallel"
    ), results[1]["broken/ddp"]
    assert results[0]["broken/ddp"].startswith(
        "RuntimeError: tying.distributed.ddp: rank 1 refused to wrap its model (TieError: "
    ), results[0]["broken/ddp"]


def test_a_model_alike_on_every_rank_still_wraps(group):
    model = stack([tying.share("head.weight", like="emb.weight")])
    wrapped = td.ddp(model, find_unused_parameters=True)
    _train(wrapped)
    tying.verify(model)
    assert model.head.weight is model.emb.weight
