"""Helpers the spatial experiments share: sizes, seeded model init, figures, training.

Private (``load_all`` skips modules starting with ``_``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tying.experiments.common import by_size, largest, new_figure, rngs, smallest

__all__ = [
    "by_size",
    "largest",
    "n_params",
    "new_figure",
    "rngs",
    "seeded",
    "smallest",
    "train",
]

log = logging.getLogger("tying.experiments")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Module constructors draw from torch's global RNG: seed it here, restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
