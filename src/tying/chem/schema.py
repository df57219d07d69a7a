"""What each SMIRNOFF section's parameters must carry: attribute names, kinds and units.

:mod:`tying.chem.offxml` reads every parameter through :func:`read_parameter`, so a
value is either what the file means or the file is refused (issue 14-A11): a
length written ``"abc * angstrom"``, a unit of the wrong dimension, a missing
``k``, a torsion term without its phase, a periodicity of ``1.5``, an attribute
the section does not know (a typo such as ``lenght``), a non-finite number. The
error is an :class:`~tying.chem.errors.OffxmlError` naming the file, the section,
the parameter id and the attribute, with what was expected and how to fix it.

The attributes follow the SMIRNOFF specification as the OpenFF toolkit
implements it (``BondHandler.BondType`` and its siblings); the toolkit refuses
the same unknown attributes unless told they are cosmetic.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from tying.chem.errors import OffxmlError, a_or_an
from tying.chem.units import Unit, parse_quantity, parse_unit

# Digits are ASCII's (stop 58): Python's \d and float() read any script's digits, so
# periodicity1="３" or k1="٠.١٥ * ..." loaded here as 3 and 0.15, where the toolkit (pint)
# refuses the file or misreads it (sigma="３.4 * angstrom" reads there as 0.4 Å: the
# full-width digit dropped); _bad names such a digit.
_NUMBER = re.compile(r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$")
_INTEGER = re.compile(r"^\s*[-+]?[0-9]+\s*$")
_LEADING_ZERO = re.compile(r"^\s*[-+]?0[0-9]")


def _read_int(where: str, key: str, text: str) -> int:
    """An integer (a periodicity), as the OpenFF toolkit reads it where it reads it
    right: ``"3"``, ``"+3"``, and since stop 38 the integral floats ``"3.0"`` and
    ``"3e0"`` (refused before; the toolkit reads 3). Since stop 57 also ``"0"`` and
    negative ones (``"-2"``, ``"-2.0"``): the toolkit reads them as written (a term
    ``k * (1 + cos(-2 phi - phase))`` is the periodicity 2 term with the phase negated),
    and they were refused here. Refused: ``"3.5"`` (the toolkit truncates it to 3 with
    no error) and a leading zero, ``"03"`` (the toolkit reads 0)."""
    if _LEADING_ZERO.match(text):
        raise _bad(
            where, key, text,
            "a leading zero is read as another number by the OpenFF toolkit (0 for '03'); "
            "write the integer without it (e.g. '3')",
        )  # fmt: skip
    if _INTEGER.match(text):
        return int(text)
    value = float(text) if _NUMBER.match(text) else math.nan
    if math.isfinite(value) and value == int(value):
        return int(value)
    raise _bad(
        where, key, text,
        "expected an integer (e.g. '3'; the OpenFF toolkit truncates '3.5' to 3 with no error)",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Kind:
    """What one attribute holds: a quantity of a unit's dimension, a number, an int, or text.

    Args:
        kind: ``"quantity"``, ``"number"``, ``"int"`` (an integer), ``"count"``
            (a header's ``number_of_conformers``: a positive integer, ``"2.0"`` read
            as 2) or ``"text"``.
        unit: for a quantity, a unit of the required dimension (shown in errors).
        words: text values also allowed (``"auto"`` for ``idivf``, ``"None"`` for an
            unused virtual-site angle).
        positive: a number that must be above zero (a divisor such as ``idivf``).
    """

    kind: str
    unit: str = ""
    words: tuple[str, ...] = ()
    positive: bool = False

    @property
    def dimension(self) -> tuple:
        return parse_unit(self.unit).dimension


LENGTH = Kind("quantity", "angstrom")
ANGLE = Kind("quantity", "degree")
ENERGY = Kind("quantity", "kilocalorie_per_mole")
CHARGE = Kind("quantity", "elementary_charge")
NUMBER = Kind("number")
PERIODICITY = Kind("int")
TEXT = Kind("text")
# A torsion term's divisor: the toolkit reads 0 or -1, which made a term's energy
# infinite or turned its sign (k / idivf) without a word.
DIVISOR = Kind("number", positive=True)
IDIVF = Kind("number", words=("auto",), positive=True)
# A header's count (number_of_conformers): the toolkit reads it through float and int, so
# "x" is refused there, "2.0" is 2, and "2.5" silently 2; "x" loaded here as text (stop 53).
COUNT = Kind("count")


@dataclasses.dataclass(frozen=True)
class Spec:
    """The attributes of one section's parameters.

    Args:
        fixed: attribute -> kind, for attributes written once (``length``).
        indexed: prefix -> kind, for numbered attributes (``k1``, ``k2``, ...), each
            run starting at 1 without gaps.
        required: groups of attributes of which at least one must be present
            (``("length", "length_bondorder")``); an indexed prefix stands for its run.
        terms: indexed prefixes that must all have the same count (a torsion term
            needs its periodicity, phase and k).
        one_of: groups of which at most one may be present (``sigma`` or ``rmin_half``;
            ``k`` or ``k_bondorder1, ...``); an indexed or mapped prefix stands for its run.
        mapped: prefix -> kind, for a torsion term's values interpolated by fractional
            bond order: ``k1_bondorder1``, ``k1_bondorder2`` (term, then bond order),
            standing in ``required``, ``one_of`` and ``terms`` as ``k_bondorder``.
    """

    fixed: Mapping[str, Kind]
    indexed: Mapping[str, Kind] = dataclasses.field(default_factory=dict)
    required: tuple[tuple[str, ...], ...] = ()
    terms: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    mapped: Mapping[str, Kind] = dataclasses.field(default_factory=dict)


def _k(unit: str) -> Kind:
    return Kind("quantity", unit)


_TORSION = Spec(
    fixed={},
    indexed={
        "periodicity": PERIODICITY,
        "phase": ANGLE,
        "k": ENERGY,
        "idivf": DIVISOR,  # "auto" is a section default only; the toolkit refuses it per term
    },
    # A term's k interpolated by bond order is written k<term>_bondorder<order> (the
    # toolkit's spelling; "k_bondorder1" is refused there, and was read here as a k
    # that Parameter.terms then left out: a torsion with no terms, silently).
    mapped={"k": ENERGY},
    required=(("periodicity",), ("phase",), ("k", "k_bondorder")),
    terms=("periodicity", "phase"),
    one_of=(("k", "k_bondorder"),),
)

SPECS: dict[str, Spec] = {
    "Constraints": Spec(fixed={"distance": LENGTH}),
    "Bonds": Spec(
        fixed={
            "length": LENGTH,
            "k": _k("kilocalorie_per_mole / angstrom ** 2"),
        },
        indexed={
            "length_bondorder": LENGTH,
            "k_bondorder": _k("kilocalorie_per_mole / angstrom ** 2"),
        },
        required=(("length", "length_bondorder"), ("k", "k_bondorder")),
        one_of=(("length", "length_bondorder"), ("k", "k_bondorder")),  # as the toolkit
    ),
    "Angles": Spec(
        fixed={"angle": ANGLE, "k": _k("kilocalorie_per_mole / radian ** 2")},
        required=(("angle",), ("k",)),
    ),
    "ProperTorsions": _TORSION,
    # An improper's k is not interpolated by bond order (the toolkit's ImproperTorsionType
    # has no k_bondorder and refuses the file); read here, it labelled as a term without k.
    "ImproperTorsions": dataclasses.replace(
        _TORSION, mapped={}, required=(("periodicity",), ("phase",), ("k",)), one_of=()
    ),
    "vdW": Spec(
        fixed={"epsilon": ENERGY, "sigma": LENGTH, "rmin_half": LENGTH},
        required=(("epsilon",), ("sigma", "rmin_half")),
        one_of=(("sigma", "rmin_half"),),
    ),
    "LibraryCharges": Spec(
        fixed={"name": TEXT}, indexed={"charge": CHARGE}, required=(("charge",),)
    ),
    "ChargeIncrementModel": Spec(
        fixed={}, indexed={"charge_increment": CHARGE}, required=(("charge_increment",),)
    ),
    "GBSA": Spec(fixed={"radius": LENGTH, "scale": NUMBER}, required=(("radius",), ("scale",))),
    "VirtualSites": Spec(
        fixed={
            "type": TEXT,
            "name": TEXT,
            "match": TEXT,
            "distance": LENGTH,
            # "None": the toolkit's spelling for an angle a site type does not use; ""
            # is how its ForceField.to_file writes that None (a merged TIP4P/OPC file).
            # Which types take which angle: _check_virtual_site.
            "outOfPlaneAngle": Kind("quantity", "degree", words=("None", "")),
            "inPlaneAngle": Kind("quantity", "degree", words=("None", "")),
            "epsilon": ENERGY,
            "sigma": LENGTH,
            "rmin_half": LENGTH,
        },
        indexed={"charge_increment": CHARGE},
        required=(("type",), ("match",), ("distance",), ("charge_increment",)),
        one_of=(("sigma", "rmin_half"),),
    ),
}


@dataclasses.dataclass(frozen=True)
class HeaderSpec:
    """The attributes a section's own tag may carry (those the OpenFF toolkit reads).

    Args:
        versions: the lowest and highest section ``version`` the toolkit reads.
        attributes: attribute -> the values it may take (empty: any value of its
            :data:`HEADER_KINDS` kind, or any text); ``version`` is always allowed.
    """

    versions: tuple[str, str]
    attributes: Mapping[str, tuple[str, ...]]


_TORSION_POTENTIAL = ("k*(1+cos(periodicity*theta-phase))",)
#: The scale factors of the nonbonded headers (<vdW>, <Electrostatics>): one list, read by
#: both headers' specs and by HEADER_KINDS (each used to write the four names out again).
SCALES = ("scale12", "scale13", "scale14", "scale15")
# Every section the OpenFF toolkit reads (those tying.chem assigns first): a typo in a header
# (default_idvf) used to be kept as text, so ForceField.idivf gave the default instead
# of the value written; a potential or combining rule other than the one the values
# are meant for, a missing or unsupported version, were read as if they were fine.
# The OpenFF toolkit refuses all of these. Other sections keep their header as text.
HEADERS: dict[str, HeaderSpec] = {
    "Constraints": HeaderSpec(("0.3", "0.3"), {}),
    "Bonds": HeaderSpec(
        ("0.3", "0.4"),
        {
            "potential": ("harmonic", "(k/2)*(r-length)^2"),
            "fractional_bondorder_method": (),
            "fractional_bondorder_interpolation": ("linear",),
        },
    ),
    "Angles": HeaderSpec(("0.3", "0.3"), {"potential": ("harmonic",)}),
    "ProperTorsions": HeaderSpec(
        ("0.3", "0.4"),
        {
            "potential": _TORSION_POTENTIAL,
            "default_idivf": (),
            "fractional_bondorder_method": (),
            "fractional_bondorder_interpolation": ("linear",),
        },
    ),
    "ImproperTorsions": HeaderSpec(
        ("0.3", "0.3"), {"potential": _TORSION_POTENTIAL, "default_idivf": ()}
    ),
    "vdW": HeaderSpec(
        ("0.3", "0.5"),
        {
            "potential": ("Lennard-Jones-12-6",),
            "combining_rules": ("Lorentz-Berthelot",),
            **dict.fromkeys(SCALES, ()),
            "cutoff": (),
            "switch_width": (),
            "periodic_method": ("cutoff", "no-cutoff", "Ewald3D"),
            "nonperiodic_method": ("cutoff", "no-cutoff"),
            "method": ("cutoff",),  # version 0.3 only (see read_header)
        },
    ),
    # Not labelled here, but read by Interchange from the same file: a misspelled
    # attribute (cutof=) or an unknown potential loaded and was kept as text, where the
    # OpenFF toolkit refuses the file (stop 52).
    "Electrostatics": HeaderSpec(
        ("0.3", "0.4"),
        {
            **dict.fromkeys(SCALES, ()),
            "cutoff": (),
            "switch_width": (),
            "periodic_potential": (
                "Ewald3D-ConductingBoundary",
                "PME",
                "Coulomb",
                "coulomb",
                "reaction-field",
                "charge1*charge2/(4*pi*epsilon0)*(1/r + k_rf*r^2 - c_rf);"
                "k_rf=(cutoff^(-3))*(solvent_dielectric-1)/(2*solvent_dielectric+1);"
                "c_rf=cutoff^(-1)*(3*solvent_dielectric)/(2*solvent_dielectric+1)",
            ),
            "nonperiodic_potential": ("Coulomb",),
            "exception_potential": ("Coulomb",),
            "method": ("PME", "Coulomb", "reaction-field"),  # version 0.3 only
        },
    ),
    # The charge and solvent sections the toolkit reads: their headers were kept as text
    # unchecked, so an unknown attribute or version loaded here and not there (stop 52).
    "LibraryCharges": HeaderSpec(("0.3", "0.3"), {}),
    "ToolkitAM1BCC": HeaderSpec(("0.3", "0.3"), {}),
    "ChargeIncrementModel": HeaderSpec(
        ("0.3", "0.4"), {"number_of_conformers": (), "partial_charge_method": ()}
    ),
    "NAGLCharges": HeaderSpec(
        ("0.3", "0.3"),
        {"model_file": (), "model_file_hash": (), "digital_object_identifier": ()},
    ),
    "VirtualSites": HeaderSpec(("0.3", "0.3"), {"exclusion_policy": ()}),
    "GBSA": HeaderSpec(
        ("0.3", "0.3"),
        {
            "gb_model": ("HCT", "OBC1", "OBC2"),
            "sa_model": ("ACE", "None"),
            "solute_dielectric": (),
            "solvent_dielectric": (),
            "solvent_radius": (),
            "surface_area_penalty": (),
        },
    ),
}

# Scale factors the OpenFF toolkit (and so Interchange) cannot apply: any other value is a
# SMIRNOFFSpecError there, and a switched electrostatics cutoff is not implemented.
_FIXED = {
    "vdW": {"scale12": 0.0, "scale13": 0.0, "scale15": 1.0},
    "Electrostatics": {"scale12": 0.0, "scale13": 0.0, "scale15": 1.0, "switch_width": 0.0},
}

# Section headers: attributes whose kind is known; every other one is kept as text.
HEADER_KINDS: dict[str, Kind] = {
    "cutoff": LENGTH,
    "switch_width": LENGTH,
    **dict.fromkeys(SCALES, NUMBER),
    "default_idivf": IDIVF,
    # the charge and solvent models' numbers, converted by the toolkit with int()/float()
    # or a unit: "x" was kept here as text where the toolkit refuses the file (stop 53)
    "number_of_conformers": COUNT,
    "solvent_dielectric": NUMBER,
    "solute_dielectric": NUMBER,
    "solvent_radius": LENGTH,
    # kept as text for want of the calorie (stop 53): "5.4 * kilocalorie" (an energy, not
    # per mole and area) loaded here where the toolkit refuses it (stop 54)
    "surface_area_penalty": Kind("quantity", "calorie / mole / angstrom ** 2"),
}


def read_value(where: str, key: str, text: str, kind: Kind) -> Any:
    """Read one attribute as ``kind``; refuse anything else, naming ``where`` and ``key``.

    Args:
        where: the file, section and parameter id, for the message.
        key: the attribute's name.
        text: its value as written.
        kind: what it must hold.

    Returns:
        A :class:`~tying.chem.units.Quantity` (in the unit written), a float, an int or the text.

    Raises:
        OffxmlError: on a value that is not of its kind (names the place, the value,
            what was expected, and an example of a valid value).

    Example:
        >>> read_value("f.offxml Bonds id 'b1'", "length", "1.5 * angstrom", LENGTH).value
        1.5
        >>> read_value("f.offxml Bonds id 'b1'", "length", "1.5 * degree", LENGTH)
        Traceback (most recent call last):
        ...
        tying.chem.errors.OffxmlError: f.offxml Bonds id 'b1': attribute length='1.5 * degree' has the wrong unit: expected a length (e.g. '1.5 * angstrom'), got degree (angle^1); fix the value in the file
    """
    if kind.kind == "text":
        return text
    if text.strip() in kind.words:
        return text.strip()
    if kind.kind == "number":
        if not _NUMBER.match(text):
            also = f" or {' / '.join(map(repr, kind.words))}" if kind.words else ""
            raise _bad(where, key, text, f"expected a plain number (e.g. '1.0'){also}")
        value = _finite(where, key, text, float(text))
        if kind.positive and value <= 0:
            also = f" or {' / '.join(map(repr, kind.words))}" if kind.words else ""
            raise _bad(where, key, text, f"expected a number above 0 (a divisor, e.g. '1.0'){also}")
        return value
    if kind.kind == "int":
        return _read_int(where, key, text)
    if kind.kind == "count":
        value = float(text) if _NUMBER.match(text) else math.nan
        if not (math.isfinite(value) and value >= 1 and value == int(value)):
            raise _bad(
                where, key, text,
                "expected a whole number of at least 1 (e.g. '1'; the OpenFF toolkit "
                "truncates '2.5' to 2 and reads '0' and negative counts)",
            )  # fmt: skip
        return int(value)
    try:
        q = parse_quantity(text)
    except ValueError as err:
        raise _bad(
            where, key, text, f"{err}; expected {_dimension_name(kind)} such as {_example(kind)}"
        ) from None
    _finite(where, key, text, q.value)
    if q.unit.dimension != kind.dimension:
        raise OffxmlError(
            f"{where}: attribute {key}={text!r} has the wrong unit: expected "
            f"{_dimension_name(kind)} (e.g. {_example(kind)}), got {q.unit} "
            f"({_dim_text(q.unit)}){_angle_note(q.unit.dimension, kind.dimension)}; "
            f"fix the value in the file"
        )
    return q


def read_parameter(where: str, section: str, attributes: Mapping[str, str]) -> dict[str, Any]:
    """Read every attribute of one parameter (``smirks`` and ``id`` already removed).

    Sections without a :data:`SPECS` entry keep their attributes as text.

    Args:
        where: the file, section and parameter id, for the message.
        section: the section's tag, e.g. ``"Bonds"``.
        attributes: attribute -> text, as written.

    Returns:
        attribute -> value (see :func:`read_value`).

    Raises:
        OffxmlError: on an unknown attribute, a missing required one, a numbered
            run with a gap, torsion terms of unequal counts, a bad value, or a
            ``<VirtualSite>`` the toolkit refuses (an unknown type, an angle its type
            does not take or lacks, a ``match`` it does not support, another number
            of charge increments than its parent atoms).

    Example:
        >>> v = read_parameter("f Angles id 'a1'", "Angles",
        ...                    {"angle": "109.5 * degree", "k": "100 * kilocalorie_per_mole / radian ** 2"})
        >>> v["angle"].value, str(v["k"].unit)
        (109.5, 'kilocalorie / mole / radian ** 2')
        >>> read_parameter("f Angles id 'a1'", "Angles", {"angle": "109.5 * degree"})
        Traceback (most recent call last):
        ...
        tying.chem.errors.OffxmlError: f Angles id 'a1': missing attribute k (a quantity in kilocalorie_per_mole / radian ** 2); add it to the parameter
    """
    spec = SPECS.get(section)
    if spec is None:
        return dict(attributes)
    values: dict[str, Any] = {}
    runs: dict[str, list[int]] = {}
    mapped: dict[str, set[int]] = {}  # "k_bondorder" -> the terms that have one
    for key, text in attributes.items():
        if key in spec.fixed:
            values[key] = read_value(where, key, text, spec.fixed[key])
            continue
        m = re.fullmatch(r"([A-Za-z_]+?)([0-9]+)", key)
        if m and m.group(1) in spec.indexed:
            values[key] = read_value(where, key, text, spec.indexed[m.group(1)])
            runs.setdefault(m.group(1), []).append(int(m.group(2)))
            continue
        m = re.fullmatch(r"([A-Za-z]+)([0-9]+)_bondorder([0-9]+)", key)
        if m and m.group(1) in spec.mapped and int(m.group(3)) >= 1:
            values[key] = read_value(where, key, text, spec.mapped[m.group(1)])
            mapped.setdefault(f"{m.group(1)}_bondorder", set()).add(int(m.group(2)))
            continue
        known = [
            *spec.fixed,
            *(f"{p}1, {p}2, ..." for p in spec.indexed),
            *(f"{p}1_bondorder1, {p}1_bondorder2, ..." for p in spec.mapped),
        ]
        raise OffxmlError(
            f"{where}: unknown attribute {key}={text!r}; {a_or_an(section)} parameter has: "
            f"{', '.join(known)}; {_unit_fix(key)}"
        )
    for prefix, terms in mapped.items():
        if sorted(terms) != list(range(1, len(terms) + 1)):
            raise OffxmlError(
                f"{where}: {_run_text(prefix, spec)} attributes are given for terms "
                f"{sorted(terms)}, expected {list(range(1, len(terms) + 1))} (term numbers "
                f"from 1, without gaps); renumber them"
            )
        runs[prefix] = sorted(terms)
    for prefix, numbers in runs.items():
        if prefix in mapped:
            continue
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise OffxmlError(
                f"{where}: {prefix} attributes are numbered {sorted(numbers)}, expected "
                f"{list(range(1, len(numbers) + 1))} (from 1, without gaps); renumber them"
            )
    for group in spec.required:
        if not any(g in values or g in runs for g in group):
            what = " or ".join(f"{g}1" if g in spec.indexed else g for g in group)
            kind = spec.fixed.get(group[0]) or spec.indexed[group[0]]
            raise OffxmlError(
                f"{where}: missing attribute {what} ({_kind_text(kind)}); add it to the parameter"
            )
    for group in spec.one_of:
        present = [g for g in group if g in values or g in runs]
        if len(present) > 1:
            shown = [_run_text(g, spec) if g in runs else g for g in present]
            raise OffxmlError(
                f"{where}: both {' and '.join(shown)} are given; a parameter takes only one "
                f"of them (the OpenFF toolkit refuses both too); remove one"
            )
    if spec.terms:
        counts = {p: len(runs.get(p, ())) for p in spec.indexed if p in runs}
        n = len(runs.get(spec.terms[0], ()))
        for prefix, count in counts.items():
            if count != n:  # as the toolkit: every numbered attribute covers every term
                raise OffxmlError(
                    f"{where}: {n} periodicity terms but {count} {prefix} terms; every term "
                    f"needs periodicityN, phaseN and kN (and idivfN if any term has it); "
                    f"complete or remove the term"
                )
        for prefix in spec.mapped:
            terms = runs.get(f"{prefix}_bondorder", ())
            if terms and len(terms) != n:
                raise OffxmlError(
                    f"{where}: {n} periodicity terms but {len(terms)} with "
                    f"{prefix}N_bondorderM; every term needs its own {prefix}N_bondorderM "
                    f"(or every term its {prefix}N); complete or remove the term"
                )
        for i in range(1, n + 1):
            if f"k{i}" not in values and i not in mapped.get("k_bondorder", ()):
                raise OffxmlError(
                    f"{where}: term {i} has no k{i}; every term needs periodicityN, phaseN "
                    f"and kN; add k{i}"
                )
    if section == "VirtualSites":
        _check_virtual_site(where, values, runs.get("charge_increment", []))
    return values


# Virtual-site types as the OpenFF toolkit reads them: the angles each takes and its
# number of charge increments (``_BaseVirtualSiteType``); "once" fits a TrivalentLonePair
# or an in-plane DivalentLonePair only.
_SITE_TYPES = {
    "BondCharge": ((), 2),
    "MonovalentLonePair": (("outOfPlaneAngle", "inPlaneAngle"), 3),
    "DivalentLonePair": (("outOfPlaneAngle",), 3),
    "TrivalentLonePair": ((), 4),
}


def _check_virtual_site(where: str, values: dict[str, Any], increments: list[int]) -> None:
    """Refuse a ``<VirtualSite>`` the toolkit refuses; spell an unused angle ``"None"``.

    The toolkit's ``ForceField.to_file`` writes an angle a site type does not use as
    ``inPlaneAngle=""`` (a merged Sage + TIP4P/OPC file), which its own reader then
    refuses; it means what ``"None"`` means, and is read so (stop 53).
    """
    site = values["type"]
    if site not in _SITE_TYPES:
        raise OffxmlError(
            f"{where}: attribute type={site!r} is not a virtual-site type the OpenFF toolkit "
            f"reads: expected {' or '.join(map(repr, _SITE_TYPES))}; fix the value in the file"
        )
    angles, n_increments = _SITE_TYPES[site]
    for key in ("outOfPlaneAngle", "inPlaneAngle"):
        value = values.get(key)
        unused = value is None or (isinstance(value, str) and value.strip() in ("", "None"))
        if key in angles and unused:
            raise OffxmlError(
                f"{where}: a {site} site needs {key} (an angle such as '0 * degree'), got "
                f"{value!r}; write the angle"
            )
        if key not in angles and not unused:
            raise OffxmlError(
                f"{where}: attribute {key}={str(value)!r}: a {site} site has no {key} (the "
                f'OpenFF toolkit refuses it); write {key}="None" or remove it'
            )
        if key not in angles and value is not None:
            values[key] = "None"
    if len(increments) != n_increments:
        raise OffxmlError(
            f"{where}: a {site} site takes {n_increments} charge increments "
            f"(charge_increment1..{n_increments}), got {len(increments)}; fix the count"
        )
    match = values["match"]
    in_plane = site != "DivalentLonePair" or _degrees(values["outOfPlaneAngle"]) == 0.0
    fits = {
        "once": site == "TrivalentLonePair" or (site == "DivalentLonePair" and in_plane),
        "all_permutations": site in ("BondCharge", "MonovalentLonePair", "DivalentLonePair"),
    }
    if not fits.get(match, False):
        ok = [m for m, good in fits.items() if good]
        raise OffxmlError(
            f"{where}: attribute match={match!r} is not supported for a {site} site"
            f"{'' if in_plane else ' out of plane'} (as the OpenFF toolkit): expected "
            f"{' or '.join(map(repr, ok))}; fix the value in the file"
        )


def _degrees(value: Any) -> float:
    return value.to("degree").value


def _run_text(prefix: str, spec: Spec) -> str:
    """How a numbered attribute run is written: ``k_bondorder1, ...`` or ``k1_bondorder1, ...``."""
    base = prefix.removesuffix("_bondorder")
    if prefix.endswith("_bondorder") and base in spec.mapped:
        return f"{base}1_bondorder1, ..."
    return f"{prefix}1, ..."


def read_header(
    where: str, attributes: Mapping[str, str], section: str | None = None
) -> dict[str, Any]:
    """Read a section's own attributes: the kinds of :data:`HEADER_KINDS`, others as text.

    For a section of :data:`HEADERS` (every section the toolkit reads), every
    attribute must be one the OpenFF toolkit reads, with a value it supports, and
    ``version`` must be given and supported.

    Args:
        where: the file and section, for the message.
        attributes: attribute -> text, as written.
        section: the section's tag; None (or a section not in :data:`HEADERS`):
            attributes are not checked by name.

    Returns:
        attribute -> value.

    Raises:
        OffxmlError: on a bad value; for a section of :data:`HEADERS`, also on an
            unknown attribute, an unsupported value, or a missing or unsupported version.

    Example:
        >>> read_header("f vdW", {"cutoff": "9.0 * angstrom", "method": "cutoff"})["cutoff"].value
        9.0
        >>> read_header("f ImproperTorsions", {"version": "0.3", "default_idvf": "1"},
        ...             "ImproperTorsions")
        Traceback (most recent call last):
        ...
        tying.chem.errors.OffxmlError: f ImproperTorsions: unknown attribute default_idvf='1' of a <ImproperTorsions> section; it takes: version, potential, default_idivf; fix its name or remove it
    """
    spec = HEADERS.get(section) if section is not None else None
    if spec is not None:
        _check_header(where, section, attributes, spec)
    return {
        k: read_value(where, k, v, HEADER_KINDS[k]) if k in HEADER_KINDS else v
        for k, v in attributes.items()
    }


def _check_header(
    where: str, section: str, attributes: Mapping[str, str], spec: HeaderSpec
) -> None:
    lo, hi = spec.versions
    supported = lo if lo == hi else f"{lo} to {hi}"
    text = attributes.get("version")
    if text is None:
        raise OffxmlError(
            f"{where}: missing attribute version; a <{section}> section needs its own "
            f'version (supported: {supported}); add version="{hi}" if its parameters follow it'
        )
    if not version_in(text, lo, hi):
        raise OffxmlError(
            f"{where}: attribute version={text!r} is not supported: expected {supported} (as "
            f"the OpenFF toolkit); write the section in a supported version"
        )
    for key, value in attributes.items():
        if key == "version":
            continue
        if key not in spec.attributes:
            raise OffxmlError(
                f"{where}: unknown attribute {key}={value!r} of a <{section}> section; it "
                f"takes: {', '.join(['version', *spec.attributes])}; {_unit_fix(key)}"
            )
        allowed = spec.attributes[key]
        if allowed and value.strip() not in allowed:
            raise OffxmlError(
                f"{where}: attribute {key}={value!r} is not supported: expected "
                f"{' or '.join(map(repr, allowed))} (as the OpenFF toolkit); fix the value"
            )
        if key == "method" and _version(text) > _version("0.3"):
            instead = {"vdW": "periodic_method and nonperiodic_method"}.get(
                section, "periodic_potential, nonperiodic_potential and exception_potential"
            )
            raise OffxmlError(
                f"{where}: attribute method={value!r} is only read in version 0.3 of "
                f"<{section}>, this one is version {text!r}; use {instead}"
            )
        fixed = _FIXED.get(section, {}).get(key)
        if fixed is not None:
            number = read_value(where, key, value, HEADER_KINDS[key])
            if (number if isinstance(number, float) else number.value) != fixed:
                raise OffxmlError(
                    f"{where}: attribute {key}={value!r} is not supported: the OpenFF toolkit "
                    f"(and Interchange) only apply {key} = {fixed:g}, and refuse the file "
                    f"otherwise; write {fixed:g} or remove the attribute"
                )


def _unit_fix(key: str) -> str:
    """The fix for an unknown attribute; for ``X_unit``, where units are written in 0.3."""
    if key.endswith("_unit") and len(key) > len("_unit"):
        # The toolkit reads X_unit only in SMIRNOFF 0.1/0.2 documents (old_spec), and
        # refuses it in 0.3 as an unknown attribute too.
        base = key[: -len("_unit")]
        return (
            f"a unit attribute is read in SMIRNOFF 0.1 and 0.2 documents only (the OpenFF "
            f"toolkit refuses it in 0.3 too): write the unit into each value "
            f'({base}="1.5 * <unit>") and remove {key}'
        )
    return "fix its name or remove it"


def version_in(text: str, lo: str, hi: str) -> bool:
    """Whether ``text`` is a version from ``lo`` to ``hi`` (``"0.3.0"`` is ``"0.3"``).

    Example:
        >>> version_in("0.3.0", "0.1", "0.3"), version_in("1.0", "0.1", "0.3"), version_in("x", "0.1", "0.3")
        (True, False, False)
    """
    version = _version(text)
    return version is not None and _version(lo) <= version <= _version(hi)


def _version(text: str) -> tuple[int, ...] | None:
    """``"0.4"`` as ``(0, 4)`` (trailing zeros dropped: ``"0.4.0"`` is the same); None if not a version."""
    if not re.fullmatch(r"\s*[0-9]+(\.[0-9]+)*\s*", text):
        return None
    parts = [int(x) for x in text.strip().split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _finite(where: str, key: str, text: str, value: float) -> float:
    if not math.isfinite(value):
        raise _bad(where, key, text, "expected a finite number")
    return value


def _bad(where: str, key: str, text: str, expected: str) -> OffxmlError:
    return OffxmlError(
        f"{where}: attribute {key}={text!r}: {expected}{_digit_note(text)}; fix the value "
        f"in the file"
    )


def _digit_note(text: str) -> str:
    """Name a digit outside ASCII (a full-width '３' from an input method), which Python
    would read as a number and the toolkit refuses."""
    odd = next((c for c in text if c.isdigit() and not c.isascii()), None)
    if odd is None:
        return ""
    return (
        f" ({odd!r}, U+{ord(odd):04X}, is not an ASCII digit: the OpenFF toolkit cannot read "
        f"it; write numbers with 0-9)"
    )


def _example(kind: Kind) -> str:
    return repr(f"1.5 * {kind.unit}")


def _kind_text(kind: Kind) -> str:
    if kind.kind == "quantity":
        return f"a quantity in {kind.unit}"
    return {
        "number": "a number",
        "int": "an integer",
        "count": "a positive integer",
        "text": "text",
    }[kind.kind]


_DIM_NAMES = {
    (("length", 1),): "a length",
    (("angle", 1),): "an angle",
    (("amount", -1), ("energy", 1)): "an energy per mole",
    (("charge", 1),): "a charge",
}


def _dimension_name(kind: Kind) -> str:
    return _DIM_NAMES.get(kind.dimension, f"a quantity in {kind.unit}")


def _angle_note(got: tuple, expected: tuple) -> str:
    """Why a unit off by angles only is refused, though the OpenFF toolkit reads it."""
    if [d for d in got if d[0] != "angle"] != [d for d in expected if d[0] != "angle"]:
        return ""
    # pint counts radian as 1 and degree as pi/180: '1.5 * degree*angstrom' is 0.026 A
    # there, a bond k per radian ** 2 is a bond k; a unit of the wrong kind, read as a
    # number, is refused here rather than read to a value nobody wrote (stop 56)
    return (
        " (the OpenFF toolkit counts radian as the number 1 and degree as pi/180, and "
        "would read this as a value in the expected unit times that factor; tying.chem "
        "refuses it: write the value in the unit the attribute takes)"
    )


def _dim_text(unit: Unit) -> str:
    return " ".join(f"{d}^{p}" for d, p in unit.dimension) or "dimensionless"


__all__ = [
    "HEADERS",
    "SPECS",
    "HeaderSpec",
    "Kind",
    "Spec",
    "read_header",
    "read_parameter",
    "read_value",
]
