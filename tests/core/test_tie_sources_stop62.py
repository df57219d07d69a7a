"""A strict load_state_dict refuses a state dict whose slots are tied to other sources.

The record (stop 59, relations since stop 62) listed the tied slots, not their sources:
``share("b.weight", like="a.weight")`` and ``like="c.weight"`` give the same keys and the
same slot list, so the one model's state dict loaded into the other with no error and
``b`` read ``c.weight`` (1.80 off the saved model). The record now lists each slot's source.
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

import tying
from tying.core.tie_sources import OUTSIDE, SOURCES_METADATA_KEY


def _model(*rules, seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict({k: nn.Linear(4, 4) for k in "abc"})
    tying.Plan(list(rules)).apply(m)
    return m


def _like(source, seed=0):
    return _model(tying.share("b.weight", like=source), seed=seed)


def _off(s, t) -> float:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    return float((s["b"](x) - t["b"](x)).abs().max().detach())


def _values(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


_REFUSED = r"b\.weight: saved like a\.weight, this model like c\.weight"


def test_a_strict_load_tied_to_another_source_is_refused_before_any_change():
    s, t = _like("a.weight"), _like("c.weight", seed=1)
    sd = s.state_dict()
    assert sd._metadata[""][SOURCES_METADATA_KEY] == ["b.weight a.weight"]
    before = _values(t)
    with pytest.raises(tying.TieError, match=_REFUSED) as err:
        t.load_state_dict(sd)
    assert "Nothing was loaded" in str(err.value)
    after = _values(t)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert t["b"].weight is t["c"].weight  # its tie kept


def test_every_fix_the_refusal_names_works(tmp_path):
    s = _like("a.weight")
    sd = s.state_dict()
    # re-tie like the saved model (the rule the message prints), then load: the saved model
    t = _like("c.weight", seed=1)
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(t)
    t.load_state_dict(sd)
    assert _off(s, t) == 0.0
    # tying.save the saved model, free the slot, tying.load: the file's tie
    tying.save(s, tmp_path / "s.safetensors")
    t = _like("c.weight", seed=1)
    tying.Plan([tying.free("b.weight")]).apply(t)
    tying.load(t, tmp_path / "s.safetensors")
    assert _off(s, t) == 0.0 and t["b"].weight is t["a"].weight
    # strict=False and a plain dict: the values, this model's own tie kept
    for load in (
        lambda m: m.load_state_dict(sd, strict=False),
        lambda m: m.load_state_dict(dict(sd)),
    ):
        t = _like("c.weight", seed=1)
        load(t)
        assert torch.equal(t["c"].weight, s["c"].weight) and t["b"].weight is t["c"].weight


def test_the_printed_rule_carries_a_relation():
    s = _model(tying.share("b.weight", like="a.weight", relation=tying.Transposed()))
    t = _model(tying.share("b.weight", like="c.weight", relation=tying.Transposed()), seed=1)
    with pytest.raises(
        tying.TieError, match=r"like='a\.weight', relation=tying\.Transposed"
    ) as err:
        t.load_state_dict(s.state_dict())
    advice = re.search(
        r"re-tie this one like it before loading: (.*?\.apply\(model\))", str(err.value)
    )
    eval(advice.group(1), {"tying": tying, "model": t})  # the printed rule, as printed
    t.load_state_dict(s.state_dict())
    assert _off(s, t) == 0.0


def test_same_sources_and_chains_to_the_same_owner_load():
    _like("a.weight", seed=1).load_state_dict(_like("a.weight").state_dict())
    # c like b like a reads what c like a reads: not refused
    chain = _model(
        tying.share("b.weight", like="a.weight"), tying.share("c.weight", like="b.weight")
    )
    flat = _model(
        tying.share("b.weight", like="a.weight"), tying.share("c.weight", like="a.weight"), seed=1
    )
    flat.load_state_dict(chain.state_dict())
    chain.load_state_dict(flat.state_dict())


def test_a_chain_through_another_relation_is_refused():
    # c like b (Transposed of a) reads a.T; c like a reads a: the relation check sees c via
    # Same on both sides, the chain does not
    via_b = _model(
        tying.share("b.weight", like="a.weight", relation=tying.Transposed()),
        tying.share("c.weight", like="b.weight"),
    )
    via_a = _model(
        tying.share("b.weight", like="a.weight", relation=tying.Transposed()),
        tying.share("c.weight", like="a.weight"),
        seed=1,
    )
    with pytest.raises(
        tying.TieError, match=r"c\.weight: saved like b\.weight, this model like a\.weight"
    ):
        via_a.load_state_dict(via_b.state_dict())


def test_prefixes_parts_and_weights_only_files_are_checked():
    def outer(source, seed=0):
        torch.manual_seed(seed)
        o = nn.Module()
        o.body = nn.ModuleDict({"inner": nn.ModuleDict({k: nn.Linear(4, 4) for k in "abc"})})
        tying.Plan([tying.share("body.inner.b.weight", like=f"body.inner.{source}")]).apply(o)
        return o

    s, t = outer("a.weight"), outer("c.weight", seed=1)
    assert s.body.state_dict()._metadata[""][SOURCES_METADATA_KEY] == [
        "inner.b.weight inner.a.weight"
    ]
    with pytest.raises(tying.TieError, match=r"inner\.b\.weight: saved like inner\.a\.weight"):
        t.body.load_state_dict(s.body.state_dict())
    holder = nn.Module()
    holder.model = t
    wrapped = nn.Module()
    wrapped.model = s
    with pytest.raises(tying.TieError, match=r"at 'model'"):
        holder.load_state_dict(wrapped.state_dict())
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    with pytest.raises(tying.TieError, match=r"body\.inner\.b\.weight: saved like body\.inner\.a"):
        t.load_state_dict(torch.load(buf, weights_only=True))


def test_a_source_outside_the_part_is_recorded_as_outside_and_not_compared():
    def model(source, seed=0):
        torch.manual_seed(seed)
        m = nn.ModuleDict({"enc": nn.ModuleDict({"a": nn.Linear(4, 4), "c": nn.Linear(4, 4)})})
        m["dec"] = nn.ModuleDict({"b": nn.Linear(4, 4)})
        tying.Plan([tying.share("dec.b.weight", like=f"enc.{source}")]).apply(m)
        return m

    sd = model("a.weight")["dec"].state_dict()
    assert sd._metadata[""][SOURCES_METADATA_KEY] == [f"b.weight {OUTSIDE}"]
    model("c.weight", seed=1)["dec"].load_state_dict(sd)  # the part holds neither source


def test_a_record_without_sources_loads_as_before():
    sd = _like("a.weight").state_dict()
    del sd._metadata[""][SOURCES_METADATA_KEY]  # saved before stop 62
    t = _like("c.weight", seed=1)
    t.load_state_dict(sd)
    assert t["b"].weight is t["c"].weight


def test_the_memoised_record_follows_a_re_tie_and_a_renamed_module():
    m = _like("a.weight")
    assert m.state_dict()._metadata[""][SOURCES_METADATA_KEY] == ["b.weight a.weight"]
    tying.Plan([tying.share("b.weight", like="c.weight")]).apply(m)
    assert m.state_dict()._metadata[""][SOURCES_METADATA_KEY] == ["b.weight c.weight"]
    outer = nn.Module()
    outer.x = m
    tying.Plan([tying.share("x.b.weight", like="x.a.weight")]).apply(outer)
    assert outer.state_dict()._metadata[""][SOURCES_METADATA_KEY] == ["x.b.weight x.a.weight"]
    del outer.x
    outer.y = m
    assert outer.state_dict()._metadata[""][SOURCES_METADATA_KEY] == ["y.b.weight y.a.weight"]


def test_ddp_state_dicts_are_checked_for_sources_and_relations(group):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.nn.parallel import DistributedDataParallel

    import tying.distributed as td

    for wrap in (DistributedDataParallel, td.ddp):
        with pytest.raises(tying.TieError, match=_REFUSED):
            _like("c.weight", seed=1).load_state_dict(get_model_state_dict(wrap(_like("a.weight"))))
    # the relations record sat under "module" too, where that check did not read: a square
    # Transposed tie's state dict loaded into a Same-tied model
    transposed = _model(tying.share("b.weight", like="a.weight", relation=tying.Transposed()))
    same = _like("a.weight", seed=1)
    before = _values(same)
    with pytest.raises(tying.TieError, match=r"b\.weight: saved via Transposed"):
        same.load_state_dict(get_model_state_dict(DistributedDataParallel(transposed)))
    assert all(torch.equal(before[k], v) for k, v in _values(same).items())
    same.load_state_dict(get_model_state_dict(DistributedDataParallel(_like("a.weight"))))
