"""Whole-number arguments (a count, a state): what reads as one and what does not.

hmmlearn's ``sample`` loops ``range(n_samples)`` and indexes ``startprob_`` with
``currstate``, so anything with ``__index__`` works there: a Python ``int``, a NumPy
integer, and a 0-d integer array (``np.array(1)``, what ``np.asarray`` of a state
gives). Before stop 60 ours took only the first two and refused ``currstate=np.array(1)``
with "currstate must be a state 0..1, got array(1)", a state it is. Bools are not
counts or states here (``True`` read as 1 silently), nor are floats (``2.0`` is
refused, as ``range(2.0)`` refuses it).
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["as_integer"]


def as_integer(value) -> int | None:
    """``value`` as an ``int`` when it is a whole number by type, else None.

    Args:
        value: anything.

    Returns:
        ``int(value)`` for an ``int``, a NumPy integer or a 0-d integer array (not a
        bool, ``np.bool_`` or bool array); None for anything else (floats, strings,
        arrays of more than one element, None).

    Example:
        >>> as_integer(np.array(3)), as_integer(np.int8(-2)), as_integer(7)
        (3, -2, 7)
        >>> as_integer(True), as_integer(2.0), as_integer(np.array([1])), as_integer("1")
        (None, None, None, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iu":
            return None
        return int(value)
    if isinstance(value, (int, np.integer)):
        return operator.index(value)
    return None
