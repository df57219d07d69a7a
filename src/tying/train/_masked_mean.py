"""A mean over the entries a mask kept, under Opacus' hooks (stop 62).

:mod:`~tying.train._loss_divisor` refuses a ``cross_entropy``/``nll_loss`` mean whose
divisor the whole batch sets. The same holds for any mean over entries selected from the
model output by a mask or an index that keeps different numbers per example:
``F.mse_loss(out[mask], y[mask])`` (a padded sequence regression), ``F.l1_loss``,
``F.huber_loss``, ``F.binary_cross_entropy_with_logits`` over ``out[mask]`` or
``out.masked_select(mask)``, or ``loss[mask].mean()``. The mean divides by the ``N`` kept
in the batch, so Opacus' hooks (``loss_reduction="mean"`` multiplies each row by ``B``)
give example b ``B n_b / N`` times its own masked mean: 0.67x and 1.33x the per-example
loop's for examples keeping 2, 3 and 4 of 4 steps, with no error, in plain Opacus too.

The kept entries are counted on the model output's gradient (an entry the mask dropped
has a gradient of zero), only for means whose input is selected by a mask or an index on
its way from the output.
"""

from __future__ import annotations

import math

import torch

from tying.train._loss_divisor import scalar_root

# torch's loss nodes with a reduction, and the full mean F.l1_loss and loss[mask].mean() use
_MEAN_LOSSES = (
    "MseLoss",
    "SmoothL1Loss",
    "HuberLoss",
    "BinaryCrossEntropyWithLogits",
    "BinaryCrossEntropy",
    "SoftMarginLoss",
)
# what a loss passes through on its way to the backward's root (a scaling, a sum of terms)
_THROUGH = ("Mul", "Div", "Neg", "Add", "Sub", "View", "Reshape", "Squeeze", "Unsqueeze")
_THROUGH += ("ToCopy", "Clone")
_SELECTING = ("IndexBackward", "MaskedSelectBackward")  # out[mask], out.masked_select(mask)


def masked_mean_nodes(roots, stops=(), depth: int = 6) -> list:
    """The mean nodes (a torch loss with ``reduction="mean"``, or a full ``.mean()``) that
    reach the backward's single root through scalings and sums, and whose input is selected
    by a mask or an index (``IndexBackward0``/``MaskedSelectBackward0``) on its way down
    to the model's outputs (``stops``, their ``grad_fn``: an index inside the model, a
    position table read as ``pos[idx]``, is not the loss's).

    Example:
        >>> import torch
        >>> out = torch.randn(2, 3, requires_grad=True) * 1
        >>> keep = torch.tensor([[True, True, False], [True, True, True]])
        >>> loss = torch.nn.functional.mse_loss(out[keep], torch.zeros(5))
        >>> [type(n).__name__ for n in masked_mean_nodes([loss])]
        ['MseLossBackward0']
        >>> masked_mean_nodes([torch.nn.functional.mse_loss(out, torch.zeros(2, 3))])
        []
    """
    root = scalar_root(roots)
    if root is None:
        return []
    found, level, seen = [], [root.grad_fn], set()
    for _ in range(depth):
        below = []
        for node in level:
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            name = type(node).__name__
            mean = name == "MeanBackward0" or (
                name.startswith(_MEAN_LOSSES) and getattr(node, "_saved_reduction", None) == 1
            )
            if mean and _of_scalars(node):
                # torch.stack([each example's own masked mean]).mean(): a mean of B
                # scalars, each read on its own (review 62: such a per-example loop was
                # refused as a batch mean; its gradients are the loop's)
                below.extend(n for n, _ in node.next_functions[0][0].next_functions)
            elif mean:
                if _selecting(node, {id(s) for s in stops if s is not None}):
                    found.append(node)
            elif name.startswith(_THROUGH):
                below.extend(n for n, _ in node.next_functions)
        level = below
    return found


def _of_scalars(node) -> bool:
    """Whether a full ``.mean()`` averages a ``torch.stack`` of 0-d values (losses)."""
    if type(node).__name__ != "MeanBackward0" or len(node.next_functions) != 1:
        return False
    below = node.next_functions[0][0]
    sizes = getattr(node, "_saved_self_sym_sizes", None)
    return type(below).__name__ == "StackBackward0" and sizes is not None and len(sizes) == 1


def entries_could_be_even(node, stops, grad: torch.Tensor, batch: int) -> bool | None:
    """Whether the examples may all keep the same number of entries, read from the number
    the mask kept in the whole batch (the selecting node's output, known after its
    backward) and each example's entries with a nonzero gradient (at most the ones it
    kept); None where that number cannot be read, or other terms of the loss touch the
    output (more entries with a gradient than were kept).

    Counted by entry, not by row: a kept entry whose gradient is exactly zero (``clamp``,
    a saturated logit) was read as dropped and an even mask refused, and a mask over single
    entries of a ``(B, T, D)`` or ``(B, C, H, W)`` output keeps entries, not rows: 0.6x and
    0.67x the loop's gradients, no error (review 62).

    Example:
        >>> out = torch.randn(2, 3, requires_grad=True) * 1
        >>> keep = torch.tensor([[True, True, False], [True, True, False]])
        >>> loss = torch.nn.functional.mse_loss(out[keep].clamp(min=9), torch.zeros(4))
        >>> g = torch.zeros(2, 3); g[0, :2] = 1.0; g[1, 0] = 1.0  # one kept entry clamped
        >>> entries_could_be_even(loss.grad_fn, [out.grad_fn], g, 2)
        True
    """
    picks = _selecting(node, {id(s) for s in stops if s is not None})
    if len(picks) != 1 or grad.dim() < 1 or grad.shape[0] != batch:
        return None
    meta = getattr(picks[0], "_input_metadata", None)  # private in torch: read with care
    shape = getattr(meta[0], "shape", None) if meta else None
    if shape is None:
        return None
    kept = math.prod(shape)
    # only where the mean averages exactly the entries the mask kept (out[m][:, 0].mean()
    # averages a column of them: its gradient covers a share of the kept entries)
    source, nr = node.next_functions[0] if node.next_functions else (None, 0)
    meta = getattr(source, "_input_metadata", None)
    if not meta or nr >= len(meta) or math.prod(getattr(meta[nr], "shape", ())) != kept:
        return None
    counts = (grad != 0).reshape(batch, -1).sum(1)
    if int(counts.sum()) > kept:
        return None
    return kept % batch == 0 and int(counts.max()) <= kept // batch


def _selecting(node, stops: set, limit: int = 64) -> list:
    """The selecting nodes first met on the way down from ``node``, above ``stops``."""
    found, level, seen = [], [node], {id(node), *stops}
    while level and len(seen) <= limit:
        below = []
        for here in level:
            for nxt, _ in here.next_functions:
                if nxt is None or id(nxt) in seen:
                    continue
                seen.add(id(nxt))
                if type(nxt).__name__.startswith(_SELECTING):
                    found.append(nxt)
                else:
                    below.append(nxt)
        level = below
    return found


def kept_entries(grad: torch.Tensor, batch: int) -> torch.Tensor | None:
    """Each example's number of output entries with a nonzero gradient, ``(B,)``: rows of
    the last dimension of a ``(B, T, D)`` output (a softmax row has zeros where a kept
    target is certain; a masked row is zero throughout), single entries of a ``(B, T)`` or
    ``(B,)`` one; None for a gradient that is not batch first.

    Example:
        >>> g = torch.zeros(2, 3); g[0, :1] = 0.5; g[1] = 1.0
        >>> kept_entries(g, 2).tolist()
        [1, 3]
        >>> kept_entries(torch.ones(2, 3, 4), 2).tolist()
        [3, 3]
    """
    if grad.dim() < 1 or grad.shape[0] != batch:
        return None
    nonzero = grad != 0
    if grad.dim() >= 3:
        nonzero = nonzero.any(-1)
    return nonzero.reshape(batch, -1).sum(1)


def masked_mean_message(declared: str, node, counts: torch.Tensor) -> str:
    """A mean over masked entries, where the examples keep different numbers of them."""
    lo, hi, kept, B = int(counts.min()), int(counts.max()), int(counts.sum()), counts.numel()
    times = f"{B} * n_b / {kept}" if declared == "mean" else f"n_b / {kept}"
    reduce = "mean" if declared == "mean" else "sum"
    return (
        f"grad_sample_module(loss_reduction={declared!r}): the loss is a mean over the "
        f"entries a mask or an index kept ({type(node).__name__} over out[mask] or "
        f"out.masked_select(mask)), which divides by the {kept} output entries kept in the "
        f"whole batch, and its {B} examples keep from {lo} to {hi} each: Opacus' hooks would "
        f"give example b {times} times the mean over its own n_b, a factor set by the other "
        f"examples' masks, and clipping would bound a scaled copy, with no error (plain "
        f"Opacus does the same). Reduce each example first: l = the loss with "
        f"reduction='none' on the whole output (e.g. F.mse_loss(out, y, reduction='none')), "
        f"then (l * mask).view(B, -1).sum(1) / mask.view(B, -1).sum(1).clamp(min=1) (each "
        f"example's own mean) and .{reduce}() over the batch. (An entry whose gradient is "
        f"zero is read as dropped.)"
    )
