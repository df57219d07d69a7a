"""An empty sequence passes the state through as copies, not as the caller's tensors."""

import pytest
import torch

from tying.nn import TiedGateLSTM


@pytest.mark.parametrize("batch_first", [True, False])
def test_an_empty_sequence_returns_copies_of_the_state(batch_first):
    lstm = TiedGateLSTM(3, 4, batch_first=batch_first)
    x = torch.zeros((2, 0, 3) if batch_first else (0, 2, 3))
    h0 = torch.randn(2, 4, requires_grad=True)
    c0 = torch.randn(2, 4)
    out, (h, c) = lstm(x, (h0, c0))
    assert out.shape == ((2, 0, 4) if batch_first else (0, 2, 4))
    assert torch.equal(h, h0) and torch.equal(c, c0)
    keep = c0.clone()
    c.zero_()  # an in-place edit of the result leaves the caller's state alone
    assert torch.equal(c0, keep)
    h.sum().backward()  # and the gradient still reaches h0
    assert torch.equal(h0.grad, torch.ones(2, 4))
