"""A mean loss whose divisor is set by the whole batch, under Opacus' hooks (stop 59).

Opacus' hooks take example b's per-sample gradient from row b of each layer's output
gradient; ``loss_reduction="mean"`` multiplies the rows by the batch size B to undo a
mean's ``1 / B``. Torch's ``nll_loss``/``cross_entropy`` with ``reduction="mean"`` does not
divide by B: it divides by the sum of the class weights of the targets it kept,
``sum_i w[y_i]`` (the count of kept targets without a weight). Where that is not B times a
number of each example's own, every per-sample gradient is scaled by a factor the *other*
examples set, and clipping bounds a scaled copy, with no error, in Opacus and in
:func:`~tying.train.grad_sample_module` alike:

- ``nn.CrossEntropyLoss(weight=w)``: each example got ``B / sum_i w[y_i]`` times its own
  gradient of ``w[y_b] l_b`` (1.26x on a 4-example token batch; the factor changes with
  the other examples' labels).
- ``ignore_index`` (the usual LM loss over padded rows) or a mask that drops rows
  (``out[keep]``): example b got ``B n_b / N`` times the mean over its own ``n_b`` kept
  tokens (``N`` kept in the batch): 0.29x-1.43x on a batch whose examples keep 1-5 of 5
  tokens. Where every example keeps as many tokens (no padding, HF's shifted labels, the
  last token dropped everywhere) the factor is each example's own ``1 / n`` and the
  gradients equal the per-example loop: not refused.

The weight is freed with the loss node once it has run, before any layer's gradient
exists; but a freed weight and no weight read differently (``_saved_weight`` raises for
the one, gives None for the other), which is enough to refuse. The kept counts are read
from the model output's gradient, where a token the loss dropped has a row of zeros.
"""

from __future__ import annotations

import math

import torch

# nodes a loss passes through on its way from torch's loss node to the root: a scale by a
# number (loss / accumulation_steps), a sum of terms (label smoothing's two), a reshape
# (review 59: the last six too, written around a loss as often, loss.double(),
# torch.stack(losses).mean(): a weighted or padded mean behind them went unseen)
_THROUGH = (
    "Mul", "Div", "Neg", "Add", "Sub", "View", "Reshape", "Squeeze", "Unsqueeze",
    "ToCopy", "Clone", "Stack", "Cat", "Mean", "Sum",
)  # fmt: skip
_DEPTH = 6


def scalar_root(roots) -> torch.Tensor | None:
    """The one scalar loss a backward starts from, with a graph; None for anything else
    (several roots, a non-scalar, a tensor with no ``grad_fn``): nothing to walk."""
    if not roots or len(roots) != 1:
        return None
    root = roots[0]
    if not isinstance(root, torch.Tensor) or root.numel() != 1 or root.grad_fn is None:
        return None
    return root


def mean_nll_nodes(roots) -> list:
    """The ``nll_loss`` nodes with ``reduction="mean"`` that reach the backward's single
    root through scalings and sums only (``F.cross_entropy(...) / k``, label smoothing's
    ``(1 - e) * nll + e * smooth``).

    Args:
        roots: the backward's roots (:func:`~tying.train.backward_probe.backward_roots`).

    Returns:
        The nodes (``NllLossBackward0``/``NllLoss2DBackward0``), empty where there are
        none, several roots, or a root that is not one number.

    Example:
        >>> import torch
        >>> out = torch.randn(4, 3, requires_grad=True)
        >>> loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0])) / 2
        >>> [type(n).__name__ for n in mean_nll_nodes([loss])]
        ['NllLossBackward0']
    """
    root = scalar_root(roots)
    if root is None:
        return []
    found, level, seen = [], [root.grad_fn], set()
    for _ in range(_DEPTH):
        below = []
        for node in level:
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            name = type(node).__name__
            if name.startswith("NllLoss"):
                if getattr(node, "_saved_reduction", None) == 1:  # torch's Reduction::Mean
                    found.append(node)
            elif name.startswith(_THROUGH):
                below.extend(n for n, _ in node.next_functions)
        level = below
    return found


# nodes between a model's logits and the loss that keep each target's row where it was
# (a shift, a flatten, a cast, a temperature): a row of zeros there is a dropped target
_ROW_KEEPING = (
    "LogSoftmax",
    "Alias",  # a slice that keeps everything (out[:, :], out[..., ::1]; stop 61)
    "View",
    "Reshape",
    "Unsafe",
    "Slice",
    "Select",
    "Index",
    "Split",  # out.chunk(2, 1)[0], out.split([V, 1], -1)[0] (review 61: unseen before)
    "Unbind",
    "Transpose",
    "Permute",
    "Clone",
    "ToCopy",
    "Contiguous",
    "Squeeze",
    "Unsqueeze",
    "Div",
    "Mul",
    "BackwardHookFunction",  # Opacus' module hooks: the identity
)


def loss_input_chain(node, depth: int = 16) -> set[int]:
    """The ids of the nodes a loss node reads its input through, down to the first node
    that changes which values a row holds (a layer): the model output that is the loss's
    input has its ``grad_fn`` in this set.

    Example:
        >>> import torch
        >>> h = torch.randn(2, 3, 4, requires_grad=True) * 1   # a hidden state
        >>> logits = h @ torch.randn(4, 5)
        >>> loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), torch.zeros(4, dtype=torch.long))
        >>> chain = loss_input_chain(loss.grad_fn)
        >>> id(logits.grad_fn) in chain, id(h.grad_fn) in chain
        (True, False)
    """
    chain, here = set(), node
    for _ in range(depth):
        below = [n for n, _ in here.next_functions if n is not None]
        if len(below) != 1:
            break
        here = below[0]
        chain.add(id(here))
        if not type(here).__name__.startswith(_ROW_KEEPING):
            break
    return chain


def nearest_outputs(node, stops, limit: int = 512) -> set[int]:
    """The ids of the model outputs' ``grad_fn`` (``stops``) that a loss node reaches
    first, walking its graph breadth first through any node and stopping at an output.

    :func:`loss_input_chain` follows only the ops known to keep each target's row where
    it was, and ended at any other (stop 62: ``out.gather``, ``torch.stack(out.unbind(1),
    1)``, ``out.expand``, ``out.as_strided``, ``torch.cat`` of slices, ``roll``, ``flip``,
    ``torch.where``, ``softmax().log()``: uneven padding unseen, per-sample gradients
    0.67x-1.33x the loop's, no error). The output the loss reaches first is the one it
    reads; an output behind it (a hidden state the logits are computed from, inside the
    model) is reached only through that one, and is not read for kept targets.

    Args:
        node: the loss node.
        stops: the ``grad_fn`` of each model output.
        limit: the most nodes to visit.

    Returns:
        The ids of the outputs reached at the first level that reaches any (empty where
        none is reached within ``limit`` nodes).

    Example:
        >>> import torch
        >>> h = torch.randn(2, 3, 4, requires_grad=True) * 1   # a hidden state ...
        >>> logits = h.cumsum(1) * 2                            # ... and the logits from it
        >>> loss = torch.nn.functional.cross_entropy(logits.flip(1).flatten(0, 1), torch.zeros(6).long())
        >>> found = nearest_outputs(loss.grad_fn, [h.grad_fn, logits.grad_fn])
        >>> id(logits.grad_fn) in found, id(h.grad_fn) in found
        (True, False)
    """
    wanted = {id(s) for s in stops if s is not None}
    level, seen = [node], {id(node)}
    while level and len(seen) <= limit:
        below = []
        for here in level:
            for nxt, _ in here.next_functions:
                if nxt is None or id(nxt) in seen:
                    continue
                seen.add(id(nxt))
                below.append(nxt)
        found = {id(n) for n in below if id(n) in wanted}
        if found:
            return found
        level = below
    return set()


# nodes that keep every dimension where it was (the class dimension stays put)
_DIM_KEEPING = (
    "LogSoftmax",
    "Alias",
    "Clone",
    "ToCopy",
    "Div",
    "Mul",
    "Neg",
    "BackwardHookFunction",
)


def output_class_dim(node, made_by, depth: int = 16) -> int | None:
    """The dimension of the model output (made by ``made_by``) that an ``nll_loss`` node
    reads as its classes (its input's dimension 1), followed back through transposes,
    permutes, views that keep the leading or the trailing dimensions, slices and
    ``index_select`` (of the classes too), ``select``/``unsqueeze``/``squeeze`` (the
    dimensions around them counted), and ops that keep every dimension.

    Args:
        node: the loss node (``NllLossBackward0``/``NllLoss2DBackward0``).
        made_by: the ``grad_fn`` of the model output.

    Returns:
        The dimension, or None where the chain holds anything else (an index, a view
        that moves the classes) or does not reach ``made_by``. Where the loss reads a
        slice of the classes, the output's dimension holds more entries than its classes.

    Example:
        >>> import torch
        >>> out = torch.randn(2, 5, 5, requires_grad=True) * 1  # (B, T, C), T == C
        >>> loss = torch.nn.functional.cross_entropy(out.transpose(1, 2), torch.zeros(2, 5).long())
        >>> output_class_dim(loss.grad_fn, out.grad_fn)
        2
        >>> output_class_dim(torch.nn.functional.cross_entropy(out, torch.zeros(2, 5).long()).grad_fn, out.grad_fn)
        1
    """
    pos, here = 1, node
    for _ in range(depth):
        below = [(n, nr) for n, nr in here.next_functions if n is not None]
        if len(below) != 1:
            return None
        nxt, nr = below[0]
        if nxt is made_by:
            return pos  # the class dimension of the tensor ``here`` reads: the output
        name = type(nxt).__name__
        try:
            shape = tuple(int(s) for s in nxt._input_metadata[nr].shape)  # what nxt made
        except (AttributeError, IndexError, TypeError, ValueError, RuntimeError):
            return None
        rank = max(len(shape), 1)
        if name.startswith("Transpose"):
            d0, d1 = _signed(nxt._saved_dim0) % rank, _signed(nxt._saved_dim1) % rank
            pos = d1 if pos == d0 else d0 if pos == d1 else pos
        elif name.startswith("Permute"):
            pos = _signed(nxt._saved_dims[pos]) % rank
        elif name.startswith(("Slice", "IndexSelect", "Split")):  # every dimension stays put
            # some classes cut away (logits[..., :vocab_size]): the output's dimension still
            # holds them, the cut ones with a zero gradient, so a kept target's row is not
            # all zero there and a dropped one's is (review 61: None here fell back to the
            # shapes, which matched no dimension: uneven padding unseen, 0.5 off, no error)
            pass
        elif name.startswith("Squeeze"):  # nxt's input had size-1 dimensions more
            src = tuple(int(s) for s in nxt._saved_self_sym_sizes)
            dims = getattr(nxt, "_saved_dim", None)
            dims = range(len(src)) if dims is None else dims if isinstance(dims, tuple) else (dims,)
            gone = {_signed(d) % max(len(src), 1) for d in dims}
            kept = [i for i, n in enumerate(src) if not (i in gone and n == 1)]
            if len(kept) != len(shape) or pos >= len(kept):
                return None
            pos = kept[pos]
        elif name.startswith(("Select", "Unbind")):  # out[:, 0]: nxt's input had one more
            dim = _signed(nxt._saved_dim) % (rank + 1)
            pos = pos + 1 if pos >= dim else pos
        elif name.startswith("Unsqueeze"):  # nxt's input had one dimension less
            dim = _signed(nxt._saved_dim) % rank
            if dim == pos:
                return None
            pos = pos - 1 if pos > dim else pos
        elif name.startswith(("View", "Reshape", "UnsafeView")):
            source = getattr(nxt, "_saved_self_sym_sizes", None)
            if source is None:
                return None
            source = tuple(int(s) for s in source)
            if source[: pos + 1] != shape[: pos + 1]:
                # a view of the leading dimensions only (out.unflatten(-1, (1, C)) read as
                # [:, :, 0], review 61): the class dimension and all after it unchanged
                k = len(source) - (len(shape) - pos)
                if k < 1 or source[k:] != shape[pos:]:
                    return None
                pos = k
        elif not name.startswith(_DIM_KEEPING):
            return None
        here = nxt
    return None


def _signed(value) -> int:
    """A dimension as the user wrote it: torch saves a negative one unsigned (-1 as 2**64 - 1)."""
    value = int(value)
    return value - 2**64 if value >= 2**63 else value


def reads_one_example(node, made_by) -> bool:
    """Whether an ``nll_loss`` node reads one example's rows of the model output alone
    (``out[b]``, ``out[b:b + 1]``: a per-example loss written as a loop), so that its mean,
    weighted or over its own kept targets, is that example's own (review 59: such a loop,
    the "each example's own mean" the refusals advise, was refused as a batch's mean).

    Example:
        >>> import torch
        >>> out = torch.randn(3, 5, 4, requires_grad=True) * 1
        >>> f = torch.nn.functional.cross_entropy
        >>> y = torch.tensor([0, 1, 2, 3, 0])
        >>> reads_one_example(f(out[1], y).grad_fn, out.grad_fn)
        True
        >>> reads_one_example(f(out[:, 1], y[:3]).grad_fn, out.grad_fn)
        False
    """
    here, above = node, None
    for _ in range(16):
        below = [n for n, _ in here.next_functions if n is not None]
        if len(below) != 1:
            break
        above, here = here, below[0]
        if here is made_by:
            return _picks_one_example(above)
        if not type(here).__name__.startswith(_ROW_KEEPING):
            break
    # through ops the chain does not know (out[b].flip(0), out.unbind(0)[b].gather(...)):
    # one example's if one node reads the output and picks one example there, entered
    # through one of its outputs (stop 62: the output is read by its shape there now, and
    # such a loop was refused as a batch mean; torch.cat([out[0], out[1]]) is two reads)
    readers = _readers_of(node, made_by)
    if len(readers) != 1:
        return False
    ((reader, entered),) = readers.values()
    return len(entered) == 1 and _picks_one_example(reader)


def _readers_of(node, made_by, limit: int = 512) -> dict:
    """The nodes of ``node``'s graph (breadth first, at most ``limit``) that read
    ``made_by``'s output, by id: ``(node, the set of its outputs the walk entered by)``."""
    readers: dict = {}
    level, seen = [node], {id(node)}
    while level and len(seen) <= limit:
        below = []
        for here in level:
            for nxt, nr in here.next_functions:
                if nxt is None or nxt is made_by:
                    continue
                if any(n is made_by for n, _ in nxt.next_functions):
                    readers.setdefault(id(nxt), (nxt, set()))[1].add(nr)
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    below.append(nxt)
        level = below
    return readers


def _picks_one_example(above) -> bool:
    """Whether a node that reads the output picks one example (row ``b`` of dimension 0)."""
    name = type(above).__name__
    if name in ("SelectBackward0", "UnbindBackward0"):
        return getattr(above, "_saved_dim", None) == 0
    if name.startswith("Split") and getattr(above, "_saved_dim", None) == 0:  # out.split(1)
        sizes = getattr(above, "_saved_split_sizes", None) or (above._saved_split_size,)
        return all(int(n) == 1 for n in sizes)
    if name == "SliceBackward0" and getattr(above, "_saved_dim", None) == 0:
        start, end = int(above._saved_start), int(above._saved_end)
        return int(above._saved_step) == 1 and end - start == 1 and start >= 0
    return False


def class_weighted(node) -> bool:
    """Whether an ``nll_loss`` node was given a class weight that is not one number
    throughout (a uniform weight divides out of the mean).

    Args:
        node: an ``NllLossBackward0`` node, run or not.

    Returns:
        True for a weight the backward has freed (its values are gone) or a visible weight
        with two different values; False for no weight or a uniform one.

    Example:
        >>> import torch
        >>> out = torch.randn(4, 3, requires_grad=True)
        >>> y = torch.tensor([0, 1, 2, 0])
        >>> f = torch.nn.functional.cross_entropy
        >>> class_weighted(f(out, y).grad_fn), class_weighted(f(out, y, weight=torch.ones(3)).grad_fn)
        (False, False)
        >>> class_weighted(f(out, y, weight=torch.tensor([1.0, 2.0, 3.0])).grad_fn)
        True
    """
    try:
        weight = node._saved_weight
    except RuntimeError:  # saved and freed by the backward: a weight was given
        return True
    if not isinstance(weight, torch.Tensor) or weight.numel() < 2:
        return False
    return not bool((weight == weight.flatten()[0]).all())


def ignore_index(node) -> int:
    """The node's ``ignore_index`` as the user wrote it (torch keeps it unsigned)."""
    value = int(getattr(node, "_saved_ignore_index", -100))
    return value - 2**64 if value >= 2**63 else value


def kept_counts(
    grad: torch.Tensor,
    classes: int,
    batch: int,
    loss_input: tuple[int, ...] = (),
    class_dim: int | None = None,
) -> torch.Tensor | None:
    """How many class rows of each example's output gradient are not all zero: the
    tokens the loss kept, read from the gradient (a dropped token has a row of zeros).

    Args:
        grad: the gradient of a model output, batch first.
        classes: the number of classes of the loss's input (its dimension 1).
        batch: the number of examples.
        loss_input: the shape of the loss's input; where the output has its first two
            dimensions and as many values after them (``(B, C, T)``), its classes are
            dimension 1.
        class_dim: the output's dimension that holds the classes, where known
            (:func:`output_class_dim`); it settles a ``(B, T, C)`` output read by the loss
            as ``out.transpose(1, 2)`` when ``T == C``, which the shapes cannot.

    Returns:
        ``(B,)`` counts, or None where the output has no dimension of ``classes`` entries
        (last, or second as for ``(B, C, H, W)``) or not ``batch`` rows.

    Example:
        >>> g = torch.zeros(2, 3, 4)
        >>> g[0, :2] = 1.0; g[1, :3] = 1.0
        >>> kept_counts(g, 4, 2).tolist()
        [2, 3]
    """
    rows = class_rows(grad, classes, batch, loss_input, class_dim)
    if rows is None:
        return None
    # two (B, R) reductions, no (B, R, C) mask: an LM's logits gradient may be large
    low, high = torch.aminmax(rows, dim=-1)
    return ((low != 0) | (high != 0)).sum(1)


def class_rows(
    grad: torch.Tensor,
    classes: int,
    batch: int,
    loss_input: tuple[int, ...] = (),
    class_dim: int | None = None,
) -> torch.Tensor | None:
    """A batch-first output (or its gradient) as ``(B, R, classes)`` rows, as
    :func:`kept_counts` reads them; None where it has no such dimension.

    Example:
        >>> class_rows(torch.zeros(2, 3, 4), 4, 2).shape
        torch.Size([2, 3, 4])
    """
    if grad.dim() < 2 or grad.shape[0] != batch or classes < 1:
        return None
    if class_dim is not None and 0 < class_dim < grad.dim() and grad.shape[class_dim] >= classes:
        # the chain to the loss said where the classes are (stop 60: a (B, T, C) output
        # read as out.transpose(1, 2) with T == C matched the (B, C, T) branch below and
        # was read along T: uneven padding went unseen, gradients scaled, no error); more
        # entries than the loss's classes where it read a slice of them (review 61)
        n = grad.shape[class_dim]
        return grad.movedim(class_dim, -1).reshape(batch, -1, n)
    spatial = math.prod(loss_input[2:]) if len(loss_input) > 2 else None
    if (
        grad.dim() > 2
        and tuple(grad.shape[:2]) == tuple(loss_input[:2])
        and math.prod(grad.shape[2:]) == spatial
    ):  # torch views (B, C, T) as (B, C, 1, T) for its 2-d loss
        rows = grad.movedim(1, -1).reshape(batch, -1, classes)  # (B, C, T): C = T or not
    elif grad.shape[-1] == classes:
        rows = grad.reshape(batch, -1, classes)
    elif grad.dim() > 2 and grad.shape[1] == classes:
        rows = grad.movedim(1, -1).reshape(batch, -1, classes)
    else:
        return None
    return rows


def could_be_even(
    grad: torch.Tensor, out, counts: torch.Tensor, shape, class_dim: int | None = None
) -> bool:
    """Whether uneven ``counts`` may be a kept target's row of zeros (review 59).

    A target the model already predicts with probability 1 in the gradient's precision
    (a margin of ~104 in float32, ~12-15 in float16 at thousands of tokens) has a row of
    zeros too: a plain ``F.cross_entropy(out, y)`` that drops nothing was refused as
    unevenly padded ("divides by the 2 kept" of 4). Where the output is still alive, a
    zero row whose softmax is that peaked may be kept or dropped; the counts are refused
    only where no such reading makes them even.

    Example:
        >>> grad = torch.zeros(2, 1, 3); grad[1, 0, 0] = 0.5   # example 0's row: zero
        >>> out = torch.tensor([[[200.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])  # ... and saturated
        >>> could_be_even(grad, out, torch.tensor([0, 1]), (2, 3))
        True
        >>> could_be_even(grad, torch.zeros(2, 1, 3), torch.tensor([0, 1]), (2, 3))
        False
    """
    if out is None:
        return False
    rows = class_rows(out.detach(), shape[1], counts.numel(), shape, class_dim)
    zero = class_rows(grad, shape[1], counts.numel(), shape, class_dim)
    if rows is None or zero is None:
        return False
    tol = 1e-2 if grad.dtype == torch.float16 else 1e-6
    peaked = rows.float().log_softmax(-1).amax(-1) >= math.log1p(-tol)  # (B, R)
    unsure = peaked & (zero == 0).all(-1)
    return bool(counts.max() <= (counts + unsure.sum(1)).min())


def weighted_message(declared: str, node, batch: int) -> str:
    """A class-weighted mean under Opacus' hooks (either loss_reduction)."""
    reduce = "mean" if declared == "mean" else "sum"
    return (
        f"grad_sample_module(loss_reduction={declared!r}): the loss is a class-weighted "
        f"mean ({type(node).__name__}: nn.CrossEntropyLoss/NLLLoss with weight=w and "
        f"reduction='mean'), which divides by sum(w[y]) over the batch's targets, not by "
        f"the batch size: Opacus' hooks would give each of the {batch} examples its "
        f"gradient of w[y_b] * loss_b scaled by "
        + (f"{batch} / sum(w[y])" if declared == "mean" else "1 / sum(w[y])")
        + ", a factor set by the other examples' labels, and clipping would bound a "
        f"scaled copy, with no error (plain Opacus does the same). Reduce per example "
        f"and then over the batch: F.cross_entropy(out, y, weight=w, reduction='none')."
        f"{reduce}() (each example's loss w[y_b] * loss_b). A weight of one value "
        f"throughout divides out of the mean and is right, but the backward frees it "
        f"before it can be read: drop it (the advice would scale the loss by its value), "
        f"or call backward(retain_graph=True), under which it is read and let through"
    )


def uneven_message(declared: str, node, counts: torch.Tensor) -> str:
    """A mean over the rows kept, where the examples keep different numbers of rows."""
    lo, hi, kept, B = int(counts.min()), int(counts.max()), int(counts.sum()), counts.numel()
    ignore = ignore_index(node)
    times = f"{B} * n_b / {kept}" if declared == "mean" else f"n_b / {kept}"
    reduce = "mean" if declared == "mean" else "sum"
    return (
        f"grad_sample_module(loss_reduction={declared!r}): the loss is a mean over the "
        f"targets it kept ({type(node).__name__} with reduction='mean', ignore_index="
        f"{ignore}, or rows masked out before it), which divides by the {kept} kept in the "
        f"whole batch, and its {B} examples keep from {lo} to {hi} each: Opacus' hooks "
        f"would give example b {times} times the mean over its own n_b kept targets, a "
        f"factor set by the other examples' padding, and clipping would bound a scaled "
        f"copy, with no error (plain Opacus does the same). Call the loss with "
        f"reduction='none' (a dropped target gives 0) and reduce that: l.{reduce}() over "
        f"all its entries (each example's kept losses summed"
        + (", over the batch's B * T positions" if declared == "mean" else "")
        + f"), or (l.view(B, -1).sum(1) / kept.view(B, -1).sum(1).clamp(min=1)).{reduce}() "
        f"with kept = y != {ignore} (each example's own mean). A model that computes this "
        f"loss inside its forward (transformers' labels=) cannot be told so: call it "
        f"without labels and take l from its logits, shifted as it does for a causal LM: "
        f"F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), "
        f"ignore_index={ignore}, reduction='none'), kept = labels[:, 1:] != {ignore}. "
        f"(A row of zeros is read as dropped; a target predicted with probability 1 has "
        f"one too, told apart only while the model's output is kept alive: out = model(x))"
    )
