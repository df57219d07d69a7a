"""What a verdict may stand beside: when a result's pass or fail is reported.

:func:`verdict_problem` says why a result gives no verdict: ``passed`` not a bool, a
pass with no measured value, or a pass beside a NaN or ±inf. A comparison with NaN
is always False, so a check that passed cannot have used it. A number an experiment
formatted into text first (``f"[{low:.3f}, {high:.3f}]"``, ``format_number(x)``) is
no number to that check: the page showed "PASS" beside ``[nan, nan]`` (stop 58).
NaN is never an answer, so a ``nan`` written as a word in a measured text or in the
key figure beside a pass is refused as a NaN is; an ``inf`` in words may be one (ε
of a run without noise) and is left alone.

Example:
    >>> nan_texts({"interval": "[nan, 0.31]", "ratio": 0.5, "note": "banana, Nan"})
    ['interval']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.experiments.registry import Result
from tying.experiments.values import plain

__all__ = ["nan_texts", "verdict_problem"]

#: ``nan`` as Python, NumPy, torch and :func:`tying.report.format_number` write it
#: (``nan``, ``-nan``, ``nan%``), and ``NAN`` as Python's upper-case formats do
#: (``f"{x:.2E}"``, ``:F``, ``:G``), not inside a word.
_NAN_WORD = re.compile(r"(?<![A-Za-z0-9_.])[+-]?(?:nan|NAN)(?![A-Za-z0-9_])")


def _shows_nothing(value: Any) -> bool:
    """Whether a measured value (plain data) shows no value: None, ``""``, or a list or
    dict of only such (``[]``, ``{"a": None}``)."""
    if isinstance(value, dict):
        return all(_shows_nothing(v) for v in value.values())
    if isinstance(value, list):
        return all(_shows_nothing(v) for v in value)
    return value is None or (isinstance(value, str) and not value.strip())


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


def _has_nan(value: Any) -> bool:
    """Whether a measured value (a number, array, tensor, or a list/dict of them) holds a NaN."""
    return _holds(value, np.isnan)


def _has_inf(value: Any) -> bool:
    """Whether a measured value (a number, array, tensor, or a list/dict of them) holds ±inf."""
    return _holds(value, np.isinf)


def _holds(value: Any, test: Callable[[Any], Any]) -> bool:
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":  # at NumPy's speed
        return bool(test(value).any())
    return _holds_plain(plain(value), test)


def _holds_plain(value: Any, test: Callable[[Any], Any]) -> bool:
    if isinstance(value, dict):
        return any(_holds_plain(v, test) for v in value.values())
    if isinstance(value, list):
        return any(_holds_plain(v, test) for v in value)
    return isinstance(value, float | complex) and bool(test(value))


def verdict_problem(id: str, result: Result) -> str | None:
    """Why ``result`` gives no verdict, or None when it does.

    ``passed`` must be a bool: ``bool()`` of a string, a float (NaN included) or a
    one-element array is True, and would report a pass no comparison made. A pass
    whose measured numbers hold a NaN did not use them: every comparison with NaN
    is False, so the NaN was dropped on the way (Python's ``max(0.0, nan)`` is 0.0)
    or never compared. A pass beside ±inf is no verdict either: ``inf > 3`` and
    ``x / inf < 0.5`` are True, so an overflow or a division by zero passes a check
    (stop 37). A pass with an empty ``measured`` shows no number that decided it
    (stop 54), nor one whose measured values are all None or empty (stop 61). A pass
    whose key figure writes ``nan`` stands beside a number its check never compared
    (stop 59).

    Args:
        id: the experiment's id (named in the message).
        result: what the experiment returned.

    Returns:
        The reason, naming the entry and the fix, or None when the verdict stands.

    Example:
        >>> verdict_problem("x", Result(passed=True, measured={"gap": 0.3})) is None
        True
        >>> verdict_problem("x", Result(passed=True, measured={"gap": 0.3}, key_figure="nan%"))[:40]
        "experiment 'x' reported a pass, but its "
    """
    verdict = result.passed
    if not isinstance(verdict, bool | np.bool_):
        return (
            f"experiment {id!r} returned passed={verdict!r} ({type(verdict).__name__}); expected "
            "True or False, the outcome of its check's comparisons: fix the experiment so "
            "`passed` is a bool (its truth value is not a verdict)"
        )
    if verdict and isinstance(result.measured, dict) and not result.measured:
        return (
            f"experiment {id!r} reported a pass with no measured value (Result.measured is "
            "empty): a verdict the report cannot show the numbers of is not reported (a "
            "check that never ran reads the same). Put the numbers its check compared in "
            "Result(measured={...})"
        )
    if verdict and isinstance(result.measured, dict) and _shows_nothing(plain(result.measured)):
        # {"gap": None} passed beside an empty cell (stop 61): as empty as {}
        return (
            f"experiment {id!r} reported a pass with no measured value (every value of "
            f"Result.measured, {', '.join(map(repr, map(str, result.measured)))}, is None or "
            "empty): a verdict the report cannot show the numbers of is not reported (a "
            "check that never ran reads the same). Put the numbers its check compared in "
            "Result(measured={...})"
        )
    nan = [str(k) for k, v in result.measured.items() if _has_nan(v)]
    if verdict and nan:
        return (
            f"experiment {id!r} reported a pass, but the measured value(s) "
            f"{', '.join(repr(k) for k in nan)} hold NaN: a comparison with NaN is always "
            "False, so its check cannot have used them, and a pass is not reported. Find "
            "where the NaN comes from (a diverged fit, a 0/0), or aggregate with "
            "tying.experiments.common.largest/smallest, which keep a NaN, not max/min"
        )
    worded = nan_texts(plain(result.measured)) if verdict else []
    if worded:  # a NaN formatted into text before the check saw it (stop 58)
        return (
            f"experiment {id!r} reported a pass, but the measured text(s) of "
            f"{', '.join(map(repr, worded))} write a NaN ('nan'); a pass beside it is not "
            "reported. Put the number itself in measured (not its text), and find where "
            "the NaN comes from"
        )
    if verdict and _has_nan_word(str(result.key_figure)):  # the summary row's own text
        return (
            f"experiment {id!r} reported a pass, but its key figure "
            f"{str(result.key_figure)!r} writes a NaN ('nan'); a pass beside it is not "
            "reported. Find where the NaN comes from, or write what is missing in words"
        )
    inf = [str(k) for k, v in result.measured.items() if _has_inf(v)]
    if verdict and inf:
        return (
            f"experiment {id!r} reported a pass, but the measured value(s) "
            f"{', '.join(repr(k) for k in inf)} are infinite: an overflow, a division by "
            "zero or a diverged run passes any 'x > bound' (and 'bound > y / inf') check, so "
            "a pass beside one is not reported. Find where the inf comes from; an infinity "
            "that is the answer (ε of a run without noise) belongs in a table, or in "
            "measured as None or words, not as a number the check compared"
        )
    return None
