"""Stop 59: a weight-tied stack's depth travels with its state dict; both load routes agree.

A weight-tied ``Stack`` or ``TiedResidualNet`` stores one layer at any depth, so a depth-4
state dict loaded into a depth-6 model through ``load_state_dict`` with no error (the
saved layer applied 6 times instead of 4: another function), while ``tying.load`` refused
the same file. Both refuse now, naming the plain-dict route for a deliberate change.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tying
from tying.nn import Stack, TiedResidualNet, share_layers


def _stack(depth: int, tied: bool = True) -> Stack:
    stack = Stack(torch.nn.Linear(4, 4) for _ in range(depth))
    if tied:
        share_layers(stack)
    return stack


def _depth(n: int, **kw):
    return _stack(n, **kw) if kw.pop("kind", "stack") == "stack" else TiedResidualNet(2, 3, n)


@pytest.mark.parametrize("kind", ["stack", "net"])
@pytest.mark.parametrize(("saved", "built"), [(4, 6), (6, 4)])
def test_load_state_dict_refuses_another_depth_as_tying_load_does(kind, saved, built, tmp_path):
    torch.manual_seed(0)
    src, dst = _depth(saved, kind=kind), _depth(built, kind=kind)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=rf"depth {saved} \(this one: depth {built}\).*dict\("):
        dst.load_state_dict(src.state_dict())
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    path = tmp_path / "m.safetensors"
    tying.save(src, path)
    with pytest.raises(tying.TieError):  # as before: the two routes agree
        tying.load(dst, path)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


@pytest.mark.parametrize("kind", ["stack", "net"])
def test_the_advised_plain_dict_loads_at_another_depth(kind, tmp_path):
    torch.manual_seed(0)
    src = _depth(4, kind=kind)
    x = torch.randn(3, 4 if kind == "stack" else 2)
    for route in ("dict", "file"):
        dst = _depth(6, kind=kind)
        if route == "dict":
            dst.load_state_dict(dict(src.state_dict()))
        else:
            tying.save(src, tmp_path / "m.safetensors")
            dst.load_state_dict(load_file(tmp_path / "m.safetensors"))
        tying.verify(dst)
        if kind == "stack":
            want = x
            for _ in range(6):
                want = src.layers[0](want)
            torch.testing.assert_close(dst(x), want)
        else:
            torch.testing.assert_close(dst.field.inner.weight, src.field.inner.weight)


def test_loads_that_were_right_still_load():
    torch.manual_seed(0)
    src = _stack(4)
    same = _stack(4)
    same.load_state_dict(src.state_dict())  # same depth
    x = torch.randn(2, 4)
    assert torch.equal(same(x), src(x))
    # untied stacks of another depth: torch's key check, and partial loads, as before
    u4, u6 = _stack(4, tied=False), _stack(6, tied=False)
    assert len(u6.load_state_dict(u4.state_dict(), strict=False).missing_keys) == 4
    assert len(u4.load_state_dict(u6.state_dict(), strict=False).unexpected_keys) == 4
    with pytest.raises(RuntimeError, match="Missing key"):
        u6.load_state_dict(u4.state_dict())
    # a model holding a stack loads its other modules alone at any depth
    model = torch.nn.ModuleDict({"enc": _stack(4), "head": torch.nn.Linear(4, 2)})
    other = torch.nn.ModuleDict({"enc": _stack(6), "head": torch.nn.Linear(4, 2)})
    head = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    assert other.load_state_dict(head, strict=False).unexpected_keys == []
    assert torch.equal(other.head.weight, model.head.weight)
    # t1 is a use: a net of another t1 and the same depth loads
    net = TiedResidualNet(2, 3, 4, t1=2.0)
    net.load_state_dict(TiedResidualNet(2, 3, 4).state_dict())
