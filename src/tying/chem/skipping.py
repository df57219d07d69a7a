"""``errors="raise" | "skip"``: what a call over many molecules does with one it cannot label.

A library of a million SMILES lines holds a few bad ones; with ``errors="raise"``
(the default) the first of them stops :func:`~tying.chem.parallel.assign_many` and
:func:`~tying.chem.lines.label_lines`, naming its index or line, and nothing is
returned. With ``errors="skip"`` the others are labelled and the bad ones are never
dropped silently: they keep their place (``None`` in ``assign_many``'s list, a record
with an ``"error"`` in ``label_lines``'), each with its reason, and one
``UserWarning`` gives their count and the first. As RDKit's ``SmilesMolSupplier``
yields ``None`` for a line it cannot read, but with the reason kept.

Only the errors of a bad molecule are skipped (:data:`SKIPPABLE`: a SMILES RDKit
cannot read, a radical, a term without a parameter under ``strict=True``, an item that
is not a molecule); any other error (a bug, an interrupted call) still stops the call.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from tying.chem.errors import SmilesError, UnassignedParameterError

#: The values ``errors=`` takes.
ERRORS = ("raise", "skip")

#: What a molecule that cannot be labelled raises; ``errors="skip"`` skips these only.
SKIPPABLE = (SmilesError, UnassignedParameterError, TypeError)

# Molecules labelled stage by stage at a time, as parallel._BATCH (kept equal by a test).
_BATCH = 64


class Labelled(list):
    """``assign_many(errors="skip")``'s result: a list in input order, ``None`` where a
    molecule was skipped, and ``skipped``: ``{index: the error assign would raise}``.

    Example:
        >>> out = Labelled(["a", None], {1: ValueError("bad")})
        >>> out == ["a", None], out.skipped
        (True, {1: ValueError('bad')})
    """

    def __init__(self, items: Sequence[Any] = (), skipped: dict[int, Exception] | None = None):
        super().__init__(items)
        self.skipped: dict[int, Exception] = dict(skipped or {})

    def __reduce__(self):  # pickles with its skipped molecules
        return type(self), (list(self), self.skipped)


def check_errors(errors: Any, function: str) -> bool:
    """Whether ``errors`` asks to skip bad molecules; refuses anything but ``"raise"``/``"skip"``.

    Raises:
        TypeError: when ``errors`` is not a str (``errors=True`` is no choice).
        ValueError: for another string, listing the choices.

    Example:
        >>> check_errors("raise", "assign_many"), check_errors("skip", "assign_many")
        (False, True)
    """
    if not isinstance(errors, str):
        raise TypeError(
            f"{function}: errors must be one of {ERRORS}, got {type(errors).__name__}: "
            f"{errors!r:.80}; pass errors='skip' to label the other molecules"
        )
    if errors not in ERRORS:
        raise ValueError(
            f"{function}: errors must be one of {ERRORS}, got {errors!r:.80}; 'raise' stops "
            f"at the first molecule that cannot be labelled, 'skip' labels the others"
        )
    return errors == "skip"


def label_each(
    assigner: Any, items: Sequence[tuple[Any, Any, str | None]], *, pack: bool = True
) -> Iterator[tuple[tuple[Any, Any, str | None], Any, Exception | None]]:
    """``(item, result, None)`` or ``(item, None, error)`` for each ``(tag, molecule, name)``.

    Labels ``_BATCH`` at a time with the assigner's batch path, as ``errors="raise"``
    does; after a molecule fails, labelling goes on from the next one (the results
    before it are kept, so nothing is labelled twice). The cache and counters end as
    :meth:`~tying.chem.assign.SmirksAssigner.assign` on each item in turn leaves them,
    each failing call included.

    Raises:
        Exception: an error not in :data:`SKIPPABLE` (not a bad molecule), as raised.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> out = label_each(SmirksAssigner("openff-2.3.0"), [(0, "CC", None), (1, "C1CC", None)])
        >>> [(tag, a is None, type(err).__name__) for (tag, _, _), a, err in out]
        [(0, False, 'NoneType'), (1, True, 'SmilesError')]
    """
    k = 0
    while k < len(items):
        batch = items[k : k + _BATCH]
        done, failure = assigner._assign_batch([(m, name) for _, m, name in batch], pack=pack)
        for item, a in zip(batch, done):
            yield item, a, None
        if failure is None:
            k += len(batch)
            continue
        position, err = failure
        if not isinstance(err, SKIPPABLE):
            raise err
        yield batch[position], None, err
        k += position + 1


def counts_a_miss(err: Exception) -> bool:
    """Whether ``assign`` counted a cache miss before raising ``err``: a molecule that was
    read and then lacked a parameter did; one that could not be read did not.

    Example:
        >>> counts_a_miss(UnassignedParameterError("x")), counts_a_miss(SmilesError("y"))
        (True, False)
    """
    return isinstance(err, UnassignedParameterError)


def reason(err: Exception) -> str:
    """An error as a record or a warning writes it: its type, then its message.

    Example:
        >>> reason(SmilesError("line 3 ('C1CC'): cannot parse SMILES 'C1CC'"))
        "SmilesError: line 3 ('C1CC'): cannot parse SMILES 'C1CC'"
    """
    return f"{type(err).__name__}: {err}"


def warn_skipped(function: str, reasons: Sequence[str], total: int, where: str) -> None:
    """One ``UserWarning`` naming how many of ``total`` molecules were skipped, and the first.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_skipped("assign_many", ["SmilesError: molecule 3: bad"], 10, "x")
        >>> str(caught[0].message)[:70]
        'assign_many: skipped 1 of 10 molecules that could not be labelled (err'
    """
    if not reasons:
        return
    warnings.warn(
        f"{function}: skipped {len(reasons)} of {total} molecules that could not be labelled "
        f"(errors='skip'); the first: {reasons[0]}; {where}",
        UserWarning,
        stacklevel=4,
    )
