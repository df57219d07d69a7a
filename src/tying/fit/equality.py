"""``==`` for the fit's records that hold arrays (``FitResult``, ``Dataset``, ``StackedData``).

A dataclass's own ``__eq__`` compares its fields as tuples, and a field holding a NumPy
array then asks ``bool(array == array)``: ``result == copy.deepcopy(result)`` raised
NumPy's "truth value of an array with more than one element is ambiguous" (stop 59).
Here two records are equal when every compared field holds the same values: arrays of
the same shape and entries (NaN equal to NaN, as a copied standard error of NaN is the
same result), dicts with the same keys and values, lists element by element.

Example:
    >>> import numpy as np
    >>> same_values({"a": np.array([1.0, np.nan])}, {"a": np.array([1.0, np.nan])})
    True
    >>> same_values(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    False
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def same_values(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` hold the same values (arrays compared entry by entry).

    Args:
        a, b: values as a fit's records hold them: numbers, arrays, dicts, lists,
            dataclasses, strings, None.

    Returns:
        True when they are equal; NaN counts as equal to NaN.
    """
    if a is b:
        return True
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and fields_equal(a, b)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or set(a) != set(b):
            return False
        return all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_values(u, v) for u, v in zip(a, b, strict=True))
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if hasattr(a, "shape") or hasattr(b, "shape"):  # NumPy arrays and scalars, tensors
        try:
            u, v = _plain(a), _plain(b)
        except (TypeError, ValueError, RuntimeError):
            return False
        if u.shape != v.shape:
            return False
        if u.dtype.kind == "O" or v.dtype.kind == "O":
            # element by element: NaN in an object column (a pandas column with None) is
            # NaN too; np.array_equal's object path called it unequal (stop 59 review)
            return all(same_values(p, q) for p, q in zip(u.ravel(), v.ravel(), strict=True))
        try:
            return bool(np.array_equal(u, v, equal_nan=True))
        except TypeError:  # text arrays: no NaN to compare
            return bool(np.array_equal(u, v))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _plain(value: Any) -> np.ndarray:
    """``value`` as a NumPy array; a torch tensor's values whatever its grad or device.

    ``np.asarray`` refuses a tensor that requires grad (RuntimeError) or lives on a GPU
    (TypeError): a ``Dataset`` holding one compared unequal to its own deep copy (stop 59
    review).
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def fields_equal(a: Any, b: Any) -> bool:
    """Whether two dataclass instances of one type agree on every field with ``compare=True``."""
    return all(
        same_values(getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(a)
        if f.compare
    )


class ValueEquality:
    """Mixin: ``==`` by :func:`fields_equal` for a ``@dataclasses.dataclass(eq=False)``.

    ``eq=False`` keeps the dataclass from writing its tuple ``__eq__`` over this one.
    Instances stay unhashable, as a mutable dataclass's are.

    Example:
        >>> import dataclasses
        >>> import numpy as np
        >>> @dataclasses.dataclass(eq=False)
        ... class Box(ValueEquality):
        ...     v: np.ndarray
        >>> Box(np.arange(3.0)) == Box(np.arange(3.0)), Box(np.zeros(2)) == Box(np.ones(2))
        (True, False)
    """

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_equal(self, other)

    __hash__ = None  # type: ignore[assignment]
