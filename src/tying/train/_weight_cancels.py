"""A class weight that divides out of each example's loss under ``mode="vmap"`` (stop 59).

``mode="vmap"`` (and :func:`~tying.train.per_example_grads`) applies ``loss_fn`` to each
example alone, so a 0-d loss is that example's own. ``nn.CrossEntropyLoss(weight=w)``
with its default ``reduction="mean"`` divides by the weights of the targets it kept; over
one target that is ``w[y_b] * loss_b / w[y_b] = loss_b``: the class weight vanished, and
every example got the gradient of its unweighted loss (norms 1.58 where the weighted
loss gives 3.15, and ``mode="ghost"`` refuses the 0-d loss), with no error.
:class:`WeightCancels` refuses that call, where the weight has two different values and
the example has one target; a mean over an example's own several targets (its tokens)
is that example's weighted mean and is let through.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_LOSSES = {F.cross_entropy: "cross_entropy", F.nll_loss: "nll_loss"}
_SIGNATURES = {f: inspect.signature(f) for f in _LOSSES}


def _reduction(bound) -> str:
    size_average, reduce = bound.get("size_average"), bound.get("reduce")
    if size_average is not None or reduce is not None:  # torch's deprecated pair wins
        from torch.nn import _reduction

        return _reduction.legacy_get_string(size_average, reduce, emit_warning=False)
    return bound.get("reduction", "mean")


def refuse_cancelling_weight(func, args, kwargs) -> None:
    """Refuse ``F.cross_entropy``/``F.nll_loss`` with a class weight of two or more values,
    ``reduction="mean"``, on one example's single target.

    Args:
        func: the torch function called.
        args, kwargs: its arguments (the input and target of one example alone).

    Raises:
        ValueError: naming the loss and the per-example form to return instead.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> out, y, w = torch.zeros(1, 3), torch.tensor([2]), torch.tensor([1.0, 2.0, 3.0])
        >>> refuse_cancelling_weight(F.cross_entropy, (out, y), {"weight": w, "reduction": "none"})
        >>> try:
        ...     refuse_cancelling_weight(F.cross_entropy, (out, y), {"weight": w})
        ... except ValueError as err:
        ...     print(str(err)[:60])
        per-example gradients: loss_fn calls cross_entropy with a cl
    """
    name = _LOSSES.get(func)
    if name is None:
        return
    try:
        bound = _SIGNATURES[func].bind(*args, **kwargs).arguments
    except TypeError:  # torch raises its own error for the call
        return
    weight, target = bound.get("weight"), bound.get("target")
    if not isinstance(weight, torch.Tensor) or weight.numel() < 2:
        return
    if not isinstance(target, torch.Tensor) or target.numel() != 1:
        return  # several targets: the example's own weighted mean
    if _reduction(bound) != "mean":
        return
    if bool((weight == weight.flatten()[0]).all()):
        return  # one value throughout: it divides out of the batch's mean too
    raise ValueError(
        f"per-example gradients: loss_fn calls {name} with a class weight and "
        f"reduction='mean', and each example's loss is computed alone, over its one "
        f"target: the weight divides out (w[y_b] * loss_b / w[y_b]), so every example "
        f"would get the gradient of its unweighted loss, with no error. Return "
        f"F.{name}(out, y, weight=w, reduction='none') (each example's w[y_b] * loss_b; "
        f"the DP step averages over the batch itself), as mode='ghost' requires"
    )


class WeightCancels(TorchFunctionMode):
    """Runs one example's loss, refusing a class-weighted mean over its single target
    (:func:`refuse_cancelling_weight`); every other call runs as it is.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> with WeightCancels():
        ...     round(F.cross_entropy(torch.zeros(1, 3), torch.tensor([1]), weight=torch.ones(3)).item(), 4)
        1.0986
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOSSES:
            refuse_cancelling_weight(func, args, kwargs)
        return func(*args, **kwargs)
