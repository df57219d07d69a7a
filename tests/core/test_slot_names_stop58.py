"""Deleting a tied slot, or registering something else under its name, is refused by name (stop 58).

Plain assignment over a tied slot was already refused with a TieError. The module's other
ways to change a name reached generic errors naming no tie: ``del head.weight`` raised
``AttributeError: property 'weight' of 'TiedLinear' object has no deleter``, and
``register_parameter`` / ``register_buffer`` / ``add_module`` raised ``KeyError:
"attribute 'weight' already exists"``. On a hand tie each quietly breaks the tie. Now each
is refused before anything changes, naming the tie, and the advice (free the slot, then
do it) works when followed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tying
from tests.core.helpers import sgd_step

RELATIONS = {"Same": None, "Transposed": tying.Transposed, "Scaled": tying.Scaled}

OPS = {
    "del": lambda mod: delattr(mod, "weight"),
    "register_parameter": lambda mod: mod.register_parameter(
        "weight", nn.Parameter(torch.ones(4, 4))
    ),
    "register_buffer": lambda mod: mod.register_buffer("weight", torch.ones(4, 4)),
    "add_module": lambda mod: mod.register_module("weight", nn.ReLU()),
}


def _model(relation):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    kw = {} if relation is None else {"relation": relation()}
    tying.Plan([tying.share("2.weight", like="0.weight", **kw)]).apply(m)
    return m


@pytest.mark.parametrize("rel", RELATIONS)
@pytest.mark.parametrize("op", OPS)
def test_name_change_over_tied_slot_is_refused_and_changes_nothing(op, rel):
    m = _model(RELATIONS[rel])
    x = torch.randn(3, 4)
    before, state = m(x), copy.deepcopy(m.state_dict())
    with pytest.raises(tying.TieError, match=rf"^{op} 2\.weight: it is a tied slot of TiedLinear"):
        OPS[op](m[2])
    assert torch.equal(m(x), before)
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert tying.verify(m) == 1
    sgd_step(m, m(x).pow(2).sum())  # the tie still trains as one
    assert tying.verify(m) == 1


@pytest.mark.parametrize("op", OPS)
def test_the_advice_works_when_followed(op):
    m = _model(None)
    with pytest.raises(tying.TieError, match=r"tying\.Plan\(\[tying\.free\('2\.weight'\)\]\)"):
        OPS[op](m[2])
    tying.Plan([tying.free("2.weight")]).apply(m)
    if op in ("register_buffer", "add_module"):
        with pytest.raises(tying.TieError, match=r"delete the parameter \(del module\.weight\)"):
            OPS[op](_model(None)[2])
        del m[2].weight
    OPS[op](m[2])
    if op == "del":
        assert not hasattr(m[2], "weight")
    elif op == "register_parameter":
        assert torch.equal(dict(m.named_parameters())["2.weight"], torch.ones(4, 4))
    elif op == "register_buffer":
        assert torch.equal(dict(m.named_buffers())["2.weight"], torch.ones(4, 4))
    else:
        assert isinstance(m[2].weight, nn.ReLU)


def test_other_names_and_fresh_instances_are_untouched():
    m = _model(None)
    head = m[2]
    head.register_buffer("running", torch.zeros(2))
    head.register_parameter("extra", nn.Parameter(torch.zeros(1)))
    head.add_module("act", nn.ReLU())
    del head.extra
    assert "2.running" in dict(m.named_buffers()) and "2.extra" not in dict(m.named_parameters())
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        del head.missing
    fresh = type(head)(4, 4)  # a fresh instance of the tied class holds no ties
    del fresh.weight
    assert "weight" not in fresh._parameters
    fresh.register_parameter("weight", nn.Parameter(torch.zeros(4, 4)))
    assert fresh.weight.shape == (4, 4)
    assert tying.verify(m) == 1
