"""A quantity's text keeps every digit; a format spec rounds it (stop 58).

``str(q)`` used ``{:g}``: six significant digits. Sage's b3 length printed
``1.51234 angstrom`` and its k ``478.354 kilocalorie / mole / angstrom ** 2``, where
the file and the OpenFF toolkit's ``str`` (pint) say ``1.51234261218 angstrom`` and
``478.3540359893 kilocalorie_per_mole / angstrom ** 2``: a table or log written with
``str()`` lost up to seven digits, with no word. ``f"{q:.3f}"`` raised TypeError where
pint formats the magnitude.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")

from tying.chem import load_force_field, parse_quantity  # noqa: E402


def test_str_keeps_every_digit_of_the_file():
    b3 = load_force_field("openff-2.3.0")["Bonds"]["b3"]
    assert str(b3["length"]) == "1.51234261218 angstrom"  # the toolkit: 1.51234261218 angstrom
    assert str(b3["k"]) == "478.3540359893 kilocalorie / mole / angstrom ** 2"
    converted = b3["k"].to("kilojoule_per_mole / nanometer ** 2")
    number, _, unit = str(converted).partition(" ")
    assert float(number) == converted.value  # the text reads back to the same float
    assert unit == "kilojoule / mole / nanometer ** 2"


@pytest.mark.parametrize(
    ("spec", "text"),
    [(".3f", "1.512 angstrom"), (".2e", "1.51e+00 angstrom"), ("", "1.51234261218 angstrom")],
)
def test_a_format_spec_formats_the_value_as_pint_does(spec, text):
    q = parse_quantity("1.51234261218 * angstrom ** 1")
    assert format(q, spec) == text


def test_a_spec_that_is_not_a_number_format_is_refused():
    with pytest.raises(ValueError, match="Unknown format code 'd'"):
        format(parse_quantity("1.5 * angstrom"), "d")
