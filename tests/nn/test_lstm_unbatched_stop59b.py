"""TiedGateLSTM takes one unbatched sequence (T, input_size), as nn.LSTM does (stop 59b).

It was refused as "expected input of shape (batch, seq, 3)"; nn.LSTM reads a 2-D input
as one sequence whatever batch_first, with a state of (1, H) per tensor (here (H,)).
"""

import pytest
import torch

from tying.nn import TiedGateLSTM


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("tie_gates", [True, False])
def test_unbatched_equals_nn_lstm(batch_first, tie_gates):
    torch.manual_seed(0)
    layer = TiedGateLSTM(3, 4, tie_gates=tie_gates, batch_first=batch_first).double()
    ref = layer.to_lstm()
    x = torch.randn(5, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 4, dtype=torch.float64)
    out, (h, c) = layer(x, (h0, c0))
    want, (hr, cr) = ref(x, (h0[None], c0[None]))
    assert out.shape == (5, 4) and h.shape == c.shape == (4,)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(h, hr[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(c, cr[0], atol=1e-12, rtol=0)
    # the same as the batch of one it is
    batched, _ = layer(x.unsqueeze(0 if batch_first else 1))
    torch.testing.assert_close(layer(x)[0], batched.squeeze(0 if batch_first else 1))


def test_unbatched_empty_sequence_returns_copies():
    layer = TiedGateLSTM(3, 4)
    h0, c0 = torch.randn(2, 4)
    out, (h, c) = layer(torch.zeros(0, 3), (h0, c0))
    assert out.shape == (0, 4) and torch.equal(h, h0) and h is not h0


def test_unbatched_state_of_nn_lstm_shape_refused_with_working_advice():
    layer = TiedGateLSTM(3, 4)
    x = torch.randn(5, 3)
    h0, c0 = torch.randn(1, 4), torch.randn(1, 4)  # nn.LSTM's unbatched state
    with pytest.raises(ValueError, match=r"shape \(4,\) each .* got \(1, 4\), \(1, 4\); pass "):
        layer(x, (h0, c0))
    out, _ = layer(x, (h0[0], c0[0]))  # the advice
    torch.testing.assert_close(out, layer.to_lstm()(x, (h0, c0))[0], atol=1e-6, rtol=0)
    with pytest.raises(
        ValueError, match=r"expected input of shape \(batch, seq, 3\), got \(5, 2\)"
    ):
        layer(torch.randn(5, 2))
