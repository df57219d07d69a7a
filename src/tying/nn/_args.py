"""Argument checks shared by the layers."""

from __future__ import annotations

import numbers

import numpy as np


def is_int(value, minimum: int) -> bool:
    """``value`` is an int (not a bool: ``True`` is not the size 1) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def flag(layer: str, name: str, value) -> bool:
    """``value`` as a bool: ``True``/``False`` (NumPy's too) or the ints ``0``/``1`` (as
    ``nn.Linear(bias=0)`` takes them), else a ``TypeError``.

    ``bool(value)`` read ``tied="no"``/``"False"`` (truthy strings) as True and built the
    tied layer the caller switched off, ``batch_first="no"`` read the batch as time, with
    no error (stop 38). A string, ``None``, a float or any other int is refused.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    raise TypeError(
        f"{layer}: {name} must be True or False, got {value!r} ({type(value).__name__}); "
        f'a string or number is read as its truth value ("no" means True): pass a bool'
    )


def plain_int(value):
    """A NumPy integer as the Python int it holds (``np.int64(3)`` → ``3``, as torch's layers
    take it); anything else unchanged, for the caller's own check (``np.bool_`` is not a
    ``np.integer``, so it stays refused)."""
    return int(value) if isinstance(value, np.integer) else value


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
