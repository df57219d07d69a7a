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


def in_graph() -> bool:
    """Whether this call is being recorded into a graph (``torch.compile`` or
    ``torch.jit.trace``), where a Python ``if`` on a tensor's value runs once, at
    recording time, and is not part of what later calls run."""
    import torch

    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def assert_in_graph(ok, message: str, x):
    """Refuse a bad value inside a compiled or traced graph; returns ``x``.

    Args:
        ok: a 0-d bool tensor, True when the value is acceptable.
        message: the error's text (the rule and the fix; the values are not known
            while the graph is recorded).
        x: the tensor the caller goes on with.

    Returns:
        ``x``, bit for bit; under ``torch.jit.trace`` a tensor that depends on the check,
        so the traced graph keeps it (it drops an op whose result nothing reads, as
        ``torch._assert_async``'s; a traced ``HashedEmbedding`` read a row for an id out
        of range, and a traced Dice loss took logits, with no error: stop 52).

    Raises:
        RuntimeError: when the graph runs on a value with ``ok`` False (torch's
            assert), naming ``message``.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():  # torch 2.13: "torch.jit.trace is deprecated"
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     f = torch.jit.trace(
        ...         lambda x: assert_in_graph((x >= 0).all(), "x must be >= 0", x) * 2,
        ...         (torch.ones(2),),
        ...     )
        >>> f(torch.tensor([1.0, 2.0]))
        tensor([2., 4.])
        >>> try:
        ...     f(torch.tensor([-1.0, 2.0]))
        ... except RuntimeError as e:
        ...     print("x must be >= 0" in str(e))
        True
    """
    import torch

    if torch.jit.is_tracing():
        dep = torch.ops.aten._functional_assert_async.msg(ok, message, x.new_zeros(0))
        return torch.where(dep.sum() == 0, x, x)
    torch._assert_async(ok, message)
    return x


def refuse_script(self):
    """``__prepare_scriptable__`` of every ``tying.nn`` layer: refuse ``torch.jit.script``
    by name, with what works instead.

    TorchScript compiles none of them (their forwards check inputs in Python: ``try``
    blocks, f-strings, keyword-only arguments); it failed deep inside with "try blocks
    aren't supported" pointing at a line of the layer, also for an untied copy, the fix
    the core's refusal of a tied slot suggests (stop 52). ``torch.jit.trace``,
    ``torch.compile`` and ``torch.export`` run them.

    Raises:
        TypeError: always, naming the layer and the alternatives.

    Example:
        >>> import torch, warnings
        >>> from tying.nn import GroupPool
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     try:
        ...         torch.jit.script(GroupPool("max"))
        ...     except TypeError as e:
        ...         print(str(e)[:47])
        torch.jit.script cannot compile GroupPool: it c
    """
    raise TypeError(
        f"torch.jit.script cannot compile {type(self).__name__}: it checks its inputs in "
        f"Python, which TorchScript does not compile (untied or not); use "
        f"torch.jit.trace (the same outputs), torch.compile or torch.export; the module is "
        f"unchanged"
    )


def refuse_foreign_keywords(owner: str, given: dict, ours: dict[str, str]) -> None:
    """Refuse a keyword that another library's counterpart takes, naming what to use here.

    A script ported line by line from torch_geometric, torchdiffeq, e2cnn or Opacus
    passed their names (``K=``, ``options=``, ``stride=``, ``clipping=``) and got
    Python's bare "unexpected keyword argument", naming neither our equivalent nor
    why there is none (stop 56). ``ours`` maps each such name to that advice; any
    other name keeps Python's own message.

    Raises:
        TypeError: whenever ``given`` is not empty.
    """
    for name in given:
        if name in ours:
            raise TypeError(f"{owner}: no keyword {name!r} here; {ours[name]}")
        raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")


def is_default(value, default) -> bool:
    """``value`` is the other library's default ``default`` (``None``, a bool or a number;
    NumPy's too): a keyword that asks for what this layer already does."""
    if default is None:
        return value is None
    if isinstance(default, str):  # nn.Conv2d's padding_mode='zeros'
        return isinstance(value, str) and value == default
    if isinstance(value, tuple) and value:  # nn.Conv2d's pairs: dilation=(1, 1)
        return all(is_default(v, default) for v in value)
    if isinstance(default, bool):
        return isinstance(value, bool | np.bool_) and bool(value) == default
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and value == default
    )


def refuse_foreign_defaults(
    owner: str, given: dict, ours: dict[str, str], defaults: dict, library: str
) -> None:
    """:func:`refuse_foreign_keywords`, where a keyword given at ``library``'s default
    (``bias=True``, ``num_layers=1``, ``padding_idx=None``) is advised to be dropped: the
    advice for another value (zero the bias, stack layers) would change the outputs.

    Raises:
        TypeError: whenever ``given`` is not empty.
    """
    for name, value in given.items():
        if name in defaults and is_default(value, defaults[name]):
            raise TypeError(
                f"{owner}: no keyword {name!r} here; {name}={value!r} is {library}'s default, "
                f"what this layer does: drop {name}="
            )
    refuse_foreign_keywords(owner, given, ours)
