"""How a loss reduces the batch, read from its autograd graph at the backward (stop 57).

Opacus' hooks take example b's per-sample gradient from row b of each layer's output
gradient, and cannot see the loss: ``loss_reduction="mean"`` multiplies every row by the
batch size to undo a mean, ``"sum"`` takes the rows as they are. A loss reduced the
other way gives per-sample gradients off by the batch size, with no error, in Opacus and
in :func:`~tying.train.grad_sample_module` alike: Opacus' default ``"mean"`` with
``nn.CrossEntropyLoss(reduction="sum")`` gave each example 3x its gradient at B = 3 (so
clipping bounded a scaled copy and the update moved by another amount than asked), and
``"sum"`` with a mean gave a third.

:func:`loss_batch_reduction` names the reduction where the loss says it without doubt:
the loss tensor's own node is a torch loss with ``reduction="mean"``/``"sum"``, or a full
``.mean()``/``.sum()``, over a tensor whose first dimension holds the batch (B rows, or
B·T when the tokens were flattened). A loss scaled by hand (``loss.sum() / B``,
``(l / B).sum()``, ``(w * l).sum()``, ``l1 + l2``) says nothing certain and is left alone.
"""

from __future__ import annotations

import torch

from tying.train.backward_probe import backward_roots

_FULL = {"SumBackward0": "sum", "MeanBackward0": "mean"}
_BY_DIM = ("SumBackward1", "MeanBackward1")  # .sum(dim) / .mean(dim)
_TORCH_REDUCTION = {1: "mean", 2: "sum"}  # torch's Reduction enum (0: "none")
# nodes that move or cast values without scaling them: looked through for a hand scaling
_RESHAPES = (
    "View",
    "Reshape",
    "Unsafe",
    "Squeeze",
    "Unsqueeze",
    "Permute",
    "Transpose",
    "Clone",
    "ToCopy",
    "Contiguous",
)


def _sizes(node) -> tuple[int, ...] | None:
    sizes = getattr(node, "_saved_self_sym_sizes", None)
    if sizes is None:
        return None
    try:
        return tuple(int(s) for s in sizes)
    except (TypeError, ValueError):  # a symbolic size: nothing certain
        return None


def _input_shape(node) -> tuple[int, ...] | None:
    """The shape of a node's first input as its producer recorded it (kept after the
    backward has freed the node's saved tensors)."""
    try:
        producer, nr = node.next_functions[0]
        return tuple(int(s) for s in producer._input_metadata[nr].shape)
    except (AttributeError, IndexError, TypeError, ValueError, RuntimeError):
        return None


def _hand_scaled(node) -> bool:
    """Whether the tensor a full sum/mean reduces was scaled, or already reduced over the
    batch, on its way there (``(l / B).sum()`` under ``"mean"`` is right)."""
    below = [n for n, _ in node.next_functions if n is not None]
    while len(below) == 1 and type(below[0]).__name__.startswith(_RESHAPES):
        below = [n for n, _ in below[0].next_functions if n is not None]  # (w * l).view(-1)
    if len(below) != 1:
        return True
    name = type(below[0]).__name__
    if name.startswith(("Mul", "Div")):
        return True
    if name in _BY_DIM:  # l.mean(1).sum() is per example; l.sum(0).mean() is not
        sizes, dims = _sizes(below[0]), getattr(below[0], "_saved_dim", None)
        if sizes is None or dims is None:
            return True
        return any(d % max(len(sizes), 1) == 0 for d in dims)
    return False


def label_smoothed(node):
    """The ``nll_loss`` node inside torch's ``cross_entropy(..., label_smoothing=e)``, or None.

    Torch builds that loss as ``(1 - e) * nll + smooth * (e / C)``: an ``AddBackward0`` of
    two ``MulBackward1`` (products by a C++ scalar; a product by a Python number is a
    ``MulBackward0``), the first over the ``nll_loss`` node, whose ``reduction`` is the
    loss's. Stop 59: the root was the sum, so ``reduction="sum"`` under Opacus' default
    ``"mean"`` went unseen and gave every example 4x its gradient at B = 4, no error.

    Example:
        >>> import torch
        >>> out = torch.randn(4, 3, requires_grad=True) * 1
        >>> loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0]), label_smoothing=0.1)
        >>> type(label_smoothed(loss.grad_fn)).__name__, label_smoothed(out.grad_fn)
        ('NllLossBackward0', None)
    """
    if node is None or type(node).__name__ != "AddBackward0":
        return None
    kids = [n for n, _ in node.next_functions]
    if len(kids) != 2 or any(k is None or type(k).__name__ != "MulBackward1" for k in kids):
        return None
    below = [n for n, _ in kids[0].next_functions if n is not None]
    if len(below) == 1 and type(below[0]).__name__.startswith("NllLoss"):
        return below[0]
    return None


def seeded_with_one() -> bool:
    """Whether the running backward started from a seed of 1 (``loss.backward()``), read
    from inside it. A scaled seed (``loss.backward(torch.tensor(1 / B))``,
    ``autograd.grad(loss, ps, grad_outputs=...)``) rescales the loss by hand, as
    ``loss / B`` would, so the loss's own reduction says nothing certain.

    Returns:
        False where a seed other than 1 is found on this thread's stack, else True.

    Example:
        >>> import torch
        >>> w = torch.ones(2, requires_grad=True)
        >>> seen = []
        >>> _ = w.register_hook(lambda g: seen.append(seeded_with_one()))
        >>> (w * 2).sum().backward(torch.tensor(0.5))
        >>> seen
        [False]
    """
    import sys

    try:
        from torch.autograd.graph import _engine_run_backward
    except ImportError:
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _engine_run_backward.__code__:
            args = frame.f_locals.get("args") or ()
            seeds = args[0] if args else ()
            return all(
                s is None or (isinstance(s, torch.Tensor) and s.numel() == 1 and float(s) == 1.0)
                for s in (seeds or ())
            )
        frame = frame.f_back
    return True


def loss_batch_reduction(batch: int, roots=None) -> tuple[str, str] | None:
    """The reduction of the running backward's loss over a batch of ``batch`` examples,
    where its graph says it without doubt; call from a hook inside that backward.

    Args:
        batch: the number of examples in the forward's batch (its first dimension).
        roots: the backward's roots when the caller has them (:func:`~tying.train.
            backward_probe.backward_roots`); read from the stack otherwise.

    Returns:
        ``("mean" | "sum", what)`` with ``what`` naming the node (``"NllLossBackward0
        with reduction='sum'"``), or None where it cannot be told (a loss scaled by hand,
        several roots, a root that is not one number, a backward run off this thread).

    Example:
        >>> import torch
        >>> out = torch.randn(4, 3, requires_grad=True) * 1   # a model's output
        >>> seen = []
        >>> _ = out.register_hook(lambda g: seen.append(loss_batch_reduction(4)))
        >>> torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0]), reduction="sum").backward()
        >>> seen
        [('sum', "NllLossBackward0 with reduction='sum'")]
    """
    roots = backward_roots() if roots is None else roots
    if not roots or len(roots) != 1 or batch < 1:
        return None
    root = roots[0]
    if not isinstance(root, torch.Tensor) or root.numel() != 1 or root.grad_fn is None:
        return None
    node = root.grad_fn
    smoothed = label_smoothed(node)
    node = smoothed or node
    name = type(node).__name__ + (" (cross_entropy with label_smoothing)" if smoothed else "")
    code = getattr(node, "_saved_reduction", None)
    if code in _TORCH_REDUCTION:
        # its saved input is freed once it has run. Any number of rows: a torch loss's
        # reduction is over all of them whatever a mask kept (o[keep]: 7 or 8 tokens of
        # B = 4 read otherwise, so the same loop was refused at some steps only)
        shape = _input_shape(node)
        if shape and shape[0] >= 1:
            kind = _TORCH_REDUCTION[code]
            return kind, f"{name} with reduction={kind!r}"
        return None
    kind = _FULL.get(name)
    sizes = _sizes(node) if kind is not None else None
    if not sizes or sizes[0] % batch or _hand_scaled(node):
        return None
    return kind, f"a full .{kind}() ({name}) over a {tuple(sizes)} tensor"
