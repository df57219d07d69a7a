"""A frozen nn.LSTM fails under mode='vmap' (aten::lstm.input has no batching rule); the
refusal must not advise freezing it."""

import pytest
import torch
from torch import nn

from tying.train import DPSGD


class _M(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_a_frozen_lstm_is_not_told_to_freeze():
    torch.manual_seed(0)
    m = _M()
    m.rnn.requires_grad_(False)
    dp = DPSGD(
        m,
        torch.optim.SGD(m.head.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        sample_rate=0.1,
        mode="vmap",
    )
    with pytest.raises(ValueError, match=r"rnn \(LSTM\)") as info:
        dp.step(
            lambda o, y: nn.functional.cross_entropy(o, y, reduction="none"),
            torch.randn(6, 7, 4),
            torch.randint(0, 3, (6,)),
        )
    assert "or freeze it" not in str(info.value)
