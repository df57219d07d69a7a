"""A plan's tied slots recorded in the state dict and checked on load (stop 59).

``Plan([share("layers.*", like="layers.0")])`` gives every depth the same state-dict keys
(``layers.0.*``), so ``load_state_dict`` loaded a depth-4 model's state dict into a
depth-6 one with no error: the two extra layers read layer 0, 3.72 off the saved model
(3.53 through ``model.layers.load_state_dict``), while ``tying.load`` refused the file.
See :mod:`tying.core.tie_record`.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import tying
from tying.core.tie_record import TIED_METADATA_KEY
from tying.nn import TransformerBlock

from .helpers import state_bytes

ALBERT = [tying.share("layers.*", like="layers.0")]


class Stack(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([TransformerBlock(16, 2) for _ in range(depth)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _tied(depth: int, seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    model = Stack(depth)
    tying.Plan(ALBERT).apply(model)
    return model


X = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))


def test_a_shallower_tied_state_dict_is_refused_and_leaves_the_model_as_it_was():
    s4, s6 = _tied(2), _tied(3, seed=1)
    snap = state_bytes(s6)
    with pytest.raises(
        tying.TieError,
        match=r"load_state_dict into Stack: this model ties 16 slot\(s\) that the state dict "
        r"neither holds nor records as tied \(layers\.2\.\*\).*ties 16 slot\(s\) "
        r"\(layers\.1\.\*\) and this one ties 32 \(layers\.1\.\*, layers\.2\.\*\).*"
        r"model\.load_state_dict\(dict\(state_dict\)\)\. Nothing was loaded",
    ):
        s6.load_state_dict(s4.state_dict())
    assert state_bytes(s6) == snap
    s6.load_state_dict(dict(s4.state_dict()))  # the advice, followed: loads on purpose
    assert torch.equal(s6.layers[0].self_attn.q_proj.weight, s4.layers[0].self_attn.q_proj.weight)


def test_a_deeper_tied_state_dict_is_refused_by_a_shallower_model():
    s6, s4 = _tied(3), _tied(2, seed=1)
    snap = state_bytes(s4)
    with pytest.raises(
        tying.TieError,
        match=r"records 16 tied slot\(s\) this model does not have \(layers\.2\.\*\)",
    ):
        s4.load_state_dict(s6.state_dict())
    assert state_bytes(s4) == snap


def test_a_part_route_and_a_weights_only_file_are_refused_too():
    s4, s6 = _tied(2), _tied(3, seed=1)
    snap = state_bytes(s6)
    with pytest.raises(tying.TieError, match=r"into ModuleList: this model ties 16 slot\(s\)"):
        s6.layers.load_state_dict(s4.layers.state_dict())
    buf = io.BytesIO()
    torch.save(s4.state_dict(), buf)
    buf.seek(0)
    with pytest.raises(tying.TieError, match=r"\(layers\.2\.\*\)"):
        s6.load_state_dict(torch.load(buf, weights_only=True))
    assert state_bytes(s6) == snap


def test_fsdp_style_metadata_under_wrapper_segments_is_found_by_canonical_path():
    s4, s6 = _tied(2), _tied(3, seed=1)
    sd = s4.state_dict()  # keys clean, metadata under the wrapper's segment (FSDP1)
    sd._metadata = OrderedDict(
        (("_fsdp_wrapped_module." + k).rstrip("."), v) for k, v in sd._metadata.items()
    )
    with pytest.raises(tying.TieError, match=r"\(layers\.2\.\*\)"):
        s6.load_state_dict(sd)
    same = _tied(2, seed=3)
    same.load_state_dict(sd)
    assert torch.equal(same(X), s4(X))


def test_the_record_is_plain_and_state_dict_is_otherwise_unchanged():
    s4 = _tied(2)
    sd = s4.state_dict()
    assert type(sd) is OrderedDict
    record = sd._metadata[""][TIED_METADATA_KEY]
    assert type(record) is list and all(type(s) is str for s in record) and len(record) == 16
    assert record[0] == "layers.1.mlp.0.bias"
    assert all(k.startswith("layers.0.") for k in sd)
    assert sd["layers.0.norm1.weight"] is not None
    assert torch.equal(sd["layers.0.mlp.0.weight"], s4.layers[0].mlp[0].weight)
    assert s4.layers.state_dict()._metadata[""][TIED_METADATA_KEY][0] == "1.mlp.0.bias"
    tying.untie(s4)
    assert TIED_METADATA_KEY not in s4.state_dict()._metadata[""]


def test_same_plan_loads_pass_through_every_route(tmp_path):
    src = _tied(3)
    want = src(X)

    def check(model):
        assert torch.equal(model(X), want)

    m = _tied(3, seed=1)
    m.load_state_dict(src.state_dict())
    check(m)
    m = _tied(3, seed=1)  # a partial load
    sd = src.state_dict()
    assert m.load_state_dict({k: v for k, v in sd.items() if "mlp" not in k}, strict=False)
    m.load_state_dict(sd, strict=False)
    check(m)
    m = _tied(3, seed=1)
    m.load_state_dict(src.state_dict(), assign=True)
    check(m)
    m = _tied(3, seed=1)  # compiled on both sides (no forward: nothing is compiled)
    compiled = torch.compile(src, backend="eager")
    torch.compile(m, backend="eager").load_state_dict(compiled.state_dict())
    check(m)
    m = _tied(3, seed=1)  # a DDP-like wrapper's "module." prefix, and consumed
    wrapped, holder = nn.Module(), nn.Module()
    wrapped.module, holder.module = src, m
    holder.load_state_dict(wrapped.state_dict())
    check(m)
    m = _tied(3, seed=1)
    sd = wrapped.state_dict()
    nn.modules.utils.consume_prefix_in_state_dict_if_present(sd, "module.")
    m.load_state_dict(sd)
    check(m)
    m = _tied(3, seed=1)  # safetensors keeps no metadata
    save_file(src.state_dict(), str(tmp_path / "m.safetensors"))
    m.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    check(m)
    m = _tied(3, seed=1)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    m.load_state_dict(torch.load(buf, weights_only=True))
    check(m)
    m = _tied(3, seed=1)
    tying.load(m, tying.save(src, tmp_path / "t.safetensors"))
    check(m)
    m = _tied(3, seed=1)  # a part, and a part of an outer model
    m.layers.load_state_dict(src.layers.state_dict())
    check(m)
    outer = nn.Sequential(_tied(3, seed=1))
    outer.load_state_dict(nn.Sequential(src).state_dict())
    check(outer[0])


def test_loads_without_the_record_and_strict_false_load_as_before():
    s4, s6 = _tied(2), _tied(3, seed=1)
    untied = Stack(3)  # an untied model's state dict: no record, every key
    for layer in untied.layers[1:]:  # its layers equal, so the tie can hold it
        layer.load_state_dict(untied.layers[0].state_dict())
    sd = untied.state_dict()
    assert TIED_METADATA_KEY not in sd._metadata[""]
    s6.load_state_dict(s4.state_dict(), strict=False)  # torch's "they differ on purpose"
    assert torch.equal(s6.layers[0].mlp[0].weight, s4.layers[0].mlp[0].weight)
    s6.load_state_dict(sd)
    assert torch.equal(s6.layers[2].mlp[0].weight, untied.layers[0].mlp[0].weight)
    outer = nn.Sequential(_tied(2, seed=2))
    outer[0].load_state_dict(s4.state_dict())
    assert torch.equal(outer[0](X), s4(X))


def test_a_plan_apply_failing_after_the_record_takes_its_hooks_back(monkeypatch):
    import tying.core.plan as plan_mod

    torch.manual_seed(0)
    model = Stack(2)

    def fail(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(plan_mod, "_dropped_for_sources", fail)
    with pytest.raises(RuntimeError, match="injected"):
        tying.Plan(ALBERT).apply(model)
    assert not any(m._state_dict_hooks for m in model.modules())
    assert TIED_METADATA_KEY not in model.state_dict()._metadata[""]
