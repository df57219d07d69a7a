"""Small helpers the experiment modules share: config by size, figures, a tiny RNN.

Not an experiment module (``load_all`` skips it).
"""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tying.experiments.registry import check_size

__all__ = ["UnrolledRNN", "by_size", "max_abs_diff", "new_figure", "rngs"]

log = logging.getLogger("tying.experiments")

C = TypeVar("C")


def by_size(configs: dict[str, C], size: str) -> C:
    """Return ``configs[size]`` after checking ``size`` is a valid size.

    Example:
        >>> by_size({"quick": 1, "report": 2}, "report")
        2
    """
    check_size(size)
    return configs[size]


def rngs(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """An explicit torch generator and numpy generator, both from ``seed``.

    Example:
        >>> g, r = rngs(0)
        >>> torch.randn(1, generator=g).shape, r.normal(size=2).shape
        (torch.Size([1]), (2,))
    """
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def new_figure(ncols: int = 1, width: float = 4.6, height: float = 3.4) -> tuple[Figure, list]:
    """A pyplot-free figure with ``ncols`` axes side by side (no global state touched).

    Example:
        >>> fig, axes = new_figure(2)
        >>> len(axes)
        2
    """
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference, as a Python float.

    Example:
        >>> max_abs_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        0.5
    """
    return float((a.detach() - b.detach()).abs().max())


class RNNStep(nn.Module):
    """One time step of an Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.ih = nn.Linear(input_size, hidden_size)
        self.hh = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))  # (B, H)


class UnrolledRNN(nn.Module):
    """An RNN unrolled in time: a feed-forward net with one layer (``steps.t``) per step.

    Untied, every step has its own weights; tied with
    ``tying.share("steps.*", like="steps.0")`` it is the RNN (claims A5, B5).

    Args:
        input_size, hidden_size: as for :class:`torch.nn.RNN`.
        steps: the number of time steps (layers).

    Example:
        >>> net = UnrolledRNN(3, 4, steps=5)
        >>> net(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 5, 4])
    """

    def __init__(self, input_size: int, hidden_size: int, steps: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.steps = nn.ModuleList(RNNStep(input_size, hidden_size) for _ in range(steps))

    def load_rnn(self, rnn: nn.RNN) -> None:
        """Copy a one-layer ``nn.RNN``'s weights into every step."""
        with torch.no_grad():
            for step in self.steps:
                step.ih.weight.copy_(rnn.weight_ih_l0)
                step.ih.bias.copy_(rnn.bias_ih_l0)
                step.hh.weight.copy_(rnn.weight_hh_l0)
                step.hh.bias.copy_(rnn.bias_hh_l0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, I) -> hidden states (B, T, H)
        h = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for t, step in enumerate(self.steps):
            h = step(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, dim=1)
