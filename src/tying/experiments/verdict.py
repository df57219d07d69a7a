"""What a verdict may stand beside: numbers hidden in a measured value's text.

The runner gives no verdict to a pass whose measured numbers hold NaN
(:func:`tying.experiments.runner.run_experiment`): a comparison with NaN is always
False, so a check that passed cannot have used it. A number an experiment formatted
into text first (``f"[{low:.3f}, {high:.3f}]"``, ``format_number(x)``) is no number to
that check: the page showed "PASS" beside ``[nan, nan]`` (stop 58). NaN is never an
answer, so a ``nan`` written as a word in a measured text is refused as a NaN is; an
``inf`` in words may be one (ε of a run without noise) and is left alone.

Example:
    >>> nan_texts({"interval": "[nan, 0.31]", "ratio": 0.5, "note": "banana, Nan"})
    ['interval']
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["nan_texts"]

#: ``nan`` as Python, NumPy, torch and :func:`tying.report.format_number` write it
#: (``nan``, ``-nan``, ``nan%``), and ``NAN`` as Python's upper-case formats do
#: (``f"{x:.2E}"``, ``:F``, ``:G``), not inside a word.
_NAN_WORD = re.compile(r"(?<![A-Za-z0-9_.])[+-]?(?:nan|NAN)(?![A-Za-z0-9_])")


def _has_nan_word(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_nan_word(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nan_word(v) for v in value)
    return isinstance(value, str) and _NAN_WORD.search(value) is not None


def nan_texts(measured: dict[str, Any]) -> list[str]:
    """The keys of ``measured`` whose text (plain data: dicts, lists, str) writes a NaN.

    Args:
        measured: a result's measured values as plain data (dict keys are text).

    Returns:
        The keys, in order, whose value is or holds a text with the word ``nan``.
    """
    return [str(k) for k, v in measured.items() if _has_nan_word(v)]
