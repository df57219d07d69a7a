"""Stop 39: TiedGateLSTM and the inputs nn.LSTM takes.

A ``PackedSequence`` (nn.LSTM's variable-length input) died on "'PackedSequence' object
has no attribute 'ndim'"; it is refused by name with the padded-batch route, and that
route reproduces ``nn.LSTM`` on the packed batch (the anchor).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tying.nn import TiedGateLSTM


def _anchor(layer: TiedGateLSTM) -> nn.LSTM:
    ref = nn.LSTM(layer.input_size, layer.hidden_size, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.cat([getattr(layer, f"weight_ih_{g}") for g in "ifgo"]))
        ref.weight_hh_l0.copy_(layer.weight_hh)
        ref.bias_ih_l0.copy_(layer.bias)
        ref.bias_hh_l0.zero_()
    return ref


def test_packed_sequence_is_refused_naming_the_padded_route():
    lstm = TiedGateLSTM(3, 4)
    packed = pack_padded_sequence(torch.randn(2, 5, 3), [5, 2], batch_first=True)
    with pytest.raises(
        TypeError,
        match=r"TiedGateLSTM: input must be a tensor.*PackedSequence.*pad_packed_sequence",
    ):
        lstm(packed)
    with pytest.raises(TypeError, match=r"TiedGateLSTM: input must be a tensor.*got list"):
        lstm([[0.0, 1.0, 2.0]])


@settings(derandomize=True, deadline=None, max_examples=10)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 999))
def test_padded_route_matches_nn_lstm_on_the_packed_batch(lengths, seed):
    torch.manual_seed(seed)
    lstm = TiedGateLSTM(3, 4).double()
    ref = _anchor(lstm)
    x = torch.randn(len(lengths), max(lengths), 3, dtype=torch.float64)
    out, _ = lstm(x)
    _, (h_ref, _) = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    last = torch.stack([out[i, n - 1] for i, n in enumerate(lengths)])
    assert torch.allclose(last, h_ref[0], atol=1e-12)
