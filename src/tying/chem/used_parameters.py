"""The distinct parameters a set of assignments uses, by id, each id meaning one parameter.

:func:`tying.chem.assign.count_unique_parameters` counts parameters by their id, and an
id names a parameter within one force field only. Assignments from two force fields of
one name (two edited copies of ``mine.offxml``, or one file edited between two labellings:
the name is the file's stem) could give one id to two different parameters, which were
then counted as one, silently. :func:`add_used` keeps the first parameter seen under
each id and refuses another one under that id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tying.chem import units
from tying.chem.offxml import Parameter
from tying.chem.units import Quantity

#: how close two values of one dimension must be, after conversion, to be one value: a
#: unit conversion (1.52597 angstrom -> 0.152597 nm -> back) moves the last bits only
REL_TOL = units.REL_TOL


def add_used(seen: dict[str, dict[str, Parameter]], assignment: Any, item: int) -> None:
    """Add an assignment's parameters to ``seen`` (section -> id -> parameter).

    Args:
        seen: what earlier assignments used; updated in place.
        assignment: an :class:`~tying.chem.assign.Assignment`.
        item: its position in the caller's collection (for the message).

    Raises:
        ValueError: when an id names a parameter with another SMIRKS or other values
            than the one seen under that id before (two force fields of one name);
            values are compared in one unit (:func:`same_values`), so the same value
            written in nm in one file and in angstrom in the other is one value.

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
            if first.smirks != parameter.smirks or not same_values(first.values, parameter.values):
                raise ValueError(
                    f"count_unique_parameters: item {item} ({assignment.force_field}) uses "
                    f"{section} {parameter.id!r} = {parameter.smirks}, but an earlier item's "
                    f"{parameter.id!r} is {first.smirks} with {_shown(first)}; the two come "
                    f"from different force fields of one name (two files named "
                    f"{assignment.force_field!r}, or the file edited in between), whose ids "
                    f"name different parameters; count each force field's assignments "
                    f"separately"
                )


def same_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two parameters' values are the same physical values, whatever their units.

    Before stop 59 ``Quantity`` equality compared as written (``1.52597 angstrom`` and
    ``0.152597 nanometer`` differed); it compares physical values now (two units to 13
    significant digits). Here two units compare to :data:`REL_TOL`. The same force
    field written in other units (a copy saved by another tool) was refused by
    :func:`add_used` as a different force field of the same name, with a message saying
    its ids named different parameters (stop 42).

    Example:
        >>> from tying.chem import parse_quantity as q
        >>> same_values({"length": q("1.5 * angstrom")}, {"length": q("0.15 * nanometer")})
        True
        >>> same_values({"length": q("1.5 * angstrom")}, {"length": q("0.16 * nanometer")})
        False
    """
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)


def _same_value(x: Any, y: Any) -> bool:
    # As before stop 59, not Quantity's == (two units to 13 significant digits, a rule
    # that hashes): one unit exactly, two units to REL_TOL after conversion
    if isinstance(x, Quantity) and isinstance(y, Quantity):
        if x.unit.dimension != y.unit.dimension:
            return False
        if x.unit == y.unit:
            return x.value == y.value
        return math.isclose(x.to(y.unit).value, y.value, rel_tol=REL_TOL, abs_tol=0.0)
    if isinstance(x, Quantity) or isinstance(y, Quantity):
        return False
    return bool(x == y)


def _shown(parameter: Parameter) -> str:
    text = ", ".join(f"{k}={v}" for k, v in parameter.values.items())
    return text if len(text) <= 120 else text[:117] + "..."


def check_same_sections(first: Any, assignment: Any, item: int) -> Any:
    """Refuse an assignment labelled with other sections than the first one counted.

    A section labelled for some molecules only was counted over those only: a
    ``sections=["Bonds"]`` ethanol counted with a default propanol gave 2 angle and 2
    vdW parameters for the pair instead of 3 and 5 (total 10 instead of 17), silently
    (stop 35). The same holds for ``"Constraints"`` labelled for some molecules only.

    Args:
        first: the first :class:`~tying.chem.assign.Assignment` counted (None before it).
        assignment: the one counted now.
        item: its position in the caller's collection (for the message).

    Returns:
        The first assignment (``assignment`` itself when ``first`` is None).

    Raises:
        ValueError: naming the item, both sets of sections and the fix.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> sage = SmirksAssigner("openff-2.3.0")
        >>> ethanol = check_same_sections(None, sage.assign("CCO"), 0)
        >>> check_same_sections(ethanol, sage.assign("CCC"), 1) is ethanol
        True
    """
    if first is None:
        return assignment
    if first.terms.keys() == assignment.terms.keys():  # set comparison: order aside
        return first
    theirs, ours = list(assignment.terms), list(first.terms)
    raise ValueError(
        f"count_unique_parameters: item {item} was labelled with sections {theirs}, the "
        f"ones before with {ours}; a section labelled for some molecules only would be "
        f"counted over those only; label every molecule with one assigner (the same "
        f"sections=), or count each set separately"
    )
