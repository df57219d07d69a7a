"""Soft IoU and soft Dice: differentiable stand-ins for the intersection over union.

Claim D1 (``soft-iou-dice``): IoU compares hard masks, so it has no gradient.
Replace the hard prediction by probabilities ``p`` and the set operations by sums:

- soft IoU (Jaccard): ``J = Σ p·t / Σ (p + t − p·t)``
- soft Dice: ``D = 2 Σ p·t / Σ (p + t)``

Both are 1 for a perfect prediction; the losses are ``1 − J`` and ``1 − D``. They
are one function of each other, ``J = D / (2 − D)``, so their gradients are
parallel but scaled differently: ``∂J/∂p = 2/(2 − D)² · ∂D/∂p``. The factor runs
from ½ (poor overlap) to 2 (good overlap), and overlap is poorest for small
objects: that is where the two losses train differently. Both normalise by the
object's size, so a small object weighs as much as a large one (unlike per-pixel
cross-entropy).

Sums run over every non-batch dim, one score per sample, then ``reduction``.

Example:
    >>> import torch
    >>> t = torch.zeros(1, 1, 4, 4); t[..., :2, :2] = 1
    >>> p = t * 0.5
    >>> round(float(soft_iou(p, t)), 4), round(float(soft_dice(p, t)), 4)
    (0.5, 0.6667)
    >>> SoftDiceLoss()(t, t).item()
    0.0
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from tying.nn._args import assert_in_graph, in_graph, is_bool

__all__ = ["SoftDiceLoss", "SoftIoULoss", "soft_dice", "soft_iou"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_unit_range(what: str, x: torch.Tensor, fix: str) -> torch.Tensor:
    """Refuse values outside [0, 1]: logits passed without ``from_logits=True`` gave a
    score above 1 or below 0 (a loss below 0), with no error. Returns ``x``.

    Inside ``torch.compile`` and ``torch.jit.trace`` the check is an assert in the graph
    (a Python ``if`` ran once, at recording time, or not at all: a compiled Dice loss took
    logits and returned 2.25, stop 52); skipped inside ``torch.func`` transforms, where
    no assert may read a value (the same call outside them is checked).
    """
    if x.numel() == 0:
        return x
    if in_graph():
        lo, hi = torch.aminmax(x.detach())
        ok = (lo >= 0) & (hi <= 1)  # NaN fails too
        return assert_in_graph(ok, f"the {what} must hold values in [0, 1]; {fix}", x)
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return x
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
        raise ValueError(
            f"the {what} must hold values in [0, 1], got min {lo:.4g}, max {hi:.4g}; {fix}"
        )
    return x


def _prepare(pred, target, from_logits, eps, reduction):
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and target must have one shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(
            f"expected (B, …) with a batch dim and at least one more, got shape {tuple(pred.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if is_bool(eps) or not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if not isinstance(from_logits, bool):  # "no" is truthy: a sigmoid nobody asked for
        raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
    for what, x in (("prediction", pred), ("target", target)):
        if x.is_complex():
            # complex logits came back as a complex score (0.38+0.05j) with no error, and a
            # complex probability or target died in aminmax (stop 40): a mask is real
            raise TypeError(
                f"the {what} must be real (probabilities, logits or a mask), got {x.dtype}; "
                f"pass its real part or magnitude (x.real, x.abs())"
            )
    if pred.dtype == torch.bool or not pred.is_floating_point():
        # a hard bool mask made p * t a logical and and p + t a logical or: Dice read
        # 2 Σ(p∧t) / Σ(p∨t), 2.0 for a perfect prediction, with no error (stop 33). 0/1
        # ints and bools are exact in floating point, so score them as the floats they are
        pred = pred.to(torch.get_default_dtype())
    if not from_logits:
        pred = _check_unit_range(
            "prediction", pred, "pass probabilities, or logits with from_logits=True"
        )
    target = _check_unit_range(
        "target", target, "a mask holds values in [0, 1] (one channel per class)"
    )
    p = torch.sigmoid(pred) if from_logits else pred
    t = target.to(p.dtype)
    dims = tuple(range(1, p.ndim))
    return p, t, dims


def _check_settings(who: str, from_logits, eps, reduction) -> None:
    """A loss module's settings, checked when it is built (stop 38: ``eps`` was checked
    only at the first call, ``from_logits`` never: ``"no"`` is truthy and applied a
    sigmoid)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(from_logits, bool):
        raise TypeError(f"{who}: from_logits must be True or False, got {from_logits!r}")
    if is_bool(eps) or not isinstance(eps, numbers.Real) or not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"{who}: eps must be a finite number >= 0, got {eps!r}")


def _sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Per-sample sums; float16 and bfloat16 ones in float32.

    A float16 sum over more than 65,504 pixels' worth of mask is inf (a 256×256 mask
    of ones is 65,536): the score read inf/inf = NaN, or 0 when only the union overflowed,
    with no error (stop 33). Other dtypes sum in their own.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        # bfloat16 did not overflow but rounded each sum to 8 bits: the score was off by
        # up to 1.5 of its own last bits against float64 (stop 40)
        return x.sum(dims, dtype=torch.float32)
    return x.sum(dims)


def _score(num: torch.Tensor, den: torch.Tensor, eps: float, like: torch.Tensor) -> torch.Tensor:
    return ((num + eps) / (den + eps)).to(like.dtype)


def _reduce(score: torch.Tensor, reduction: str, who: str) -> torch.Tensor:
    if reduction == "mean":
        # the mean of no sample is NaN, returned with no error; a training step took it and
        # turned every weight NaN (stop 55)
        empty = (
            f"{who}: the batch is empty (0 samples), so reduction='mean' has no score to "
            f"average (it would return NaN); skip the empty batch, or pass "
            f"reduction='sum' (0 for no sample) or reduction='none'"
        )
        # torch.compile guards on the size (0 is specialised); a traced graph fails on an
        # empty batch before here (the [0, 1] check's aminmax has no identity)
        if score.shape[0] == 0:
            raise ValueError(empty)
        return score.mean()
    if reduction == "sum":
        return score.sum()
    return score


def soft_iou(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    from_logits: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft IoU ``(Σ p·t + eps) / (Σ (p + t − p·t) + eps)`` per sample.

    Args:
        pred: probabilities in [0, 1] (or logits with ``from_logits=True``), ``(B, …)``;
            a bool or integer hard mask is scored as its 0/1 floats. float16 sums
            run in float32 (the score comes back in float16).
        target: the true mask, same shape, values in [0, 1].
        from_logits: apply a sigmoid to ``pred`` first.
        eps: smoothing; an empty prediction of an empty mask scores 1.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one score per sample).

    Returns:
        The score (1 is perfect).

    Raises:
        ValueError: on mismatched shapes, no batch dim, a bad reduction or eps, or a
            prediction (without ``from_logits``) or target with values outside [0, 1];
            for an empty batch with ``reduction="mean"`` (the mean of no score is NaN).
        TypeError: on a complex prediction or target.

    Example:
        >>> t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
        >>> soft_iou(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), t)   # 1 of 3 pixels in the union
        tensor(0.3333)
    """
    p, t, dims = _prepare(pred, target, from_logits, eps, reduction)
    inter = _sum(p * t, dims)
    union = _sum(p + t - p * t, dims)
    return _reduce(_score(inter, union, eps, p), reduction, "soft_iou")


def soft_dice(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    from_logits: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice ``(2 Σ p·t + eps) / (Σ (p + t) + eps)`` per sample.

    Args:
        pred: probabilities in [0, 1] (or logits with ``from_logits=True``), ``(B, …)``;
            a bool or integer hard mask is scored as its 0/1 floats. float16 sums
            run in float32 (the score comes back in float16).
        target: the true mask, same shape, values in [0, 1].
        from_logits: apply a sigmoid to ``pred`` first.
        eps: smoothing; an empty prediction of an empty mask scores 1.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The score (1 is perfect).

    Raises:
        ValueError: on mismatched shapes, no batch dim, a bad reduction or eps, or a
            prediction (without ``from_logits``) or target with values outside [0, 1];
            for an empty batch with ``reduction="mean"`` (the mean of no score is NaN).
        TypeError: on a complex prediction or target.

    Example:
        >>> t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
        >>> soft_dice(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), t)   # 2·1 / (2 + 2)
        tensor(0.5000)
    """
    p, t, dims = _prepare(pred, target, from_logits, eps, reduction)
    inter = _sum(p * t, dims)
    total = _sum(p + t, dims)
    return _reduce(_score(2 * inter, total, eps, p), reduction, "soft_dice")


class SoftIoULoss(nn.Module):
    """``1 − soft_iou(pred, target)`` (claim D1).

    Args:
        from_logits: apply a sigmoid to the prediction first.
        eps: smoothing, see :func:`soft_iou`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: for a bad reduction or eps (at construction) or bad inputs (when called),
            an empty batch with ``reduction="mean"`` among them.
        TypeError: for a ``from_logits`` that is not a bool (at construction).

    Example:
        >>> SoftIoULoss(from_logits=True)(torch.full((2, 1, 3, 3), 20.0), torch.ones(2, 1, 3, 3))
        tensor(0.)
    """

    def __init__(self, *, from_logits: bool = False, eps: float = 1e-6, reduction: str = "mean"):
        super().__init__()
        _check_settings(type(self).__name__, from_logits, eps, reduction)
        self.from_logits, self.eps, self.reduction = from_logits, eps, reduction

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}, eps={self.eps}, reduction={self.reduction!r}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = soft_iou(pred, target, from_logits=self.from_logits, eps=self.eps, reduction="none")
        return _reduce(1 - score, self.reduction, type(self).__name__)


class SoftDiceLoss(nn.Module):
    """``1 − soft_dice(pred, target)`` (claim D1).

    Args:
        from_logits: apply a sigmoid to the prediction first.
        eps: smoothing, see :func:`soft_dice`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: for a bad reduction or eps (at construction) or bad inputs (when called),
            an empty batch with ``reduction="mean"`` among them.
        TypeError: for a ``from_logits`` that is not a bool (at construction).

    Example:
        >>> SoftDiceLoss()(torch.zeros(1, 4), torch.ones(1, 4))
        tensor(1.0000)
    """

    def __init__(self, *, from_logits: bool = False, eps: float = 1e-6, reduction: str = "mean"):
        super().__init__()
        _check_settings(type(self).__name__, from_logits, eps, reduction)
        self.from_logits, self.eps, self.reduction = from_logits, eps, reduction

    def extra_repr(self) -> str:
        return f"from_logits={self.from_logits}, eps={self.eps}, reduction={self.reduction!r}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = soft_dice(
            pred, target, from_logits=self.from_logits, eps=self.eps, reduction="none"
        )
        return _reduce(1 - score, self.reduction, type(self).__name__)
