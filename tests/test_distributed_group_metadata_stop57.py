"""Stop 57: ``td.save`` / ``td.load`` keep and apply the state dict's metadata, as
``tying.save`` / ``tying.load`` do.

``td.save`` wrote no ``tying.state_metadata`` record, so a C4 ``LiftingConv2d``'s file loaded
into a D4 layer with ``td.load`` was caught only by the coarser guard on undeclared ties
(plain and DDP models), and into a ``td.fully_shard``-sharded D4 layer with no error at
all: the D4 layer's mirrored copies read the C4 kernels (another function). The anchor,
``torch.save(model.state_dict())`` + ``load_state_dict``, refuses by the group. Files
written before the record still load (C4 -> C4) and are still refused into D4.

``td.dcp_save`` / ``dcp_load``: a DCP checkpoint keeps no ``_metadata``. A ``td.dcp_save``
checkpoint records the ties, and ``dcp_load`` refuses a D4 model by the ties it lacks; a
plain ``dcp.save`` checkpoint loads into a D4 layer as plain ``dcp.load`` loads it (it
holds nothing that tells the group).
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open
from safetensors.torch import save_file

import tying
import tying.distributed as td
from tests.test_distributed_stop37 import init, port
from tying.core.file_format import HASH_KEY, STATE_METADATA_KEY, _digest
from tying.nn import LiftingConv2d

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    # the layer's output is a view of its last op: FSDP2's note on in-place ops (none here)
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module .* returned a view tensor"),
]

_GROUP = (
    r"load: .*c4\.safetensors'?: (FSDP)?LiftingConv2d at '<root>': the state dict was saved "
    r"from a layer over group 'C4' and this layer is over group 'D4'.*left as it was"
)
_UNDECLARED = r"load: biases\.m is tied in this model .*old\.safetensors' neither declares"


def _layer(group: str) -> LiftingConv2d:
    torch.manual_seed(0)
    return LiftingConv2d(2, 3, 3, group=group)


def _local(model) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        k: (v.to_local() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _wrap(how: str, model):
    if how == "ddp":
        return td.ddp(model)
    if how == "fully_shard":
        td.fully_shard(model, units=[])
    return model


def _without_record(path, out):
    """``path`` as a tying written before stop 57 wrote it (no record), re-hashed."""
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta.pop(STATE_METADATA_KEY, None)
    meta[HASH_KEY] = _digest(tensors, meta)
    save_file(tensors, str(out), metadata=meta)
    return out


def _outcome(fn) -> str:
    try:
        fn()
        return "ok"
    except BaseException as err:  # noqa: BLE001  (reported to the test process)
        return f"{type(err).__name__}: {err}"


def _checks(folder: str) -> dict:
    """Every check of this file, on this rank: refusals, states kept, loads equal."""
    c4 = _layer("C4")
    path = os.path.join(folder, "c4.safetensors")
    td.save(c4, path)
    old = os.path.join(folder, "old.safetensors")
    if dist.get_rank() == 0:
        _without_record(path, old)
    dist.barrier()
    x = torch.randn(1, 2, 7, 7, generator=torch.Generator().manual_seed(1))
    res: dict = {}
    with safe_open(path, "pt") as f:
        res["record"] = json.loads(f.metadata().get(STATE_METADATA_KEY, "null"))
    res["anchor_record"] = {k: dict(v) for k, v in c4.state_dict()._metadata.items()}
    sharded = os.path.join(folder, "sharded.safetensors")
    td.save(_wrap("fully_shard", _layer("C4")), sharded)  # gathered from the shards
    with safe_open(sharded, "pt") as f:
        res["sharded_record"] = json.loads(f.metadata().get(STATE_METADATA_KEY, "null"))
    for how in ("plain", "ddp", "fully_shard"):
        for name, file in (("c4", path), ("old", old)):
            d4 = _wrap(how, LiftingConv2d(2, 3, 3, group="D4"))
            before = _local(d4)
            res[f"{how}/{name}/d4"] = _outcome(lambda d4=d4, file=file: td.load(d4, file))
            after = _local(d4)
            res[f"{how}/{name}/kept"] = all(torch.equal(before[k], after[k]) for k in before)
            fresh = _wrap(how, LiftingConv2d(2, 3, 3, group="C4"))
            td.load(fresh, file)
            res[f"{how}/{name}/equal"] = torch.equal(fresh(x), c4(x))
    return res


def _worker(rank: int, port_: int, out: str) -> None:
    init(rank, port_)
    res = _checks(out)
    with open(os.path.join(out, f"r{rank}.json"), "w") as fh:
        json.dump(res, fh)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter finalization, where gloo's threads can abort


def _assert_checks(res: dict, who) -> None:
    for how in ("fully_shard", "ddp", "plain"):
        # the C4 file, refused by its group (before: the coarser guard, or for a sharded
        # layer no error at all); a file without the record by the ties it lacks
        assert res[f"{how}/c4/d4"].startswith("TieError: "), (who, how, res[f"{how}/c4/d4"])
        assert re.search(_GROUP, res[f"{how}/c4/d4"]), (who, how)
        assert re.search(_UNDECLARED, res[f"{how}/old/d4"]), (who, how)
        for name in ("c4", "old"):
            assert res[f"{how}/{name}/kept"], (who, how, name)  # the D4 model as it was
            assert res[f"{how}/{name}/equal"], (who, how, name)  # C4 -> C4 computes as saved
    assert res["record"] == res["anchor_record"] and res["record"][""]["tying.group"], who
    assert res["sharded_record"] == res["anchor_record"], who


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("group_metadata")
    mp.start_processes(_worker, args=(port(), str(out)), nprocs=2, start_method="forkserver")
    results = []
    for rank in (0, 1):
        with open(out / f"r{rank}.json") as fh:
            results.append(json.load(fh))
    return results


@pytest.mark.slow  # two spawned processes; the same checks run on one rank below
def test_two_ranks_refuse_a_c4_file_in_a_d4_layer_and_load_it_into_c4(two_ranks):
    for rank, res in enumerate(two_ranks):
        _assert_checks(res, f"rank {rank}")


def test_one_rank_refuses_a_c4_file_in_a_d4_layer_and_loads_it_into_c4(group, tmp_path):
    _assert_checks(_checks(str(tmp_path)), "rank 0 of 1")


def test_dcp_refuses_a_d4_model_by_the_ties_a_c4_checkpoint_records(group, tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    c4 = _layer("C4")
    td.dcp_save(c4, tmp_path / "td")
    d4 = LiftingConv2d(2, 3, 3, group="D4")
    before = _local(d4)
    with pytest.raises(
        tying.TieError,
        match=r"dcp_load: .*td' ties otherwise than this model \(biases\.m: checkpoint untied, "
        r"model tied to biases\.e via Same\(\)",
    ):
        td.dcp_load(d4, tmp_path / "td")
    assert all(torch.equal(before[k], v) for k, v in _local(d4).items())
    # a plain dcp.save checkpoint holds no group: td.dcp_load loads it as dcp.load does
    dcp.save({"model": get_model_state_dict(c4)}, checkpoint_id=tmp_path / "plain")
    anchor = LiftingConv2d(2, 3, 3, group="D4")
    dcp.load({"model": get_model_state_dict(anchor)}, checkpoint_id=tmp_path / "plain")
    td.dcp_load(d4, tmp_path / "plain")
    assert all(torch.equal(anchor.state_dict()[k], v) for k, v in d4.state_dict().items())
