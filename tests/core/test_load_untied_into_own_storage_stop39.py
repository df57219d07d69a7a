"""An untied model's state dict loads into a self re-parametrised tie it fits (stop 39).

``SymmetricConv1d`` stores half its kernel (``Mirrored``): a plain ``nn.Conv1d``'s state
dict with a palindromic kernel was refused ("holds a different value"), because the entry
was compared with the tie's current value, the storage not being in the load. An entry
the relation gives back exactly is now loaded into the storage; one it cannot hold is
still refused, with nothing loaded.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
import tying.nn as tnn


def _palindromic_conv(c_in: int, c_out: int, k: int, seed: int) -> nn.Conv1d:
    torch.manual_seed(seed)
    conv = nn.Conv1d(c_in, c_out, k)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv


def test_a_palindromic_anchor_loads_into_symmetric_conv_and_trains_tied():
    anchor = _palindromic_conv(2, 3, 5, seed=0)
    torch.manual_seed(1)
    layer = tnn.SymmetricConv1d(2, 3, 5)
    layer.load_state_dict(anchor.state_dict())  # strict: no missing weight_physical
    x = torch.randn(4, 2, 11)
    assert torch.equal(layer(x), anchor(x))
    layer(x).square().sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    assert torch.equal(layer.weight, layer.weight.flip(-1))  # still one symmetric kernel
    assert tying.verify(layer) >= 1


def test_an_anchor_the_tie_cannot_hold_is_refused_and_nothing_loads():
    torch.manual_seed(0)
    anchor = nn.Conv1d(2, 3, 5)  # not palindromic
    layer = tnn.SymmetricConv1d(2, 3, 5)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"weight is tied \(to its own storage via Mirrored"):
        layer.load_state_dict(anchor.state_dict())
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    k=st.integers(1, 8),
    c=st.integers(1, 3),
    seed=st.integers(0, 1000),
    break_it=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_property_an_untied_state_loads_exactly_when_the_tie_can_hold_it(
    k, c, seed, break_it, dtype
):
    anchor = _palindromic_conv(c, 2, k, seed).to(dtype)
    if break_it and k > 1:
        with torch.no_grad():
            anchor.weight[..., 0] += 1.0  # first and last taps now differ
    layer = tnn.SymmetricConv1d(c, 2, k).to(dtype)
    holds = torch.equal(anchor.weight, anchor.weight.flip(-1))
    if not holds:
        with pytest.raises(RuntimeError, match="holds a different value"):
            layer.load_state_dict(anchor.state_dict())
        return
    layer.load_state_dict(anchor.state_dict())
    assert torch.equal(layer.weight, anchor.weight) and torch.equal(layer.bias, anchor.bias)
