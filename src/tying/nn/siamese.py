"""Siamese towers: one set of parameters maps both inputs into one space.

Claim B7 (``siamese``): to decide whether two signatures were written by the same
person, map both through *the same* function into one representation and compare
distances there. Two towers whose parameters are tied give exactly that: the
distance is symmetric, ``d(x, x) = 0``, and the gradients from both inputs sum
into the one shared tensor.

:class:`Siamese` holds a ``left`` tower and a ``right`` copy; with ``tied=True`` a
:class:`tying.Plan` ties every parameter of ``right`` to ``left`` (``Same``), so
``tying.count`` shows two logical towers on one physical tower. ``tied=False``
re-initialises the right tower for the untied ("pseudo-Siamese") baseline.

Example:
    >>> import torch, tying
    >>> net = Siamese(torch.nn.Linear(5, 3))
    >>> a, b = torch.randn(4, 5), torch.randn(4, 5)
    >>> torch.equal(net.distance(a, b), net.distance(b, a)), float(net.distance(a, a).detach().max())
    (True, 0.0)
    >>> c = tying.count(net); (c.logical, c.physical)
    (36, 18)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tying.core import Plan, share

__all__ = ["Siamese", "contrastive_loss"]


class Siamese(nn.Module):
    """Two towers, tied by default: ``(a, b) → (tower(a), tower(b))`` (claim B7).

    Args:
        tower: the embedding network; it is used as the left tower and deep-copied
            for the right one.
        tied: tie the right tower to the left (one physical tower). False re-draws
            the right tower's parameters with each submodule's ``reset_parameters``.

    Raises:
        TypeError: when ``tower`` is not an ``nn.Module``.
        ValueError: when the two inputs have different batch sizes.

    Example:
        >>> net = Siamese(torch.nn.Linear(5, 3), tied=False)
        >>> za, zb = net(torch.randn(2, 5), torch.randn(2, 5))
        >>> za.shape, zb.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(self, tower: nn.Module, *, tied: bool = True) -> None:
        super().__init__()
        if not isinstance(tower, nn.Module):
            raise TypeError(f"Siamese(tower=...) needs an nn.Module, got {type(tower).__name__}")
        self.tied = bool(tied)
        self.left = tower
        self.right = copy.deepcopy(tower)
        if self.tied:
            Plan([share("right", like="left")]).apply(self)
        else:
            for module in self.right.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()

    def embed(self, x: torch.Tensor, side: str = "left") -> torch.Tensor:
        """Embed ``x`` with one tower (``"left"`` or ``"right"``)."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return (self.left if side == "left" else self.right)(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape[:1] != b.shape[:1]:
            raise ValueError(
                f"Siamese needs the same batch size on both inputs, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )
        return self.left(a), self.right(b)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between the embeddings, one per pair: ``(B,)``."""
        za, zb = self(a, b)
        return (za - zb).flatten(1).norm(dim=1)

    def extra_repr(self) -> str:
        return f"tied={self.tied}"


def contrastive_loss(
    za: torch.Tensor, zb: torch.Tensor, same: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), averaged over pairs.

    ``same·d² + (1 − same)·max(0, margin − d)²`` with ``d = ‖za − zb‖``: pull
    matching pairs together, push others at least ``margin`` apart.

    Args:
        za, zb: embeddings ``(B, …)`` of the two inputs of each pair.
        same: ``(B,)`` with 1 for a matching pair and 0 otherwise.
        margin: how far apart non-matching pairs must be pushed (> 0).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: on mismatched shapes, a non-positive margin, or labels not in {0, 1}.

    Example:
        >>> za = torch.tensor([[0.0, 0.0], [0.0, 0.0]]); zb = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> contrastive_loss(za, zb, torch.tensor([1.0, 0.0]), margin=1.0)
        tensor(12.6250)
    """
    if za.shape != zb.shape:
        raise ValueError(
            f"contrastive_loss: za and zb must have one shape, got {tuple(za.shape)} and "
            f"{tuple(zb.shape)}"
        )
    if same.shape != za.shape[:1]:
        raise ValueError(
            f"contrastive_loss: same must be ({za.shape[0]},), one label per pair, got "
            f"{tuple(same.shape)}"
        )
    if not margin > 0:
        raise ValueError(f"contrastive_loss: margin must be > 0, got {margin!r}")
    if not torch.compiler.is_compiling() and not bool(((same == 0) | (same == 1)).all()):
        raise ValueError("contrastive_loss: same must hold 0 (different) or 1 (same) labels")
    same = same.to(za.dtype)
    d = (za - zb).flatten(1).norm(dim=1)  # (B,)
    loss = same * d.square() + (1 - same) * (margin - d).clamp_min(0).square()
    return loss.mean()
