"""Name the layer when torch refuses an input of another dtype or device (stop 35).

A float64 batch given to a float32 layer, an integer batch, a float32 batch given to a
``.half()`` layer, or a batch on another device fails inside torch ("mat1 and mat2 must
have the same dtype", "Input type ... should be the same", "Tensor on device cpu is not
on the expected device meta!") with no word of which layer. Checking every input on
every call would cost the tuned paths, so the layers check nothing on success: each
wraps its torch operations in ``try``/``except`` (free in CPython 3.11 until something
raises) and, once torch has raised, asks :func:`raise_if_mismatched` whether an input's
dtype or device differs from the parameters of the module where torch failed. If so,
the error is replaced by one that names the layer (and the path of the module inside
it), expected vs got, and the fix, with torch's error as its cause; if not, torch's
error goes on unchanged.
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn

from tying.core.slots import base_class


class InputDtypeError(TypeError, RuntimeError):
    """An input's dtype differs from the parameters of the layer that reads it.

    Also a ``RuntimeError``, what torch raised here before (code catching that still works).
    """

    def __init__(self, message: str, site: nn.Module, detail: str) -> None:
        super().__init__(message)
        self.site, self.detail = site, detail


class InputDeviceError(ValueError, RuntimeError):
    """An input lies on another device than the parameters of the layer that reads it.

    Also a ``RuntimeError``, what torch raised here before (code catching that still works).
    """

    def __init__(self, message: str, site: nn.Module, detail: str) -> None:
        super().__init__(message)
        self.site, self.detail = site, detail


# what torch raises for a dtype or device clash ("... not implemented for 'Long'" is a
# NotImplementedError; a meta tensor read as numpy a TypeError), and the named errors of
# the tying layers inside a layer (an InputDeviceError is a ValueError)
CAUGHT = (RuntimeError, TypeError, NotImplementedError, InputDeviceError)


def _deepest_module(layer: nn.Module, tb: TracebackType | None) -> nn.Module:
    """The innermost module of ``layer`` (itself included) whose method was running
    when torch raised: where the clash happened."""
    inside = {id(m) for m in layer.modules()}
    site = layer
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in inside:
            site = obj
        tb = tb.tb_next
    return site


def _path(layer: nn.Module, site: nn.Module) -> str | None:
    for name, module in layer.named_modules():
        if module is site:
            return name
    return None


def _where(layer: nn.Module, site: nn.Module) -> str:
    name = base_class(layer).__name__  # not the Tied… class a tie installs
    path = _path(layer, site) if site is not layer else ""
    if not path:
        return name
    return f"{name} (at .{path}, a {base_class(site).__name__})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def raise_if_mismatched(
    layer: nn.Module, exc: BaseException, *inputs, names: tuple = (), devices: dict | None = None
) -> None:
    """In an ``except`` clause around ``layer``'s torch operations: raise a named error when
    one of ``inputs`` has another dtype or device than the parameters where torch failed.

    Returns (and the caller re-raises ``exc`` unchanged) when no input differs, or when
    nothing in ``layer`` holds parameters to compare with.

    Args:
        layer: the public layer whose ``forward`` caught ``exc``.
        exc: what torch raised (or the named error of a tying layer inside ``layer``).
        inputs: the tensors the layer reads as data (``None`` and non-tensors skipped;
            ids and masks go in ``devices``: their dtype is not the parameters').
        names: the argument name of each of ``inputs`` in the message (default ``x``).
        devices: ``{name: tensor}`` compared by device only (ids, masks, adjacencies).

    Raises:
        InputDeviceError: (a ``ValueError``) an input is on another device.
        InputDtypeError: (a ``TypeError``) an input has another dtype.

    Example:
        >>> from tying.nn import HashedLinear
        >>> layer = HashedLinear(4, 3, buckets=5)
        >>> try:
        ...     layer(torch.randn(2, 4, dtype=torch.float64))
        ... except TypeError as e:
        ...     print(str(e)[:77])
        HashedLinear: the input is torch.float64 but the layer's parameters are torch
    """
    if isinstance(exc, (InputDtypeError, InputDeviceError)):
        # a tying layer inside this one named it: say where it sits in this layer
        if exc.site is not layer and _path(layer, exc.site):
            raise type(exc)(
                f"{_where(layer, exc.site)}: {exc.detail}", exc.site, exc.detail
            ) from exc.__cause__
        return
    site = _deepest_module(layer, exc.__traceback__)
    params = [p for p in site.parameters() if p.is_floating_point()]
    if not params:
        params = [p for p in layer.parameters() if p.is_floating_point()]
    if not params:
        return
    dtype, device = params[0].dtype, params[0].device
    named = [
        (names[i] if i < len(names) else "x", t)
        for i, t in enumerate(inputs)
        if isinstance(t, torch.Tensor)
    ]
    said = _first_line(exc)
    for name, t in [*named, *(devices or {}).items()]:
        if isinstance(t, torch.Tensor) and t.device != device:
            detail = (
                f"{_label(name)} is on {t.device} but the layer's parameters are on {device}; "
                f"move one to the other: {name}.to({str(device)!r}) or "
                f"layer.to({str(t.device)!r}) (torch: {said})"
            )
            raise InputDeviceError(f"{_where(layer, site)}: {detail}", site, detail) from exc
    for name, t in named:
        if t.dtype != dtype:
            if torch.is_autocast_enabled(t.device.type):
                # autocast runs some ops (norms, softmax) in float32 whatever the input
                fix = (
                    f"under autocast keep the parameters float32 (autocast casts per "
                    f"op): layer.float(), not layer.to({dtype})"
                )
                detail = (
                    f"{_label(name)} is {t.dtype} but the layer's parameters are {dtype}; {fix}"
                )
            else:
                detail = dtype_detail(t.dtype, dtype, name)
            detail += f" (torch: {said})"
            raise InputDtypeError(f"{_where(layer, site)}: {detail}", site, detail) from exc


def _label(name: str) -> str:
    return "the input" if name in ("x", "input") else f"the input {name}"


def dtype_detail(got: torch.dtype, expected: torch.dtype, name: str = "x") -> str:
    """What is wrong and the fix, for an input ``name`` of dtype ``got`` to parameters of
    dtype ``expected``."""
    if got.is_floating_point:
        fix = f"pass {name}.to({expected}) or convert the layer with layer.to({got})"
    else:
        fix = f"a float layer reads floats: pass {name}.to({expected})"
    return f"{_label(name)} is {got} but the layer's parameters are {expected}; {fix}"
