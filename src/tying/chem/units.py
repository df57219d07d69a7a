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
_TOKEN = re.compile(r"\s*(\*\*|\*|/|\(|\)|[^\W\d]\w*|[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")
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
        '0.762985 angstrom'
    """

    value: float
    unit: Unit

    def to(self, unit: str | Unit) -> Quantity:
        """Convert to ``unit`` (a unit expression or :class:`Unit`) of the same dimension.

        Raises:
            ValueError: when the dimensions differ (names both units).
        """
        target = parse_unit(unit) if isinstance(unit, str) else unit
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

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


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

    Args:
        text: e.g. ``"kilocalorie_per_mole ** 1 * angstrom ** -2"``.

    Returns:
        The :class:`Unit`.

    Raises:
        ValueError: on an unknown unit name or a malformed expression (names both).

    Example:
        >>> str(parse_unit("kilojoule_per_mole / nanometer ** 2"))
        'kilojoule / mole / nanometer ** 2'
    """
    tokens = _tokens(text)
    powers: dict[str, int] = {}
    sign, i = 1, 0
    expect_name = True
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("(", ")"):
            # named "unknown unit '('" before, as if the unit were misspelled
            raise ValueError(
                f"unit expression {text!r}: parentheses are not read; write the unit as names "
                f"joined by '*' and '/', each with an optional '** n', e.g. "
                f"'kilocalorie / mole / angstrom ** 2' for 'kilocalorie / (mole * angstrom ** 2)'"
            )
        if expect_name:
            # "1 / mole" is how str(Unit) writes a unit with no positive power: it did not
            # read back (q.to(str(q.unit)) was "unknown unit '1'"); pint reads it too
            if tok not in _BASE and tok not in _ALIASES and tok != "1":
                raise ValueError(
                    f"unknown unit {tok!r} in {text!r}; known: {', '.join(sorted({*_BASE, *_ALIASES}))}"
                )
            exp = 1
            if i + 1 < len(tokens) and tokens[i + 1] == "**":
                if i + 2 >= len(tokens) or not re.fullmatch(r"[-+]?[0-9]+", tokens[i + 2]):
                    raise ValueError(
                        f"unit expression {text!r}: '**' must be followed by an integer"
                    )
                exp = int(tokens[i + 2])
                i += 2
            base = {} if tok == "1" else _ALIASES.get(tok, {tok: 1})
            for name, p in base.items():
                powers[name] = powers.get(name, 0) + sign * exp * p
            expect_name = False
        else:
            if tok not in ("*", "/"):
                raise ValueError(f"unit expression {text!r}: expected '*' or '/', got {tok!r}")
            sign = 1 if tok == "*" else -1
            expect_name = True
        i += 1
    if expect_name and tokens:
        raise ValueError(f"unit expression {text!r} ends with an operator")
    return Unit.of(powers)


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read unit expression {text!r} at {text[pos:]!r}")
        out.append(m.group(1))
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
