"""Stop 36 (second round): the wrapped-parameters check under ``torch.compile``, and a
``td.load`` / ``td.dcp_load`` / ``td.dcp_save`` that fails on one rank only.

``torch.compile(td.ddp(model))`` traced the check that the model's parameters are still
those DDP was built with, and the check returned while compiling: a parameter replaced
after wrapping trained apart on each rank with no error. ``td.load`` into a plain model
checked the model against the file on each rank alone, after the ranks' collective: a rank
whose model did not fit raised while the others loaded. A path that is no path (None) on
one rank raised there before the collective the other ranks waited in. One-process gloo
groups unless the defect needs two ranks to show."""

from __future__ import annotations

import datetime
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tying
import tying.distributed as td

from .test_distributed_load import LM, _lm, _port

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


def test_a_parameter_replaced_after_ddp_is_refused_under_torch_compile(group):
    model = _lm()
    wrapped = torch.compile(td.ddp(model, find_unused_parameters=True), backend="aot_eager")
    x = torch.arange(8)
    wrapped(x).pow(2).mean().backward()
    model.mid.weight = torch.nn.Parameter(model.mid.weight.detach().clone())  # by hand
    # used to train on: the check returned while compiling, and DDP never reduced the new
    # tensor, so each rank trained its own mid.weight
    with pytest.raises(
        tying.TieError,
        match=r"ddp: the model's parameters changed after it was wrapped \(replaced or "
        r"removed: mid\.weight; new: mid\.weight\)",
    ):
        wrapped(x)


def test_a_compiled_ddp_model_trains_as_before(group):
    model, ref = _lm(), _lm()
    wrapped = torch.compile(td.ddp(model), backend="aot_eager")
    x = torch.arange(8)
    for m in (wrapped, ref):
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    want = ref.state_dict()
    assert all(torch.allclose(want[k], v, atol=1e-6) for k, v in model.state_dict().items())
    assert model.head.weight is model.emb.weight
    tying.verify(model)


def _try(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as err:  # the message goes back to the test
        return f"{type(err).__name__}: {err}"


def _one_rank_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout: a rank left in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    torch.set_num_threads(1)
    path = os.path.join(out, "m.safetensors")
    result = {}
    # 1. a plain model that does not fit the file on rank 1 (another vocabulary size)
    torch.manual_seed(0)
    m = _lm() if rank == 0 else LM()
    if rank == 1:
        m.emb, m.head = torch.nn.Embedding(12, 4), torch.nn.Linear(4, 12, bias=False)
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    result["arch"] = _try(lambda: td.load(m, path))
    result["arch_unchanged"] = all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    # 2. a model on the meta device on rank 1
    m = _lm()
    if rank == 1:
        m = m.to("meta")
    result["meta"] = _try(lambda: td.load(m, path))
    result["meta_unchanged"] = rank == 1 or torch.equal(m.emb.weight, _lm().emb.weight)
    # 3. no path (None) on rank 1: td.load, td.dcp_load, td.dcp_save
    m = _lm()
    result["none"] = _try(lambda: td.load(m, path if rank == 0 else None))
    ckpt = os.path.join(out, "ckpt") if rank == 0 else None
    result["dcp_load"] = _try(lambda: td.dcp_load(m, ckpt))
    result["dcp_save"] = _try(lambda: td.dcp_save(m, ckpt))
    # every rank left every collective: the next one works
    x = torch.ones(1) * (rank + 1)
    dist.all_reduce(x)
    result["after"] = float(x)
    with open(os.path.join(out, f"one-{rank}.json"), "w") as fh:
        json.dump(result, fh)
    os._exit(0)


def test_a_load_that_fails_on_one_rank_fails_on_every_rank_with_no_model_changed(tmp_path):
    src = _lm()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    tying.save(src, tmp_path / "m.safetensors")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        td.dcp_save(src, tmp_path / "ckpt")
    finally:
        dist.destroy_process_group()
    mp.start_processes(
        _one_rank_worker, args=(_port(), str(tmp_path)), nprocs=2, start_method="forkserver"
    )
    r0, r1 = (json.loads((tmp_path / f"one-{r}.json").read_text()) for r in range(2))
    for got in (r0, r1):
        # rank 0 used to load the file while rank 1 raised
        assert got["arch"].startswith(
            "TieError: tying.distributed.load: the ranks' models differ (emb.weight: rank 0 "
            "parameter of shape (10, 4), torch.float32, rank 1 parameter of shape (12, 4)"
        ), got
        assert got["arch_unchanged"], got
        assert got["meta_unchanged"], got
        assert got["after"] == 3.0, got
    assert r0["meta"].startswith("RuntimeError: tying.distributed.load: rank 1 could not load")
    assert "emb.weight is on the meta device" in r1["meta"], r1
    # rank 0 used to wait in the collective that rank 1 never reached
    assert r0["none"].startswith("RuntimeError: tying.distributed.load: rank 1 could not load")
    assert r1["none"].startswith(
        "TypeError: tying.distributed.load: path must be a str or os.PathLike, got NoneType"
    ), r1
    assert r0["dcp_load"].startswith("RuntimeError: tying.distributed.dcp_load: rank 1 could not")
    assert r1["dcp_load"].startswith("TypeError: tying.distributed.dcp_load: checkpoint_id must")
    assert r0["dcp_save"].startswith(
        "RuntimeError: tying.distributed.dcp_save: rank 1 could not save to"
    ), r0
    assert r0["dcp_save"].endswith("nothing was written"), r0
    assert r1["dcp_save"].startswith("TypeError: tying.distributed.dcp_save: checkpoint_id must")
