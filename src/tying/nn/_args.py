"""Argument checks shared by the layers."""

from __future__ import annotations

import numbers

import numpy as np


def is_int(value, minimum: int) -> bool:
    """``value`` is an integer (Python's or NumPy's, as torch's layers take them; not a
    bool: ``True`` is not the size 1) of at least ``minimum``."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool | np.bool_)
        and int(value) >= minimum
    )


def int_arg(value, minimum: int, error: str, exc: type[Exception] = ValueError) -> int:
    """``value`` as a plain Python ``int`` when it is an integer of at least ``minimum``
    (``np.int64(8)`` → ``8``, as ``nn.Linear`` takes it), else ``exc(error)``.

    Every size and count of ``tying.nn`` goes through here, so a NumPy size
    (``np.prod(shape)``) is taken and stored as an int (repr, json and pickles see
    ``8``, not ``np.int64(8)``), while a bool, a float (``8.0``) or a string is refused
    as before (stop 41: only ``HashedEmbedding`` took NumPy sizes).
    """
    if not is_int(value, minimum):
        raise exc(error)
    return int(value)


def is_bool(value) -> bool:
    """``value`` is a bool, Python's or NumPy's: refused where a number is meant
    (``t1=np.True_`` was read as 1.0 with no error while ``t1=True`` was refused)."""
    return isinstance(value, bool | np.bool_)


def scalar_value(value):
    """``value`` as a number to check: a one-element real tensor read without its graph
    (reading a tensor that requires grad as a float warns), anything else as given."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value.detach().item()
    return value


def stored_float(who: str, name: str, value, fix: str) -> float:
    """The float a module stores for ``name``; a tensor that requires grad is refused:
    ``float(value)`` dropped the gradient to a learned ``t1``/``period`` with no error
    (stop 41)."""
    import torch

    if isinstance(value, torch.Tensor) and value.requires_grad:
        raise ValueError(
            f"{who}: {name} is stored as a float, so a {name} tensor that requires grad "
            f"would get no gradient; {fix}"
        )
    return float(scalar_value(value))


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


def check_conv1d_geometry(layer: str, stride, padding, dilation) -> tuple:
    """Refuse what ``torch.nn.functional.conv1d`` would refuse only at the first call
    (stop 38): ``stride`` and ``dilation`` an int >= 1, ``padding`` an int >= 0 or
    ``"same"``/``"valid"``, each int also as a 1-tuple (bools are not sizes).

    Returns ``(stride, padding, dilation)`` with each int a plain Python int (NumPy ints
    taken, as ``nn.Conv1d`` takes them) and a 1-tuple kept a 1-tuple.
    """
    out = []
    for name, value, minimum in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if name == "padding" and isinstance(value, str) and value in ("same", "valid"):
            out.append(value)
            continue
        one_tuple = isinstance(value, tuple | list) and len(value) == 1
        also = ' or "same"/"valid"' if name == "padding" else ""
        error = (
            f"{layer}: {name} must be an int >= {minimum} (or a 1-tuple of one){also}, "
            f"got {value!r}"
        )
        one = int_arg(value[0] if one_tuple else value, minimum, error)
        out.append((one,) if one_tuple else one)
    return tuple(out)


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
