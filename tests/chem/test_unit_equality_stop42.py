"""One parameter written in other units is one parameter (stop 42).

``Quantity`` equality compares values as written, so ``1.525970013793 angstrom`` and
``0.1525970013793 nanometer`` differ. :func:`count_unique_parameters` compared the
values of two parameters under one id with it: the same force field saved in other
units (two files named ``mine``, as another tool may write them) was refused as "two
force fields whose ids name different parameters". The OpenFF toolkit reads both files
to the same physical values; the count is now the count of one file, and a value that
really differs is still refused.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import warnings

import pytest

pytest.importorskip("rdkit")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import (  # noqa: E402
    SmirksAssigner,
    count_unique_parameters,
    find_force_field,
    parse_quantity,
)
from tying.chem.used_parameters import same_values  # noqa: E402

MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)[O-]", "[NH3+]CC(=O)[O-]", "CS(=O)(=O)N"]
ANGSTROM_PER_NM = 10.0
KJ_PER_KCAL = 4.184


def _in_nm_and_kj(text: str) -> str:
    """Sage with every bond written in nanometre and kJ/mol/nm**2 (the same values)."""

    def length(m: re.Match) -> str:
        return f'length="{float(m.group(1)) / ANGSTROM_PER_NM!r} * nanometer"'

    def k(m: re.Match) -> str:
        value = float(m.group(1)) * KJ_PER_KCAL * ANGSTROM_PER_NM**2
        return f'k="{value!r} * kilojoule_per_mole / nanometer ** 2"'

    text, n_lengths = re.subn(r'length="([-0-9.eE+]+) \* angstrom \*\* 1"', length, text)
    text, n_ks = re.subn(
        r'k="([-0-9.eE+]+) \* kilocalorie_per_mole \*\* 1 \* angstrom \*\* -2"', k, text
    )
    assert n_lengths > 50 and n_ks > 50  # every bond rewritten, not a no-op
    return text


@pytest.fixture(scope="module")
def two_spellings(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    sage = pathlib.Path(find_force_field("openff-2.3.0")).read_text()
    written = []
    for folder, text in (("angstrom", sage), ("nanometre", _in_nm_and_kj(sage))):
        path = tmp_path_factory.mktemp(folder) / "mine.offxml"  # one name, two files
        path.write_text(text)
        written.append(path)
    return written[0], written[1]


def test_the_toolkit_reads_both_spellings_to_the_same_values(two_spellings):
    toolkit = pytest.importorskip("openff.toolkit")
    from openff.units import unit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (toolkit.ForceField(str(p)).get_parameter_handler("Bonds") for p in two_spellings)
    k_unit = unit.kilocalorie_per_mole / unit.angstrom**2
    for p, q in zip(a.parameters, b.parameters, strict=True):
        assert p.id == q.id and p.smirks == q.smirks
        assert str(q.length.units) == "nanometer"  # written differently ...
        assert math.isclose(p.length.m_as(unit.angstrom), q.length.m_as(unit.angstrom))
        assert math.isclose(p.k.m_as(k_unit), q.k.m_as(k_unit))  # ... the same values


def test_one_force_field_in_two_unit_spellings_counts_as_one(two_spellings):
    a, b = (SmirksAssigner(str(p)) for p in two_spellings)
    ours_a, ours_b = a.assign_many(MOLECULES), b.assign_many(MOLECULES)
    assert ours_a[0].force_field == ours_b[0].force_field == "mine"
    assert str(ours_b[0].bonds[(0, 1)]["length"].unit) == "nanometer"
    one = count_unique_parameters(ours_a)
    # refused before: "the two come from different force fields of one name"
    assert count_unique_parameters(ours_a[:2] + ours_b[2:]) == one
    assert count_unique_parameters(ours_b) == one


def test_a_value_that_differs_is_still_refused(two_spellings, tmp_path):
    text = _in_nm_and_kj(pathlib.Path(find_force_field("openff-2.3.0")).read_text())
    changed = text.replace('length="0.1525970013793 * nanometer"', 'length="0.15259 * nanometer"')
    assert changed != text
    (tmp_path / "mine.offxml").write_text(changed)
    ours = SmirksAssigner(str(two_spellings[0])).assign("CC")
    theirs = SmirksAssigner(str(tmp_path / "mine.offxml")).assign("CC")
    with pytest.raises(ValueError, match=r"item 1 \(mine\) uses Bonds 'b1' .* different force"):
        count_unique_parameters([ours, theirs])


ETHANE = SmirksAssigner("openff-2.3.0").assign("CC")

# Each dimension's units: (name, size in the first one). A value converted there and
# written in another unit is the same physical value.
UNITS = {
    "length": [("angstrom", 1.0), ("nanometer", 10.0)],
    "energy": [("kilocalorie_per_mole", 1.0), ("kilojoule_per_mole", 1.0 / 4.184)],
    "angle": [("degree", 1.0), ("radian", 180.0 / math.pi)],
}


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    dimension=st.sampled_from(sorted(UNITS)),
    value=st.floats(1e-6, 1e6, allow_nan=False) | st.just(0.0),
    to=st.integers(0, 1),
    nudge=st.sampled_from([0.0, 1e-9, -1e-6, 1e-3]),
)
def test_property_same_physical_value_in_any_unit_is_one_parameter(dimension, value, to, nudge):
    # Reference: the values compared in one unit, by hand (pint's rule). Same value in
    # another unit -> one parameter; a value moved by more than rounding -> two.
    (base, _), (other, size) = UNITS[dimension][0], UNITS[dimension][to]
    written = value * (1.0 + nudge) / size  # ``value`` in base units, written in ``other``
    a = {"x": parse_quantity(f"{value!r} * {base}")}
    b = {"x": parse_quantity(f"{written!r} * {other}")}
    back = b["x"].to(base).value
    expected = math.isclose(back, value, rel_tol=1e-12, abs_tol=0.0)
    assert expected == (nudge == 0.0 or value == 0.0)
    assert same_values(a, b) is expected
    # count_unique_parameters agrees: one id, these values -> one parameter or refused
    p = ETHANE.bonds[(0, 1)]
    one, two = (dataclasses.replace(p, values={**p.values, **v}) for v in (a, b))
    items = [
        dataclasses.replace(ETHANE, terms={**ETHANE.terms, "Bonds": {(0, 1): q}})
        for q in (one, two)
    ]
    if expected:
        assert count_unique_parameters(items)["Bonds"] == 1
    else:
        with pytest.raises(ValueError, match="different force fields of one name"):
            count_unique_parameters(items)
