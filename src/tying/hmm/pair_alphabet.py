"""What a :class:`~tying.hmm.PairHMM` says about its ``alphabet``: the fix that works.

Two refusals name a fix that must work when followed:

- an ``alphabet`` that is not a string (a list of letters, a list of multi-letter
  names) is told to join the letters (``"".join(...)``) or, for names longer than one
  letter, to code the symbols as integers (``alphabet=None``); before stop 62 it said
  only "must be a non-empty string";
- tables set for another alphabet of the same size: for a reordering of the same
  symbols (``"ACGT"`` -> ``"TGCA"``) the reindexing recipe; for another alphabet
  (``"ACGT"`` -> ``"acgt"``, ``"ACGU"``), where the recipe's ``"ACGT".index("a")``
  raised ``ValueError: substring not found``, the assignment that keeps the tables by
  position.
"""

from __future__ import annotations

import numpy as np

__all__ = ["alphabet_message", "table_alphabet_fix"]


def alphabet_message(alphabet: object) -> str:
    """The refusal of an ``alphabet`` that is not a non-empty string, with the fix.

    Args:
        alphabet: the alphabet as given.

    Returns:
        The message: the rule, the value, and the conversion that works for it.

    Example:
        >>> alphabet_message(["A", "C"])
        "alphabet must be a non-empty string of symbols like 'ACGT', got ['A', 'C']; join one-letter symbols: alphabet=''.join(['A', 'C']) (= 'AC')"
    """
    head = f"alphabet must be a non-empty string of symbols like 'ACGT', got {alphabet!r}"
    if isinstance(alphabet, np.ndarray) and alphabet.ndim == 1 and alphabet.dtype.kind == "U":
        alphabet = alphabet.tolist()  # np.array(list("ACGT")): named as its letters
    if isinstance(alphabet, (list, tuple)) and alphabet:
        if all(isinstance(a, str) and len(a) == 1 for a in alphabet):
            if len(set(alphabet)) == len(alphabet):
                joined = "".join(alphabet)
                return f"{head}; join one-letter symbols: alphabet=''.join({alphabet!r}) (= {joined!r})"
        elif all(isinstance(a, str) and a for a in alphabet):
            return (
                f"{head}; a symbol is one character, so names of several (here "
                f"{next(a for a in alphabet if len(a) != 1)!r}) are coded as integers: "
                f"alphabet=None, n_symbols={len(alphabet)}, and each side as "
                f"[names.index(s) for s in side] with names = {list(alphabet)!r}"
            )
    return head


def table_alphabet_fix(was: str, now: str, tables: list[str]) -> str:
    """The ways on for tables set for the alphabet ``was`` on a model whose alphabet is now
    ``now`` (same size): reorder them (same symbols), or keep them by position.

    Args:
        was: the alphabet the tables were set for.
        now: the model's alphabet.
        tables: the stale tables' names, without the trailing underscore.

    Returns:
        The clause of the refusal that names what to assign.

    Example:
        >>> table_alphabet_fix("ACGT", "acgt", ["match_probs"])
        "assign match_probs_ for 'acgt' (if 'acgt' names the symbols of 'ACGT' position by position, assign the tables again as they are: m.match_probs_ = m.match_probs_)"
    """
    names = ", ".join(n + "_" for n in tables)
    if sorted(was) == sorted(now):  # the same symbols in another order: reindex
        return (
            f"assign {names} ordered for {now!r} (e.g. "
            f"idx = [{was!r}.index(c) for c in {now!r}]; m.match_probs_ = "
            f"p[np.ix_(idx, idx)]; m.insert_probs_ = q[..., idx])"
        )
    keep = "; ".join(f"m.{n}_ = m.{n}_" for n in tables)
    return (
        f"assign {names} for {now!r} (if {now!r} names the symbols of {was!r} position "
        f"by position, assign the tables again as they are: {keep})"
    )
