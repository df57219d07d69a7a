"""tying.reset_relations: a Scaled tie's scale after meta + to_empty (stop 40).

``to_empty`` leaves every tensor uninitialised; ``reset_parameters()`` of a tied module is
refused (it would write into a computed slot), so a ``Scaled`` tie's scale kept whatever
memory ``to_empty`` handed out and the forward read it with no error. ``reset_relations``
sets it to ``Scaled(init=...)``; the anchor is the same model built on the CPU directly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying import TieError


def _tied(device: str, init: float, dtype=torch.float32) -> nn.Sequential:
    with torch.device(device):
        net = nn.Sequential(nn.Linear(3, 3, dtype=dtype), nn.Linear(3, 3, dtype=dtype))
    rule = tying.share("1.weight", like="0.weight", relation=tying.Scaled(init=init))
    tying.Plan([rule]).apply(net)
    return net


def test_the_scale_after_to_empty_is_set_to_the_declared_init_and_nothing_else_moves():
    net = _tied("meta", 2.5).to_empty(device="cpu")
    with torch.no_grad():
        net[1].weight_scale.fill_(float("nan"))  # what to_empty may leave there
    torch.manual_seed(0)
    net[0].reset_parameters()
    nn.init.zeros_(net[1].bias)
    before = {k: v.clone() for k, v in net.state_dict().items() if k != "1.weight_scale"}
    assert tying.reset_relations(net) == ["1.weight_scale"]
    assert net[1].weight_scale.item() == 2.5
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v), k
    torch.testing.assert_close(net[1].weight, 2.5 * net[0].weight, rtol=0, atol=0)
    # the anchor: the same tie made on the CPU, with the same source and bias
    anchor = _tied("cpu", 2.5)
    anchor.load_state_dict(net.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(anchor(x), net(x))


def test_a_relation_still_on_meta_is_refused_and_nothing_is_written():
    net = _tied("meta", 2.0)
    with pytest.raises(TieError, match=r"1\.weight_scale is on the meta device.*to_empty"):
        tying.reset_relations(net)


def test_relations_without_parameters_have_nothing_to_reset():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(net)
    w = net[0].weight.detach().clone()
    assert tying.reset_relations(net) == []
    assert torch.equal(net[0].weight, w)
    with pytest.raises(TypeError, match="expected an nn.Module"):
        tying.reset_relations(net.state_dict())


@settings(derandomize=True, deadline=None, max_examples=15)
@given(
    st.floats(-8, 8, allow_nan=False).filter(lambda v: abs(v) > 1e-3),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_property_reset_gives_the_scale_a_fresh_cpu_tie_starts_with(init, dtype, garbage):
    net = _tied("meta", init, dtype).to_empty(device="cpu")
    with torch.no_grad():
        net[1].weight_scale.fill_(garbage)
    tying.reset_relations(net)
    fresh = _tied("cpu", init, dtype)
    assert torch.equal(net[1].weight_scale, fresh[1].weight_scale)
    assert net[1].weight_scale.dtype == dtype
