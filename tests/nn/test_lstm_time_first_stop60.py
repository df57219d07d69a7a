"""``TiedGateLSTM(batch_first=False)`` returns a contiguous ``(T, B, H)``, as ``nn.LSTM`` (stop 60).

It returned a transposed view of a ``(B, T, H)`` stack: ``out.view(-1, H)``, which works
on ``nn.LSTM``'s time-first output, raised torch's "view size is not compatible".
"""

import pytest
import torch
from torch import nn

from tying.nn import TiedGateLSTM


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("t", [0, 1, 5])
def test_output_is_contiguous_and_equals_nn_lstm(batch_first, t):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, batch_first=batch_first).double()
    layer = TiedGateLSTM.from_lstm(ref, tie_gates=False)
    x = torch.randn((2, t, 3) if batch_first else (t, 2, 3), dtype=torch.float64)
    out, (h, c) = layer(x)
    want = ref(x)[0] if t else x.new_zeros((2, 0, 4) if batch_first else (0, 2, 4))
    assert out.shape == want.shape and out.is_contiguous()
    torch.testing.assert_close(out.view(-1, 4), want.reshape(-1, 4))


def test_time_first_unbatched_and_gradients():
    torch.manual_seed(1)
    layer = TiedGateLSTM(3, 4, batch_first=False)
    x = torch.randn(6, 3, requires_grad=True)  # one unbatched sequence (T, in)
    out, _ = layer(x)
    assert out.shape == (6, 4) and out.is_contiguous()
    batched = TiedGateLSTM(3, 4)
    batched.load_state_dict(layer.state_dict())
    torch.testing.assert_close(out, batched(x.unsqueeze(0))[0][0])
    out.sum().backward()
    assert x.grad is not None and layer.weight_ih_f.grad is not None
