"""Stop 56: TiedGateLSTM's state in another dtype than the layer.

``nn.LSTM`` refuses an ``h0``/``c0`` of another dtype than its weights. ``TiedGateLSTM``
read ``c0`` through ``sigmoid(f) * c``, which promotes: a float64 ``c0`` into a float32
layer over one step returned a float64 output with no error, a bfloat16 ``c0`` was read
as float32 for any length, and an empty sequence passed either state through. Each is
refused by name now, before any step; under autocast the state is cast as ``nn.LSTM``'s.
"""

from __future__ import annotations

import pytest
import torch

from tying.nn import TiedGateLSTM

_CLASHES = [
    ("c0", torch.float32, torch.float64),
    ("c0", torch.float32, torch.bfloat16),
    ("h0", torch.float64, torch.float32),
]


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize(("name", "h_dtype", "c_dtype"), _CLASHES)
def test_a_state_of_another_dtype_is_refused_as_nn_lstm_does(steps, name, h_dtype, c_dtype):
    torch.manual_seed(0)
    lstm = TiedGateLSTM(3, 4)
    x = torch.randn(2, steps, 3)
    h0, c0 = torch.randn(2, 4, dtype=h_dtype), torch.randn(2, 4, dtype=c_dtype)
    got = c_dtype if name == "c0" else h_dtype
    if steps:  # the anchor (it refuses an empty sequence whatever the state)
        with pytest.raises(RuntimeError):
            lstm.to_lstm()(x, (h0[None], c0[None]))
    with pytest.raises(
        TypeError,
        match=rf"TiedGateLSTM: the input {name} is {got} but the layer's parameters are "
        rf"torch\.float32; pass {name}\.to\(torch\.float32\)",
    ):
        lstm(x, (h0, c0))


def test_a_state_in_the_layer_dtype_matches_nn_lstm_in_float64_and_under_autocast():
    torch.manual_seed(0)
    lstm = TiedGateLSTM(3, 4).double()
    x, h0, c0 = (torch.randn(*s, dtype=torch.float64) for s in ((2, 5, 3), (2, 4), (2, 4)))
    out, (h, c) = lstm(x, (h0, c0))
    want, (wh, wc) = lstm.to_lstm()(x, (h0[None], c0[None]))
    assert out.dtype == torch.float64
    for a, b in ((out, want), (h, wh[0]), (c, wc[0])):
        assert torch.allclose(a, b, atol=1e-12)
    single = TiedGateLSTM(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts a float32 state
        low, _ = single(x.float(), (h0.float(), c0.float()))
    full, _ = single(x.float(), (h0.float(), c0.float()))
    assert torch.allclose(low.float(), full, atol=3e-2)
