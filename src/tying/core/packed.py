"""Packed weights: what a quantized module stores outside ``parameters()``.

``torch.ao`` quantized modules (``quantize_dynamic``'s and ``convert``'s Linear, the
quantized Conv and Embedding) keep their int8 weight and float bias in a packed
``torch.ScriptObject`` (``0._packed_params._packed_params`` in the state dict), not in
parameters. ``tying.count`` of such a model reported 0 parameters and no tie group, even
when one quantized module is seated twice (stop 39); it now counts these weights, each
packed object once in ``physical`` and once per seat in ``logical``, the way it counts a
module tied whole. Packed recurrent layers (quantized LSTM/GRU) are not unpacked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["packed_weights"]


def packed_weights(model: nn.Module) -> list[tuple[int, str, list]]:
    """The packed weights of every quantized module in ``model``, one entry per seat.

    Args:
        model: any module.

    Returns:
        ``(key, path, tensors)`` per seat of a module holding packed weights, in module
        order: ``key`` is the same for every seat of one module object, ``path`` names
        the seat (``"0._packed_params"``), and ``tensors`` is ``[(name, tensor), ...]``
        (``weight``, and ``bias`` when there is one). [] for a model with none.

    Example:
        >>> import torch, warnings
        >>> from tying.core.packed import packed_weights
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     q = torch.ao.quantization.quantize_dynamic(
        ...         torch.nn.Sequential(torch.nn.Linear(4, 2)), {torch.nn.Linear})
        >>> [(p, [(n, t.numel()) for n, t in ts]) for _, p, ts in packed_weights(q)]
        [('0._packed_params', [('weight', 8), ('bias', 2)])]
    """
    import torch

    out = []
    for path, mod in model.named_modules(remove_duplicate=False):
        d = mod.__dict__
        if isinstance(d.get("_packed_params"), torch.ScriptObject) and callable(
            getattr(mod, "_weight_bias", None)
        ):
            weight, bias = mod._weight_bias()  # Linear's packed params, a quantized Conv
        elif isinstance(d.get("_packed_weight"), torch.ScriptObject) and callable(
            getattr(mod, "_weight", None)
        ):
            weight, bias = mod._weight(), None  # a quantized Embedding(Bag)'s packed params
        else:
            continue
        tensors = [("weight", weight)] + ([] if bias is None else [("bias", bias)])
        out.append((id(mod), path, tensors))
    return out
