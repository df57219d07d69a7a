"""Units of SMIRNOFF values: both spellings in the OpenFF files, conversions, clear errors."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem.units import Quantity, parse_quantity, parse_unit, parse_value  # noqa: E402


def test_old_and_new_spellings_are_one_unit():
    new = parse_unit("kilocalorie_per_mole ** 1 * angstrom ** -2")
    old = parse_unit("angstrom**-2 * mole**-1 * kilocalorie")
    assert new == old
    assert str(new) == "kilocalorie / mole / angstrom ** 2"


def test_conversions():
    assert parse_quantity("1.0 * kilocalorie_per_mole ** 1").to("kilojoule_per_mole").value == (
        pytest.approx(4.184)
    )
    assert parse_quantity("180.0 * degree ** 1").to("radian").value == pytest.approx(math.pi)
    k = parse_quantity("100.0 * kilocalorie_per_mole ** 1 * angstrom ** -2")
    assert k.to("kilojoule_per_mole / nanometer ** 2").value == pytest.approx(100 * 4.184 * 100)


def test_conversion_between_dimensions_is_refused():
    with pytest.raises(ValueError, match=r"cannot convert angstrom to degree: dimensions differ"):
        parse_quantity("1.5 * angstrom").to("degree")


def test_unknown_unit_is_named():
    with pytest.raises(ValueError, match=r"in quantity '2 \* parsec': unknown unit 'parsec'"):
        parse_quantity("2 * parsec")


def test_malformed_expressions():
    with pytest.raises(ValueError, match=r"'\*\*' must be followed by an integer"):
        parse_unit("angstrom ** x")
    with pytest.raises(ValueError, match="ends with an operator"):
        parse_unit("angstrom *")
    with pytest.raises(ValueError, match=r"expected '<number> \* <unit>'"):
        parse_quantity("angstrom")


def test_parse_value_kinds():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1.0") == 1.0
    assert parse_value("auto") == "auto"
    assert parse_value("0.5 * angstrom") == Quantity(0.5, parse_unit("angstrom"))


def test_conversion_near_the_float_limit_does_not_overflow_on_the_way():
    # was (stop 33): 1.8e307 nm read as inf in nm (value * scale overflowed before the
    # division), found by test_schema's property test against the toolkit's pint
    q = parse_quantity("1.797693134862316e+307 * nanometer")
    assert q.to("nanometer").value == 1.797693134862316e307
    assert q.to("nanometers").value == 1.797693134862316e307
    big = parse_quantity("1e308 * kilojoule * nanometer")
    assert big.to("kilocalorie * nanometer").value == pytest.approx(1e308 / 4.184, rel=1e-15)
    assert q.to("angstrom").value == float("inf")  # 1.8e308 Å is past float64: inf, as pint
    small = parse_quantity("1.525970013793 * angstrom ** 1")  # every finite result keeps its bits
    assert small.to("nanometer").value == 1.525970013793 * 1.0 / 10.0


@pytest.mark.parametrize(
    "text", ["kilocalorie / (mole * angstrom ** 2", "(kilocalorie_per_mole)) / angstrom ** 2"]
)
def test_unbalanced_parentheses_are_refused_as_such(text):
    # named "unknown unit '('" before (stop 37), as if a unit were misspelled; balanced
    # ones are read as pint reads them since stop 58 (test_unit_parentheses_stop58.py)
    with pytest.raises(ValueError, match=r"unbalanced parentheses"):
        parse_unit(text)
