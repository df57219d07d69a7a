"""Units of SMIRNOFF values: ``"1.526 * angstrom ** 1"`` parsed into a value and a unit, and kept.

An ``.offxml`` file writes every physical value as ``number * unit expression``
(``angstrom``, ``kilocalorie_per_mole ** 1 * angstrom ** -2``, older files
``angstrom**-2 * mole**-1 * kilocalorie``). :func:`parse_quantity` turns one into a
:class:`Quantity`; two spellings of the same unit compare equal, and
:meth:`Quantity.to` converts between units of the same dimension (Å/nm,
kcal/kJ/cal/J, degree/radian). No unit library is needed for that handful of units.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
from collections.abc import Mapping

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
    r"\s*(\*\*|\^|\*|/|\(|\)|[^\W\d]\w*|[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
)
_NUMBER = re.compile(r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$")


@dataclasses.dataclass(frozen=True)
class Unit:
    """A product of base units with integer exponents, e.g. ``kilocalorie / mole / angstrom ** 2``.

    Args:
        powers: base-unit name -> exponent, zero exponents left out.

    Example:
        >>> parse_unit("kilocalorie_per_mole ** 1 * angstrom ** -2") == parse_unit(
        ...     "angstrom**-2 * mole**-1 * kilocalorie")
        True
        >>> str(parse_unit("mole ** -1 * kilocalorie ** 1"))
        'kilocalorie / mole'
    """

    powers: tuple[tuple[str, int], ...]

    @staticmethod
    def of(powers: Mapping[str, int]) -> Unit:
        """Build a unit from ``{base: exponent}`` (order-free, zeros dropped)."""
        kept = {k: v for k, v in powers.items() if v != 0}
        return Unit(tuple(sorted(kept.items(), key=lambda kv: _ORDER.index(kv[0]))))

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

    Example:
        >>> q = parse_quantity("1.525970013793 * angstrom ** 1")
        >>> q.value, str(q.unit)
        (1.525970013793, 'angstrom')
        >>> round(q.to("nanometer").value, 6)
        0.152597
        >>> str(2 * q / 4)  # scaled by plain numbers (a product of two quantities is refused)
        '0.7629850068965 angstrom'
        >>> f"{q:.3f}", str(q)  # str keeps every digit of the file, a format spec rounds
        ('1.526 angstrom', '1.525970013793 angstrom')
    """

    value: float
    unit: Unit

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


def _is_factor(x: object) -> bool:
    """A plain real number (NumPy's too), not a bool (``q * True`` is a slip, not a scale)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _dim_text(unit: Unit) -> str:
    return " ".join(f"{d}^{p}" for d, p in unit.dimension) or "dimensionless"


# Cached: a force field writes a handful of unit texts over and over (2,588 reads for
# Sage's 452 parameters), a third of reading the file, which every assign_many worker
# does when it starts. A Unit is immutable; a text that fails is not cached.
@functools.lru_cache(maxsize=4096)
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
    tokens = _tokens(text)
    if not tokens:
        return Unit.of({})
    parser = _UnitParser(text, tokens)
    powers = parser.product()
    if parser.pos < len(tokens):  # a ')' with no '(' before it
        raise ValueError(f"unit expression {text!r}: unbalanced parentheses (a ')' too many)")
    return Unit.of(powers)


class _UnitParser:
    """Reads ``product := power (('*' | '/') power)*``, ``power := atom ['**' integer]``,
    ``atom := name | '1' | '(' product ')'``, as pint reads a unit: left to right, ``**``
    before ``*`` and ``/``, parentheses grouping. Before stop 58 parentheses were refused,
    so a file the toolkit reads (``k="500 * kilocalorie / (mole * angstrom ** 2)"``) and
    ``q.to("kilojoule / (mole * nanometer ** 2)")`` failed."""

    def __init__(self, text: str, tokens: list[str]):
        self.text, self.tokens, self.pos = text, tokens, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def product(self) -> dict[str, int]:
        powers = self.power()
        while self._peek() in ("*", "/"):
            sign = 1 if self.tokens[self.pos] == "*" else -1
            self.pos += 1
            if self._peek() is None:
                raise ValueError(f"unit expression {self.text!r} ends with an operator")
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
        tok = self._peek()
        wrapped = tok == "("  # pint reads "angstrom ** (-2)"
        if wrapped:
            self.pos += 1
            tok = self._peek()
        if tok is None or not re.fullmatch(r"[-+]?[0-9]+", tok):
            raise ValueError(f"unit expression {self.text!r}: '**' must be followed by an integer")
        self.pos += 1
        if wrapped:
            if self._peek() is None:  # "angstrom ** (2" said the integer was missing
                raise ValueError(
                    f"unit expression {self.text!r}: unbalanced parentheses (a '(' is not closed)"
                )
            if self._peek() != ")":
                raise ValueError(
                    f"unit expression {self.text!r}: '**' must be followed by an integer"
                )
            self.pos += 1
        return int(tok)

    def atom(self) -> dict[str, int]:
        tok = self._peek()
        if tok == "(":
            self.pos += 1
            if self._peek() is None:  # "kilocalorie / (" was named "empty parentheses"
                raise ValueError(
                    f"unit expression {self.text!r}: unbalanced parentheses (a '(' is not closed)"
                )
            if self._peek() == ")":
                raise ValueError(f"unit expression {self.text!r}: empty parentheses")
            powers = self.product()
            if self._peek() != ")":
                raise ValueError(
                    f"unit expression {self.text!r}: unbalanced parentheses (a '(' is not closed)"
                )
            self.pos += 1
            return powers
        if tok == ")":
            raise ValueError(f"unit expression {self.text!r}: unbalanced parentheses at ')'")
        # "1 / mole" is how str(Unit) writes a unit with no positive power: it did not
        # read back (q.to(str(q.unit)) was "unknown unit '1'"); pint reads it too
        if tok is None or (tok not in _BASE and tok not in _ALIASES and tok != "1"):
            if tok in ("*", "/", "**"):
                raise ValueError(f"unit expression {self.text!r}: expected a unit, got {tok!r}")
            raise ValueError(
                f"unknown unit {tok!r} in {self.text!r}; known: "
                f"{', '.join(sorted({*_BASE, *_ALIASES}))}"
            )
        self.pos += 1
        return {} if tok == "1" else dict(_ALIASES.get(tok, {tok: 1}))


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read unit expression {text!r} at {text[pos:]!r}")
        # pint reads '^' as '**' (stop 58: 'angstrom^2' loads in the toolkit)
        out.append("**" if m.group(1) == "^" else m.group(1))
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
    number, star, rest = text.partition("*")
    if not star or not _NUMBER.match(number):
        raise ValueError(f"expected '<number> * <unit>', got {text!r}")
    try:
        unit = parse_unit(rest.strip())
    except ValueError as err:
        raise ValueError(f"in quantity {text!r}: {err}") from err
    return Quantity(float(number), unit)


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
