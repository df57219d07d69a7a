"""Helpers the spatial experiments share: sizes, seeded model init, figures, training.

Private (``load_all`` skips modules starting with ``_``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tying.experiments.registry import check_size

log = logging.getLogger("tying.experiments")

C = TypeVar("C")


def by_size(configs: dict[str, C], size: str) -> C:
    """``configs[size]`` after checking ``size``.

    Example:
        >>> by_size({"quick": 1, "report": 2}, "quick")
        1
    """
    check_size(size)
    return configs[size]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Module constructors draw from torch's global RNG: seed it here, restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generators(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """An explicit torch and numpy generator from ``seed``."""
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.3):
    """A pyplot-free figure and a flat list of its axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def n_params(model: nn.Module) -> int:
    """Stored (physical) parameter entries: each tensor once."""
    return sum(p.numel() for p in model.parameters())


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    n: int,
    *,
    steps: int,
    batch: int,
    lr: float,
    gen: torch.Generator,
) -> list[float]:
    """Adam on minibatches of indices ``0..n-1`` drawn from ``gen``; returns the losses.

    ``loss_fn(model, idx)`` computes the loss on the examples ``idx``.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:batch] if batch < n else torch.arange(n)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, idx)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
