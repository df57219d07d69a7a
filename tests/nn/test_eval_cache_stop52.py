"""Stop 52: ``filter_bank()`` / ``bias_bank()`` of a group conv in eval mode without
autograd returned the layer's kept (cached) tensor itself, so an in-place edit of what
they returned (``bank.clamp_(...)`` to inspect a quantised bank, ``bias.zero_()``) changed
every later output of the layer with no error: a C4 ``GroupConv2d`` read 102 off after
``filter_bank().mul_(0)``. They now return a copy in that mode; the forward keeps its
cache. The anchor is a layer that never ran, given the same parameters.
"""

from __future__ import annotations

import pytest
import torch

from tying.nn import GroupConv2d, LiftingConv2d

F64 = torch.float64


def _pair(cls, tied, seed=0):
    torch.manual_seed(seed)
    layer = cls(2, 3, 3, group="C4", tied=tied).double().eval()
    fresh = cls(2, 3, 3, group="C4", tied=tied).double().eval()
    fresh.load_state_dict(layer.state_dict())
    shape = (2, 2, 7, 7) if cls is LiftingConv2d else (2, 2, 4, 7, 7)
    return layer, fresh, torch.randn(*shape, dtype=F64)


@pytest.mark.parametrize("cls", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("tied", [True, False])
def test_editing_a_returned_bank_in_place_leaves_the_layer_unchanged(cls, tied):
    layer, fresh, x = _pair(cls, tied)
    with torch.no_grad():
        layer(x)  # fills the eval cache
        layer.filter_bank().mul_(0.0)
        layer.bias_bank().add_(100.0)
        torch.testing.assert_close(layer(x), fresh(x), rtol=0, atol=0)
        torch.testing.assert_close(layer.filter_bank(), fresh.filter_bank(), rtol=0, atol=0)
        torch.testing.assert_close(layer.bias_bank(), fresh.bias_bank(), rtol=0, atol=0)
        # a train/eval round trip and an in-place parameter edit still reach the output
        layer.train().eval()
        next(layer.parameters()).mul_(-2.0)
        fresh.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer(x), fresh(x), rtol=0, atol=0)


def test_the_forward_still_serves_its_cache_in_eval_mode():
    layer, _, x = _pair(GroupConv2d, True)
    with torch.no_grad():
        layer(x)
        assert layer._filter_bank() is layer._filter_bank()  # the kept bank, one build
        assert layer.filter_bank() is not layer._filter_bank()  # the caller's copy
    bank = layer.filter_bank()  # under autograd: the graph to the physical kernel
    assert bank.requires_grad
