"""Stop 33: what ``tying.distributed`` refuses around wrapping, and what ``save`` writes.

A tie changed after DDP/FSDP2 wrapping, a model wrapped twice (or by both helpers), what
FSDP2 cannot shard (a 0-dim scale, a hand-made tie across units), and ``save`` of a model
with an attribute named ``module`` or of a ``torch.compile``'d model. One-process gloo
groups unless the defect needs two ranks to show."""

from __future__ import annotations

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

# on a machine with a GPU, FSDP2's CPU (gloo) mesh notes that no CUDA device was chosen
pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


class AE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 4)
        self.mid = nn.Linear(4, 4)
        self.mid2 = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 6)

    def forward(self, x):  # (B, 6) -> (B, 6)
        h = torch.tanh(self.enc(x))
        h = torch.tanh(self.mid(h)) + torch.tanh(self.mid2(h))
        return self.dec(h)


def _cpu_mesh():
    """A CPU device mesh over the group: FSDP2's default mesh is CUDA's wherever a GPU is
    seen, and these gloo tests then crashed on a GPU machine (SIGSEGV, torch 2.11)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (dist.get_world_size(),))


def _plan(scaled: bool) -> tying.Plan:
    mid2 = tying.Scaled(0.5) if scaled else tying.Rotated(k=1)
    return tying.Plan(
        [
            tying.share("dec.weight", like="enc.weight", relation=tying.Transposed()),
            tying.share("mid2.weight", like="mid.weight", relation=mid2),
        ]
    )


def _build(scaled: bool = False, tie: bool = True) -> AE:
    torch.manual_seed(0)
    m = AE()
    if tie:
        _plan(scaled).apply(m)
    return m


def _x() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(1))


def _sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


# -- a tie changed after wrapping ---------------------------------------------------------


def _after_wrap_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    m = _build(tie=False)
    model = td.ddp(m, find_unused_parameters=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    msgs = []
    try:  # stop 34: refused by Plan.apply itself, before anything changes
        _plan(scaled=True).apply(m)
        msgs.append("applied")
    except tying.TieError as err:
        msgs.append(str(err))
    msgs.append(sorted(m.state_dict()) == sorted(before))
    # a hand-made change (no tying call to refuse it) is still caught at the next forward:
    # the new tensor is no tensor DDP reduces
    m.mid2.weight = nn.Parameter(m.mid.weight.detach() * 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = _x()[rank::2]
    try:
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        msgs.append("trained")
    except tying.TieError as err:
        msgs.append(str(err))
    with open(os.path.join(out, f"after-{rank}.json"), "w") as fh:
        json.dump(msgs, fh)
    os._exit(0)


def test_a_tie_made_after_ddp_wrapping_is_refused_on_every_rank(tmp_path):
    # stop 33: with find_unused_parameters=True the Scaled tie's new scale was reduced by
    # no one: each rank trained its own scale (rank 0 and rank 1 differed after 3 steps)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _after_wrap_worker, args=(port, str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    for rank in range(2):
        applied, unchanged, trained = json.loads((tmp_path / f"after-{rank}.json").read_text())
        assert applied.startswith("Plan.apply: the model is wrapped by ddp"), applied
        assert "the model was left as it was" in applied and unchanged is True
        assert "the model's parameters changed after it was wrapped" in trained, trained
        assert "replaced or removed: mid2.weight" in trained
        assert "before td.ddp(model)" in trained


@pytest.mark.parametrize("kw", [{"find_unused_parameters": True}, {"static_graph": True}])
def test_untie_after_ddp_wrapping_is_refused_before_it_changes_anything(group, kw):
    m = _build()
    model = td.ddp(m, **kw)
    params = dict(m.named_parameters())
    # stop 33 refused it only at the next training forward; now untie itself refuses
    with pytest.raises(tying.TieError, match=r"tying\.untie: the model is wrapped by ddp"):
        tying.untie(m)  # the untied copies would train apart on every rank
    assert dict(m.named_parameters()) == params
    tying.verify(m)
    model(_x()).sum().backward()  # and the model trains as wrapped
    # a re-application of the same plan changes nothing, so it stays allowed
    _plan(scaled=False).apply(m)


def test_a_tie_made_after_sharding_is_refused_by_plan_apply(group):
    m = _build(tie=False)
    td.fully_shard(m, units=["enc", "dec"], mesh=_cpu_mesh())
    # stop 33: failed inside FSDP's lazy init ("start (0) + length (4)"), then was named at
    # the next forward; now Plan.apply refuses it before anything changes
    with pytest.raises(tying.TieError, match=r"Plan\.apply: the model is wrapped by fully_shard"):
        _plan(scaled=False).apply(m)
    assert tying.count(m).physical == tying.count(_build(tie=False)).physical
    m(_x())  # nothing changed: the sharded model still runs


def test_a_ddp_run_with_no_sync_accumulation_is_not_refused(group):
    # the check compares the parameters DDP was built with: DDP's own machinery (bucket
    # views, no_sync accumulation) changes none of them
    ref = _build()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    m = _build()
    model = td.ddp(m, gradient_as_bucket_view=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = _x()
    for _ in range(3):
        opt.zero_grad()
        with model.no_sync():
            model(x[:4]).pow(2).mean().backward()
        model(x[4:]).pow(2).mean().backward()
        opt.step()
        ref_opt.zero_grad()
        ref(x[:4]).pow(2).mean().backward()
        ref(x[4:]).pow(2).mean().backward()
        ref_opt.step()
    got, want = m.state_dict(), ref.state_dict()
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-6
    tying.verify(m)


# -- wrapping twice -------------------------------------------------------------------


def test_wrapping_twice_or_by_both_helpers_is_refused_before_anything_changes(group):
    m = _build()
    wrapped = td.ddp(m)
    with pytest.raises(tying.TieError, match=r"ddp: the model is already wrapped by Distri"):
        td.ddp(wrapped)  # reduced every gradient twice
    with pytest.raises(tying.TieError, match=r"pass the model inside \(ddp_model\.module\)"):
        td.fully_shard(wrapped)  # sharded under DDP's reducer
    assert not _sharded(m)
    s = _build()
    td.fully_shard(s, units=["enc"], mesh=_cpu_mesh())
    with pytest.raises(tying.TieError, match=r"fully_shard: the model is already sharded by"):
        td.fully_shard(
            s, units=["dec"], mesh=_cpu_mesh()
        )  # FSDP's AssertionError, after 'dec' was sharded
    assert not _sharded(s.dec)
    with pytest.raises(tying.TieError, match=r"ddp: the model is already sharded by FSDP"):
        td.ddp(s)  # failed inside DDP's broadcast: "c10d.broadcast_ ... no sharding strategy"


# -- what FSDP2 cannot shard, refused before the first unit --------------------------------


def test_a_scaled_ties_scalar_is_refused_before_any_unit_is_sharded(group):
    m = _build(scaled=True)
    with pytest.raises(
        tying.TieError,
        match=r"fully_shard: mid2\.weight_scale is a 0-dim parameter \(the scale of the tie "
        r"mid2\.weight <- mid\.weight, Scaled\(init=0\.5\)\), which FSDP2 cannot shard.*td\.ddp",
    ):
        td.fully_shard(m, units=["enc", "mid", "mid2"], mesh=_cpu_mesh())
    assert not _sharded(m)  # 'enc' and 'mid' used to be sharded before FSDP2 refused


class Hand(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6, bias=False)
        self.body = nn.Linear(6, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.inp.weight  # a hand-made tie, Hugging Face style

    def forward(self, x):  # (B, 4) -> (B, 6)
        return self.out(torch.tanh(self.body(torch.tanh(self.inp(x)))))


def _train(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model.state_dict()


def test_a_hand_tie_across_units_is_refused_and_the_declared_tie_trains_right(group, tmp_path):
    torch.manual_seed(0)
    m = Hand()
    with pytest.raises(
        tying.TieError,
        match=r"fully_shard: out\.weight holds the same nn\.Parameter as inp\.weight \(a "
        r"hand-made tie\) but the two ends fall in different FSDP units \('inp', 'out'\)",
    ):
        td.fully_shard(m, units=["inp", "out"], mesh=_cpu_mesh())
    assert not _sharded(m)  # FSDP2's own ValueError came after 'inp' was sharded
    # the fix the message gives: declare the tie, then shard
    tying.Plan([tying.free("out.weight")]).apply(m)
    tying.Plan([tying.share("out.weight", like="inp.weight")]).apply(m)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    want = _train(Hand(), x)
    td.fully_shard(m, units=["inp", "out"], mesh=_cpu_mesh())
    _train(m, x)
    fresh = Hand()
    tying.untie(fresh)
    td.save(m, tmp_path / "hand.safetensors")
    tying.load(fresh, tmp_path / "hand.safetensors")
    assert fresh.out.weight is fresh.inp.weight
    got = fresh.state_dict()  # the declared tie keeps inp.weight only
    assert sorted(got) == sorted(set(want) - {"out.weight"})
    assert max(float((got[k] - want[k]).abs().max()) for k in got) <= 1e-5


# -- save: which model is written ---------------------------------------------------------


class Wrapper(nn.Module):
    """A user's model whose backbone attribute happens to be called ``module``."""

    def __init__(self):
        super().__init__()
        self.module = nn.Linear(3, 3)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(self.module(x))


# importing torch's compiler stack the first time: torch.utils.mkldnn's own notice
@pytest.mark.filterwarnings("ignore:`torch.jit.script.*` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("how", ["plain", "compiled", "ddp", "compiled-ddp", "ddp-compiled"])
def test_save_writes_the_whole_model(group, how, tmp_path):
    # stop 33: a model with an attribute named `module` was taken for DDP and only that
    # submodule was written (keys 'weight', 'bias'); torch.compile's wrapper forwarded
    # `.module` the same way, and without it wrote ties under '_orig_mod.' paths
    torch.manual_seed(0)
    m = Wrapper()
    tying.Plan([tying.share("head.weight", like="module.weight")]).apply(m)
    model = {
        "plain": lambda: m,
        "compiled": lambda: torch.compile(m),
        "ddp": lambda: td.ddp(m),
        "compiled-ddp": lambda: torch.compile(td.ddp(m)),
        "ddp-compiled": lambda: td.ddp(torch.compile(m)),
    }[how]()
    td.save(model, tmp_path / "m.safetensors")
    fresh = Wrapper()
    tying.load(fresh, tmp_path / "m.safetensors")
    assert fresh.head.weight is fresh.module.weight
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
