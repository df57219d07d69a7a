"""Stop 58: ``label_lines`` reads atom-mapped SMILES as ``assign`` and ``assign_many`` do.

A line ``[C:2]([H:3])([H:4])([H:5])[O:1][H:6] methanol`` (a QCArchive record's mapped
SMILES) was labelled in written order without a word: its C-O bond came back as
``"0-4"``, where a reader of map-ordered coordinates needs ``"0-1"``. ``assign`` and
``assign_many`` warn about such a SMILES and take ``mapped=True`` (stop 39); ``label_lines``
did neither, so the warning's own advice ("Pass mapped=True") could not be followed there.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402
from tying.chem.lines import label_lines  # noqa: E402

METHANOL = "[C:2]([H:3])([H:4])([H:5])[O:1][H:6]"  # map order: O first


def _keyed(ids):
    return {"-".join(map(str, k)): v for k, v in sorted(ids.items())}


def test_a_reordering_map_warns_naming_the_line():
    with pytest.warns(UserWarning, match=r"label_lines: line 2: SMILES .*Pass mapped=True"):
        records = label_lines(["CCO ethanol", f"{METHANOL} methanol"])
    assert records[1]["ids"]["Bonds"]["0-4"] == "b14"  # written order, as before: C is atom 0


def test_mapped_true_numbers_atoms_by_the_map():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning once mapped=True is given
        (record,) = label_lines([f"{METHANOL} methanol"], mapped=True)
    expected = SmirksAssigner("openff-2.3.0").assign(METHANOL, mapped=True)
    for section in ("Bonds", "Angles", "ProperTorsions", "vdW"):
        assert record["ids"][section] == _keyed(expected.ids(section))
    assert record["ids"]["Bonds"]["0-1"] == "b14"  # the C-O bond, O being map number 1
    assert record["name"] == "methanol"


def test_mapped_true_refuses_an_incomplete_map_by_line():
    with pytest.raises(SmilesError, match=r"line 2 \('\[CH3:1\]\[OH:2\] x'\): mapped=True: .*"):
        label_lines(["# header", "[CH3:1][OH:2] x"], mapped=True)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        records = label_lines(["CCO ethanol", f"{METHANOL} methanol"], mapped=True, errors="skip")
    assert "has no atom map" in records[0]["error"] and records[0]["line"] == 1
    assert records[1]["ids"]["Bonds"]["0-1"] == "b14"
    with pytest.raises(TypeError, match="mapped must be True or False, got str"):
        label_lines(["CCO"], mapped="yes")


def test_no_warning_without_a_reordering_map():
    lines = ["CCO ethanol", "[CH3:1][OH:2] in written order", "[CH3:1]O partial map", "O"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = label_lines(lines)
    assert [r["name"] for r in records] == [
        "ethanol",
        "in written order",
        "partial map",
        None,
    ]
