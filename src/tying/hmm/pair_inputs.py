"""What to say about one side of a pair that is not a sequence of symbols (PairHMM).

A pair HMM reads a side as a string over its alphabet or as a 1-d array of integer
symbols. Anything else was refused with "expected a 1-d integer sequence", which
told a user with ``alphabet="ACGT"`` who passed ``list("ACGT")`` (or ``b"ACGT"``)
nothing they could act on: the fix, named here, is the conversion that works.
"""

from __future__ import annotations

from collections.abc import Sized

import numpy as np


def side_error(p: int, side: str, seq, arr: np.ndarray, alphabet: str | None, S: int) -> str:
    """The message for side ``side`` of pair ``p``, which is not a sequence of symbols.

    Args:
        p: the pair's index. side: ``"x"`` or ``"y"``.
        seq: the side as given. arr: ``np.asarray(seq)``.
        alphabet: the model's alphabet (None: integer symbols). S: alphabet size.

    Returns:
        The text of the ValueError: what was expected, what came, and the conversion.

    Example:
        >>> side_error(0, "x", ["A", "C"], np.asarray(["A", "C"]), "ACGT", 4)[-33:]
        "pass it as one string: ''.join(x)"
    """
    where = f"pair {p}, {side}"
    want = (
        f"a string over the alphabet {alphabet!r} or a 1-d array of integer symbols 0..{S - 1}"
        if alphabet is not None
        else f"a 1-d array of integer symbols 0..{S - 1}"
    )
    if isinstance(seq, (bytes, bytearray)):
        fix = (
            f"decode it: {side}.decode()"
            if alphabet is not None
            else f"give the model alphabet=... and {side}.decode(), or integer symbols"
        )
        return f"{where}: expected {want}, got bytes {bytes(seq[:20])!r}; {fix}"
    # read the items as given: np.asarray(["A", 3]) turns 3 into "3", which join refuses
    if arr.ndim == 1 and arr.dtype.kind in "UO" and all(isinstance(v, str) for v in seq):
        if alphabet is not None:
            fix = f"pass it as one string: ''.join({side})"
        else:
            fix = "this model has integer symbols: give alphabet='...' to read strings"
        return f"{where}: expected {want}, got a sequence of strings; {fix}"
    if arr.ndim != 1:
        return (
            f"{where}: expected {want}, got shape {arr.shape}; one side is one sequence "
            f"(np.ravel({side}) if it is one sequence laid out in 2-d)"
        )
    whole = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    fix = f"; they are whole numbers: np.asarray({side}).astype(int)" if whole else ""
    return f"{where}: expected {want}, got dtype {arr.dtype}{fix}"


def refuse_no_pairs(out: list, pairs) -> None:
    """Refuse ``pairs`` that yielded nothing without being an empty sized container.

    An empty list scores as no pairs; an empty string or a spent iterator (a zip
    already read by ``fit``) is a mistake that would score 0.0 without a word.
    """
    if out or not (isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sized)):
        return
    what = (
        f"the {type(pairs).__name__} {pairs!r}"
        if isinstance(pairs, (str, bytes))
        else f"a {type(pairs).__name__} that yielded nothing (already consumed?)"
    )
    raise ValueError(
        f"pairs is {what}, not a list of (x, y) pairs; pass a list, e.g. "
        f"pairs = list(zip(xs, ys)) to use it more than once, or [] for no pairs"
    )
