"""Quantity and Unit built by hand, and the parsers given something other than text (stop 61).

- ``Quantity(1.5, "angstrom")``, pint's own idiom, made a Quantity whose unit was the
  text: it printed right, then ``==``, ``hash``, ``<`` and ``to()`` failed with
  ``'str' object has no attribute 'dimension'``; a value given as text failed the same way.
- ``Unit((("mole", -1), ("kilocalorie", 1)))`` was unequal to ``parse_unit("kcal/mol")``,
  and ``Unit((("angstrom", 0),))`` to dimensionless, with no error (the tuples as written).
- ``parse_quantity(1.5)`` and ``parse_unit(None)`` were bare ``AttributeError``s.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.chem import Quantity, Unit, parse_quantity, parse_unit


def test_quantity_takes_a_unit_written_as_text_as_pint_does():
    q = Quantity(1.5, "angstrom")
    assert q.unit == parse_unit("angstrom")
    assert q == parse_quantity("0.15 * nanometer")
    assert hash(q) == hash(parse_quantity("1.5 * angstrom"))
    assert str(q.to("nanometer")) == "0.15 nanometer"
    assert Quantity(1.4, "angstrom") < q
    assert Quantity(4.184, "kJ/mol") == Quantity(1.0, "kilocalorie_per_mole")


def test_quantity_takes_an_openff_unit():
    pytest.importorskip("openff.units")
    from openff.units import unit

    assert Quantity(2, unit.nanometer).to("angstrom").value == 20.0
    with pytest.raises(TypeError, match=r"got the quantity .*pass its unit \(quantity.units\)"):
        Quantity(1.0, 2 * unit.nanometer)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("1.5", r"value must be one real number, got str '1.5'; pass float\('1.5'\)"),
        (np.ones(2), r"got ndarray .*build one per value, \[Quantity\(x, unit\)"),
        # stop 62: a 0-d array of a number is that number (test_quantity_values_stop62.py)
        (np.array(None), r"got NoneType None; pass one real number"),
        (True, r"got bool True; a bool is not a number"),
        (1j, r"got complex 1j; a complex number is not a real one: pass value.real"),  # stop 62
    ],
)
def test_quantity_refuses_a_value_that_is_not_one_number(value, match):
    with pytest.raises(TypeError, match=match):
        Quantity(value, parse_unit("angstrom"))


def test_quantity_refuses_a_unit_that_is_not_a_unit():
    with pytest.raises(TypeError, match=r"unit must be a tying.chem Unit, .*got int 1"):
        Quantity(1.0, 1)
    with pytest.raises(TypeError, match=r"got the quantity .*pass its unit \(q.unit\)"):
        Quantity(1.0, Quantity(1.0, "nm"))
    with pytest.raises(ValueError, match="unknown unit 'furlong'"):
        Quantity(1.0, "furlong")


def test_numbers_that_were_values_stay_values():
    u = parse_unit("angstrom")
    assert str(Quantity(1, u)) == "1 angstrom"
    assert Quantity(np.float64(1.5), u) == Quantity(1.5, u)
    assert Quantity(np.int64(3), u).to("nanometer").value == pytest.approx(0.3)
    assert Quantity(float("nan"), u)  # NaN stays a value (true, as float('nan'))


def test_unit_built_in_another_order_equals_the_parsed_unit():
    written = Unit((("mole", -1), ("kilocalorie", 1)))
    assert written == parse_unit("kilocalorie / mole")
    assert hash(written) == hash(parse_unit("kcal/mol"))
    assert str(written) == "kilocalorie / mole"
    assert Unit((("angstrom", 0),)) == parse_unit("dimensionless")
    assert Unit((("angstrom", 1), ("angstrom", 1))) == parse_unit("angstrom ** 2")
    assert Unit({"angstrom": 2}) == parse_unit("angstrom ** 2")
    assert Unit("kcal/mol") == parse_unit("kilocalorie_per_mole")  # pint's Unit("...")


def test_unit_refuses_what_is_not_a_base_unit_with_advice_that_works():
    with pytest.raises(ValueError, match=r"'nm' is not a base unit .*parse_unit\('nm'\) reads it"):
        Unit((("nm", 1),))
    assert Unit("nm") == parse_unit("nanometer")  # the advice, followed
    with pytest.raises(ValueError, match=r"'furlong' is not a base unit .*nor a unit name"):
        Unit.of({"furlong": 1})
    with pytest.raises(TypeError, match=r"the power of 'angstrom' must be an integer, got float"):
        Unit.of({"angstrom": 1.5})
    with pytest.raises(TypeError, match=r"expected \(base unit, integer power\) pairs"):
        Unit(5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: parse_quantity(1.5), r"parse_quantity takes a string .*got float 1.5; a number"),
        (lambda: parse_quantity(None), r"parse_quantity takes a string .*got NoneType None"),
        (lambda: parse_unit(None), r"parse_unit takes a string .*got NoneType None"),
        (lambda: parse_unit(b"nm"), r"got bytes b'nm'; decode bytes first"),
        (lambda: parse_unit(["nm"]), r"got list \['nm'\]"),
        (lambda: parse_unit(parse_unit("nm")), r"it is already a Unit: use it as it is"),
    ],
)
def test_parsers_refuse_what_is_not_text(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_a_parsed_quantity_is_the_quantity_built_by_hand():
    # review of stop 61: parse_quantity builds its Quantity without __post_init__ (the
    # force-field load path), so it must be field for field what the constructor makes
    import pickle

    parsed = parse_quantity("1.525970013793 * kilocalorie_per_mole / angstrom ** 2")
    built = Quantity(1.525970013793, "kilocalorie / mole / angstrom ** 2")
    assert type(parsed) is Quantity and vars(parsed) == vars(built)
    assert type(parsed.value) is float and type(parsed.unit) is Unit
    assert parsed == built and hash(parsed) == hash(built) and repr(parsed) == repr(built)
    assert pickle.loads(pickle.dumps(parsed)) == built


def test_a_whole_float_power_is_the_integer_as_parse_unit_reads_it():
    # review of stop 61: parse_unit("angstrom ** 2.0") is angstrom ** 2, and pint's
    # angstrom ** 2.0 too, while Unit.of({"angstrom": 2.0}) was refused
    assert (
        Unit.of({"angstrom": 2.0}) == parse_unit("angstrom ** 2.0") == parse_unit("angstrom ** 2")
    )
    assert Unit((("mole", -1.0), ("kilocalorie", np.float64(1.0)))) == parse_unit("kcal/mol")
    assert hash(Unit.of({"angstrom": 2.0})) == hash(parse_unit("angstrom ** 2"))
    with pytest.raises(TypeError, match=r"must be an integer, got float 1.5"):
        Unit.of({"angstrom": 1.5})
