"""One private gradient: per-example gradients, clipped, summed and noised (claim D10).

:func:`private_grad` computes ``(Σ_b clip_C(g_b) + N(0, σ²C²)) / denominator`` on a
model's *physical* parameters, a tied tensor's uses summed before it is clipped (see
:mod:`tying.train.dp` for why). ``mode="vmap"`` takes each example's gradient from
:class:`~tying.train.per_example._PerExample` a chunk of examples at a time
(:data:`CHUNK_ELEMENTS`) and clips each chunk as soon as it exists; ``mode="ghost"``
hands the batch to :class:`~tying.train.GhostClipping`. :func:`per_example_grads`,
:func:`per_example_norms` and :func:`clip_factors` are the steps on their own, and
the argument checks here are the ones :class:`~tying.train.DPSGD` shares.

Split from ``dp.py`` (house rule 1: under 1,000 lines); every name here is still
importable from :mod:`tying.train.dp`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping

import torch
from torch import nn

from tying.train import wide_norms
from tying.train._dict_batch import dict_batch_advice
from tying.train.ghost import _LOW_PRECISION, GhostClipping, _autocast_off
from tying.train.per_example import _PerExample

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("vmap", "ghost")


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # a one-element tensor (a value read off a schedule or a config) named no fix (stop 60)
        hint = (
            f"; pass a Python number: {name}=float(value)"
            if isinstance(value, torch.Tensor) and value.numel() == 1
            else ""
        )
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}{hint}")
    return float(value)


def _check_noise_multiplier(value) -> None:
    # NaN would add no noise at all (normal(0, nan) is refused by torch only sometimes,
    # and a NaN σ compares False to 0), inf makes every parameter NaN: neither is DP.
    v = _real("noise_multiplier", value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(
            f"noise_multiplier must be a finite number >= 0 (the noise std over the clipping "
            f"bound), got {value}"
        )


def _check_max_grad_norm(value) -> None:
    # inf: nothing is clipped and the noise σ·C is infinite, so every parameter turns NaN.
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"max_grad_norm must be one real number, got {type(value).__name__} {value!r}: "
            f"per-layer bounds (Opacus' clipping='per_layer') are not supported; each "
            f"example's whole gradient (every physical tensor, a tie's uses summed) is "
            f"clipped to one bound C, so pass one float (per-layer bounds C_k bound the "
            f"same sensitivity as C = sqrt(sum of C_k squared))"
        )
    v = _real("max_grad_norm", value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(
            f"max_grad_norm must be a finite number > 0 (the per-example clipping bound C), "
            f"got {value}"
        )


def _check_denominator(value) -> None:
    v = _real("denominator", value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(
            f"denominator must be a finite number > 0 (the expected batch size), got {value}"
        )


def _check_batch(x, y, model: nn.Module | None = None) -> None:
    """x (a tensor or a tuple of tensors) and y must have the same number of rows; a dict
    ``x`` is refused with the tuple or keyword wrapper ``model`` takes (stop 58)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a tensor with the batch first, got {type(y).__name__}")
    if y.dim() == 0:
        raise ValueError("y must have the batch as its first dimension, got a 0-d tensor")
    if isinstance(x, (dict, list)):  # stop 54: named as 'x', without the forms that run
        kind = "a dict" if isinstance(x, dict) else "a list"
        raise TypeError(
            f"x must be a tensor or a tuple of tensors with the batch first (the model is "
            f"called as model(x) or model(*x)), got {kind}"
            + (
                dict_batch_advice(x, model)
                if isinstance(x, dict)
                else "; pass a tuple of tensors, or wrap the model so that its forward takes "
                "them positionally"
            )
        )
    xs = x if isinstance(x, tuple) else (x,)
    for i, t in enumerate(xs):
        if not isinstance(t, torch.Tensor):
            where = "x" if not isinstance(x, tuple) else f"x[{i}]"
            raise TypeError(
                f"{where} must be a tensor with the batch first, got {type(t).__name__}"
            )
    rows = {t.shape[0] for t in xs if t.dim() > 0}
    if len(xs) > 1 and len(rows) == 1 and all(t.dim() > 0 for t in xs) and rows != {y.shape[0]}:
        # stop 58 review: every input agrees and y is the odd one out; x[0] was named, with
        # the advice to move a shared mask out of x (the token ids, followed)
        raise ValueError(
            f"y has {y.shape[0]} rows but every input in x has {rows.pop()}: every input "
            f"and the targets must hold the same examples, batch first"
        )
    for i, t in enumerate(xs):
        where = "x" if not isinstance(x, tuple) else f"x[{i}]"
        if t.dim() == 0 or t.shape[0] != y.shape[0]:
            got = "a 0-d tensor" if t.dim() == 0 else f"{t.shape[0]} rows"
            raise ValueError(
                f"{where} has {got} but y has {y.shape[0]}: every input and the targets must "
                f"hold the same examples, batch first"
                + (
                    "; an input shared by every example (a mask, a position table) does not go "
                    "in x: keep it on the model (register_buffer) or expand it to one row per "
                    "example"
                    if isinstance(x, tuple)
                    else ""
                )
            )


def _check_empty_batch(y: torch.Tensor, denominator, sigma, name: str) -> None:
    """Refuse an empty batch averaged by its actual size (stop 32).

    Its actual size is 0, and the noise was divided by 1 instead: a step of pure noise
    with std ``σC``, ``B`` times the usual ``σC/B`` (64x at a batch of 64), with no
    error. Only the expected batch size gives such a step its right scale (at σ = 0 the
    step is 0 either way, and is let through).
    """
    if y.shape[0] == 0 and denominator is None and sigma > 0:
        raise ValueError(
            f"an empty batch (0 rows, as Poisson sampling draws) has no actual batch size "
            f"to average by: its noise (std noise_multiplier * max_grad_norm) would be "
            f"divided by 1, a step B times the usual size at batches of B; pass {name} so "
            f"that every step averages over the expected batch size (as Opacus does)"
        )


def _check_finite_norms(norms: torch.Tensor, offset: int = 0) -> None:
    """Refuse norms that are not finite; ``offset``: the first example's index in the batch."""
    # norms are >= 0, NaN or inf, and amax propagates NaN: one reduction and one read-back
    # where isfinite(...).all() took two reductions (~3 µs a step, stop 23)
    if norms.numel() == 0 or math.isfinite(float(norms.amax())):
        return
    bad = (~torch.isfinite(norms)).nonzero().flatten()  # not empty: some norm is not finite
    raise ValueError(
        f"the per-example gradients of examples {(bad[:5] + offset).tolist()} are not finite "
        f"(norms {norms[bad[:5]].tolist()}): clipping cannot bound them, so the step is "
        f"refused and the model left unchanged; check the loss and the inputs"
    )


def _check_finite_losses(losses: torch.Tensor, norms: torch.Tensor | None = None) -> None:
    """Refuse an example whose loss is NaN or inf (stop 50).

    Its gradient may still be finite, 0 where the loss is a constant NaN/inf on that row
    (``torch.where(bad, nan, loss)``, a masked or overflowed term): the example was
    averaged in as one of norm 0 (counted in the denominator, moving nothing), and the
    step ran with no error. A loss that is not a number has no gradient to trust.
    ``norms``: where some are not finite too, :func:`_check_finite_norms` says so first.
    """
    if losses.numel() == 0 or math.isfinite(float(losses.detach().sum())):
        return  # a finite sum: every loss is finite (a sum that overflows is checked below)
    bad = (~torch.isfinite(losses.detach())).nonzero().flatten()
    if bad.numel() == 0:  # the sum overflowed, every loss is finite
        return
    if norms is not None:
        _check_finite_norms(norms)  # a gradient that is not finite: that message first
    raise ValueError(
        f"the losses of examples {bad[:5].tolist()} are not finite "
        f"({losses.detach()[bad[:5]].tolist()}): an example with a NaN or inf loss has no "
        f"gradient to trust (a NaN/inf that does not reach the gradient would be averaged "
        f"in as a gradient of 0), so they are refused and nothing is changed; check the "
        f"loss (log of 0, 0/0, an overflow) and the inputs of those examples (stop 59: "
        f"a reduction='mean' loss over an example whose targets are all ignore_index is "
        f"0/0 = NaN, as each example's loss is its own; reduction='none' gives it 0)"
    )


def _check_finite_release(pg: PrivateGrad, sigma: float, C: float) -> None:
    """Refuse a noisy gradient that is not finite although every clipped one was (stop 50).

    The noise's std ``σC`` past the dtype's range (``max_grad_norm=1e38``,
    ``noise_multiplier=10``: 1e39 in float32), or a noisy mean past float16's 65504 when
    cast back to a float16 parameter, gave inf/NaN gradients and parameters, no error.
    One read-back for all tensors (an infinity-norm each, which propagates NaN).
    """
    grads = [g for g in pg.grads.values() if g.numel()]
    if not grads:
        return
    peaks = torch.stack([torch.linalg.vector_norm(g.detach(), ord=math.inf).float() for g in grads])
    if math.isfinite(float(peaks.amax())):
        return
    name = next(n for n, g in pg.grads.items() if g.numel() and not bool(g.isfinite().all()))
    dtype = pg.grads[name].dtype
    raise ValueError(
        f"the noisy gradient of {name!r} is not finite in {dtype} (largest representable "
        f"{torch.finfo(dtype).max:.3g}): noise_multiplier * max_grad_norm = {sigma * C:.3g} "
        f"is the noise's std, and the clipped sum is up to batch size * max_grad_norm; "
        f"the step is refused and the model left unchanged. Lower max_grad_norm (clipping "
        f"bounds of 0.1-10 are usual) or train in a wider dtype"
    )


def per_example_grads(model: nn.Module, loss_fn: LossFn, x, y) -> dict[str, torch.Tensor]:
    """Every example's gradient on every trainable *physical* parameter.

    Args:
        model: any ``nn.Module`` (tied with ``tying`` or by hand); batch-first input.
        loss_fn: ``(output, target) -> per-example losses (B,)``
            (e.g. ``lambda out, y: F.cross_entropy(out, y, reduction="none")``).
        x: the inputs, a tensor or a tuple of tensors with the batch first.
        y: the targets, batch first.

    Returns:
        ``{name: tensor of shape (B, *param.shape)}`` keyed like ``model.named_parameters()``;
        a tied tensor appears once, holding the sum of its uses' gradients.

    Raises:
        ValueError: inputs and targets of different batch sizes; an example whose loss
            is NaN or inf (its gradient may read as 0);
            a BatchNorm layer in training mode, or any forward that mixes the
            examples of a batch (naming the module where it starts); an
            ``nn.Embedding`` with ``max_norm``; a model with no trainable
            parameter; a buffer the forward writes from the batch (a running mean of
            the inputs, an InstanceNorm's running statistics), naming it; a loss or a
            forward that gives one example as many rows as the batch (a tensor of the
            whole batch captured outside the inputs, such as per-example loss weights);
            a full backward hook (module or global) or a gradient hook on
            a parameter, which no way to per-example gradients runs right (forward
            hooks and pre-hooks are fine: they run per example).

    Example:
        >>> import torch, tying
        >>> from tying.train import per_example_grads
        >>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3),
        ...                          "out": torch.nn.Linear(3, 5, bias=False)})
        >>> _ = tying.Plan([tying.share("out.weight", like="emb.weight")]).apply(m)
        >>> net = torch.nn.Sequential(m.emb, m.out)
        >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
        >>> g = per_example_grads(net, ce, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]))
        >>> list(g), tuple(g["0.weight"].shape)        # one tensor, both uses summed
        (['0.weight'], (3, 5, 3))
    """
    _check_batch(x, y, model)
    grads, losses = _vmap_grads(model, loss_fn, x, y)
    _check_finite_losses(losses)  # a NaN-loss row would read as a gradient of 0 (stop 50)
    return grads


def _vmap_grads(model: nn.Module, loss_fn: LossFn, x, y):
    pe = _PerExample(model)
    xs = x if isinstance(x, tuple) else (x,)
    if y.shape[0] == 0:  # an empty Poisson batch: vmap failed inside torch (stop 60)
        empty = {n: p.new_zeros((0, *p.shape)) for n, p in zip(pe.names, pe.params)}
        return empty, _no_rows(pe.params)
    grads, losses = pe(loss_fn, xs, y)
    return dict(zip(pe.names, grads)), losses  # ({name: (B, *shape)}, losses (B,))


# The DP step makes per-example gradients of at most this many elements (floats) at a
# time: 1 GiB in float32 whatever the batch size, where the whole batch at once holds B
# copies of the model. Not smaller: on the MLP of issue 19 (B x 400k = 102M elements)
# 4 chunks ran at 0.9-1.1x Opacus' speed with 2 threads, one chunk at 1.4-1.5x.
CHUNK_ELEMENTS = 2**28


def _no_rows(params) -> torch.Tensor:
    """The ``(0,)`` norms or losses of an empty batch, in the parameters' dtype and device
    (a plain ``torch.zeros(0)`` was float32 on the CPU for a float64 or GPU model, where a
    batch of two gives the model's: ``torch.cat`` of the steps' losses then mixed them;
    stop 60 review)."""
    first = next(iter(params), None)
    return torch.zeros(0) if first is None else first.new_zeros(0)


def _nothing_to_clip(names, tensors) -> PrivateGrad:
    """An empty Poisson batch's result: zero sums, ``(0,)`` norms and losses."""
    tensors = list(tensors)
    zero = {n: torch.zeros_like(p) for n, p in zip(names, tensors)}
    return PrivateGrad(zero, _no_rows(tensors), _no_rows(tensors))


def _rows(g: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``g`` (B, *shape) as a (B, P) matrix in its memory order, and that order of dims 1...

    Autograd hands a Linear's per-example weight gradients transposed in memory
    ((B, out, in) with strides (out*in, 1, out)); ``g.reshape(B, -1)`` then copies the
    whole tensor, once for the norms and once for the sum (a third of a tiny model's
    clipping time). Read in memory order, the same entries form a (B, P) view.
    """
    order = sorted(range(1, g.dim()), key=lambda d: g.stride(d), reverse=True)
    return g.permute(0, *order).reshape(g.shape[0], -1), order


def _weighted_sum(c: torch.Tensor, rows: torch.Tensor, order: list[int], shape) -> torch.Tensor:
    """``Σ_b c_b g_b`` from :func:`_rows`' view: one vector-matrix product, back in ``shape``."""
    if rows.dtype != c.dtype:  # a float16/bfloat16 parameter: summed in the norms' dtype
        rows = rows.to(c.dtype)
    s = (c @ rows).view([shape[d - 1] for d in order])
    return s.permute([order.index(d) for d in range(1, len(shape) + 1)])


def _vmap_clipped_sum(
    model: nn.Module, loss_fn: LossFn, x, y, max_grad_norm: float, pe: _PerExample | None = None
):
    """Σ_b clip_C(g_b), per-example norms and losses, one chunk of examples at a time.

    An example's clipping factor depends on its own gradient only, so each chunk is
    clipped and summed as soon as its gradients exist; the result equals clipping
    the whole batch at once (up to the order of the float additions). ``pe``: a
    :class:`_PerExample` of ``model`` that is known fresh (default: built here).
    """
    pe = pe or _PerExample(model)
    xs = x if isinstance(x, tuple) else (x,)
    B = y.shape[0]
    chunk = max(1, min(B, CHUNK_ELEMENTS // max(pe.size, 1)))
    if B == 0:  # an empty batch: nothing to clip
        return _nothing_to_clip(pe.names, pe.params)
    summed, norms, losses = None, [], []
    for start in range(0, B, chunk):
        if chunk >= B:  # the whole batch: no slicing (two ops on a tiny model's step)
            grads, loss = pe(loss_fn, xs, y)
        else:
            part = slice(start, start + chunk)
            grads, loss = pe(loss_fn, tuple(t[part] for t in xs), y[part])
        rows = [_rows(g) for g in grads]
        with _autocast_off(loss.device):  # the clipped sum's norm is the norm clipped
            n_b, finite = _norms([r for r, _ in rows])
            if not finite:  # refused before anything is summed or applied
                _check_finite_norms(n_b, start)
            c = _clip_factors(n_b, max_grad_norm)
            parts = [_weighted_sum(c, r, o, p.shape) for (r, o), p in zip(rows, pe.params)]
        if summed is None:  # one chunk covers most batches: no zeros and no add
            summed = parts
        else:
            for s, part_sum in zip(summed, parts):
                s.add_(part_sum)
        norms.append(n_b)
        losses.append(loss)
    if len(norms) == 1:
        return PrivateGrad(dict(zip(pe.names, summed)), norms[0], losses[0])
    return PrivateGrad(dict(zip(pe.names, summed)), torch.cat(norms), torch.cat(losses))


# Norms, clip factors, the clipped sum and its noise are kept in float32 for float16 and
# bfloat16 models, and cast to the parameter's dtype only after the noise: norms rounded
# to bfloat16 (8 bits) and a clip factor rounded again let a clipped example reach
# 1.0086 C on a bfloat16 MLP (float16: 1.0012 C), over the bound the privacy accounting
# assumes, with no error (stop 18). float32/float64 models are computed as before.
# (_LOW_PRECISION is ghost.py's: both modes widen the same dtypes.)


def _accumulate(t: torch.Tensor) -> torch.dtype | None:
    return torch.float32 if t.dtype in _LOW_PRECISION else None


def _norms(rows: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """Per-example norms of (B, P_k) matrices taken together as one (B, Σ P_k) matrix,
    and whether all are finite (one read-back for both).

    A finite gradient whose squares overflow the dtype (entries ~1e20 in float32) had a
    norm of inf and was refused as "not finite" (stop 51): such norms are taken again,
    scaled, in float64 (:mod:`~tying.train.wide_norms`).
    """
    return wide_norms.rescued(_fast_norms(rows), lambda: wide_norms.scaled_norms(rows))


def _fast_norms(rows: list[torch.Tensor]) -> torch.Tensor:
    if len(rows) == 1:
        return torch.linalg.vector_norm(rows[0], dim=1, dtype=_accumulate(rows[0]))
    per = [torch.linalg.vector_norm(r, dim=1, dtype=_accumulate(r)) for r in rows]
    dtype = functools.reduce(torch.promote_types, (n.dtype for n in per))
    per = torch.stack([n.to(dtype) for n in per], 1)  # (B, k)
    return torch.linalg.vector_norm(per, dim=1)  # sqrt(Σ_k ‖g_bk‖²)


def per_example_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """The norm of each example's whole gradient (all parameters as one vector), shape (B,).

    Args:
        grads: per-example gradients by parameter name, each ``(B, *param.shape)`` with
            the same ``B``.

    Returns:
        The ``(B,)`` norms.

    Raises:
        ValueError: for no gradients, a 0-d entry, or entries of different ``B`` (one
            of batch 1 was broadcast over the others' examples, stop 38); a finite
            gradient whose norm is past its dtype's range (float32: 3.4e38). A norm
            whose squares alone overflow (entries ~1e20 in float32) is taken scaled,
            in float64, and returned right (stop 51).
        TypeError: ``grads`` that is not a dict, or an entry that is not a floating-point
            (or complex) tensor.

    Example:
        >>> import torch
        >>> from tying.train import per_example_norms
        >>> per_example_norms({"a": torch.tensor([[3.0], [0.0]]), "b": torch.tensor([[4.0], [1.0]])})
        tensor([5., 1.])
    """
    _check_batches(grads)
    # vector_norm reduces in one pass; pow(2).sum(1) first wrote a squared copy of every
    # per-example gradient (B copies of the model), which cost more than making them.
    # the row length spelt out: an empty batch's (0, *shape) has no -1 to infer (stop 60)
    rows = [g.reshape(g.shape[0], math.prod(g.shape[1:])) for g in grads.values()]
    sq = sum(torch.linalg.vector_norm(r, dim=1, dtype=_accumulate(r)).square() for r in rows)
    # squares past the dtype's range (a finite gradient of entries ~1e20 in float32) gave
    # inf with no error (stop 51): those norms are taken again, scaled, in float64
    norms = torch.as_tensor(sq).sqrt()
    return wide_norms.finite_or_rescaled(norms, lambda: wide_norms.scaled_norms(rows))


def _check_batches(grads: dict[str, torch.Tensor]) -> None:
    """Refuse what :func:`per_example_norms` would sum into wrong norms with no error."""
    if not isinstance(grads, Mapping):  # stop 62: a list crashed with an AttributeError
        raise TypeError(
            f"per_example_norms: grads must be a dict {{name: per-example gradient of shape "
            f"(B, *shape)}}, as per_example_grads returns, got {type(grads).__name__}; for a "
            f"list of tensors pass dict(enumerate(grads))"
        )
    if not grads:
        raise ValueError(
            "per_example_norms: no per-example gradients were given (an empty dict), so "
            "there is no batch to take norms of; pass {name: grad of shape (B, *shape)}"
        )
    batches = {}
    for name, g in grads.items():
        if not isinstance(g, torch.Tensor) or not (g.is_floating_point() or g.is_complex()):
            # stop 62: an integer tensor failed inside torch (linalg.vector_norm: "Expected
            # a floating point or complex tensor"), a number with an AttributeError
            kind = g.dtype if isinstance(g, torch.Tensor) else type(g).__name__
            raise TypeError(
                f"per_example_norms: {name!r} is {kind}; each entry must be a floating-point "
                f"tensor of per-example gradients (B, *param.shape): pass it as .float()"
            )
        if g.dim() == 0:
            raise ValueError(
                f"per_example_norms: {name!r} is a 0-d tensor; each entry needs a leading "
                f"batch dimension (B, *param.shape)"
            )
        batches.setdefault(int(g.shape[0]), name)
    if len(batches) > 1:
        (b0, n0), (b1, n1) = list(batches.items())[:2]
        raise ValueError(
            f"per_example_norms: {n0!r} holds {b0} examples but {n1!r} holds {b1}; every "
            f"entry must hold the same examples (a batch of 1 would be added to every "
            f"example's norm)"
        )


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, C / (‖g_b‖ + 1e-6))`` per example (Opacus' rule).

    Args:
        norms: the per-example gradient norms, a tensor (:func:`per_example_norms`).
        max_grad_norm: the clipping bound ``C`` (a finite number > 0).

    Returns:
        The factors, of the shape of ``norms``, each in ``[0, 1]``.

    Raises:
        TypeError: ``norms`` not a tensor (a NumPy array or a list failed inside the
            division); ``max_grad_norm`` not a real number.
        ValueError: a norm that is NaN, infinite or negative (its factor was NaN, 0 or
            negative: a NaN clipped sum, an example dropped, a gradient flipped, with no
            error; stop 61), naming it; ``max_grad_norm`` not > 0 or not finite.

    Example:
        >>> import torch
        >>> from tying.train import clip_factors
        >>> clip_factors(torch.tensor([0.5, 4.0]), 1.0)
        tensor([1.0000, 0.2500])
    """
    _check_max_grad_norm(max_grad_norm)
    _check_norms(norms)
    return _clip_factors(norms, max_grad_norm)


def _check_norms(norms) -> None:
    """Refuse what :func:`clip_factors` would turn into a wrong factor with no error."""
    if not isinstance(norms, torch.Tensor):
        raise TypeError(
            f"clip_factors: norms must be a tensor of per-example norms, got "
            f"{type(norms).__name__}; pass torch.as_tensor(norms)"
        )
    bad = ~torch.isfinite(norms) | (norms < 0)
    if bool(bad.any()):
        i = tuple(int(j) for j in bad.nonzero()[0])
        where = i[0] if len(i) == 1 else i
        raise ValueError(
            f"clip_factors: norms[{where}] = {float(norms[i])} is not a finite number >= 0 "
            f"(a NaN norm gives a NaN factor and a NaN clipped sum, an infinite one a factor "
            f"of 0, dropping the example, a negative one a negative factor, flipping its "
            f"gradient); take the norms from per_example_norms, and drop or fix an example "
            f"whose gradient is not finite (torch.isfinite on per_example_grads)"
        )


def _clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """:func:`clip_factors` without the check (a DP step checked ``C`` once, up front)."""
    return (max_grad_norm / (norms + 1e-6)).clamp_(max=1.0)


@dataclasses.dataclass
class PrivateGrad:
    """One private gradient.

    Attributes:
        grads: noisy, averaged gradient per physical parameter name.
        norms: per-example gradient norms before clipping, shape (B,).
        losses: per-example losses, shape (B,) (for logging; not private).
    """

    grads: dict[str, torch.Tensor]
    norms: torch.Tensor
    losses: torch.Tensor


def private_grad(
    model: nn.Module,
    loss_fn: LossFn,
    x,
    y,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    denominator: float | None = None,
    mode: str = "vmap",
    generator: torch.Generator | None = None,
) -> PrivateGrad:
    """``(Σ_b clip_C(g_b) + N(0, σ²C²)) / denominator`` on the physical parameters.

    Args:
        model, loss_fn, x, y: as in :func:`per_example_grads`.
        max_grad_norm: the clipping bound ``C``.
        noise_multiplier: ``σ`` (noise std is ``σ·C``); 0 gives clipping only.
        denominator: what the sum is divided by; the *expected* batch size under
            Poisson sampling (default: the actual batch size).
        mode: ``"vmap"`` (any model) or ``"ghost"`` (Linear/Embedding models, faster).
        generator: a ``torch.Generator`` for the noise.

    Returns:
        A :class:`PrivateGrad`.

    Raises:
        ValueError: unknown ``mode``; ``noise_multiplier`` negative or not finite;
            ``max_grad_norm`` or ``denominator`` not a finite number > 0; ``x`` and
            ``y`` with different numbers of rows; an empty batch with noise and no
            ``denominator`` (it has no size to average by); a per-example gradient or loss
            that is not finite; a noisy gradient that is not finite in the parameter's dtype
            (``noise_multiplier * max_grad_norm`` past its range); or a model that ``mode`` cannot handle (see :func:`per_example_grads`
            and :class:`GhostClipping` for the hooks each refuses).
        TypeError: an argument of the wrong type.

    Example:
        >>> import torch
        >>> from tying.train import private_grad
        >>> model = torch.nn.Linear(4, 2)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
        >>> pg = private_grad(model, ce, x, y, max_grad_norm=1.0, noise_multiplier=0.0)
        >>> bool(pg.grads["weight"].norm() <= 1.0 + 1e-6)   # a mean of vectors of norm <= C
        True
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_noise_multiplier(noise_multiplier)
    _check_max_grad_norm(max_grad_norm)
    if denominator is not None:
        _check_denominator(denominator)
    _check_batch(x, y, model)
    _check_empty_batch(y, denominator, noise_multiplier, "denominator=")
    ghost = GhostClipping(model) if mode == "ghost" else None
    res = _clipped_sum(model, ghost, loss_fn, x, y, max_grad_norm)
    pg = _noisy(res, noise_multiplier, max_grad_norm, denominator, generator)
    pg = _in_param_dtypes(pg, dict(model.named_parameters()))
    _check_finite_release(pg, noise_multiplier, max_grad_norm)
    return pg


def _clipped_sum(model, ghost, loss_fn, x, y, max_grad_norm, pe=None):
    if ghost is not None and y.shape[0] == 0:  # an empty Poisson batch: nothing to clip
        # (ghost clipping's reshapes failed on it: "cannot reshape tensor of 0 elements")
        return _nothing_to_clip(*ghost._trainable)
    if ghost is not None:
        res = ghost.clip(loss_fn, x, y, max_grad_norm)  # it refuses NaN/inf losses itself
        _check_finite_norms(res.norms)
        return PrivateGrad(res.grads, res.norms, res.losses)
    # its chunks' norms were checked as they came (before anything is applied: a refused
    # step changes nothing), with the read-back that rescues norms past the dtype (stop 51)
    res = _vmap_clipped_sum(model, loss_fn, x, y, max_grad_norm, pe)
    _check_finite_losses(res.losses)  # ghost.clip checks its own
    return res


def _in_param_dtypes(pg: PrivateGrad, params: dict[str, torch.Tensor]) -> PrivateGrad:
    """The noisy gradients cast to their parameters' dtypes (after the noise: see
    ``_LOW_PRECISION``); a no-op for float32/float64 models."""
    grads = {
        n: g if g.dtype == params[n].dtype else g.to(params[n].dtype) for n, g in pg.grads.items()
    }
    return PrivateGrad(grads, pg.norms, pg.losses)


def _noisy(res: PrivateGrad, sigma: float, C: float, denom, generator) -> PrivateGrad:
    """Add ``N(0, σ²C²)`` to each summed gradient and divide by ``denom`` (default: batch size)."""
    _check_noise_multiplier(sigma)
    B = res.norms.shape[0]
    d = float(denom) if denom is not None else float(max(B, 1))
    out = {}
    for name, s in res.grads.items():
        if sigma > 0:
            noise = torch.normal(
                0.0, sigma * C, size=s.shape, generator=generator, dtype=s.dtype, device=s.device
            )
            out[name] = noise.add_(s).div_(d)  # (s + noise) / d in the noise's own memory
        else:
            out[name] = s / d
    return PrivateGrad(out, res.norms, res.losses)
