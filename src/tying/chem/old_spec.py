"""SMIRNOFF 0.1 and 0.2 documents, brought to 0.3 as the OpenFF toolkit brings them.

Before version 0.3 a section gave the unit of its values once, in a ``*_unit``
attribute (``<Bonds length_unit="angstrom" k_unit="kilocalories_per_mole/angstrom**2">``
over ``<Bond length="1.526" k="620.0"/>``), and 0.1 named its sections after OpenMM's
forces (``<HarmonicBondForce>``, ``<NonbondedForce coulomb14scale= lj14scale=>``, impropers
inside ``<PeriodicTorsionForce>``). The toolkit reads such files through its
``convert_0_1_smirnoff_to_0_2`` and ``convert_0_2_smirnoff_to_0_3``; before stop 55 they
were refused here (``unknown attribute length_unit``, ``potential='charmm'``).
:func:`upgrade` rewrites the parsed XML tree the same way, so the rest of
:mod:`tying.chem.offxml` reads a 0.3 document and every value equals the toolkit's:

- 0.1: the root may be ``<SMIRFF>``; ``HarmonicBondForce``, ``HarmonicAngleForce``,
  ``PeriodicTorsionForce`` and ``NonbondedForce`` are renamed ``Bonds``, ``Angles``,
  ``ProperTorsions`` and ``vdW`` and given the toolkit's default ``potential``; the
  ``<Improper>`` elements of the torsions move to an ``<ImproperTorsions>`` section;
  ``coulomb14scale`` becomes an ``<Electrostatics>`` section with the toolkit's
  defaults, ``lj14scale`` vdW's ``scale14``, vdW's missing attributes the toolkit's
  defaults, and a ``<ToolkitAM1BCC>`` section is added (the toolkit's charge model);
- 0.1 and 0.2: every ``X_unit`` attribute (on ``<SMIRNOFF>``, a section or a
  parameter) is removed and ``" * <unit>"`` appended to every attribute of that element
  and of the elements inside it whose name starts with ``X`` (``k_unit`` reaches ``k``,
  ``k1``, ``k_bondorder1``; the last unit written that fits wins, as the toolkit's
  ``recursive_attach_unit_strings`` does); vdW's ``sigma_unit`` and ``rmin_half_unit``
  stand for each other when only one is given; the torsion potential ``charmm`` is the
  Fourier series it always meant; every section is read as version 0.3.

What the toolkit crashes on (a 0.1 section that already has a ``potential``, a 0.1
force field without ``coulomb14scale``, ...) or would overwrite without a word (a 0.1
``<ImproperTorsions>`` or ``<Electrostatics>`` beside the ones made from the old tags)
is an :class:`~tying.chem.errors.OffxmlError` naming the file, the section and the fix.
A ``*_unit`` attribute in a 0.3 document is refused by the schema, as the toolkit
refuses it, with a message that says how to write the unit.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tying.chem.errors import OffxmlError
from tying.chem.schema import version_in

#: 0.1 section tags and the 0.3 sections the toolkit reads them as
RENAMED = {
    "HarmonicBondForce": "Bonds",
    "HarmonicAngleForce": "Angles",
    "PeriodicTorsionForce": "ProperTorsions",
    "NonbondedForce": "vdW",
}
# The potential the toolkit's 0.1 converter writes for a section that has none.
_DEFAULT_POTENTIAL = {
    "Bonds": "harmonic",
    "Angles": "harmonic",
    "ProperTorsions": "charmm",
    "vdW": "Lennard-Jones-12-6",
}
# What the toolkit's 0.1 converter assumes for electrostatics (coulomb14scale is scale14)
# and for the attributes a 0.1 vdW section lacks, in its order (a unit after its value).
_ELECTROSTATICS = {
    "method": "PME",
    "scale12": "0.0",
    "scale13": "0.0",
    "scale15": "1.0",
    "cutoff": "9.0",
    "cutoff_unit": "angstrom",
}
_VDW_DEFAULTS = {
    "method": "cutoff",
    "combining_rules": "Lorentz-Berthelot",
    "scale12": "0.0",
    "scale13": "0.0",
    "scale15": "1",
    "switch_width": "1.0",
    "switch_width_unit": "angstrom",
    "cutoff": "9.0",
    "cutoff_unit": "angstrom",
}
_FOURIER = "k*(1+cos(periodicity*theta-phase))"
_TEXT_ELEMENTS = ("Author", "Date")


def upgrade(name: str, root: ET.Element) -> ET.Element:
    """Rewrite a parsed SMIRNOFF 0.1 or 0.2 document as 0.3, as the OpenFF toolkit does.

    A 0.3 document is returned as it is. The tree is changed in place.

    Args:
        name: the file's name, for messages.
        root: the document's root element (``<SMIRNOFF>``, or ``<SMIRFF>`` in 0.1).

    Returns:
        The root, now a ``<SMIRNOFF version="0.3">`` document.

    Raises:
        OffxmlError: on a ``<SMIRFF>`` root outside version 0.1, on a 0.1 document the
            toolkit cannot convert (a section with a ``potential`` already, no ``<vdW>``
            or no ``coulomb14scale``/``lj14scale``, impropers without ``k_unit`` and
            ``phase_unit``), on one whose conversion would overwrite a section or
            attribute written in the file, and on a unit attribute with no name
            (``_unit``) or one that would reach a section or the document's own
            attributes.

    Example:
        >>> root = ET.fromstring(
        ...     '<SMIRNOFF version="0.2" aromaticity_model="OEAroModel_MDL">'
        ...     '<Bonds length_unit="angstroms" k_unit="kilocalories_per_mole/angstrom**2">'
        ...     '<Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526" k="620.0"/></Bonds></SMIRNOFF>'
        ... )
        >>> bonds = upgrade("old.offxml", root).find("Bonds")
        >>> bonds.attrib, bonds[0].get("length"), bonds[0].get("k")
        ({'version': '0.3'}, '1.526 * angstroms', '620.0 * kilocalories_per_mole/angstrom**2')
    """
    version = root.get("version") or ""
    if root.tag == "SMIRFF" and not version_in(version, "0.1", "0.1"):
        raise OffxmlError(
            f"{name}: a <SMIRFF> document must be SMIRNOFF version 0.1 (the OpenFF toolkit "
            f"reads that tag in 0.1 only), got version={version!r}; name the tag <SMIRNOFF>"
        )
    if version_in(version, "0.1", "0.1"):
        root.tag = "SMIRNOFF"
        _upgrade_0_1(name, root)
    elif not version_in(version, "0.2", "0.2"):
        return root
    _upgrade_0_2(name, root)
    return root


def _sections(root: ET.Element) -> list[ET.Element]:
    return [e for e in root if isinstance(e.tag, str) and e.tag not in _TEXT_ELEMENTS]


def _upgrade_0_1(name: str, root: ET.Element) -> None:
    """The toolkit's ``convert_0_1_smirnoff_to_0_2``, refusing what it crashes on or overwrites."""
    present = {e.tag for e in _sections(root)}
    for old, new in RENAMED.items():
        if old in present and new in present:
            # the toolkit replaces <new> with <old>'s parameters without a word
            raise OffxmlError(
                f"{name}: SMIRNOFF 0.1 document has both <{old}> and <{new}>, which the "
                f"OpenFF toolkit reads as one section <{new}> (keeping <{old}>'s parameters "
                f"only); merge them into one section"
            )
    for section in _sections(root):
        section.tag = RENAMED.get(section.tag, section.tag)
        if section.tag in _DEFAULT_POTENTIAL:
            if "potential" in section.attrib:  # the toolkit's converter fails on it (KeyError)
                raise OffxmlError(
                    f"{name} {section.tag}: a SMIRNOFF 0.1 section has no potential attribute "
                    f"(the 0.1 converter of the OpenFF toolkit fails on one, and assumes "
                    f"{_DEFAULT_POTENTIAL[section.tag]!r}); remove potential="
                    f"{section.get('potential')!r}, or write the file as SMIRNOFF 0.3"
                )
            section.set("potential", _DEFAULT_POTENTIAL[section.tag])
    by_tag = {e.tag: e for e in _sections(root)}
    torsions = by_tag.get("ProperTorsions")
    impropers = [] if torsions is None else [e for e in torsions if e.tag == "Improper"]
    if impropers:
        _split_impropers(name, root, torsions, impropers, by_tag)
    vdw = by_tag.get("vdW")
    if vdw is None:
        raise OffxmlError(
            f"{name}: a SMIRNOFF 0.1 document needs its <NonbondedForce> (or <vdW>) section: "
            f"the OpenFF toolkit takes the electrostatic 1-4 scale from its coulomb14scale "
            f"(and fails without it); add the section, or write the file as SMIRNOFF 0.3"
        )
    for key in ("coulomb14scale", "lj14scale"):
        if key not in vdw.attrib:
            raise OffxmlError(
                f"{name} vdW: a SMIRNOFF 0.1 <NonbondedForce> needs {key} (the 1-4 scale of "
                f"{'electrostatics' if key.startswith('c') else 'Lennard-Jones'}; the OpenFF "
                f'toolkit\'s 0.1 converter fails without it); add {key}="..."'
            )
    if "Electrostatics" in by_tag:
        raise OffxmlError(
            f"{name}: a SMIRNOFF 0.1 document has no <Electrostatics> section: the OpenFF "
            f"toolkit replaces it with one made from coulomb14scale and its defaults; remove "
            f"it, or write the file as SMIRNOFF 0.3"
        )
    if "scale14" in vdw.attrib:
        raise OffxmlError(
            f"{name} vdW: both scale14={vdw.get('scale14')!r} and lj14scale="
            f"{vdw.get('lj14scale')!r} in a SMIRNOFF 0.1 document, where lj14scale is "
            f"scale14 (the OpenFF toolkit keeps lj14scale's); remove one"
        )
    electrostatics = ET.SubElement(root, "Electrostatics", dict(_ELECTROSTATICS))
    electrostatics.set("scale14", vdw.attrib.pop("coulomb14scale"))
    for key, value in _VDW_DEFAULTS.items():
        vdw.attrib.setdefault(key, value)
    vdw.set("scale14", vdw.attrib.pop("lj14scale"))
    if "ToolkitAM1BCC" not in by_tag:
        ET.SubElement(root, "ToolkitAM1BCC")


def _split_impropers(
    name: str,
    root: ET.Element,
    torsions: ET.Element,
    impropers: list[ET.Element],
    by_tag: dict[str, ET.Element],
) -> None:
    """Move 0.1's ``<Improper>`` elements out of the torsions, as the toolkit does."""
    if "ImproperTorsions" in by_tag:
        raise OffxmlError(
            f"{name}: SMIRNOFF 0.1 <PeriodicTorsionForce> holds <Improper> elements and "
            f"there is an <ImproperTorsions> section too; the OpenFF toolkit replaces the "
            f"latter with the former without a word; keep the impropers in one place"
        )
    missing = [k for k in ("k_unit", "phase_unit") if k not in torsions.attrib]
    if missing:
        raise OffxmlError(
            f"{name} ProperTorsions: SMIRNOFF 0.1 impropers take k_unit and phase_unit from "
            f"<PeriodicTorsionForce>, which lacks {' and '.join(missing)} (the OpenFF toolkit "
            f"fails there); add them"
        )
    header = {k: torsions.get(k) for k in ("k_unit", "phase_unit", "potential")}
    section = ET.SubElement(root, "ImproperTorsions", header)
    for improper in impropers:
        torsions.remove(improper)
        section.append(improper)


def _upgrade_0_2(name: str, root: ET.Element) -> None:
    """The toolkit's ``convert_0_2_smirnoff_to_0_3``: units attached, charmm, versions."""
    sections = _sections(root)
    for section in sections:
        if section.tag == "vdW":
            rmin_half, sigma = section.get("rmin_half_unit"), section.get("sigma_unit")
            if rmin_half is not None and sigma is None:
                section.set("sigma_unit", rmin_half)
            elif sigma is not None and rmin_half is None:
                section.set("rmin_half_unit", sigma)
    inherited = _take_units(name, "<SMIRNOFF>", root)
    blocked = [
        k for k in inherited
        if any(n.startswith(k) for n in [*root.attrib, *(s.tag for s in sections)])
    ]  # fmt: skip
    if blocked:  # the toolkit appends the unit to those names' values too
        raise OffxmlError(
            f"{name}: attribute {blocked[0]}_unit of <SMIRNOFF> would also give a unit to "
            f"the document's own attributes or sections that start with {blocked[0]!r}; "
            f"write it on the sections whose values it is for"
        )
    for section in sections:
        units = _attach(name, section.tag, section, inherited)
        for parameter in section:
            if isinstance(parameter.tag, str):
                where = f"{section.tag} <{parameter.tag}> {parameter.get('id', '')}".rstrip()
                _attach(name, where, parameter, units)
        if section.tag in ("ProperTorsions", "ImproperTorsions"):
            if section.get("potential") == "charmm":  # what it always meant (toolkit #303)
                section.set("potential", _FOURIER)
        section.set("version", "0.3")
    root.set("version", "0.3")


def _take_units(name: str, where: str, element: ET.Element) -> dict[str, str]:
    """Remove ``element``'s ``X_unit`` attributes; return X -> unit in written order."""
    units: dict[str, str] = {}
    for key in [k for k in element.attrib if k.endswith("_unit")]:
        base = key[: -len("_unit")]
        if not base:
            raise OffxmlError(
                f"{name} {where}: attribute _unit={element.get(key)!r} names no attribute "
                f"(the OpenFF toolkit would append it to every value); write X_unit for "
                f"the attribute X it is the unit of"
            )
        units[base] = element.attrib.pop(key)
    return units


def _attach(
    name: str, where: str, element: ET.Element, inherited: dict[str, str]
) -> dict[str, str]:
    """Append the fitting unit to each attribute of ``element``; return the units in force.

    As the toolkit: the element's own ``X_unit`` attributes join (or replace) the units
    of the elements around it, and an attribute takes the last unit, in that order,
    whose name its own name starts with.
    """
    units = dict(inherited)
    units.update(_take_units(name, where, element))
    for key, value in list(element.attrib.items()):
        fitting = [unit for base, unit in units.items() if key.startswith(base)]
        if fitting:
            element.set(key, f"{value} * {fitting[-1]}")
    return units


__all__ = ["RENAMED", "upgrade"]
