"""The distinct parameters a set of assignments uses, by id, each id meaning one parameter.

:func:`tying.chem.assign.count_unique_parameters` counts parameters by their id, and an
id names a parameter within one force field only. Assignments from two force fields of
one name (two edited copies of ``mine.offxml``, or one file edited between two labellings:
the name is the file's stem) could give one id to two different parameters, which were
then counted as one, silently. :func:`add_used` keeps the first parameter seen under
each id and refuses another one under that id.
"""

from __future__ import annotations

from typing import Any

from tying.chem.offxml import Parameter


def add_used(seen: dict[str, dict[str, Parameter]], assignment: Any, item: int) -> None:
    """Add an assignment's parameters to ``seen`` (section -> id -> parameter).

    Args:
        seen: what earlier assignments used; updated in place.
        assignment: an :class:`~tying.chem.assign.Assignment`.
        item: its position in the caller's collection (for the message).

    Raises:
        ValueError: when an id names a parameter with another SMIRKS or other values
            than the one seen under that id before (two force fields of one name).

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> seen = {}
        >>> add_used(seen, SmirksAssigner("openff-2.3.0").assign("CCO"), 0)
        >>> sorted(seen["Bonds"])
        ['b1', 'b14', 'b84', 'b88']
    """
    for section, terms in assignment.terms.items():
        by_id = seen.setdefault(section, {})
        for parameter in terms.values():
            first = by_id.setdefault(parameter.id, parameter)
            if first is parameter:
                continue
            # The same parameter read twice (the same file at two paths, a process's
            # copy) is one parameter; its position may differ, what it says may not.
            if first.smirks != parameter.smirks or first.values != parameter.values:
                raise ValueError(
                    f"count_unique_parameters: item {item} ({assignment.force_field}) uses "
                    f"{section} {parameter.id!r} = {parameter.smirks}, but an earlier item's "
                    f"{parameter.id!r} is {first.smirks} with {_shown(first)}; the two come "
                    f"from different force fields of one name (two files named "
                    f"{assignment.force_field!r}, or the file edited in between), whose ids "
                    f"name different parameters; count each force field's assignments "
                    f"separately"
                )


def _shown(parameter: Parameter) -> str:
    text = ", ".join(f"{k}={v}" for k, v in parameter.values.items())
    return text if len(text) <= 120 else text[:117] + "..."
