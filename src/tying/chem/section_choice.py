"""Which sections a :class:`~tying.chem.assign.SmirksAssigner` labels, checked once.

Moved out of :mod:`tying.chem.assign` (stop 38, which kept it under 1,000 lines) when an
empty force field's message was corrected: it told the user to pass ``sections=None``,
which is what they had done.
"""

from __future__ import annotations

from collections.abc import Iterable

from tying.chem.offxml import ForceField
from tying.chem.terms import KEYS

#: the sections an assigner labels by default (those of them the force field has)
SECTIONS = ("Bonds", "Angles", "ProperTorsions", "ImproperTorsions", "vdW")


def chosen_sections(
    force_field: ForceField, sections: Iterable[str] | None, strict: object, cache: object
) -> tuple[str, ...]:
    """The sections to label (``None``: every one ``force_field`` has), checked.

    Args:
        force_field: the loaded force field.
        sections: section names, or None.
        strict, cache: the assigner's flags, which must be bools.

    Returns:
        The section names, each once.

    Raises:
        TypeError: a string for ``sections``; a flag that is not a bool.
        ValueError: an unknown or repeated section; no section to label (naming the force
            field's own sections when it has none this library assigns).

    Example:
        >>> from tying.chem import load_force_field
        >>> chosen_sections(load_force_field("openff-2.3.0"), ["Bonds"], True, True)
        ('Bonds',)
    """
    from_ff = sections is None
    if from_ff:
        sections = [s for s in SECTIONS if s in force_field.sections]
    elif isinstance(sections, str):
        raise TypeError(
            f"sections must be a list of section names, got the string {sections!r}; "
            f"write sections=[{sections!r}]"
        )
    # Read once: an iterator was used up by the check below and left no section to
    # assign, so every molecule came back with no terms at all, silently.
    sections = tuple(sections)
    unknown = [s for s in sections if s not in KEYS]
    if unknown:
        raise ValueError(f"cannot assign sections {unknown}; supported: {', '.join(KEYS)}")
    if not sections:  # stop 38: an empty force field was told to pass sections=None
        ff, held = force_field, list(force_field.sections) or "no section at all"
        raise ValueError(
            f"force field {ff.name} ({ff.path}) holds {held}: none of the sections this "
            f"library assigns ({', '.join(KEYS)}); load a force field with parameters, "
            f"e.g. 'openff-2.3.0'"
            if from_ff
            else f"sections is empty, so no term would "
            f"be assigned; pass the sections to assign (supported: {', '.join(KEYS)}) or "
            f"sections=None for every one the force field has"
        )
    twice = sorted({s for s in sections if sections.count(s) > 1})
    if twice:
        raise ValueError(
            f"sections lists {', '.join(twice)} more than once ({list(sections)}); "
            f"give each section once"
        )
    for name, flag in (("strict", strict), ("cache", cache)):
        # strict="False" read as true, strict=None as false: no silent coercion.
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {type(flag).__name__}: {flag!r}")
    return sections
