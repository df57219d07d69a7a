"""Stop 36: models whose paths a wrapper renamed (``apply_activation_checkpointing``), and
``td.save`` given different paths on different ranks.

A DCP checkpoint names a tensor without the wrapper's segment (``head.weight``) while the
wrapped model's tie is ``head._checkpoint_wrapped_module.weight``: ``td.dcp_load`` missed a
tied slot stored as its own tensor and dropped it with no error. ``td.save`` with a path per
rank wrote rank 0's only, and the other ranks returned as if saved. One-process gloo groups
unless the defect needs two ranks to show."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing,
)
from torch.distributed.checkpoint.state_dict import get_model_state_dict

import tying
import tying.distributed as td

from .test_distributed_load import LM, _port

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")

WRAPPED = "head._checkpoint_wrapped_module.weight"


def _lm(tie: bool = True, wrap: str | None = None) -> LM:
    """The tied LM; ``wrap``: activation checkpointing applied "before" or "after" tying."""
    torch.manual_seed(0)
    m = LM()

    def ac() -> None:
        apply_activation_checkpointing(m, check_fn=lambda mod: isinstance(mod, nn.Linear))

    if wrap == "before":
        ac()
    if tie:
        target = WRAPPED if wrap == "before" else "head.weight"
        tying.Plan([tying.share(target, like="emb.weight")]).apply(m)
    if wrap == "after":
        ac()
    return m


def _head(m: nn.Module) -> torch.Tensor:
    return (
        m.get_submodule("head").weight
        if hasattr(m.head, "weight")
        else m.get_parameter("head._checkpoint_wrapped_module.weight")
    )


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_dcp_load_refuses_an_untied_head_for_a_checkpoint_wrapped_tied_model(group, tmp_path):
    untied = _lm(tie=False)
    with torch.no_grad():
        untied.head.weight.mul_(2.0)  # a head unlike the embedding
    dcp.save({"model": get_model_state_dict(untied)}, checkpoint_id=tmp_path / "ckpt")
    m = _lm(wrap="before")
    before = _state(m)
    # used to load, dropping the stored head (the model's head read the embedding)
    with pytest.raises(tying.TieError, match=r"stores head\.weight as its own tensor, but this"):
        td.dcp_load(m, tmp_path / "ckpt")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("save_wrap, load_wrap", [("before", None), (None, "before")])
def test_dcp_round_trips_between_wrapped_and_bare_models(group, tmp_path, save_wrap, load_wrap):
    src = _lm(wrap=save_wrap)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    td.dcp_save(src, tmp_path / "ckpt")  # used to be refused: "ties otherwise" on both sides
    dst = _lm(wrap=load_wrap)
    td.dcp_load(dst, tmp_path / "ckpt")
    want = src.state_dict()
    assert all(torch.equal(want[k], v) for k, v in dst.state_dict().items())
    assert _head(dst) is dst.emb.weight
    tying.verify(dst)


def test_dcp_load_into_a_model_tied_before_wrapping_loads_and_keeps_the_tie(group, tmp_path):
    # stop 36, first round: refused (core could not follow the wrapper: "head.weight: no
    # such parameter any more"); second round: core follows wrapper segments, so it loads
    src = _lm()
    with torch.no_grad():
        src.mid.bias.add_(5.0)
    td.dcp_save(src, tmp_path / "ckpt")
    m = _lm(wrap="after")
    td.dcp_load(m, tmp_path / "ckpt")
    want = src.state_dict()
    assert all(torch.equal(want[k], v) for k, v in m.state_dict().items())
    assert _head(m) is m.emb.weight
    assert tying.verify(m) == 1


def test_ddp_wraps_a_model_tied_before_activation_checkpointing(group):
    # stop 36, first round: refused, naming the wrapper; now core follows the wrapper
    model = td.ddp(_lm(wrap="after"))
    m = model.module
    torch.optim.SGD(m.parameters(), lr=0.1).zero_grad()
    m(torch.tensor([1, 2, 3])).sum().backward()
    assert m.emb.weight.grad is not None and _head(m) is m.emb.weight
    assert tying.verify(m) == 1
    td.ddp(_lm(wrap="before"))  # tied by the wrapped paths: wraps as before


def test_td_load_of_a_wrapped_models_file_into_a_bare_model(group, tmp_path):
    src = _lm(wrap="before")
    with torch.no_grad():
        src.emb.weight.add_(1.0)
    td.save(src, tmp_path / "m.safetensors")  # core writes paths without wrapper segments
    m = _lm()
    td.load(m, tmp_path / "m.safetensors")
    want = src.state_dict()
    assert all(torch.equal(want[k], v) for k, v in m.state_dict().items())
    assert m.head.weight is m.emb.weight
    td.load(_lm(wrap="before"), tmp_path / "m.safetensors")  # and back into a wrapped one


def _paths_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    result = {}
    model = td.ddp(_lm())
    try:
        td.save(model, os.path.join(out, f"rank{rank}.safetensors"))
        result["paths"] = "saved"
    except ValueError as err:
        result["paths"] = str(err)
    try:
        td.save(model, os.path.join(out, "m.safetensors"), metadata={"step": str(rank)})
        result["metadata"] = "saved"
    except ValueError as err:
        result["metadata"] = str(err)
    try:
        td.save(model, os.path.join(out, "m.safetensors") if rank == 0 else 3)
        result["bad"] = "saved"
    except (TypeError, RuntimeError) as err:
        result["bad"] = f"{type(err).__name__}: {err}"
    td.save(model, os.path.join(out, "same.safetensors"))  # the same path: written once
    with open(os.path.join(out, f"paths-{rank}.json"), "w") as fh:
        json.dump(result, fh)
    os._exit(0)


def test_td_save_refuses_ranks_given_different_paths(tmp_path):
    mp.start_processes(
        _paths_worker, args=(_port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    got = [json.loads((tmp_path / f"paths-{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        # used to return on both ranks, with rank1.safetensors never written
        assert got[r]["paths"].startswith(
            "tying.distributed.save: every rank must pass the same path and metadata"
        ), got[r]
        assert "rank1.safetensors" in got[r]["paths"], got[r]
        assert "metadata {'step': '1'}" in got[r]["metadata"], got[r]
    assert got[0]["bad"].startswith("RuntimeError: tying.distributed.save: rank 1 was given a bad")
    assert got[1]["bad"].startswith("TypeError: tying.distributed.save: path must be a str")
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["same.safetensors"]
    tying.load(_lm(tie=False), tmp_path / "same.safetensors")
