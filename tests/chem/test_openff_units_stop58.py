"""``Quantity.to`` takes an OpenFF (pint) unit, and converts as pint does (stop 58).

A toolkit script converts with ``quantity.to(unit.nanometer)``; here that was
``AttributeError: 'Unit' object has no attribute 'dimension'``, which names neither
the argument nor the fix. Every converted value is checked against openff-units' own
conversion to 1e-12 relative (on every bond, angle and torsion of Sage).
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("rdkit")
units = pytest.importorskip("openff.units")

from tying.chem import load_force_field, parse_quantity  # noqa: E402

U = units.unit
TARGETS = {  # section, value -> the unit an MD engine (OpenMM) reads it in
    ("Bonds", "length"): U.nanometer,
    ("Bonds", "k"): U.kilojoule_per_mole / U.nanometer**2,
    ("Angles", "angle"): U.radian,
    ("Angles", "k"): U.kilojoule_per_mole / U.radian**2,
    ("ProperTorsions", "k1"): U.kilojoule_per_mole,
    ("ProperTorsions", "phase1"): U.radian,
    ("vdW", "epsilon"): U.kilojoule_per_mole,
}


def test_to_an_openff_unit_equals_openff_units_own_conversion():
    ff = load_force_field("openff-2.3.0")
    checked = 0
    for (section, name), target in TARGETS.items():
        for p in ff[section].parameters:
            if name not in p.values:
                continue
            ours = p[name].to(target)
            theirs = U.Quantity(p[name].value, str(p[name].unit)).m_as(target)
            assert math.isclose(ours.value, theirs, rel_tol=1e-12, abs_tol=0.0), (p.id, name)
            assert ours.unit == p[name].to(format(target, "D")).unit
            checked += 1
    assert checked > 500


def test_a_quantity_of_magnitude_one_is_its_unit():
    charge = parse_quantity("0.417 * elementary_charge")
    assert charge.to(1 * U.elementary_charge).value == 0.417
    assert parse_quantity("2.0 * 1 / mole").to(1 / U.mole).value == 2.0  # pint's 1 / mole


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (U.Quantity(2, "nanometer"), r"takes a unit, got the quantity .*pass its unit"),
        (3, r"takes a unit expression .* got int 3"),
        (None, r"got NoneType None"),
    ],
)
def test_what_is_not_a_unit_is_refused_by_name(target, message):
    with pytest.raises(TypeError, match=message):
        parse_quantity("1.5 * angstrom").to(target)


def test_a_pint_unit_of_another_dimension_is_refused_as_a_string_is():
    with pytest.raises(ValueError, match="cannot convert angstrom to kilojoule / mole"):
        parse_quantity("1.5 * angstrom").to(U.kilojoule_per_mole)


def test_e_is_the_elementary_charge_as_in_openff_units():
    # '0.417 * e' (a LibraryCharges charge) was "unknown unit 'e'"; openff-units reads e
    q = parse_quantity("-0.834 * e")
    assert q.unit == parse_quantity("1 * elementary_charge").unit
    assert q.value == U.Quantity(-0.834, "e").m_as(U.elementary_charge)
