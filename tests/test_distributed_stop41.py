"""Stop 41: ``td.fully_shard`` compares non-persistent buffers across ranks too.

Stop 38's value check compared every parameter and *persistent* buffer. FSDP2 broadcasts
no buffer, so a non-persistent one made from each rank's own seed (random Fourier
features, a random projection) left each rank computing another function, trained with
no error. Every buffer is compared now; one that is rank-local by design is named in
``rank_local=``, and a name that is not a buffer is refused on every rank.
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
from tests.test_distributed_stop37 import _cpu_mesh, _train, init, outcome, port, stack

TIE = [tying.share("head.weight", like="emb.weight")]


def _with_features(rank_seed: int, persistent: bool = False):
    """The tied stack, built alike on every rank, with a random feature buffer drawn from
    ``rank_seed`` (a rank's own seed: the buffer differs between ranks)."""
    model = stack(TIE)
    g = torch.Generator().manual_seed(rank_seed)
    model.layers[0].register_buffer("features", torch.randn(6, generator=g), persistent=persistent)
    return model


def _worker(rank: int, port_: int, out: str) -> None:
    init(rank, port_)
    result = {}
    for persistent in (False, True):
        model = _with_features(rank, persistent)
        key = f"differ/persistent={persistent}"
        result[key] = outcome(lambda m=model: td.fully_shard(m, mesh=_cpu_mesh()))
        result[key + "/wrapped"] = td.wrapped_by(model)
    # alike on every rank: wraps and trains
    model = _with_features(0)
    result["alike"] = outcome(lambda: _train(td.fully_shard(model, mesh=_cpu_mesh())))
    # rank-local by design, named: wraps, trains, and each rank keeps its own
    model = _with_features(rank)
    result["rank_local"] = outcome(
        lambda: _train(td.fully_shard(model, mesh=_cpu_mesh(), rank_local=["layers.0.features"]))
    )
    mine = model.layers[0].features.detach().clone()
    seen = [torch.zeros_like(mine) for _ in range(2)]
    dist.all_gather(seen, mine)
    result["rank_local/kept_apart"] = not torch.equal(seen[0], seen[1])
    # a rank_local name that is no buffer: refused on every rank, the model left unwrapped
    for bad in ("layers.0.featurez", "layers.0.weight"):
        model = _with_features(0)
        result[f"bad/{bad}"] = outcome(
            lambda m=model, b=bad: td.fully_shard(m, mesh=_cpu_mesh(), rank_local=[b])
        )
        result[f"bad/{bad}/wrapped"] = td.wrapped_by(model)
    # only rank 1 names a wrong buffer: rank 0 is told, not left waiting
    model = _with_features(0)
    names = ["layers.0.nope"] if rank == 1 else []
    result["bad_on_rank1"] = outcome(
        lambda: td.fully_shard(model, mesh=_cpu_mesh(), rank_local=names)
    )
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


def test_fully_shard_compares_every_buffer_and_takes_rank_local_names(tmp_path):
    mp.start_processes(_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="forkserver")
    for r in range(2):
        got = json.loads((tmp_path / f"r{r}.json").read_text())
        for persistent in (False, True):
            key = f"differ/persistent={persistent}"
            assert got[key].startswith(
                "TieError: tying.distributed.fully_shard: the ranks hold different values "
                "(layers.0.features differs between rank 0 and rank 1)"
            ), (r, key, got[key])
            assert got[key + "/wrapped"] is None
        assert got["alike"] == "ok", got["alike"]
        assert got["rank_local"] == "ok", got["rank_local"]
        assert got["rank_local/kept_apart"] is True
        assert got["bad/layers.0.featurez"].startswith(
            "TieError: td.fully_shard: rank_local names 'layers.0.featurez', which is not a "
            "buffer of the model; closest: layers.0.features"
        ), (r, got["bad/layers.0.featurez"])
        assert "it is a parameter: pass it in ignored_params" in got["bad/layers.0.weight"]
        assert got["bad/layers.0.featurez/wrapped"] is None
        assert got["bad/layers.0.weight/wrapped"] is None
        want = (
            "TieError: td.fully_shard: rank_local names 'layers.0.nope'"
            if r == 1
            else "RuntimeError: tying.distributed.fully_shard: rank 1 refused to wrap its model"
        )
        assert got["bad_on_rank1"].startswith(want), (r, got["bad_on_rank1"])


def test_rank_local_refuses_a_non_string_name_before_any_collective():
    from tying.distributed_wrapping import _rank_local_buffers

    model = nn.Linear(2, 2)
    model.register_buffer("b", torch.zeros(2), persistent=False)
    assert [t is model.b for t in _rank_local_buffers(model, "b")] == [True]  # one str, one name
    with pytest.raises(
        TypeError, match=r"rank_local must hold buffer names \(str\), got 0 \(int\)"
    ):
        _rank_local_buffers(model, [0])


def _tp_worker(rank: int, port_: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    init(rank, port_)
    result = {}
    # (data, tensor) = (1, 2): FSDP2's data groups are one rank each, so before stop 41
    # nothing was compared; the embedding (a plain tensor) is replicated over both ranks
    mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
    for seeds in ("apart", "alike", "apart_ignored"):
        model = stack(TIE, seed=0 if seeds == "alike" else rank)
        parallelize_module(
            model, mesh["tp"], {"layers.0": ColwiseParallel(), "layers.1": RowwiseParallel()}
        )
        if seeds == "apart_ignored":  # the plain tensors, each rank's own by design
            ignored = {p for n, p in model.named_parameters() if not n.startswith("layers.0")}
            ignored -= {model.layers[1].weight}
            kw = {"ignored_params": ignored}
        else:
            kw = {}
        result[seeds] = outcome(
            lambda m=model, kw=kw: _train(td.fully_shard(m, mesh=mesh["dp"], **kw))
        )
        result[seeds + "/wrapped"] = td.wrapped_by(model)
    with open(os.path.join(out, f"tp{rank}.json"), "w") as fh:
        json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def test_plain_tensors_a_tensor_parallel_group_replicates_are_compared(tmp_path):
    mp.start_processes(
        _tp_worker, args=(port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    for r in range(2):
        got = json.loads((tmp_path / f"tp{r}.json").read_text())
        assert got["apart"].startswith(
            "TieError: tying.distributed.fully_shard: the ranks hold different values "
            "(emb.weight differs between rank 0 and rank 1). tensor parallelism leaves a "
            "plain tensor whole on every rank of the mesh"
        ), (r, got["apart"])
        assert got["apart/wrapped"] is None
        assert got["alike"] == "ok", (r, got["alike"])
        assert got["apart_ignored"] == "ok", (r, got["apart_ignored"])


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    kinds=st.lists(st.booleans(), min_size=1, max_size=4),  # persistent or not, per buffer
    touched=st.integers(0, 3),
    local=st.booleans(),
)
def test_a_change_to_any_buffer_changes_the_digests_unless_it_is_rank_local(kinds, touched, local):
    """The kind of defect: a buffer left out of the comparison. Against brute force: the
    digests differ exactly when a compared tensor's bytes differ."""
    from tying.distributed_wrapping import _rank_local_buffers, _value_digests

    touched %= len(kinds)

    def build(nudge: bool) -> nn.Module:
        model = nn.Linear(3, 3)
        with torch.no_grad():
            model.weight.fill_(0.5)
            model.bias.zero_()
        for i, persistent in enumerate(kinds):
            value = torch.full((2,), float(i)) + (1e-6 if nudge and i == touched else 0.0)
            model.register_buffer(f"b{i}", value, persistent=persistent)
        return model

    names = [f"b{touched}"] if local else []
    digests = []
    for nudge in (False, True):
        model = build(nudge)
        ignored = {id(b) for b in _rank_local_buffers(model, names)}
        digests.append(_value_digests(model, True, ignored))
    assert {n for n, _ in digests[0]} == {"weight", "bias"} | {
        f"b{i}" for i in range(len(kinds)) if not (local and i == touched)
    }
    assert (digests[0] != digests[1]) is (not local)


def test_a_difference_within_a_data_group_is_named_as_fsdp2_s_not_tensor_parallelism_s():
    """On a 2 x 2 mesh (data groups (0, 2) and (1, 3)), a plain tensor that differs inside
    one data group is FSDP2's case (a mix of shards); one that differs only between the
    groups is tensor parallelism's (each rank its own copy). The reason follows the place."""
    from tying.distributed_wrapping import _value_difference

    def seen_details(values_by_rank):
        groups = {0: (0, 2), 2: (0, 2), 1: (1, 3), 3: (1, 3)}
        seen = [("ok", "", "", (), "", "", groups[r]) for r in range(4)]
        details = [(None, None, None, values_by_rank[r], ("w",)) for r in range(4)]
        return details, seen

    a, b = (("emb", "x"), ("w", "s0")), (("emb", "y"), ("w", "s0"))
    shard1 = (("emb", "x"), ("w", "s1"))  # the other tensor-parallel rank's shard
    details, seen = seen_details([a, shard1, b, shard1])  # rank 2 differs from rank 0
    assert _value_difference(details, seen, object()) == (
        "emb differs between rank 0 and rank 2",
        False,
    )
    other = (("emb", "y"), ("w", "s1"))
    details, seen = seen_details([a, other, a, other])  # only between the groups
    assert _value_difference(details, seen, object()) == (
        "emb differs between rank 0 and rank 1",
        True,
    )
