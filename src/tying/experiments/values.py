"""A measured value as plain data: what the page shows, results.json holds and checks read.

:func:`jsonable` reads a result's numbers once (NumPy and torch scalars and arrays,
``array.array``, ``__array__`` objects, ``Decimal``) into nested dicts and lists of
plain Python values; the runner's verdict checks (:mod:`tying.experiments.verdict`)
look at the same reading, so what they judge is what the page prints.

Example:
    >>> jsonable({"a": np.float32(0.5), "b": [torch.tensor(3)], "c": float("inf")})
    {'a': 0.5, 'b': [3], 'c': 'inf'}
"""

from __future__ import annotations

import array
import decimal
import numbers
import warnings
from collections import UserString
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from typing import Any

import numpy as np
import torch

__all__ = ["jsonable", "plain"]


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays (nested in dicts/lists) to plain Python.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so the
    output is strict JSON. Anything else that holds numbers (an object with
    ``__array__``, an ``array.array``, a ``Decimal``) is read as its numbers, not as
    its ``repr``; any other object becomes its ``str``.

    Raises:
        ValueError: two keys of one dict read as the same text (``1`` and ``"1"``):
            one value would silently replace the other.

    Example:
        >>> jsonable({"a": np.float32(0.5), "b": [torch.tensor(3)], "c": float("inf")})
        {'a': 0.5, 'b': [3], 'c': 'inf'}
    """
    return _strict(plain(value))


def _strict(value: Any) -> Any:
    """Plain data (:func:`plain`) as strict JSON: non-finite floats spelt out, complex as text."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, complex):
        return str(value)
    return value


def plain(value: Any) -> Any:
    """``value`` as nested dicts (str keys) and lists of bool, int, float, complex, str, None.

    The one reading of a measured value: what the page shows is what the NaN and inf
    checks of :func:`tying.experiments.verdict.verdict_problem` look at. A value read
    here as text (its ``repr``) was no number to those checks: an ``__array__`` object
    or an ``array.array`` holding NaN passed as "pass" beside the text
    ``array('d', [nan])`` (stop 54).

    Args:
        value: a measured value: numbers, NumPy/torch scalars and arrays, and dicts,
            lists, tuples and sets of them; any other object is read as its ``str``.

    Returns:
        Plain data; non-finite floats stay floats (:func:`jsonable` spells them out).

    Raises:
        ValueError: two keys of one dict read as the same text (``1`` and ``"1"``).

    Example:
        >>> plain({1: np.arange(3), "t": torch.tensor([0.5, float("nan")])})
        {'1': [0, 1, 2], 't': [0.5, nan]}
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        given: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if key in out:
                raise ValueError(
                    f"the keys {given[key]!r} and {k!r} both read as {key!r} on the page and in "
                    "results.json, so one value would silently replace the other; give each "
                    "value its own key (as a string)"
                )
            out[key], given[key] = plain(v), k
        return out
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):  # in a stable order, NaN kept as a number
        return plain(sorted(value, key=repr))
    if isinstance(value, torch.Tensor):
        value = _tensor_numpy(value)  # a narrower float's shortest decimals, as float64
    elif isinstance(value, array.array | memoryview) or (
        hasattr(value, "__array__") and not isinstance(value, np.ndarray | np.generic)
    ):
        numbers_of = np.asarray(value)
        if numbers_of.dtype.kind == "O" and numbers_of.ndim == 0:  # no numbers: itself again
            return str(value)
        value = numbers_of
    if isinstance(value, np.ndarray | np.generic) and value.dtype in _NARROW:
        value = _shortest(value, value.dtype)
    elif isinstance(value, np.ndarray | np.generic) and value.dtype == np.complex64:
        value = _shortest_complex(value, np.dtype(np.float32))
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | complex | str):
        return value
    if isinstance(value, numbers.Number):  # Decimal, Fraction, ...: its value, not its repr
        try:
            return (
                float(value)
                if isinstance(value, numbers.Real | decimal.Decimal)
                else complex(value)
            )
        except (TypeError, ValueError, ArithmeticError):  # Decimal("sNaN") will not convert
            return float("nan") if getattr(value, "is_nan", lambda: False)() else str(value)
    return _collection(value)


def _collection(value: Any) -> Any:
    """Another container of values read as its values, or ``value``'s ``str``.

    ``d.values()``, a ``deque`` or a ``range`` was read as its repr, text whose ``inf``
    no check looked at: a pass beside ``dict_values([0.1, inf])`` was reported (stop 62).
    A mapping is a dict, a dict view or other sequence a list; a one-shot iterator (a
    generator, ``map``) is refused: the first reading would use it up.
    """
    if isinstance(value, Mapping):
        return plain(dict(value.items()))
    if isinstance(value, KeysView | ValuesView | ItemsView) or (
        isinstance(value, Sequence) and not isinstance(value, bytes | bytearray | UserString)
    ):
        return plain(list(value))
    if isinstance(value, Iterator):
        raise TypeError(
            f"a measured value is a one-shot iterator ({type(value).__name__}): the first "
            "reading would use it up, and the page and the checks would see different "
            "values; pass list(...) of it"
        )
    return str(value)


def _tensor_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a NumPy array, whatever its dtype, layout or device.

    ``Tensor.numpy()`` refuses bfloat16, float8 and complex32 (NumPy has no such
    dtype), conjugate views and sparse tensors; it raised out of the runner for a
    bfloat16 number in ``measured`` (stop 38). Those are widened exactly (bfloat16
    and float8 to float32, complex32 to complex64) or made dense first.

    Raises:
        ValueError: for a tensor on the meta device, which holds no values.
    """
    t = t.detach()
    if t.device.type == "meta":
        raise ValueError(
            f"a tensor on the meta device (shape {tuple(t.shape)}, {t.dtype}) holds no "
            "values to compare or report; compute the number on a real device"
        )
    t = t.cpu()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.dtype == torch.complex32:  # each part the shortest decimal of its float16
        return _shortest_complex(t.to(torch.complex64).resolve_conj().numpy(), torch.float16)
    elif t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        return _shortest(t.float().numpy(), t.dtype)  # bfloat16, float8: exact in float32
    return t.resolve_conj().resolve_neg().numpy()


#: NumPy float types narrower than a Python float.
_NARROW = (np.dtype(np.float16), np.dtype(np.float32))


def _shortest(values: np.ndarray | np.generic, dtype: Any) -> np.ndarray:
    """Each float of a narrower type (``dtype``: NumPy or torch) as the shortest decimal
    that is that float again, in float64.

    ``np.float32(0.1)`` holds 0.100000001490116..., which results.json kept and the page
    printed as ``0.100000001`` where NumPy and torch print ``0.1`` (stop 61); the shortest
    decimal is the same float32 again, so nothing is lost.
    """
    narrow = np.asarray(values)
    shape, narrow = narrow.shape, narrow.ravel()
    wide = narrow.astype(np.float64)  # a copy: the result
    # a whole number stays the one it holds: its shortest decimal is another whole number
    # (bfloat16 1032 was recorded as 1030, float16 8208 as 8210; stop 61 review)
    at = np.flatnonzero(np.isfinite(wide) & (wide != np.trunc(wide)))  # still to shorten
    if not isinstance(dtype, torch.dtype):  # NumPy's shortest decimals (Dragon4), in C
        wide[at] = narrow[at].astype(str).astype(np.float64)
        return wide.reshape(shape)
    for n in range(1, 17):  # bfloat16 and float8: NumPy has no such type
        if not at.size:
            break
        # each float to n significant digits (a computation, not a display format)
        candidates = np.array(
            [float(np.format_float_scientific(wide[i], precision=n - 1, unique=False)) for i in at]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 3.4e38 is no bfloat16: not it
            back = torch.from_numpy(candidates).to(dtype).double().numpy()
        same = back == wide[at]
        wide[at[same]] = candidates[same]
        at = at[~same]
    return wide.reshape(shape)


def _shortest_complex(values: np.ndarray | np.generic, part: Any) -> np.ndarray:
    """Complex ``values`` whose real and imaginary parts are floats of dtype ``part``
    (float32 for complex64), each part as its shortest decimal, in complex128.

    ``np.complex64(0.1 + 0.2j)`` was recorded and printed as
    ``(0.10000000149011612+0.20000000298023224j)`` where NumPy prints ``(0.1+0.2j)``
    (stop 62), as :func:`_shortest` does for a float32.
    """
    given = np.asarray(values)
    out = np.empty(given.shape, dtype=np.complex128)  # parts set apart: inf * 1j is nan
    out.real = _shortest(given.real.astype(np.float32), part)
    out.imag = _shortest(given.imag.astype(np.float32), part)
    return out
