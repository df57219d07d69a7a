"""A toy ALBERT-style stack shared by the stop-58 peft and quantization tests."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """One residual block with two Linear layers, ``q`` and ``o``."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.o = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return x + self.o(torch.tanh(self.q(x)))


class StackNet(nn.Module):
    """Three blocks (to be tied whole by a plan) and an untied head of ``head_out`` outputs."""

    def __init__(self, head_out: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Linear(8, head_out)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
