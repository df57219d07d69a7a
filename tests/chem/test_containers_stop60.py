"""Stop 60: ``in`` on a section, a parameter, a force field and an Assignment reads what ``[]`` reads.

- ``"b1" in ff["Bonds"]`` and ``"[#6X4:1]-[#6X4:2]" in ff["Bonds"]`` were False while
  ``ff["Bonds"]["b1"]`` / ``[smirks]`` read the parameter (the toolkit's
  ``smirks in handler.parameters`` is True): ``if key in section`` skipped it, silently;
- ``"k" in parameter`` and ``"Bonds" in force_field`` fell back on iteration by
  ``__getitem__(0)``: KeyError "has no attribute 0" / "has no section 0";
- ``"Bonds" in assignment`` was "argument of type 'Assignment' is not iterable";
- ``section[[0]]`` advised ``section.parameters[[0]]``, a TypeError when followed.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import SmirksAssigner, load_force_field  # noqa: E402


@pytest.fixture(scope="module")
def sage():
    return load_force_field("openff-2.3.0")


def test_section_in_reads_ids_and_smirks_as_getitem(sage):
    bonds = sage["Bonds"]
    for p in list(bonds)[:10]:
        assert p.id in bonds and p.smirks in bonds and p in bonds
        assert bonds[p.id] is p
    assert "b0" not in bonds and "[#6:1]-[#6:2]" not in bonds and 3 not in bonds
    assert sage["Angles"]["a1"] not in bonds


def test_section_position_advice_only_where_it_runs(sage):
    bonds = sage["Bonds"]
    with pytest.raises(TypeError, match=r"by position read section.parameters\[0\]"):
        bonds[0]
    assert bonds.parameters[0].id == "b1"  # the advice runs
    with pytest.raises(TypeError, match=r"got list: \[0\]$"):
        bonds[[0]]
    with pytest.raises(TypeError, match=r"got bool: True$"):
        bonds[True]


def test_parameter_in_reads_its_values(sage):
    p = sage["Bonds"]["b1"]
    assert "k" in p and "length" in p and "id" not in p and "periodicity1" not in p
    t = sage["ProperTorsions"]["t1"]
    assert "k1" in t and "idivf1" in t
    with pytest.raises(TypeError, match="'Parameter' object is not iterable"):
        list(p)
    assert not isinstance(p, Iterable)
    with pytest.raises(KeyError, match=r"'id' \(id is a field: read parameter.id\)"):
        p["id"]


def test_force_field_in_reads_its_sections(sage):
    assert "Bonds" in sage and "Constraints" in sage and "Nope" not in sage
    with pytest.raises(TypeError, match="'ForceField' object is not iterable"):
        list(sage)
    assert not isinstance(sage, Iterable)  # assign_many still tells it from molecules


def test_assignment_in_reads_its_sections():
    a = SmirksAssigner("openff-2.3.0", sections=["Bonds"]).assign("CCO")
    assert "Bonds" in a and "Angles" not in a
    with pytest.raises(TypeError, match="not iterable"):
        list(a)
