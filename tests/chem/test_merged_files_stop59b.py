"""Files merged as the OpenFF toolkit's ``ForceField(a, b)`` merges them (stop 59, second pass).

``find_force_field([a, b])`` advises writing ``openff.toolkit.ForceField(*files)
.to_file('merged.offxml')`` and passing that path. The toolkit's merge appends b's
parameters after a's, so every parameter both files hold appears twice under one id and
one SMIRKS (Sage 2.3 holds TIP3P's constraints and vdW types: Sage + ``tip3p.offxml``),
and an override file re-states a parameter with new values. Such files were refused as
"duplicate id", so the advice failed when followed. The earlier copy can never win (the
later one matches every term it matches): it is dropped, and lookup by id and labels give
the later one, number for number as ``label_molecules``.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import OffxmlError, SmirksAssigner, find_force_field, load_force_field  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402


def _override_file(tmp_path, later_length=1.2):
    # b1 re-stated at the end with a new length, as an override file merged after a base
    lines = [
        bond("[#6:1]-[#6:2]", "b1", 1.5),
        bond("[#6:1]-[#1:2]", "b2", 1.09),
        bond("[#6:1]-[#6:2]", "b1", later_length),
    ]
    return write_offxml(tmp_path, lines, name="merged")


def test_a_parameter_restated_later_under_its_id_and_smirks_is_the_one_applied(tmp_path):
    ff = load_force_field(_override_file(tmp_path))
    bonds = ff["Bonds"]
    assert [(p.id, p.index) for p in bonds] == [("b2", 0), ("b1", 1)]
    assert bonds["b1"]["length"].value == 1.2
    a = SmirksAssigner(ff, sections=["Bonds"]).assign("CC")
    assert a.bonds[(0, 1)] is bonds["b1"]
    assert {p.id for k, p in a.bonds.items() if k != (0, 1)} == {"b2"}


def test_one_id_on_two_smirks_is_still_refused_naming_both(tmp_path):
    lines = [bond("[#6:1]-[#6:2]", "b1"), bond("[#6:1]-[#1:2]", "b2"), bond("[#6:1]-[#1:2]", "b1")]
    with pytest.raises(
        OffxmlError,
        match=r"merged.offxml Bonds id 'b1': duplicate id 'b1' \(parameters 1 and 3 of <Bonds>\)"
        r".*their SMIRKS '\[#6:1\]-\[#6:2\]' and '\[#6:1\]-\[#1:2\]' differ",
    ):
        load_force_field(write_offxml(tmp_path, lines, name="merged"))


def test_the_merge_the_error_advises_loads_and_labels_as_the_toolkit(tmp_path):
    toolkit = pytest.importorskip("openff.toolkit")
    files = ["openff-2.3.0.offxml", "tip3p.offxml"]
    with pytest.raises(TypeError, match=r"ForceField\(\*files\)\.to_file\('merged.offxml'\)"):
        find_force_field(files)
    path = tmp_path / "merged.offxml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = toolkit.ForceField(*files)
        theirs.to_file(str(path))
        labels = theirs.label_molecules(toolkit.Molecule.from_smiles("O").to_topology())[0]
    ff = load_force_field(path)  # OffxmlError before: duplicate id 'c-tip3p-H-O'
    sections = ["Bonds", "Angles", "vdW", "Constraints"]
    ours = SmirksAssigner(ff, sections=sections).assign("O")
    for section in sections:
        want = {min(k, k[::-1]): p.id for k, p in labels[section].items()}
        assert {k: p.id for k, p in ours.terms[section].items()} == want, section
    # number for number: TIP3P's oxygen as the toolkit's label holds it
    oxygen = labels["vdW"][(0,)]
    assert ours.terms["vdW"][(0,)]["sigma"].to("nanometer").value == pytest.approx(
        oxygen.sigma.m_as("nanometer"), rel=1e-15
    )


def test_a_section_is_read_by_smirks_as_the_toolkits_parameter_list(tmp_path):
    # handler.parameters["[#6:1]-[#6:2]"] in the toolkit: the last parameter with that SMIRKS
    lines = [bond("[#6:1]-[#6:2]", "b1", 1.5), bond("[#6:1]-[#6:2]", "b3", 1.4)]
    lines.append(bond("[#6:1]-[#1:2]", "b2", 1.09))
    bonds = load_force_field(write_offxml(tmp_path, lines, name="smirks"))["Bonds"]
    assert bonds["[#6:1]-[#6:2]"].id == "b3"  # KeyError before, "closest ids: []"
    assert bonds["b1"]["length"].value == 1.5  # an id is still read as the id
    with pytest.raises(KeyError, match=r"section Bonds has no parameter '\[#7:1\]-\[#6:2\]'"):
        bonds["[#7:1]-[#6:2]"]


def test_a_position_is_told_to_read_parameters():
    bonds = load_force_field("openff-2.3.0")["Bonds"]
    # "'int' object is not iterable" before, from the closest-id suggestion
    with pytest.raises(TypeError, match=r"by position read section.parameters\[0\]"):
        bonds[0]
    assert bonds.parameters[0].id == "b1"  # the advice, followed
