"""Stop 34: loading into a wrapped tied model (``td.load``) and DCP checkpoints with ties.

``tying.load`` into an FSDP2-sharded model failed inside FSDP's copy ("got mixed
torch.Tensor and DTensor"), naming no fix; ranks that read different files under DDP
trained different models with no error; a plain DCP load of an untied checkpoint into a
tied model dropped the stored head with no error. One-process gloo groups unless the
defect needs two ranks to show."""

from __future__ import annotations

import copy
import gc
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

from .test_distributed_wrapping import AE  # the same autoencoder

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)

    def forward(self, x):  # (B,) -> (B, 10)
        return self.head(torch.tanh(self.mid(self.emb(x))))


def _ae(tie: bool = True, relation=None) -> AE:
    torch.manual_seed(0)
    m = AE()
    if tie:
        tying.Plan(
            [
                tying.share("dec.weight", like="enc.weight", relation=tying.Transposed()),
                tying.share(
                    "mid2.weight", like="mid.weight", relation=relation or tying.Rotated(k=1)
                ),
            ]
        ).apply(m)
    return m


def _lm(tie: bool = True) -> LM:
    torch.manual_seed(0)
    m = LM()
    if tie:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def _x() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(1))


def _mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (dist.get_world_size(),))


def _full(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _full_optim(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer's full state, keyed by parameter name, as plain tensors."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))


def _train(model: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _shifted(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    return m


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- loading a tying file into a sharded model ---------------------------------------------


def test_tying_load_into_a_sharded_model_is_refused_naming_td_load(group, tmp_path):
    tying.save(_shifted(_ae()), tmp_path / "m.safetensors")
    m = _ae()
    td.fully_shard(m, units=["enc", "dec"], mesh=_mesh())
    before = _full(m)
    # used to fail inside FSDP's copy: "aten.copy_.default got mixed torch.Tensor and DTensor"
    with pytest.raises(
        tying.TieError,
        match=r"fully_shard: enc\.weight is sharded \(a DTensor of shape \(4, 6\)\) but the "
        r"state given holds a full tensor.*td\.load\(model, path\) on every rank",
    ):
        tying.load(m, tmp_path / "m.safetensors")
    after = _full(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    tying.verify(m)


def _load_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    result = {}
    # 1. td.load into a sharded model: the shards of a single-process load, ties held,
    #    and training goes on as the unsharded model's
    m = _ae()
    td.fully_shard(m, units=["enc", "dec"], mesh=_mesh())
    td.load(m, os.path.join(out, "m.safetensors"))
    tying.verify(m)
    ref = _ae(tie=False)
    tying.load(ref, os.path.join(out, "m.safetensors"))
    got = _full(m)
    result["loaded"] = max(float((got[k] - v).abs().max()) for k, v in ref.state_dict().items())
    _train(m, _x()[rank::2])
    _train(ref, _x())
    got = _full(m)
    result["trained"] = max(float((got[k] - v).abs().max()) for k, v in ref.state_dict().items())
    tying.verify(m)
    # 2. ranks that read different files: DDP never broadcasts again, so each rank would
    #    train its own model; refused on every rank, nothing loaded
    d = td.ddp(_ae())
    before = {k: v.clone() for k, v in d.module.state_dict().items()}
    name = "m.safetensors" if rank == 0 else "other.safetensors"
    try:
        td.load(d, os.path.join(out, name))
        result["different"] = "loaded"
    except tying.TieError as err:
        result["different"] = str(err)
    result["unchanged"] = all(torch.equal(before[k], v) for k, v in d.module.state_dict().items())
    # 3. a file one rank cannot read: every rank raises, none waits
    try:
        td.load(d, os.path.join(out, "m.safetensors" if rank == 0 else "missing.safetensors"))
        result["missing"] = "loaded"
    except (RuntimeError, FileNotFoundError) as err:
        result["missing"] = f"{type(err).__name__}: {err}"
    with open(os.path.join(out, f"load-{rank}.json"), "w") as fh:
        json.dump(result, fh)
    os._exit(0)


def test_td_load_gives_every_rank_its_shards_and_refuses_different_files(tmp_path):
    tying.save(_shifted(_ae()), tmp_path / "m.safetensors")
    other = _shifted(_shifted(_ae()))
    tying.save(other, tmp_path / "other.safetensors")
    mp.start_processes(
        _load_worker, args=(_port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    for rank in range(2):
        got = json.loads((tmp_path / f"load-{rank}.json").read_text())
        assert got["loaded"] == 0.0, got
        assert got["trained"] <= 1e-5, got
        assert "the ranks read different contents from" in got["different"], got
        assert got["unchanged"], got
    r0 = json.loads((tmp_path / "load-0.json").read_text())
    r1 = json.loads((tmp_path / "load-1.json").read_text())
    assert r0["missing"].startswith("RuntimeError: tying.distributed.load: rank 1 could not load")
    assert r1["missing"].startswith("FileNotFoundError: load: no file at")


def test_td_load_refuses_a_file_of_other_ties_into_a_wrapped_model(group, tmp_path):
    tying.save(_shifted(_ae(tie=False)), tmp_path / "untied.safetensors")
    m = _ae()
    d = td.ddp(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(tying.TieError, match=r"not in model: dec\.weight, mid2\.weight"):
        td.load(d, tmp_path / "untied.safetensors")  # tying.load itself refuses this one
    tying.save(_shifted(_ae(relation=tying.Flipped())), tmp_path / "flipped.safetensors")
    # tying.load(m.module) re-tied mid2 with Flipped: new tensors DDP does not reduce
    with pytest.raises(
        tying.TieError,
        match=r"ties otherwise than this model \(mid2\.weight: model tied to mid\.weight via "
        r"Rotated.*file tied to mid\.weight via Flipped.*before td\.ddp\(model\)",
    ):
        td.load(d, tmp_path / "flipped.safetensors")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    tying.verify(m)


def test_wrapped_by_names_the_helper_on_every_module(group):
    m = _ae()
    assert td.wrapped_by(m) is None
    wrapper = td.ddp(m)
    assert td.wrapped_by(m) == td.wrapped_by(m.dec) == "ddp"
    # a copy is not wrapped (an attribute mark travelled with deepcopy and pickle)
    assert td.wrapped_by(copy.deepcopy(m)) is None
    del wrapper  # the DDP wrapper gone, the model may be tied and wrapped again
    gc.collect()
    assert td.wrapped_by(m) is None
    s = _ae()
    td.fully_shard(s, units=["enc"], mesh=_mesh())
    assert td.wrapped_by(s.mid) == "fully_shard"


# -- torch.distributed.checkpoint ---------------------------------------------------------


def _dcp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    # 2 ranks, DDP: the values and ties of the 1-rank sharded run, and its optimizer state
    m = _ae()
    d = td.ddp(m)
    opt = torch.optim.Adam(d.parameters(), lr=0.01)
    td.dcp_load(d, os.path.join(out, "ckpt"), optimizer=opt)
    tying.verify(m)
    want = torch.load(os.path.join(out, "full.pt"))
    got = m.state_dict()
    diff = max(float((got[k] - v).abs().max()) for k, v in want.items())
    state = opt.state_dict()["state"]
    # stop 53: every optimizer state value too (exp_avg, exp_avg_sq, step per physical
    # tensor, by name), not only how many states came back
    want_opt = torch.load(os.path.join(out, "optim.pt"))
    got_opt = _full_optim(d.module, opt)
    opt_diff = {
        f"{name}.{key}": float((got_opt["state"][name][key] - value).abs().max())
        for name, entry in want_opt["state"].items()
        for key, value in entry.items()
    }
    groups = [{k: v for k, v in g.items() if k != "params"} for g in got_opt["param_groups"]]
    with open(os.path.join(out, f"dcp-{rank}.json"), "w") as fh:
        json.dump(
            {
                "diff": diff,
                "keys": sorted(got),
                "states": len(state),
                "opt_diff": opt_diff,
                "opt_names": sorted(got_opt["state"]),
                "groups_equal": groups == want_opt["groups"],
            },
            fh,
        )
    os._exit(0)


def test_a_dcp_round_trip_from_1_sharded_rank_to_2_ddp_ranks_keeps_ties_and_values(tmp_path):
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:  # 1 rank, FSDP2, Adam: one optimizer state per physical tensor
        m = _ae()
        td.fully_shard(m, units=["enc", "dec"], mesh=_mesh())
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        for _ in range(2):
            opt.zero_grad()
            m(_x()).pow(2).mean().backward()
            opt.step()
        td.dcp_save(m, tmp_path / "ckpt", optimizer=opt)
        torch.save(_full(m), tmp_path / "full.pt")
        full_opt = _full_optim(m, opt)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in full_opt["param_groups"]]
        torch.save({"state": full_opt["state"], "groups": groups}, tmp_path / "optim.pt")
    finally:
        dist.destroy_process_group()
    mp.start_processes(
        _dcp_worker, args=(_port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    for rank in range(2):
        got = json.loads((tmp_path / f"dcp-{rank}.json").read_text())
        assert got["diff"] == 0.0, got
        assert "dec.weight" not in got["keys"] and "mid2.weight" not in got["keys"]
        assert got["states"] == 6  # enc.weight/bias, mid.weight/bias, mid2.bias, dec.bias
        physical = ["dec.bias", "enc.bias", "enc.weight", "mid.bias", "mid.weight", "mid2.bias"]
        assert got["opt_names"] == physical, got
        assert sorted({k.rsplit(".", 1)[0] for k in got["opt_diff"]}) == physical, got
        assert len(got["opt_diff"]) == 18, got  # step, exp_avg, exp_avg_sq each
        assert all(d == 0.0 for d in got["opt_diff"].values()), got
        assert got["groups_equal"], got


def test_dcp_load_refuses_a_checkpoint_that_stores_a_tied_slot_apart(group, tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    untied = _shifted(_lm(tie=False))
    dcp.save({"model": get_model_state_dict(untied)}, checkpoint_id=tmp_path / "plain")
    m = _lm()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    # a plain dcp.load into the tied model loaded emb.weight and dropped the stored
    # head.weight: the head then read the embedding, with no error
    with pytest.raises(
        tying.TieError,
        match=r"dcp_load: .* stores head\.weight as its own tensor, but this model reads it "
        r"through a tie, so its stored value would be dropped",
    ):
        td.dcp_load(td.ddp(m), tmp_path / "plain")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_dcp_load_refuses_a_checkpoint_of_other_relations(group, tmp_path):
    td.dcp_save(_shifted(_ae(relation=tying.Flipped())), tmp_path / "ckpt")
    m = _ae()  # mid2 <- mid via Rotated: the same tensor names and shapes as Flipped
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"ties otherwise than this model \(mid2\.weight: checkpoint tied to mid\.weight "
        r"via Flipped\(dims=\[-1\]\), model tied to mid\.weight via Rotated\(dims=\[-2, "
        r"-1\], k=1\)\)",
    ):
        td.dcp_load(m, tmp_path / "ckpt")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    untied = _ae(tie=False)
    with pytest.raises(tying.TieError, match=r"dec\.weight: checkpoint tied to enc\.weight via "):
        td.dcp_load(untied, tmp_path / "ckpt")
    same = _ae(relation=tying.Flipped())
    td.dcp_load(same, tmp_path / "ckpt")
    want = _shifted(_ae(relation=tying.Flipped())).state_dict()
    assert all(torch.equal(want[k], v) for k, v in same.state_dict().items())
    assert torch.equal(same.mid2.weight, torch.flip(same.mid.weight, (-1,)))


def test_dcp_load_refuses_an_optimizer_the_checkpoint_holds_no_state_for(group, tmp_path):
    src = _shifted(_ae(relation=tying.Scaled(0.5)))
    td.dcp_save(src, tmp_path / "ckpt")  # no optimizer=
    m = _ae(relation=tying.Scaled(1.0))  # the initial scale is no part of the tie
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    with pytest.raises(tying.TieError, match=r"holds no optimizer state \(no 'optim' entry"):
        td.dcp_load(m, tmp_path / "ckpt", optimizer=opt)
    assert m.mid2.weight_scale.detach().item() == 1.0  # nothing was loaded
    td.dcp_load(m, tmp_path / "ckpt")
    assert torch.equal(m.mid2.weight, src.mid2.weight)
    assert torch.equal(m.mid2.weight_scale, src.mid2.weight_scale)
