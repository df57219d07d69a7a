"""How numbers look in the terminal and on the page: one formatter for both."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_runtime", "format_value"]


def format_value(value: Any) -> str:
    """A short human form of a measured value.

    Ints get thousands separators, floats four significant digits (at least the
    units from 1,000 on; scientific when very small or large), booleans yes/no,
    lists their items; NumPy and torch scalars as the Python number they hold.

    Example:
        >>> format_value(9437184), format_value(0.000012345), format_value(3.14159)
        ('9,437,184', '1.23e-05', '3.142')
        >>> format_value(7486.7), format_value(12345678.9)
        ('7,487', '1.23e+07')
        >>> format_value(True), format_value([1, 2.5]), format_value(None)
        ('yes', '[1, 2.5]', '')
        >>> import numpy as np
        >>> format_value(np.int64(1234567)), format_value(np.True_)
        ('1,234,567', 'yes')
    """
    if value is None:
        return ""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        # a NumPy or torch scalar reads as the Python number it holds: np.int64(1234567)
        # printed "1234567" beside "1,234,567", np.True_ "True", a tensor "tensor(3)"
        value = value.item()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        mag = abs(value)
        if mag < 1e-3 or mag >= 1e6:
            return f"{value:.3g}"
        return f"{value:,.0f}" if mag >= 1e3 else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def format_runtime(seconds: float) -> str:
    """Seconds as ``0.42 s``, ``12.3 s`` or ``2 min 05 s``.

    Example:
        >>> format_runtime(0.4213), format_runtime(12.34), format_runtime(125)
        ('0.42 s', '12.3 s', '2 min 05 s')
    """
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"
