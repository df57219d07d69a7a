"""Units of SMIRNOFF values: ``"1.526 * angstrom ** 1"`` parsed into a value and a unit, and kept.

An ``.offxml`` file writes every physical value as ``number * unit expression``
(``angstrom``, ``kilocalorie_per_mole ** 1 * angstrom ** -2``, older files
``angstrom**-2 * mole**-1 * kilocalorie``). :func:`parse_quantity` turns one into a
:class:`Quantity`; two spellings of the same unit compare equal, two quantities
compare by physical value (``1.5 angstrom == 0.15 nanometer``, as pint), and
:meth:`Quantity.to` converts between units of the same dimension (Å/nm,
kcal/kJ/cal/J, degree/radian). No unit library is needed for that handful of units.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

#: how close two values of one dimension written in two units must be, after conversion,
#: to be one value in :func:`tying.chem.used_parameters.same_values`: a conversion
#: (1.52597 angstrom -> 0.152597 nm) moves the last bits
REL_TOL = 1e-12
#: significant digits at which two values of one dimension written in two units are one
#: value for ``==`` and ``hash`` (review of stop 59), both read in the dimension's reference
#: unit (Å, kcal, mol, rad, e). The shipped files write at most 13 (1.525970013793) in 99%
#: of their 47,000 values, so those written in another unit (a copy in nm) compare equal
#: whatever bits a conversion moves, and two values that differ in the 13th digit stay two
#: values. A rule, not a tolerance: equal quantities get one key, so the hash is that key,
#: not just the dimension (of values at full precision, ~1 in 5,000 converted by pint rounds
#: to the other side and compares unequal across units).
KEY_DIGITS = 13

# Each base unit: its dimension and its size in the reference unit of that dimension.
_BASE: dict[str, tuple[str, float]] = {
    "angstrom": ("length", 1.0),
    "nanometer": ("length", 10.0),
    "picometer": ("length", 0.01),
    # openff-units' bohr (pint: hbar / (alpha * m_e * c)), to the bit: a file written in
    # bohr loads in the toolkit and was refused here as an unknown unit (stop 56)
    "bohr": ("length", 0.5291772109039773),
    "meter": ("length", 1e10),
    # pint's centimeter, millimeter and micrometer (stop 57): a file written with them
    # loads in the toolkit and was refused here as an unknown unit
    "centimeter": ("length", 1e8),
    "millimeter": ("length", 1e7),
    "micrometer": ("length", 1e4),
    "kilocalorie": ("energy", 1.0),
    "kilojoule": ("energy", 1.0 / 4.184),
    # openff-units: calorie = 4.184 * joule (thermochemical); GBSA's surface_area_penalty
    # is written in calories, and was kept as text for want of the unit (stop 54)
    "calorie": ("energy", 1.0 / 1000.0),
    "joule": ("energy", 1.0 / 4184.0),
    "mole": ("amount", 1.0),
    "radian": ("angle", 1.0),
    "degree": ("angle", math.pi / 180.0),
    "elementary_charge": ("charge", 1.0),
}
# Compound names the OpenFF files use, written out in base units.
_ALIASES: dict[str, dict[str, int]] = {
    "kilocalorie_per_mole": {"kilocalorie": 1, "mole": -1},
    "kilocalories_per_mole": {"kilocalorie": 1, "mole": -1},
    "kilojoule_per_mole": {"kilojoule": 1, "mole": -1},
    "kilojoules_per_mole": {"kilojoule": 1, "mole": -1},
    "angstroms": {"angstrom": 1},
    "nanometers": {"nanometer": 1},
    "degrees": {"degree": 1},
    "radians": {"radian": 1},
    "dimensionless": {},
    # pint's symbols and spellings, which the OpenFF toolkit (openff-units) reads: a file
    # written with them was refused here (stop 38); "A" stays unknown (pint: ampere)
    "nm": {"nanometer": 1},
    "nanometre": {"nanometer": 1},
    "nanometres": {"nanometer": 1},
    "\u00c5": {"angstrom": 1},  # Å
    "\u212b": {"angstrom": 1},  # the angstrom sign (NFC makes it U+00C5)
    "ångström": {"angstrom": 1},
    "kcal": {"kilocalorie": 1},
    "kilocalories": {"kilocalorie": 1},
    "kJ": {"kilojoule": 1},
    "kilojoules": {"kilojoule": 1},
    "mol": {"mole": 1},
    "moles": {"mole": 1},
    "rad": {"radian": 1},
    "deg": {"degree": 1},
    # the rest of openff-units' energies and lengths of this size (stop 54): a file
    # written with them loads in the toolkit and was refused here as an unknown unit
    "calories": {"calorie": 1},
    "cal": {"calorie": 1},
    "cal_th": {"calorie": 1},
    "thermochemical_calorie": {"calorie": 1},
    "calorie_per_mole": {"calorie": 1, "mole": -1},
    "calories_per_mole": {"calorie": 1, "mole": -1},
    "joules": {"joule": 1},
    "J": {"joule": 1},
    "joule_per_mole": {"joule": 1, "mole": -1},
    "joules_per_mole": {"joule": 1, "mole": -1},
    "picometers": {"picometer": 1},
    "picometre": {"picometer": 1},
    "picometres": {"picometer": 1},
    "pm": {"picometer": 1},
    "bohrs": {"bohr": 1},
    "meters": {"meter": 1},
    "metre": {"meter": 1},
    "metres": {"meter": 1},
    # stop 57: pint's other names of the bohr (a0 was read as the unit 'a' and a number)
    "a0": {"bohr": 1},
    "a_0": {"bohr": 1},
    "bohr_radius": {"bohr": 1},
    "atomic_unit_of_length": {"bohr": 1},
    "centimeters": {"centimeter": 1},
    "centimetre": {"centimeter": 1},
    "centimetres": {"centimeter": 1},
    "cm": {"centimeter": 1},
    "millimeters": {"millimeter": 1},
    "millimetre": {"millimeter": 1},
    "millimetres": {"millimeter": 1},
    "mm": {"millimeter": 1},
    "micrometers": {"micrometer": 1},
    "micrometre": {"micrometer": 1},
    "micrometres": {"micrometer": 1},
    "micron": {"micrometer": 1},
    "microns": {"micrometer": 1},
    "um": {"micrometer": 1},
    "\u00b5m": {"micrometer": 1},  # µm (micro sign)
    # pint's (openff-units') symbol of the elementary charge (stop 58): a LibraryCharges
    # charge written '0.417 * e' loads in the toolkit and was refused as an unknown unit
    "e": {"elementary_charge": 1},
}
_ORDER = (
    "kilocalorie",
    "kilojoule",
    "calorie",
    "joule",
    "elementary_charge",
    "mole",
    "angstrom",
    "nanometer",
    "picometer",
    "bohr",
    "meter",
    "centimeter",
    "millimeter",
    "micrometer",
    "degree",
    "radian",
)
# Numbers in ASCII digits only (stop 58): '３' or '٠.١٥' read as 3 and 0.15 here, and the
# toolkit refuses them; unit names stay Unicode (Å, ångström, µm).
_TOKEN = re.compile(
    r"\s*(\*\*|\^|\*|/|\(|\)|-|\+|\u00b0|[^\W\d]\w*|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
)
# pint's words (stop 59), rewritten as pint's string_preprocessor rewrites them, before
# the expression is read: 'angstrom squared' is angstrom**2, 'cubic nm' nm**3 ('per' is
# read as '/'). Files the toolkit reads were refused here.
_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
_PINT_WORDS = [
    (re.compile(r"([\w\.\-\+\*\\\^])\s+"), r"\1 "),
    (re.compile(rf"({_NAME}) squared"), r"\1**2"),
    (re.compile(rf"({_NAME}) cubed"), r"\1**3"),
    (re.compile(rf"cubic ({_NAME})"), r"\1**3"),
    (re.compile(rf"square ({_NAME})"), r"\1**2"),
    (re.compile(rf"sq ({_NAME})"), r"\1**2"),
]
_NUMBER = re.compile(r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$")
# '<number> <unit>': a number, blanks, then a unit name, '(' or '°'
_SPACED = re.compile(
    r"^\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s+((?:[^\W\d]|\(|\u00b0).*)$",
    re.S,
)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A product of base units with integer exponents, e.g. ``kilocalorie / mole / angstrom ** 2``.

    Args:
        powers: ``(base-unit name, integer exponent)`` pairs (or a mapping), in any order:
            kept in one order, repeats summed, zeros dropped; or a unit expression, parsed.

    Raises:
        ValueError: on a name that is not a base unit (names the fix).
        TypeError: on an exponent that is not an integer, or powers that are not pairs.

    Example:
        >>> parse_unit("kilocalorie_per_mole ** 1 * angstrom ** -2") == parse_unit(
        ...     "angstrom**-2 * mole**-1 * kilocalorie")
        True
        >>> str(parse_unit("mole ** -1 * kilocalorie ** 1"))
        'kilocalorie / mole'
    """

    powers: tuple[tuple[str, int], ...]

    # Built by hand (stop 61): Unit((("mole", -1), ("kilocalorie", 1))) was unequal to
    # parse_unit("kilocalorie / mole"), and Unit((("angstrom", 0),)) to dimensionless
    # (== compares the tuples as written), with no error; Unit("angstrom") and unknown names
    # failed later, deep inside. Powers are put in the one order parse_unit gives.
    def __post_init__(self) -> None:
        if isinstance(self.powers, str):  # pint's Unit("angstrom")
            object.__setattr__(self, "powers", parse_unit(self.powers).powers)
            return
        canonical = _canonical_powers(self.powers)
        if canonical != self.powers:
            object.__setattr__(self, "powers", canonical)

    # An openff.units (pint) unit compares by what it is (stop 59): a toolkit script's
    # ``p["length"].unit == unit.angstrom`` was False, without a word
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Unit):
            return self.powers == other.powers
        if hasattr(other, "dimensionality") and not hasattr(other, "magnitude"):
            try:
                return self.powers == parse_unit(format(other, "D")).powers
            except ValueError:  # a pint unit this module does not have
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.powers)

    @staticmethod
    def of(powers: Mapping[str, int]) -> Unit:
        """Build a unit from ``{base: exponent}`` (order-free, zeros dropped)."""
        return Unit(tuple(powers.items()))

    @functools.cached_property
    def dimension(self) -> tuple[tuple[str, int], ...]:
        """The unit's dimension, e.g. ``(("energy", 1), ("amount", -1))``."""
        dims: dict[str, int] = {}
        for name, power in self.powers:
            dim = _BASE[name][0]
            dims[dim] = dims.get(dim, 0) + power
        return tuple(sorted((d, p) for d, p in dims.items() if p != 0))

    @property
    def scale(self) -> float:
        """Size of this unit in the reference units (Å, kcal, mol, rad, e)."""
        out = 1.0
        for name, power in self.powers:
            out *= _BASE[name][1] ** power
        return out

    def __str__(self) -> str:
        def term(name: str, power: int) -> str:
            return name if power == 1 else f"{name} ** {power}"

        num = [term(n, p) for n, p in self.powers if p > 0]
        den = [term(n, -p) for n, p in self.powers if p < 0]
        text = " * ".join(num) if num else ("1" if den else "dimensionless")
        return " / ".join([text, *den])


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A value with its unit, as written in the force-field file.

    Args:
        value: one real number.
        unit: a :class:`Unit`, a unit expression (``"angstrom"``) or an openff.units unit.

    Raises:
        TypeError: when ``value`` is not one real number, or ``unit`` not a unit.
        ValueError: when ``unit`` is an expression with an unknown name.

    Example:
        >>> Quantity(1.5, "angstrom") == Quantity(0.15, "nanometer")  # a unit as text, as pint
        True
        >>> q = parse_quantity("1.525970013793 * angstrom ** 1")
        >>> q.value, str(q.unit)
        (1.525970013793, 'angstrom')
        >>> round(q.to("nanometer").value, 6)
        0.152597
        >>> str(2 * q / 4)  # scaled by plain numbers (a product of two quantities is refused)
        '0.7629850068965 angstrom'
        >>> f"{q:.3f}", str(q)  # str keeps every digit of the file, a format spec rounds
        ('1.526 angstrom', '1.525970013793 angstrom')
        >>> q == parse_quantity("0.1525970013793 * nanometer")  # by value, as pint compares
        True
    """

    value: float
    unit: Unit

    # Built by hand (stop 61): pint's own idiom, Quantity(1.5, "angstrom"), made a
    # Quantity whose unit was the text, which printed right and then failed in ==, hash,
    # ordering and to() with "'str' object has no attribute 'dimension'"; a value given as
    # text ("1.5") failed in the same places. The unit may be written as text or an
    # openff.units unit, as pint takes it; the value is one real number.
    def __post_init__(self) -> None:
        if type(self.unit) is not Unit:
            object.__setattr__(self, "unit", _quantity_unit(self.unit))
        if type(self.value) is not float and not _is_factor(self.value):
            # a 0-d NumPy array of a real number is that number, as pint takes it (stop 62:
            # Quantity(np.array(1.5), u) was refused; a reduction such as arr.sum() of a
            # 0-d array, or np.asarray(x), gives one)
            value = _zero_d(self.value)
            if not _is_factor(value):
                raise TypeError(_not_a_value(value))
            object.__setattr__(self, "value", value)

    def to(self, unit: str | Unit) -> Quantity:
        """Convert to ``unit`` (a unit expression or :class:`Unit`) of the same dimension.

        ``unit`` may also be an OpenFF (``openff.units``) / pint unit, such as
        ``unit.nanometer``, read by its text: a toolkit script's ``q.to(unit.nanometer)``
        raised ``AttributeError: 'Unit' object has no attribute 'dimension'`` (stop 58).

        Raises:
            ValueError: when the dimensions differ (names both units).
            TypeError: when ``unit`` is not a unit (names what to pass).
        """
        target = _target_unit(unit)
        if target.dimension != self.unit.dimension:
            raise ValueError(
                f"cannot convert {self.unit} to {target}: dimensions differ "
                f"({_dim_text(self.unit)} vs {_dim_text(target)})"
            )
        if target == self.unit:  # no arithmetic: 1.8e307 nm stayed 1.8e307, not inf
            return Quantity(self.value, target)
        value = self.value * self.unit.scale / target.scale
        if math.isinf(value) and math.isfinite(self.value):
            # the product overflowed before the division (1.8e307 nm -> Å -> pm); the ratio
            # first keeps a value the target unit can hold (the order above keeps the bits
            # every finite result had)
            value = self.value * (self.unit.scale / target.scale)
        return Quantity(value, target)

    # Equality by physical value (stop 59), as pint / openff.units compare: 1.5 angstrom
    # and 0.15 nanometer were unequal (the dataclass compared value and unit as written),
    # so a script checking a parameter against the toolkit's value, or against the same
    # force field saved in nm, read False with no error. Values of one dimension, in one
    # unit or two: the values in the reference unit, to KEY_DIGITS significant digits
    # (review of stop 59: a relative 1e-12 tolerance has no hash but the dimension's, so a
    # set, dict, Counter or lru_cache of quantities compared every entry of a dimension
    # with every other, 24x slower on 60,675 assigned values, and it made 1.525970013793
    # angstrom equal to 0.1525970013794 nanometer, which pint does not). One rule for one
    # unit too (callers review of stop 59): with exact values in one unit and the key
    # across two, 1.0000000000001 A == 0.1 nm == 1.0 A while 1.0000000000001 A != 1.0 A,
    # so a set of the three held 1 or 2 values by the order of insertion.
    #
    # A plain number (stop 60) compares as pint compares it: zero (or NaN) against the
    # value in any unit, any other number against a dimensionless value only. Before,
    # ``bond["k"] == 0`` or ``torsion["phase1"] == 0`` was False for a zero value where the
    # toolkit's parameter says True, so a script skipping zero terms kept them, silently.
    # Such a quantity hashes as that number (the key), so ``==`` and ``hash`` still agree.
    def __eq__(self, other: object) -> bool:
        theirs = _as_quantity(other)
        if theirs is None:
            if not _is_factor(other):
                return NotImplemented
            if other == 0 or other != other:  # zero or NaN: the value, in any unit
                return self.value == other
            return not self.unit.dimension and self._key() == other
        if self.unit.dimension != theirs.unit.dimension:
            return False
        return self._key() == theirs._key()

    def __hash__(self) -> int:
        key = self._key()
        if not self.unit.dimension or key == 0:  # equal to a plain number: hash as one
            return hash(key)
        return hash((self.unit.dimension, key))

    # Truth and order (stop 60), as pint's: ``if torsion["k1"]:`` was True for a zero k
    # (a dataclass is always true), so a script skipping zero terms kept them, silently;
    # ``a < b`` and ``sorted(..., key=lambda p: p["length"])`` were a bare TypeError.
    def __bool__(self) -> bool:
        # bool(): a NumPy value (Quantity(arr[i], u)) gives a numpy.bool_, which __bool__
        # may not return ("__bool__ should return bool", review of stop 60)
        return bool(self.value != 0)  # NaN is true, as float('nan') and pint

    def __lt__(self, other: object) -> bool:
        return _ordered(self, other, "<", operator.lt)

    def __le__(self, other: object) -> bool:
        return _ordered(self, other, "<=", operator.le)

    def __gt__(self, other: object) -> bool:
        return _ordered(self, other, ">", operator.gt)

    def __ge__(self, other: object) -> bool:
        return _ordered(self, other, ">=", operator.ge)

    def _key(self) -> object:
        """The value in the dimension's reference unit to KEY_DIGITS significant digits
        (equal values in one unit have one key, so ``==`` and ``hash`` agree); kept on
        the instance, as a force field's quantities are hashed again and again."""
        key = self.__dict__.get("_key_")
        if key is None:
            value = self.value * self.unit.scale
            if math.isinf(value) and math.isfinite(self.value):  # too large for the
                key = (self.value, self.unit.powers)  # reference unit: its own unit only
            else:
                key = float(f"{value:.{KEY_DIGITS}g}")
            object.__setattr__(self, "_key_", key)
        return key

    # pint's names (stop 59): a toolkit script reads ``bond.length.m_as(unit.angstrom)``,
    # ``.magnitude``, ``.units``; here that was a bare "no attribute 'm_as'". Named, not
    # aliased: a value with .magnitude and .units passes for a pint quantity in other code.
    def __getattr__(self, name: str) -> object:
        fix = _PINT_NAMES.get(name)
        if fix is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise AttributeError(
            f"Quantity has no attribute {name!r} (an openff.units / pint name): read {fix} "
            f"(a tying.chem Quantity has .value, .unit and .to(unit))"
        )

    # Scaling by a plain number (stop 58): the toolkit's quantities scale (``k / idivf``,
    # ``2 * rmin_half / 2 ** (1 / 6)``), and our own advice for a vdW sigma said to write
    # the latter, which was a TypeError when followed. A product or quotient of two
    # quantities (a new unit) and sums are still refused (TypeError).
    def __mul__(self, factor: object) -> Quantity:
        if not _is_factor(factor):
            return NotImplemented
        return Quantity(self.value * float(factor), self.unit)

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Quantity:
        if not _is_factor(divisor):
            return NotImplemented
        return Quantity(self.value / float(divisor), self.unit)

    def __neg__(self) -> Quantity:
        return Quantity(-self.value, self.unit)

    # Every digit (stop 58): '{:g}' kept six significant digits, so str(bond["length"])
    # of Sage's b3 read "1.51234 angstrom" where the file and the toolkit's str say
    # 1.51234261218 angstrom, and a table written with str() lost the rest, silently.
    # str(float) is the shortest text that reads back to the same number, as pint's str.
    # Not repr: under NumPy 2 a value taken from an array (Quantity(arr[i], u), a mean)
    # printed "np.float64(1.25) angstrom" where pint prints "1.25 angstrom" (review).
    def __str__(self) -> str:
        return f"{self.value} {self.unit}"

    def __format__(self, spec: str) -> str:
        """``f"{q:.3f}"`` formats the value and appends the unit, as pint's quantities do
        (it raised TypeError here); an empty spec is :meth:`__str__`, every digit."""
        if not spec:
            return str(self)
        try:
            number = format(self.value, spec)
        except (ValueError, TypeError) as err:
            # "Invalid format specifier '~P' for object of type 'float'" named neither the
            # Quantity nor what a spec does here; a toolkit script writes pint's f"{q:~P}"
            raise ValueError(
                f"Quantity format spec {spec!r}: {err}; the spec formats the value (a number "
                f"format such as '.3f' or '>12.4g') and the unit is written in full; pint's "
                f"unit formats ('~', 'P', 'D', 'C', 'L', 'H') are not read here"
            ) from err
        return f"{number} {self.unit}"


def _target_unit(unit: object) -> Unit:
    """What :meth:`Quantity.to` converts to: a unit expression, a :class:`Unit`, or a pint
    (``openff.units``) unit, read through its default text (``format(u, "D")``)."""
    if isinstance(unit, str):
        return parse_unit(unit)
    if isinstance(unit, Unit):
        return unit
    if hasattr(unit, "dimensionality") and hasattr(unit, "units"):  # a pint Quantity
        # pint's to() drops the magnitude of a quantity given as the target; a magnitude
        # of 1 is how pint writes 1 / unit.mole, anything else is a slip, not a unit
        # one number, not an array: np.ones(3) * unit.nm made "== 1" an array and the
        # call "The truth value of an array ... is ambiguous" (review)
        magnitude = getattr(unit, "magnitude", None)
        if getattr(magnitude, "shape", ()) == () and magnitude == 1:
            return parse_unit(format(unit.units, "D"))
        raise TypeError(
            f"Quantity.to takes a unit, got the quantity {unit!r}; pass its unit "
            f"(quantity.units) or a unit expression such as 'nanometer'"
        )
    if hasattr(unit, "dimensionality"):  # a pint / openff.units Unit
        return parse_unit(format(unit, "D"))
    raise TypeError(
        f"Quantity.to takes a unit expression (e.g. 'kilojoule_per_mole / nanometer ** 2'), "
        f"a tying.chem Unit or an openff.units unit, got {type(unit).__name__} {unit!r}"
    )


_PINT_NAMES = {
    "m": "q.value",
    "magnitude": "q.value",
    "units": "q.unit",
    "u": "q.unit",
    "m_as": "q.to(unit).value (unit: a unit expression such as 'angstrom', or openff's unit)",
    "to_base_units": "q.to(unit) with the unit you mean",
    "to_reduced_units": "q.to(unit) with the unit you mean",
    "dimensionality": "q.unit.dimension",
}


def _as_quantity(other: object) -> Quantity | None:
    """``other`` as a :class:`Quantity` for ``==``: ours, or one number of openff.units /
    pint (a toolkit parameter's ``length``); None for anything else."""
    if isinstance(other, Quantity):
        return other
    magnitude = getattr(other, "magnitude", None)
    units = getattr(other, "units", None)
    if units is None or not hasattr(other, "dimensionality") or not _is_factor(magnitude):
        return None
    try:
        return Quantity(float(magnitude), parse_unit(format(units, "D")))
    except ValueError:  # a pint unit this module does not have: not equal to ours
        return None


def _ordered(q: Quantity, other: object, symbol: str, op: Callable[[Any, Any], bool]) -> Any:
    """``q <op> other`` as pint orders: by value within one dimension, against a plain zero
    in any unit, against a plain number when dimensionless; refused otherwise."""
    theirs = _as_quantity(other)
    if theirs is None:
        if not _is_factor(other):
            return NotImplemented
        if other == 0 or other != other:  # zero or NaN: the value, in any unit
            return op(q.value, other)
        if not q.unit.dimension:
            # the key, as == reads it (review of stop 60: with the exact value,
            # 0.33333333333334 == 0.3333333333333 and > it at once)
            key = q._key()
            return op(key if type(key) is float else q.value * q.unit.scale, other)
        # the number as code that runs when pasted: repr of a NumPy scalar
        # (np.float64(3.0)) or inf made parse_quantity('np.float64(3.0) * ...') a ValueError
        number = other.item() if hasattr(other, "item") else other
        text = repr(number) if math.isfinite(number) else f"float('{number}')"
        raise TypeError(
            f"cannot compare {q} {symbol} {other!r}: a plain number has no unit (only 0 "
            f"compares with a quantity of {_dim_text(q.unit)}); compare with a quantity, e.g. "
            f"q {symbol} Quantity({text}, q.unit), or the values in one unit, "
            f"q.to('{q.unit}').value {symbol} {text}"
        )
    if q.unit.dimension != theirs.unit.dimension:
        raise TypeError(
            f"cannot compare {q} {symbol} {theirs}: they have different dimensions "
            f"({_dim_text(q.unit)} against {_dim_text(theirs.unit)}); compare quantities "
            f"of one dimension"
        )
    mine, yours = q._key(), theirs._key()
    if type(mine) is float and type(yours) is float:  # one rule with ==: the same keys
        return op(mine, yours)
    return op(q.value, theirs.to(q.unit).value)  # too large for the reference unit


def _quantity_unit(unit: object) -> Unit:
    """The unit of ``Quantity(value, unit)``: a :class:`Unit`, a unit expression, or an
    openff.units (pint) unit."""
    if isinstance(unit, Unit):
        return unit
    if isinstance(unit, str) or (
        hasattr(unit, "dimensionality") and not hasattr(unit, "magnitude")
    ):
        return _target_unit(unit)
    if isinstance(unit, Quantity) or hasattr(unit, "magnitude"):  # ours, or pint's
        raise TypeError(
            f"Quantity(value, unit): unit must be a unit, got the quantity {unit!r:.80}; pass "
            f"its unit ({'q.unit' if isinstance(unit, Quantity) else 'quantity.units'})"
        )
    raise TypeError(
        f"Quantity(value, unit): unit must be a tying.chem Unit, a unit expression such as "
        f"'angstrom' or 'kilocalorie_per_mole / angstrom ** 2', or an openff.units unit, got "
        f"{type(unit).__name__} {unit!r:.80}"
    )


def _zero_d(value: object) -> object:
    """The element of a 0-d NumPy array (``value`` itself otherwise)."""
    if type(value).__name__ != "ndarray" or getattr(value, "shape", None) != ():
        return value
    return value[()]  # type: ignore[index]


def _not_a_value(value: object) -> str:
    """Why ``value`` cannot be a Quantity's value, and what to pass instead."""
    got = f"{type(value).__name__} {value!r:.80}"
    if isinstance(value, str):
        hint = (
            f"pass float({value!r:.40}), or parse_quantity('<number> * <unit>') for a file's text"
        )
    elif getattr(value, "shape", None) not in (None, ()):
        hint = (
            "a Quantity holds one number: build one per value, [Quantity(x, unit) for x in values]"
        )
    elif isinstance(value, bool) or type(value).__name__ == "bool":  # NumPy's too
        hint = "a bool is not a number here: pass 1.0 or 0.0"
    elif isinstance(value, numbers.Complex):  # float(value) fails on it (stop 62)
        hint = "a complex number is not a real one: pass value.real when its imaginary part is 0"
    elif hasattr(value, "item"):  # a 0-d tensor
        hint = "pass value.item()"
    else:
        try:
            float(value)  # type: ignore[arg-type]
            hint = "pass float(value)"
        except (TypeError, ValueError):  # None: the advice to call float failed (stop 62)
            hint = "pass one real number, such as 1.5"
    return f"Quantity(value, unit): value must be one real number, got {got}; {hint}"


def _canonical_powers(powers: object) -> tuple[tuple[str, int], ...]:
    """``Unit(powers)`` as parse_unit writes it: known base names, integer powers summed
    per name, zeros dropped, in the module's order; refused with the fix otherwise."""
    if isinstance(powers, Mapping):
        powers = tuple(powers.items())
    try:
        pairs = [(name, power) for name, power in powers]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(
            f"Unit(powers): expected (base unit, integer power) pairs such as "
            f"(('angstrom', 1),), got {powers!r:.80}; or parse a unit expression with "
            f"parse_unit('angstrom')"
        ) from None
    summed: dict[str, int] = {}
    for name, power in pairs:
        if name not in _BASE:
            raise ValueError(f"Unit(powers): {_not_base(name)}")
        # a whole float (2.0) is the integer, as parse_unit reads 'angstrom ** 2.0' and pint
        # angstrom ** 2.0 (review of stop 61: Unit.of({'angstrom': 2.0}) was refused)
        whole = isinstance(power, numbers.Real) and float(power).is_integer()
        if not (isinstance(power, numbers.Integral) or whole) or isinstance(power, bool):
            raise TypeError(
                f"Unit(powers): the power of {name!r} must be an integer, got "
                f"{type(power).__name__} {power!r}"
            )
        summed[name] = summed.get(name, 0) + int(power)
    kept = sorted(((k, v) for k, v in summed.items() if v != 0), key=lambda kv: _ORDER.index(kv[0]))
    return tuple(kept)


def _not_text(function: str, text: object, example: str) -> str:
    """The error for a non-string given to a parser: what it takes, what came, the fix."""
    if isinstance(text, bytes):
        hint = "; decode bytes first (text.decode())"
    elif isinstance(text, (Unit, Quantity)):
        hint = f"; it is already a {type(text).__name__}: use it as it is"
    elif _is_factor(text):
        hint = "; a number alone has no unit: write both, or build Quantity(number, 'angstrom')"
    else:
        hint = ""
    return (
        f"{function} takes a string such as {example}, got {type(text).__name__} {text!r:.80}{hint}"
    )


def _not_base(name: object) -> str:
    """Why ``name`` is not a base unit, and the fix (advice that works when followed)."""
    if not isinstance(name, str):
        return f"a base unit is named by a string, got {type(name).__name__} {name!r:.80}"
    known = f"{name!r} is not a base unit (one of {', '.join(_ORDER)})"
    try:
        parse_unit(name)
    except ValueError:
        return f"{known}, nor a unit name tying.chem reads"
    return f"{known}; parse_unit({name!r}) reads it: pass Unit({name!r}) or that"


def _is_factor(x: object) -> bool:
    """A plain real number (NumPy's too), not a bool (``q * True`` is a slip, not a scale)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _dim_text(unit: Unit) -> str:
    return " ".join(f"{d}^{p}" for d, p in unit.dimension) or "dimensionless"


def parse_unit(text: str) -> Unit:
    """Parse a unit expression: names joined by ``*`` and ``/``, each with an optional ``** n``.

    Parentheses group as pint groups them (``kilocalorie / (mole * angstrom ** 2)``,
    ``(kilocalorie / mole) ** 2``, ``angstrom ** (-2)``) and ``^`` is ``**``, as the
    OpenFF toolkit reads a file's units.

    Args:
        text: e.g. ``"kilocalorie_per_mole ** 1 * angstrom ** -2"``.

    Returns:
        The :class:`Unit`.

    Raises:
        ValueError: on an unknown unit name or a malformed expression (names both).

    Example:
        >>> str(parse_unit("kilojoule_per_mole / nanometer ** 2"))
        'kilojoule / mole / nanometer ** 2'
        >>> parse_unit("kilojoule / (mole * nanometer ** 2)") == parse_unit("kJ/mol/nm^2")
        True
    """
    if type(text) is not str:  # stop 61: None was "'NoneType' object has no attribute 'strip'"
        raise TypeError(_not_text("parse_unit", text, "'kilocalorie_per_mole / angstrom ** 2'"))
    return _parse_unit(text)


# Cached: a force field writes a handful of unit texts over and over (2,588 reads for
# Sage's 452 parameters), a third of reading the file, which every assign_many worker
# does when it starts. A Unit is immutable; a text that fails is not cached.
@functools.lru_cache(maxsize=4096)
def _parse_unit(text: str) -> Unit:
    tokens = _tokens(text)
    if not tokens:
        return Unit.of({})
    parser = _UnitParser(text, tokens)
    powers = parser.product()
    if parser.pos < len(tokens):  # a ')' with no '(' before it
        raise ValueError(f"unit expression {text!r}: unbalanced parentheses (a ')' too many)")
    return Unit.of(powers)


class _UnitParser:
    """Reads ``product := power (('*' | '/' | 'per' | nothing) power)*``,
    ``power := atom ['**' exponent]``, after pint's rewriting of its words (``_PINT_WORDS``),
    ``atom := name | '1' | '(' product ')'``, as pint reads a unit: left to right, ``**``
    before ``*`` and ``/``, parentheses grouping, two units side by side multiplied
    (``kilocalorie / mole angstrom`` is kcal * angstrom / mol, as pint reads it).
    Before stop 58 parentheses were refused; before stop 59 ``per``, implicit products,
    ``** - 2``, ``** 2.0`` and ``** 2 ** 2`` were refused and ``** 02`` read as 2 (pint
    reads ``1.5 * angstrom ** 02`` as 3.0 dimensionless: it is refused now)."""

    def __init__(self, text: str, tokens: list[str]):
        self.text, self.tokens, self.pos = text, tokens, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _unclosed(self) -> ValueError:
        return ValueError(
            f"unit expression {self.text!r}: unbalanced parentheses (a '(' is not closed)"
        )

    def product(self) -> dict[str, int]:
        powers = self.power()
        while True:
            tok = self._peek()
            if tok in ("*", "/", "per"):
                sign = 1 if tok == "*" else -1
                self.pos += 1
                if self._peek() is None:
                    raise ValueError(f"unit expression {self.text!r} ends with an operator")
            elif tok is not None and (tok == "(" or _is_name(tok)):
                sign = 1  # side by side: a product, as pint reads 'kilocalorie mole**-1'
            else:
                break
            for name, p in self.power().items():
                powers[name] = powers.get(name, 0) + sign * p
        tok = self._peek()
        if tok is not None and tok != ")":
            raise ValueError(f"unit expression {self.text!r}: expected '*' or '/', got {tok!r}")
        return powers

    def power(self) -> dict[str, int]:
        powers = self.atom()
        if self._peek() == "**":
            self.pos += 1
            exp = self.exponent()
            powers = {name: p * exp for name, p in powers.items()}
        return powers

    def exponent(self) -> int:
        """A whole number, as Python (and so pint) reads it: signs bind looser than '**',
        which groups to the right ('** -2 ** 2' is -4, '** 2 ** 3' is 8); '- 2', '+-2'
        and parentheses ('** (-2)') as pint reads them."""
        sign = 1
        while self._peek() in ("-", "+"):
            sign = -sign if self.tokens[self.pos] == "-" else sign
            self.pos += 1
        tok = self._peek()
        if tok == "(":  # pint reads "angstrom ** (-2)"
            self.pos += 1
            base = self.exponent()
            if self._peek() is None:  # "angstrom ** (2" said the integer was missing
                raise self._unclosed()
            if self._peek() != ")":
                raise ValueError(
                    f"unit expression {self.text!r}: '**' must be followed by an integer"
                )
            self.pos += 1
        else:
            base = self._integer(tok)
        if self._peek() == "**":
            self.pos += 1
            exp = self.exponent()
            try:  # float: '10 ** 10 ** 10' would build a 10-billion-digit int
                base = _whole(self.text, float(base) ** exp)
            except (OverflowError, ZeroDivisionError):  # '0 ** -1' too: not a power
                base = _whole(self.text, math.inf)
        return sign * base

    def _integer(self, tok: str | None) -> int:
        if tok is None or not tok[0].isdigit():
            raise ValueError(f"unit expression {self.text!r}: '**' must be followed by an integer")
        if re.fullmatch(r"0[0-9]+", tok):
            # Python (and so pint) has no integer '02': the toolkit reads
            # '1.5 * angstrom ** 02' as 3.0 dimensionless, silently
            raise ValueError(
                f"unit expression {self.text!r}: exponent {tok!r} has a leading zero; Python "
                f"has no such integer and pint (the OpenFF toolkit) misreads it ('1.5 * "
                f"angstrom ** 02' is 3.0 dimensionless there); write {int(tok)}"
            )
        self.pos += 1
        return _whole(self.text, float(tok))

    def atom(self) -> dict[str, int]:
        tok = self._peek()
        if tok == "(":
            self.pos += 1
            if self._peek() is None:  # "kilocalorie / (" was named "empty parentheses"
                raise self._unclosed()
            if self._peek() == ")":
                raise ValueError(f"unit expression {self.text!r}: empty parentheses")
            powers = self.product()
            if self._peek() != ")":
                raise self._unclosed()
            self.pos += 1
            return powers
        if tok == ")":
            raise ValueError(f"unit expression {self.text!r}: unbalanced parentheses at ')'")
        # "1 / mole" is how str(Unit) writes a unit with no positive power: it did not
        # read back (q.to(str(q.unit)) was "unknown unit '1'"); pint reads it too
        if tok is None or (tok not in _BASE and tok not in _ALIASES and tok != "1"):
            if tok in ("*", "/", "**", "per", "-", "+"):
                raise ValueError(f"unit expression {self.text!r}: expected a unit, got {tok!r}")
            raise ValueError(
                f"unknown unit {tok!r} in {self.text!r}; known: "
                f"{', '.join(sorted({*_BASE, *_ALIASES}))}"
            )
        self.pos += 1
        return {} if tok == "1" else dict(_ALIASES.get(tok, {tok: 1}))


def _is_name(tok: str) -> bool:
    return tok == "1" or tok in _BASE or tok in _ALIASES


_MAX_EXPONENT = 100


def _whole(text: str, exp: float) -> int:
    """An exponent as a whole number: pint reads '** 2.0' and '** 1e1' (2, 10); a unit of
    this module has whole powers, so '** 2.5' is refused by name."""
    if math.isfinite(exp) and exp == int(exp) and abs(exp) > _MAX_EXPONENT:
        raise ValueError(
            f"unit expression {text!r}: exponent {exp:g} is out of range (at most "
            f"{_MAX_EXPONENT} either way); SMIRNOFF units use small whole powers"
        )
    if not (math.isfinite(exp) and exp == int(exp)):
        raise ValueError(
            f"unit expression {text!r}: '**' must be followed by an integer, got the "
            f"exponent {exp!r}; SMIRNOFF units have whole powers"
        )
    return int(exp)


# pint's pretty forms (stop 59): 'angstrom²', 'mol⁻¹' and 'kcal·mol⁻¹' load in the toolkit;
# here '²' was read as part of a name ("unknown unit 'angstrom²'")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_PRETTY_POWER = re.compile("(⁻?[⁰¹²³⁴-⁹]+)")


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    if not text.isascii():
        text = _PRETTY_POWER.sub(lambda m: "**" + m.group(1).translate(_SUPERSCRIPTS), text)
        text = text.replace("·", "*")
    for pattern, replacement in _PINT_WORDS:
        text = pattern.sub(replacement, text)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read unit expression {text!r} at {text[pos:]!r}")
        # pint reads '^' as '**' (stop 58: 'angstrom^2' loads in the toolkit), '°' as degree
        tok = m.group(1)
        out.append({"^": "**", "\u00b0": "degree"}.get(tok, tok))
        pos = m.end()
    return out


def parse_quantity(text: str) -> Quantity:
    """Parse ``"<number> * <unit expression>"`` (the SMIRNOFF way of writing a value).

    Args:
        text: e.g. ``"180.0 * degree ** 1"``.

    Returns:
        The :class:`Quantity`.

    Raises:
        ValueError: when ``text`` is not a number times a unit expression.

    Example:
        >>> parse_quantity("180.0 * degree ** 1").to("radian").value
        3.141592653589793
    """
    if type(text) is not str:  # stop 61: parse_quantity(1.5) was a bare AttributeError
        raise TypeError(_not_text("parse_quantity", text, "'1.5 * angstrom'"))
    number, star, rest = text.partition("*")
    if not star or not _NUMBER.match(number):
        # pint reads '1.5 angstrom' (no '*') as 1.5 * angstrom, and so the toolkit reads a
        # file written that way; it was refused here (stop 59)
        spaced = _SPACED.match(text)
        if spaced is None:
            raise ValueError(f"expected '<number> * <unit>', got {text!r}")
        number, rest = spaced.group(1), spaced.group(2)
    try:
        unit = _parse_unit(rest.strip())  # text, so the public check is not needed
    except ValueError as err:
        raise ValueError(f"in quantity {text!r}: {err}") from err
    return _quantity(float(number), unit)


def _quantity(value: float, unit: Unit) -> Quantity:
    """``Quantity(value, unit)`` of a float and a :class:`Unit`, without the checks of a
    hand-built one: the force-field load path (1,295 quantities for Sage, where
    ``__post_init__`` and the ``parse_unit`` wrapper cost 2-4 % of reading the file;
    review of stop 61)."""
    q = object.__new__(Quantity)
    q.__dict__.update(value=value, unit=unit)
    return q


def parse_value(text: str) -> Quantity | int | float | str:
    """Read one attribute of a force-field file: a quantity, an int, a float, or the text itself.

    Example:
        >>> parse_value("3"), parse_value("1.0"), parse_value("auto")
        (3, 1.0, 'auto')
    """
    stripped = text.strip()
    if "*" in stripped:
        number = stripped.partition("*")[0]
        if _NUMBER.match(number):
            return parse_quantity(stripped)
    if re.fullmatch(r"[-+]?[0-9]+", stripped):
        return int(stripped)
    if _NUMBER.match(stripped):
        return float(stripped)
    return text
