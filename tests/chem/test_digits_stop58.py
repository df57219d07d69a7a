"""Stop 58: numbers in a force-field file are written in ASCII digits, as the toolkit reads them.

Python's ``\\d`` and ``float()`` read the digits of every script, so ``periodicity1="３"``
(a full-width digit, as an input method types it), ``k1="٠.١٥ * kilocalorie_per_mole"``
(Arabic-Indic), ``idivf1="２"``, ``scale14="０.５"`` or a unit power ``** １`` loaded here as
3, 0.15, 2, 0.5 and 1, where the OpenFF toolkit (pint) refuses each file
(``AssertionError`` / ``DefinitionSyntaxError``). Each is an ``OffxmlError`` naming the
attribute and the digit; ASCII spellings of every number form still load.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("rdkit")

from tying.chem import OffxmlError, load_force_field  # noqa: E402

HEAD = '<SMIRNOFF version="0.3" aromaticity_model="OEAroModel_MDL">'
TORSION = (
    '<ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))" '
    'default_idivf="{default}"><Proper smirks="[*:1]~[#6:2]-[#6:3]~[*:4]" id="t1" '
    'periodicity1="{periodicity}" phase1="0 * degree" k1="{k} * kilocalorie_per_mole{power}" '
    'idivf1="{idivf}"/></ProperTorsions>'
)
VDW = (
    '<vdW version="0.4" potential="Lennard-Jones-12-6" combining_rules="Lorentz-Berthelot" '
    'scale12="0.0" scale13="0.0" scale14="{scale14}" scale15="1.0" cutoff="9.0 * angstrom" '
    'switch_width="1.0 * angstrom" periodic_method="cutoff" nonperiodic_method="no-cutoff">'
    '<Atom smirks="[#6:1]" id="n1" epsilon="0.1 * kilocalorie_per_mole" sigma="3.4 * angstrom"/>'
    "</vdW>"
)
GOOD = {"default": "auto", "periodicity": "3", "k": "0.15", "power": "", "idivf": "1"}


def _write(tmp_path, body: str):
    path = tmp_path / "digits.offxml"
    path.write_text(HEAD + body + "</SMIRNOFF>", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("field", "text", "attribute", "digit"),
    [
        ("periodicity", "\uff13", "periodicity1", "U+FF13"),  # full-width 3
        ("k", "\u0660.\u0661\u0665", "k1", "U+0660"),  # Arabic-Indic 0.15
        ("idivf", "\uff12", "idivf1", "U+FF12"),
        ("default", "\uff13", "default_idivf", "U+FF13"),
        ("power", " ** \uff11", "k1", "U+FF11"),
    ],
)
def test_a_digit_outside_ascii_is_refused_by_name(tmp_path, field, text, attribute, digit):
    path = _write(tmp_path, TORSION.format(**{**GOOD, field: text}))
    named = rf"attribute {attribute}=.*{re.escape(digit)}, is not an ASCII digit"
    with pytest.raises(OffxmlError, match=named):
        load_force_field(path)


def test_a_header_number_outside_ascii_is_refused(tmp_path):
    path = _write(tmp_path, VDW.format(scale14="\uff10.\uff15"))
    with pytest.raises(OffxmlError, match=r"scale14=.*U\+FF10, is not an ASCII digit"):
        load_force_field(path)


@pytest.mark.parametrize(
    ("periodicity", "k", "expected_k"),
    [("3", "0.15", 0.15), ("+3", ".15", 0.15), ("3.0", "1.5e-1", 0.15), ("3e0", "15E-2", 0.15)],
)
def test_ascii_spellings_still_load(tmp_path, periodicity, k, expected_k):
    body = TORSION.format(**{**GOOD, "periodicity": periodicity, "k": k, "power": " ** 1"})
    ff = load_force_field(_write(tmp_path, body))
    (term,) = ff["ProperTorsions"]["t1"].terms
    assert term.periodicity == 3
    assert term.k.to("kilocalorie_per_mole").value == pytest.approx(expected_k, rel=1e-15)
    vdw = load_force_field(_write(tmp_path, VDW.format(scale14="0.5")))
    assert vdw["vdW"].attributes["scale14"] == 0.5
