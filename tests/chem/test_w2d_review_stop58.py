"""Review of stop 58 (89caba2, tying.chem units): text of a Quantity and the new refusals.

- ``str(q)`` used ``repr(value)``: under NumPy 2 a value taken from an array printed
  ``np.float64(1.25) angstrom`` (pint: ``1.25 angstrom``; before stop 58: ``1.25 angstrom``).
- ``q.to(np.ones(3) * unit.nanometer)`` raised "The truth value of an array ... is
  ambiguous" instead of the TypeError that names the quantity and the fix.
- ``f"{q:~P}"`` (pint's unit format, as a toolkit script writes it) raised "Invalid format
  specifier '~P' for object of type 'float'", naming neither the Quantity nor the fix.
- ``"kilocalorie / ("`` was named "empty parentheses"; ``"angstrom ** (2"`` "'**' must be
  followed by an integer": both are an unclosed '('.
- docs/chem.md's old-spec example said ``# 620 kilocalorie ...``; it prints ``620.0``.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

from tying.chem import Quantity, parse_quantity, parse_unit

ROOT = pathlib.Path(__file__).resolve().parents[2]
if not (ROOT / "docs" / "chem.md").exists():  # run from /tmp: the repository in the cwd
    ROOT = pathlib.Path.cwd()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (np.float64(1.25), "1.25"),
        (np.float32(0.1), "0.10000000149011612"),
        (np.int64(3), "3"),
        (1.51234261218, "1.51234261218"),
    ],
)
def test_str_of_a_numpy_value_is_the_number_as_pint_writes_it(value, text):
    q = Quantity(value, parse_unit("angstrom"))
    assert str(q) == f"{q}" == f"{text} angstrom"
    assert float(str(q).split()[0]) == float(value)  # still reads back to the same number


@pytest.mark.parametrize("value", [np.mean([1.0, 1.5]), np.float32(0.1), np.int64(3), -0.0, 1e-05])
def test_str_of_a_numpy_value_matches_openff_units(value):
    units = pytest.importorskip("openff.units")
    assert str(Quantity(value, parse_unit("angstrom"))) == str(value * units.unit.angstrom)


def test_to_an_array_quantity_is_the_typeerror_that_names_the_fix():
    units = pytest.importorskip("openff.units")
    with pytest.raises(TypeError, match=r"takes a unit, got the quantity .*pass its unit"):
        parse_quantity("1.5 * angstrom").to(np.ones(3) * units.unit.nanometer)


@pytest.mark.parametrize("spec", ["~P", "~", "P"])
def test_a_pint_unit_format_is_refused_naming_the_quantity_and_the_fix(spec):
    with pytest.raises(
        ValueError, match=rf"Quantity format spec '{re.escape(spec)}'.*such as '\.3f'"
    ):
        format(parse_quantity("1.5 * angstrom"), spec)


def test_a_number_format_still_formats():
    q = parse_quantity("1.51234261218 * angstrom")
    assert (f"{q:.3f}", f"{q:>8.2f}", f"{q:g}") == (
        "1.512 angstrom",
        "    1.51 angstrom",
        "1.51234 angstrom",
    )
    with pytest.raises(ValueError, match="Unknown format code 'd'"):
        format(q, "d")


@pytest.mark.parametrize("text", ["kilocalorie / (", "(", "angstrom ** (2", "angstrom ** (-2"])
def test_an_unclosed_parenthesis_is_named_as_such(text):
    with pytest.raises(ValueError, match=r"a '\(' is not closed"):
        parse_unit(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kilocalorie / ()", "empty parentheses"),
        ("angstrom ** (2 * 3)", r"must be followed by an integer"),
    ],
)
def test_other_malformed_groups_keep_their_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_unit(text)


def test_the_old_spec_example_in_the_docs_prints_what_its_comment_says(tmp_path):
    from tying.chem import load_force_field

    doc = (ROOT / "docs" / "chem.md").read_text()
    line = next(
        x
        for x in doc.splitlines()
        if x.startswith('print(load_force_field(path)["Bonds"]["b1"]["k"])')
    )
    old = (
        '<SMIRNOFF version="0.2" aromaticity_model="OEAroModel_MDL">'
        '<Bonds length_unit="angstroms" k_unit="kilocalories_per_mole/angstrom**2">'
        '<Bond smirks="[#6:1]-[#6:2]" id="b1" length="1.526" k="620.0"/></Bonds></SMIRNOFF>'
    )
    path = tmp_path / "old.offxml"
    path.write_text(old)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print(load_force_field(path)["Bonds"]["b1"]["k"])
    assert line.split("# ", 1)[1] == out.getvalue().strip()


@pytest.mark.parametrize("magnitude", [1, 1.0, np.float64(1.0), np.array(1.0)])
def test_a_pint_quantity_of_magnitude_one_is_still_its_unit(magnitude):
    units = pytest.importorskip("openff.units")
    target = units.unit.Quantity(magnitude, "nanometer")
    assert parse_quantity("1.5 * angstrom").to(target).value == pytest.approx(0.15, rel=1e-15)
