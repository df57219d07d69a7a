"""A module tied whole must not become its source's quantized module when their settings differ.

Before (stop 42): ``quantize_dynamic`` seated the source's quantized module at the
tied path whenever every parameter was tied with ``Same``. An ``nn.LSTM(batch_first=True)``
tied whole to an ``nn.LSTM(batch_first=False)`` came back reading its input with
``batch_first=False``: with a square (time == batch) input, outputs 0.22 (LSTM) and 0.51 (GRU) away from
plain torch on the untied copy, no error. Now refused, naming the setting and both values.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.interop.quantization import quantize_dynamic


class _Two(nn.Module):
    def __init__(self, cls: type, first_a: bool, first_b: bool, d: int = 4):
        super().__init__()
        self.a = cls(d, d, batch_first=first_a)
        self.b = cls(d, d, batch_first=first_b)

    def forward(self, x):  # (T, B, d) with T == B: either layout reads without a shape error
        return self.a(x)[0] + self.b(x)[0]


def _pair(cls: type, first_a: bool, first_b: bool, seed: int = 0):
    """The tied model, and plain torch's reference: an untied copy with b's weights = a's."""
    torch.manual_seed(seed)
    tied = _Two(cls, first_a, first_b).eval()
    untied = copy.deepcopy(tied)
    untied.b.load_state_dict(untied.a.state_dict())
    tying.Plan([tying.share("b", like="a")]).apply(tied)
    return tied, untied


def _torch_quantized(untied: nn.Module, cls: type) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(untied, {cls})


def test_an_lstm_tied_whole_with_another_batch_first_is_refused_before_any_change():
    tied, untied = _pair(nn.LSTM, False, True)
    x = torch.randn(5, 5, 4, generator=torch.Generator().manual_seed(1))
    before = tied(x).detach()
    with pytest.raises(
        tying.TieError,
        match=r"'b' is tied whole to 'a'.*settings differ \(batch_first: True vs False;"
        r".*tying\.free\('b'\)",
    ):
        quantize_dynamic(tied, {nn.LSTM}, inplace=True)
    assert type(tied.a) is nn.LSTM and tied.b is not tied.a and torch.equal(tied(x), before)
    # the way out the message names: untie, then each LSTM is quantized with its own settings
    tying.Plan([tying.free("b")]).apply(tied)
    ours = quantize_dynamic(tied, {nn.LSTM})
    assert torch.equal(ours(x), _torch_quantized(untied, nn.LSTM)(x))


@settings(derandomize=True, deadline=None, max_examples=8)
@given(
    cls=st.sampled_from([nn.LSTM, nn.GRU]),
    first_a=st.booleans(),
    first_b=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_whole_tie_quantizes_as_torch_quantizes_the_untied_copy_or_is_refused(
    cls, first_a, first_b, seed
):
    # the kind of defect: one shared quantized module serving a use whose own settings
    # differ from the source's (anchor: torch.ao on the untied copy)
    tied, untied = _pair(cls, first_a, first_b, seed)
    x = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(seed))
    if first_a != first_b:
        with pytest.raises(tying.TieError, match=r"settings differ \(batch_first"):
            quantize_dynamic(tied, {cls})
        return
    ours = quantize_dynamic(tied, {cls})
    assert ours.b is ours.a  # one quantized module, every use
    assert torch.equal(ours(x), _torch_quantized(untied, cls)(x))
