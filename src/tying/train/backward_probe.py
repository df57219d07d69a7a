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
from tying.train.row_watch import custom_function_nodes_under, custom_nodes


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


def custom_function_nodes(outs, given=()) -> list:
    """The custom ``autograd.Function`` nodes in the graphs of the tensors ``outs``.

    Like :func:`custom_backward_nodes`, but the nodes themselves, and leaving out the
    ``BackwardHookFunction`` nodes that full backward hooks (Opacus' own) put around a
    module: their backward is the identity.

    Args:
        outs: the tensors whose graphs are walked (a forward's outputs).
        given: tensors whose own history is not this run's (the inputs): not walked.

    Returns:
        The nodes, in the order found; empty where the graphs hold torch's own nodes only.

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
        >>> [type(n).__name__ for n in custom_function_nodes([Halve.apply(x).exp(), x.sin()])]
        ['HalveBackward']
    """
    seen = {id(t.grad_fn) for t in given if isinstance(t, torch.Tensor) and t.grad_fn}
    return custom_function_nodes_under([t.grad_fn for t in outs], seen, _hook_function)


def refuse_mixing_backward_at(losses, nodes, inputs, who: str, fix: str) -> None:
    """Refuse a custom Function whose backward hands example 0 or the last another gradient.

    Where no per-use anchor is at hand (Opacus' hooks read each layer's gradient inside
    the backward the caller runs), the gradient each custom node hands down is compared
    instead: from the batch's backward (``losses.sum()``) and from example 0's and the
    last example's alone, on the same graph, which is kept (``retain_graph=True``) for
    the caller's own backward. A row-by-row backward gives example ``i`` alone its own
    row of the batch's gradient and zeros elsewhere; a gradient without the batch's rows
    first (a Function on a weight) is not compared.

    Args:
        losses: per-example losses (B,), their graph kept.
        nodes: the custom nodes (:func:`custom_function_nodes`).
        inputs: the tensors the backward runs to (the trainable parameters).
        who: the caller, for the message (``"grad_sample_module"``).
        fix: the last sentence of the message (what to do instead).

    Raises:
        ValueError: naming the Function, the example, and the change.

    Example:
        >>> import torch
        >>> class BatchNormed(torch.autograd.Function):   # its backward reads every row
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return x.clone()
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return g / g.norm()
        >>> w = torch.ones(3, requires_grad=True)
        >>> out = BatchNormed.apply(torch.tensor([[1.0], [2.0]]) * w)   # (2, 3)
        >>> try:
        ...     refuse_mixing_backward_at(out.pow(2).sum(1), custom_function_nodes([out]), [w], "demo", "fix it")
        ... except ValueError as err:
        ...     print(str(err).split(":")[1])
         the backward of the custom autograd.Function BatchNormed mixes the examples of a batch
    """
    B = losses.shape[0]
    got: dict[int, list] = {}

    def catch(k):
        def hook(grad_inputs, grad_outputs):
            got[k] = [None if g is None else g.detach().clone() for g in grad_inputs]

        return hook

    handles = [n.register_hook(catch(k)) for k, n in enumerate(nodes)]
    try:
        torch.autograd.grad(losses.sum(), inputs, allow_unused=True, retain_graph=True)
        batch = dict(got)
        for i in dict.fromkeys((0, B - 1)):
            got.clear()
            torch.autograd.grad(losses[i], inputs, allow_unused=True, retain_graph=True)
            for k, grads in batch.items():
                alone = got.get(k, [None] * len(grads))
                for g, gi in zip(grads, alone):
                    if g is None or g.dim() == 0 or g.shape[0] != B:
                        continue
                    want = torch.zeros_like(g)
                    want[i] = g[i]  # example i alone: its own row, and nothing elsewhere
                    gi = torch.zeros_like(g) if gi is None else gi
                    if not bool(unchanged(want, gi).all()):
                        name = nodes[k]._forward_cls.__qualname__
                        raise ValueError(
                            f"{who}: the backward of the custom autograd.Function {name} "
                            f"mixes the examples of a batch: the gradient it hands down for "
                            f"example {i} alone differs from example {i}'s row of the batch's "
                            f"by {float((gi - want).abs().max()):.3g} (or reaches other "
                            f"examples' rows), so the per-sample gradients would not be the "
                            f"examples' own and clipping would not bound them. {fix}"
                        )
    finally:
        for h in handles:
            h.remove()


def _hook_function(cls) -> bool:
    """Whether ``cls`` is torch's ``BackwardHookFunction`` (``register_full_backward_hook``
    wraps a module's inputs and outputs in it; its backward is the identity)."""
    return cls.__name__ == "BackwardHookFunction" and cls.__module__.startswith("torch.")


def backward_roots() -> list | None:
    """The tensors (or graph edges) the running backward started from, read from inside
    it (a hook): ``torch.autograd.graph._engine_run_backward``'s ``t_outputs``, found on
    the calling thread's stack, where the engine runs hooks of CPU nodes.

    Returns:
        The roots, or None where they are not on this thread's stack (a backward that a
        device thread runs, a torch without that function).

    Example:
        >>> import torch
        >>> w = torch.ones(3, requires_grad=True)
        >>> loss, seen = (w * 2).sum(), []
        >>> _ = w.register_hook(lambda g: seen.append(backward_roots()))
        >>> loss.backward()
        >>> seen[0][0] is loss
        True
    """
    import sys

    try:  # private to torch (2.4-2.13 have it): without it, no check rather than a crash
        from torch.autograd.graph import _engine_run_backward
    except ImportError:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _engine_run_backward.__code__:
            return list(frame.f_locals.get("t_outputs") or ()) or None
        frame = frame.f_back
    return None


def loss_function_nodes(stop_at, roots=None) -> list:
    """The custom ``autograd.Function`` nodes of the loss that the running backward
    started from, between its roots and the nodes ``stop_at`` (a model's outputs'
    ``grad_fn``s), read from inside that backward (a hook on a model output, stop 53).

    Opacus' hooks never see the loss: the caller builds it from the model's outputs and
    runs its backward. The roots are the tensors handed to the autograd engine
    (``torch.autograd.graph._engine_run_backward``'s ``t_outputs``), found on the calling
    thread's stack, where the engine runs hooks of CPU nodes. Only nodes from which a
    model output is reached count: a penalty on the weights alone is no example's.

    Args:
        stop_at: the ``grad_fn`` nodes of the model's outputs; the walk ends there.
        roots: the backward's roots when the caller has them (:func:`backward_roots`);
            read from the stack otherwise.

    Returns:
        The nodes, in the order found; empty where the roots are not on this thread's
        stack (a backward that a device thread runs) or the loss holds none.

    Example:
        >>> import torch
        >>> class Halve(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return x / 2
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return g / 2
        >>> out = torch.ones(2, 3, requires_grad=True) * 3   # a model's output
        >>> found = []
        >>> _ = out.register_hook(lambda g: found.extend(loss_function_nodes([out.grad_fn])))
        >>> Halve.apply(out).sum().backward()
        >>> [type(n).__name__ for n in found]
        ['HalveBackward']
    """
    roots = backward_roots() if roots is None else roots
    if not roots:
        return []
    stops = {id(n) for n in stop_at if n is not None}
    heads = []
    for r in roots:
        node = r.grad_fn if isinstance(r, torch.Tensor) else getattr(r, "node", None)
        heads.append(node)
    reaches: dict[int, bool] = {}  # node id -> a model output is below it
    found, todo = [], [(n, False) for n in heads if n is not None]
    while todo:  # depth first, iterative: a long loss graph must not hit the recursion limit
        node, done = todo.pop()
        key = id(node)
        if done:
            below = [nxt for nxt, _ in node.next_functions if nxt is not None]
            reaches[key] = any(id(n) in stops or reaches.get(id(n), False) for n in below)
            if (
                reaches[key]
                and isinstance(node, torch.autograd.function.BackwardCFunction)
                and not _hook_function(node._forward_cls)
            ):
                found.append(node)
            continue
        if key in reaches or key in stops:
            continue
        reaches[key] = False  # on the way down: a cycle cannot happen, but a revisit can
        todo.append((node, True))
        todo.extend((nxt, False) for nxt, _ in node.next_functions if nxt is not None)
    return found[::-1]
