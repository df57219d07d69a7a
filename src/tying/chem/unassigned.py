"""The sections of a force field an assignment leaves out, named on every result (stop 34).

``tying.chem`` assigns five sections by default (:data:`~tying.chem.assign.SECTIONS`:
bonds, angles, proper and improper torsions, vdW), and ``Constraints`` when asked for
(:mod:`tying.chem.constraints`). A SMIRNOFF force field holds more, and the OpenFF
toolkit's ``label_molecules`` labels them: ``Constraints`` (every bond to a hydrogen in
Parsley and Sage, water's H-H distance in every water model), ``LibraryCharges`` (ions,
water), ``VirtualSites`` (TIP4P, TIP5P, OPC), and the charge models (``ToolkitAM1BCC``,
``NAGLCharges``, ``Electrostatics``). An :class:`~tying.chem.assign.Assignment` that
holds only the five read as the whole force field applied: water under ``tip4p_fb`` had
three vdW atoms and nothing said that its virtual site, charges and constraints were
left out. Each result now names them (``Assignment.not_assigned``), and asking one for
such a section says that ``tying.chem`` does not assign it, instead of suggesting
``sections=``, which refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tying.chem.terms import KEYS


def not_assigned(force_field: Any, sections: Iterable[str]) -> tuple[str, ...]:
    """The sections of ``force_field`` (in file order) that are not in ``sections``.

    Args:
        force_field: a :class:`~tying.chem.offxml.ForceField`.
        sections: the sections an assigner labels.

    Returns:
        Their names, in the file's order: sections ``tying.chem`` cannot assign
        (``Constraints``, ``LibraryCharges``, ``VirtualSites``, charge models, ...)
        and supported ones left out by ``sections=``.

    Example:
        >>> from tying.chem import load_force_field
        >>> not_assigned(load_force_field("openff-2.3.0"), ["Bonds", "Angles", "ProperTorsions",
        ...                                                 "ImproperTorsions", "vdW"])
        ('Constraints', 'Electrostatics', 'LibraryCharges', 'NAGLCharges')
    """
    labelled = set(sections)
    return tuple(s for s in force_field.sections if s not in labelled)


def missing_section(assignment: Any, section: str) -> KeyError:
    """The error for a section an :class:`~tying.chem.assign.Assignment` was not labelled with.

    Says why (a section ``tying.chem`` does not assign, one left out by ``sections=``,
    or one the force field does not have) and what to do about it.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> print(missing_section(SmirksAssigner("tip4p_fb").assign("O"), "VirtualSites"))
        ... # doctest: +ELLIPSIS
        "the assignment of '[H]O[H]' (tip4p_fb) has no VirtualSites section: ... tying.chem does not assign <VirtualSites> ...
        >>> print(missing_section(SmirksAssigner("openff-2.3.0").assign("O"), "Constraints"))
        ... # doctest: +ELLIPSIS
        "... has no Constraints section: ...; build the SmirksAssigner with 'Constraints' in sections="
    """
    head = (
        f"the assignment of {assignment.smiles!r} ({assignment.force_field}) has no "
        f"{section} section: it was labelled with sections {list(assignment.terms)}; "
    )
    if section in KEYS and section in assignment.not_assigned:
        fix = f"build the SmirksAssigner with {section!r} in sections="
    elif section in KEYS:
        fix = f"its force field has no <{section}> section; use one that has"
    elif section in assignment.not_assigned:
        # sections= refuses it: suggesting it sent the user from one error to the next
        fix = (
            f"tying.chem does not assign <{section}> (only {', '.join(KEYS)}), though the "
            f"force field has one and the OpenFF toolkit applies it; label it with the "
            f"toolkit's ForceField.label_molecules"
        )
    else:
        fix = (
            f"its force field has no <{section}> section, and tying.chem assigns only "
            f"{', '.join(KEYS)}"
        )
    return KeyError(head + fix)
