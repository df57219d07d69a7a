"""Review of stop 59 (45c5504): Quantity's ``==`` across units and its hash.

The stop made ``==`` compare two units to a relative 1e-12, and so could hash a quantity
by its dimension and sign only: every length (every positive force constant) hashed
alike, and a set, dict, ``Counter`` or ``lru_cache`` of them compared each entry with
every other (``Counter`` of 60,675 assigned bond/angle values: 0.016 s -> 0.38 s; a set
of 2,000 lengths 0.0005 s -> 0.65 s). The tolerance also made values that differ in the
13th significant digit one value across units (pint: two), and a set's size depend on
the order of insertion. Two units now compare to 13 significant digits in the
reference unit: a rule that hashes.
"""

from __future__ import annotations

import random

import pytest

from tying.chem import parse_quantity
from tying.chem.used_parameters import same_values


def test_many_lengths_do_not_share_one_hash():
    lengths = [parse_quantity(f"{1 + i * 1e-3!r} * angstrom") for i in range(2000)]
    assert len({hash(q) for q in lengths}) == 2000  # was 1: the dimension and the sign
    in_nm = [q.to("nanometer") for q in lengths]
    assert len(set(lengths) | set(in_nm)) == 2000  # each value once, in either unit
    assert all(a == b and hash(a) == hash(b) for a, b in zip(lengths, in_nm))


def test_values_that_differ_in_the_13th_digit_are_two_values_in_any_unit():
    a = parse_quantity("1.525970013793 * angstrom")
    b = parse_quantity("0.1525970013794 * nanometer")  # 1.525970013794 angstrom
    assert a != b and b != a  # was equal: within 1e-12
    assert len({a, b}) == 2 and len({b, a}) == 2
    units = pytest.importorskip("openff.units")
    assert (1.525970013793 * units.unit.angstrom) != (0.1525970013794 * units.unit.nanometer)
    # the same values written in either unit stay one value, whatever bits the conversion moves
    rng = random.Random(59)
    for _ in range(500):
        digits = f"{rng.randrange(10**12, 10**13)}"  # 13 significant digits, as files write
        x = parse_quantity(f"{digits[0]}.{digits[1:]} * angstrom")
        y = parse_quantity(f"0.{digits} * nanometer")
        assert x == y and hash(x) == hash(y)
    # add_used keeps its own tolerance (a copy of a force field converted elsewhere)
    assert same_values({"length": a}, {"length": b})
