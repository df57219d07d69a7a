"""Bounds given per data set or group: the one pair that holds them all, as advice.

Bounds hold for every physical copy of a parameter. ``bounds={'b': [(0, 2), (2, 4)]}``
with two data sets was read as lower ``(0, 2)``, upper ``(2, 4)`` and refused as "the
lower bound must be one number ... got shape (2,)", which named neither the reading nor
a fix (stop 59). The advice gives the pair that contains every pair given.

Example:
    >>> envelope("b", [(0, 2), (2, 4)])
    "; the one pair that holds them all is bounds={'b': (0.0, 4.0)}"
    >>> envelope("b", [(0, 2), (4, 2)])  # an inverted pair: no envelope to advise
    ''
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def envelope(name: str, pairs: Any) -> str:
    """The message tail naming one ``(lower, upper)`` containing every pair in ``pairs``.

    Args:
        name: the parameter.
        pairs: a list of pairs, or a dict of them (by group or data set).

    Returns:
        ``"; the one pair that holds them all is bounds={...}"``, or ``""`` where ``pairs``
        is not two or more well-formed pairs, each with lower < upper.
    """
    try:
        items = list(pairs.values()) if isinstance(pairs, Mapping) else list(pairs)
        if len(items) < 2 or not all(len(p) == 2 for p in items):
            return ""
        lows = [-np.inf if p[0] is None else float(p[0]) for p in items]
        highs = [np.inf if p[1] is None else float(p[1]) for p in items]
    except (TypeError, ValueError):
        return ""
    if not all(lo < hi for lo, hi in zip(lows, highs)):  # NaN, equal or inverted: no advice
        return ""
    show = [None if np.isinf(v) else v for v in (min(lows), max(highs))]
    return f"; the one pair that holds them all is bounds={{{name!r}: ({show[0]}, {show[1]})}}"
