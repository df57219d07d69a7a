"""Argument checks shared by the layers."""

from __future__ import annotations

import numbers

import numpy as np


def is_int(value, minimum: int) -> bool:
    """``value`` is an int (not a bool: ``True`` is not the size 1) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_conv1d_geometry(layer: str, stride, padding, dilation) -> None:
    """Refuse what ``torch.nn.functional.conv1d`` would refuse only at the first call
    (stop 38): ``stride`` and ``dilation`` an int >= 1, ``padding`` an int >= 0 or
    ``"same"``/``"valid"``, each int also as a 1-tuple (bools are not sizes)."""
    for name, value, minimum in (
        ("stride", stride, 1),
        ("dilation", dilation, 1),
        ("padding", padding, 0),
    ):
        if name == "padding" and value in ("same", "valid"):
            continue
        one = value[0] if isinstance(value, tuple | list) and len(value) == 1 else value
        integral = isinstance(one, numbers.Integral) and not isinstance(one, bool | np.bool_)
        if not (integral and one >= minimum):  # NumPy ints too, as nn.Conv1d takes them
            also = ' or "same"/"valid"' if name == "padding" else ""
            raise ValueError(
                f"{layer}: {name} must be an int >= {minimum} (or a 1-tuple of one){also}, "
                f"got {value!r}"
            )


def forward_ad_active(*tensors) -> bool:
    """Whether forward-mode AD reaches this call: a tangent on one of ``tensors`` in a
    ``torch.autograd.forward_ad.dual_level``, or a ``torch.func.jvp``/``jacfwd``.

    Layers whose fast kernel has no forward derivative (SDPA's CPU flash kernel, sparse
    ``mm``) take a plain-op route then (stop 34); elsewhere their numbers are unchanged.
    """
    import torch

    if torch.autograd.forward_ad._current_level >= 0:
        from torch.autograd.forward_ad import unpack_dual

        if any(t is not None and unpack_dual(t).tangent is not None for t in tensors):
            return True
    if not torch._C._are_functorch_transforms_active():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters())
