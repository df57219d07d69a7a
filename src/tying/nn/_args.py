"""Argument checks shared by the layers."""

from __future__ import annotations


def is_int(value, minimum: int) -> bool:
    """``value`` is an int (not a bool: ``True`` is not the size 1) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


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
