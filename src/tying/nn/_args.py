"""Argument checks shared by the layers."""

from __future__ import annotations


def is_int(value, minimum: int) -> bool:
    """``value`` is an int (not a bool: ``True`` is not the size 1) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
