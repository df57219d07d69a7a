"""Group convs built on the meta device: deferred init, ``to_empty`` and ``assign=True`` loads.

Stop 23's check: a tied layer made under ``with torch.device("meta")`` raised in its
constructor (the gather index's ramp was a meta tensor), and one made with
``device="meta"`` and then loaded with ``load_state_dict(..., assign=True)`` raised in
its first forward (its gather index stayed on the meta device).
"""

from __future__ import annotations

import pytest
import torch

import tying
from tying.nn import GroupConv2d, LiftingConv2d, group_act

LAYERS = [LiftingConv2d, GroupConv2d]


def _input(layer_cls, n, dtype=torch.float32):
    if layer_cls is LiftingConv2d:
        return torch.randn(2, 3, 9, 9, dtype=dtype)
    return torch.randn(2, 3, n, 9, 9, dtype=dtype)


def _meta_layer(layer_cls, group, tied, how):
    if how == "device":
        return layer_cls(3, 5, 3, group=group, tied=tied, device="meta")
    with torch.device("meta"):
        return layer_cls(3, 5, 3, group=group, tied=tied)


def _step(layer, x):
    """Output and every parameter's gradient of one training step."""
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.square().sum().backward()
    return y.detach(), {k: p.grad.clone() for k, p in layer.named_parameters()}


def _assert_same_step(layer, ref, x):
    y, grads = _step(layer, x)
    y_ref, grads_ref = _step(ref, x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("how", ["device", "context"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_a_meta_layer_runs_on_meta_tensors_in_train_and_eval(layer_cls, group, tied, how):
    layer = _meta_layer(layer_cls, group, tied, how)
    ref = layer_cls(3, 5, 3, group=group, tied=tied)
    x = _input(layer_cls, len(ref.elements))
    y = layer(x.to("meta"))
    assert y.is_meta and y.shape == ref(x).shape
    layer.eval()
    with torch.no_grad():
        assert layer(x.to("meta")).shape == y.shape
    if tied:
        c, c_ref = tying.count(layer), tying.count(ref)
        assert (c.logical, c.physical) == (c_ref.logical, c_ref.physical)


@pytest.mark.parametrize("how", ["device", "context"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_to_empty_then_init_or_load_computes_what_a_cpu_layer_does(layer_cls, group, tied, how):
    torch.manual_seed(0)
    ref = layer_cls(3, 5, 3, group=group, tied=tied)
    layer = _meta_layer(layer_cls, group, tied, how).to_empty(device="cpu")
    layer.reset_parameters()
    if tied:
        tying.verify(layer)
        # after init every slot reads its physical block: the bank is the slots' bank
        torch.testing.assert_close(layer.filter_bank(), layer._slot_bank(), rtol=0, atol=0)
    layer.load_state_dict(ref.state_dict())
    _assert_same_step(layer, ref, _input(layer_cls, len(ref.elements)))


@pytest.mark.parametrize("how", ["device", "context"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_assign_load_into_a_meta_layer_computes_what_the_source_does(layer_cls, group, tied, how):
    torch.manual_seed(0)
    ref = layer_cls(3, 5, 3, group=group, tied=tied, dtype=torch.float64)
    layer = _meta_layer(layer_cls, group, tied, how)
    layer.load_state_dict(ref.state_dict(), assign=True)
    if tied:
        tying.verify(layer)
    x = _input(layer_cls, len(ref.elements), torch.float64)
    for _ in range(2):  # the first call re-makes the meta index, the second takes the lean path
        _assert_same_step(layer, ref, x)
    if tied:
        assert layer._bank_flat_index.device.type == "cpu"
        assert layer._bias_index.device.type == "cpu"
    layer.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
    if tied and layer_cls is GroupConv2d:  # the tie, not just the values, came through
        for a in layer.elements:
            torch.testing.assert_close(
                layer(group_act(x, a, group)), group_act(layer(x), a, group), rtol=1e-12, atol=1e-12
            )


def test_a_layer_whose_own_parameters_are_meta_runs_a_functional_call_on_cpu_parameters():
    # the layer's index stays meta (its own parameters are meta): values come from the CPU
    torch.manual_seed(0)
    ref = GroupConv2d(3, 5, 3, group="D4")
    layer = GroupConv2d(3, 5, 3, group="D4", device="meta")
    x = _input(GroupConv2d, 8)
    params = dict(ref.named_parameters())
    y = torch.func.functional_call(layer, params, (x,))
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
