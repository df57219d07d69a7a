"""A custom ``autograd.Function`` whose backward mixes the examples of a batch (stop 51).

Ghost clipping takes every example's gradient from one backward pass over the whole
batch, and its probes check that the *forward* keeps examples apart. A custom
``autograd.Function`` runs a backward of its own, which may read the whole batch's
gradient although its forward is row by row: an identity whose backward divides by
the gradient's norm over the batch (``g / g.norm()``, a gradient-normalising layer)
gave ghost norms 0.19 off a per-example loop at B = 3, no error. (``mode="vmap"`` runs
each example's backward alone; its row-by-row way already stops at such a node.)

Only where the autograd graph holds such a node, :func:`refuse_mixing_backward` runs
the backward again for example 0 alone and for the last example alone (the
per-example loop, for two examples) and refuses when either differs from its row of
the batch's backward. Torch's own backward formulas need no probe.
"""

from __future__ import annotations

import torch

from tying.train._vetting import unchanged
from tying.train.row_watch import custom_nodes


def custom_backward_nodes(out: torch.Tensor, given=()) -> list[str]:
    """The names of the custom ``autograd.Function`` nodes in ``out``'s graph.

    Args:
        out: the tensor whose graph is walked (the per-example losses).
        given: tensors whose own history is not this run's (the inputs): not walked.

    Returns:
        The nodes' class names (``"NormGradBackward"``), in the order found; empty
        where the graph holds torch's own nodes only.

    Example:
        >>> import torch
        >>> class Halve(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return x / 2
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return g / 2
        >>> x = torch.ones(3, requires_grad=True)
        >>> custom_backward_nodes(Halve.apply(x).exp()), custom_backward_nodes(x.exp())
        (['HalveBackward'], [])
    """
    seen = {id(t.grad_fn) for t in given if isinstance(t, torch.Tensor) and t.grad_fn}
    return custom_nodes(out.grad_fn, seen)


def refuse_mixing_backward(losses, anchors, grads, names, where, who: str) -> None:
    """Refuse a backward that gives example 0 or the last another gradient than its own.

    Args:
        losses: the per-example losses (B,), their graph kept (``retain_graph=True``).
        anchors: the tensors whose gradients the norms are made of.
        grads: their gradients from the batch's backward (``losses.sum()``), None if unused.
        names: the custom nodes found (:func:`custom_backward_nodes`), for the message.
        where: a description of each anchor (the module it belongs to).
        who: the caller, for the message (``"ghost clipping"``).

    Raises:
        ValueError: naming the custom nodes, the example, the module and the change.

    Example:
        >>> import torch
        >>> class BatchNormed(torch.autograd.Function):   # its backward reads every row
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return x.clone()
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return g / g.norm()
        >>> a = torch.zeros(2, 3, requires_grad=True)   # what the norms are made of
        >>> losses = BatchNormed.apply(a + torch.tensor([[1.0], [2.0]])).pow(2).sum(1)
        >>> grads = torch.autograd.grad(losses.sum(), [a], retain_graph=True)
        >>> try:
        ...     refuse_mixing_backward(losses, [a], grads, ["BatchNormedBackward"], ["a"], "demo")
        ... except ValueError as err:
        ...     print(str(err).split(":")[1])
         the backward of a custom autograd.Function (BatchNormedBackward) mixes the examples of a batch
    """
    B = losses.shape[0]
    ends = [0, B - 1] if B > 1 else []
    kept = [(a, g, w) for a, g, w in zip(anchors, grads, where) if g is not None]
    for k, i in enumerate(ends):
        alone = torch.autograd.grad(
            losses[i], [a for a, _, _ in kept], allow_unused=True, retain_graph=k + 1 < len(ends)
        )
        for (_, g, w), gi in zip(kept, alone):
            want = torch.zeros_like(g)
            want[i] = g[i]  # example i alone: its own row, and nothing anywhere else
            got = torch.zeros_like(g) if gi is None else gi
            if not bool(unchanged(want, got).all()):
                change = float((got - want).abs().max())
                raise ValueError(
                    f"{who}: the backward of a custom autograd.Function "
                    f"({', '.join(dict.fromkeys(names))}) mixes the examples of a batch: "
                    f"example {i}'s gradient at {w}, from a backward of that example alone, "
                    f"differs from its row of the batch's backward by {change:.3g} (or "
                    f"reaches other examples' rows), so the norms would not be the "
                    f"examples' own and clipping would not bound them. Make the Function's "
                    f"backward act per example (no sum, mean or norm over the batch "
                    f"dimension), or use mode='vmap', which runs each example's backward alone"
                )
