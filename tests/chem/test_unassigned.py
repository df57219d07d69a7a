"""Sections a result leaves out are named on it (stop 34): an assignment with only the five
sections ``tying.chem`` assigns read as the whole force field applied (Sage's H-bond
constraints, water's library charges, TIP4P's virtual site: left out without a word)."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner  # noqa: E402
from tying.chem._rdkit import Chem  # noqa: E402
from tying.chem.parallel import label_lines  # noqa: E402

SAGE_LEFT_OUT = ("Constraints", "Electrostatics", "LibraryCharges", "NAGLCharges")


def _every_path(assigner: SmirksAssigner) -> list:
    """Results by every route a molecule takes: scanned, reference, batch arrays, cache
    hits (same and other atom order), mapped, RDKit molecule."""
    out = [assigner.assign("CCO"), assigner.assign("CCO"), assigner.assign("OCC")]
    out.append(assigner.assign("[H]OC([H])([H])C([H])([H])[H]"))  # explicit H: reference
    out.append(assigner.assign(Chem.MolFromSmiles("c1ccccc1O")))
    out.append(assigner.assign("[C:2]([H:3])([H:4])([H:5])[O:1][H:6]", mapped=True))
    out += assigner.assign_many(["CC(=O)[O-]", "O", "[Na+].[Cl-]", "c1ccncc1", "CCN", "CCO"])
    return out


def test_every_result_names_the_sections_it_leaves_out():
    sage = SmirksAssigner("openff-2.3.0")
    for a in _every_path(sage):
        assert a.not_assigned == SAGE_LEFT_OUT, a.smiles
    water = SmirksAssigner("tip4p_fb").assign("O")
    assert set(water.terms) == {"vdW"}
    assert water.not_assigned == ("LibraryCharges", "Electrostatics", "Constraints", "VirtualSites")
    # Sections left out by sections= are named too; a whole force field leaves none.
    bonds_only = SmirksAssigner("openff_unconstrained-1.0.0", sections=["Bonds", "vdW"])
    left = ("Angles", "ProperTorsions", "ImproperTorsions", "Electrostatics", "ToolkitAM1BCC")
    assert bonds_only.assign("CCO").not_assigned == left
    assert "not_assigned=('Angles'" in repr(bonds_only.assign("CC"))


def test_what_the_toolkit_labels_is_assigned_or_named():
    # The anchor: every section label_molecules gives terms for is either in the result
    # or named as left out (tip4p_fb's water: virtual site, constraints, charges).
    validate = pytest.importorskip("tying.chem.validate")
    for name, smiles in (("openff-2.3.0", "O"), ("openff-1.0.0", "CCO"), ("tip4p_fb", "O")):
        try:
            ff = validate.openff_force_field(name)
            mol = validate._OpenFFMolecule.from_smiles(smiles)
            labels = ff.label_molecules(mol.to_topology())[0]
        except Exception as err:  # a toolkit dependency missing at run time
            pytest.skip(f"OpenFF toolkit cannot label molecules here: {err}")
        ours = SmirksAssigner(name).assign(smiles)
        applied = {s for s, terms in labels.items() if len(terms)}
        assert applied - set(ours.terms) <= set(ours.not_assigned), (name, smiles)
        assert applied - set(ours.terms), (name, smiles)  # there is something to name


@pytest.mark.parametrize(
    ("force_field", "section", "message"),
    [
        # sections= refuses these: the old message sent the user there
        # Constraints are assignable (opt-in, stop 34 second round): sections= is the fix now
        (
            "openff-2.3.0",
            "Constraints",
            r"build the SmirksAssigner with 'Constraints' in sections=",
        ),
        ("tip4p_fb", "VirtualSites", r"does not assign <VirtualSites> .*the force field has one"),
        ("openff_unconstrained-1.0.0", "Constraints", r"no <Constraints> section; use one that"),
        ("tip3p", "Bonds", r"\(tip3p\) has no Bonds section.*force field has no <Bonds> section"),
    ],
)
def test_asking_for_a_section_that_was_not_assigned_says_why(force_field, section, message):
    a = SmirksAssigner(force_field).assign("O")
    with pytest.raises(KeyError, match=message):
        a.ids(section)


def test_left_out_sections_survive_processes_and_records():
    sage = SmirksAssigner("openff-2.3.0")
    out = sage.assign_many(["CCO", "O", "c1ccccc1", "CN", "CC", "[NH4+]"], n_jobs=2, chunksize=1)
    assert [a.not_assigned for a in out] == [SAGE_LEFT_OUT] * 6
    (record,) = label_lines(["O water"], "tip3p")
    assert record["not_assigned"] == ["LibraryCharges", "Electrostatics", "Constraints"]


@pytest.mark.parametrize("progress", ["no", None, 0, 1])
def test_progress_must_be_a_bool(progress):
    # progress="no" showed a progress bar: no silent coercion.
    with pytest.raises(TypeError, match=r"progress must be True or False, got"):
        SmirksAssigner("openff-2.3.0").assign_many(["CCO"], progress=progress)
