"""``<Constraints>`` as an opt-in section (stop 34, second round): labelled as the OpenFF
toolkit's ``label_molecules`` labels them, by every route a molecule takes, and the default
sections unchanged. Before, ``sections=[..., "Constraints"]`` was refused."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")

from tying.chem import (  # noqa: E402
    SECTIONS,
    SmirksAssigner,
    count_unique_parameters,
    load_molecule_set,
)
from tying.chem._rdkit import Chem  # noqa: E402

WITH = (*SECTIONS, "Constraints")
SAGE_LEFT_OUT = ("Electrostatics", "LibraryCharges", "NAGLCharges")


def test_default_sections_leave_constraints_out():
    sage = SmirksAssigner("openff-2.3.0")
    assert sage.sections == SECTIONS
    a = sage.assign("CCO")
    assert "Constraints" not in a.terms and "Constraints" in a.not_assigned
    assert count_unique_parameters([a]) == {
        "Bonds": 4,
        "Angles": 3,
        "ProperTorsions": 4,
        "ImproperTorsions": 0,
        "vdW": 5,
        "total": 16,
    }


def test_constraints_are_labelled_last_match_wins_with_and_without_distance():
    sage = SmirksAssigner("openff-2.3.0", sections=WITH)
    ethanol = sage.assign("CCO")
    # every bond to a hydrogen: c1 ([#1:1]-[*:2]), which writes no distance
    assert ethanol.ids("Constraints") == dict.fromkeys(
        [(0, 3), (0, 4), (0, 5), (1, 6), (1, 7), (2, 8)], "c1"
    )
    assert ethanol.not_assigned == SAGE_LEFT_OUT
    c1 = ethanol.terms["Constraints"][(0, 3)]
    assert c1.values.get("distance") is None  # label_molecules' distance is None too
    with pytest.raises(KeyError, match=r"constraint 'c1' .* writes no distance: .*bonds\[key\]"):
        c1["distance"]
    # water: the later water patterns win over c1, and its H-H pair (not a bond) is one too
    water = sage.assign("O")
    assert water.ids("Constraints") == {
        (0, 1): "c-tip3p-H-O",
        (0, 2): "c-tip3p-H-O",
        (1, 2): "c-tip3p-H-O-H",
    }
    distance = water.terms["Constraints"][(1, 2)]["distance"]
    assert distance.to("angstrom").value == 1.5139006545247014
    # strict does not ask every bond to be constrained: no hydrogen, no constraint
    assert sage.assign("FC(F)(F)F").terms["Constraints"] == {}


def test_constraints_alone_and_with_a_water_model():
    only = SmirksAssigner("openff-2.3.0", sections=["Constraints"])
    a = only.assign("CN")
    assert set(a.terms) == {"Constraints"} and len(a.ids("Constraints")) == 5
    with pytest.raises(KeyError, match=r"build the SmirksAssigner with 'Bonds' in sections="):
        a.ids("Bonds")
    tip3p = SmirksAssigner("tip3p", sections=["vdW", "Constraints"])
    assert tip3p.not_assigned == ("LibraryCharges", "Electrostatics")
    assert len(tip3p.assign("O").terms["Constraints"]) == 3


def test_a_force_field_without_constraints_is_refused_by_name():
    with pytest.raises(KeyError, match=r"openff_unconstrained-1.0.0 has no section 'Constraints'"):
        SmirksAssigner("openff_unconstrained-1.0.0", sections=WITH)


def _routes(assigner: SmirksAssigner) -> list:
    """The same molecules by every route: scanned, cache hit in another atom order,
    explicit hydrogens (reference path), an RDKit molecule, mapped=True, a batch."""
    out = [assigner.assign("CCO"), assigner.assign("OCC")]
    out.append(assigner.assign("[H]OC([H])([H])C([H])([H])[H]"))
    out.append(assigner.assign(Chem.MolFromSmiles("c1ccccc1O")))
    out.append(assigner.assign("[H:4][C:1]([H:5])([H:6])[O:2][H:3]", mapped=True))
    return out


def test_every_route_gives_the_same_constraints():
    sage = SmirksAssigner("openff-2.3.0", sections=WITH)
    ethanol, reordered, explicit, phenol, methanol = _routes(sage)
    assert ethanol.ids("Constraints") == {(0, 3): "c1", (0, 4): "c1", (0, 5): "c1",
                                          (1, 6): "c1", (1, 7): "c1", (2, 8): "c1"}  # fmt: skip
    assert reordered.ids("Constraints") == {(0, 3): "c1", (1, 4): "c1", (1, 5): "c1",
                                            (2, 6): "c1", (2, 7): "c1", (2, 8): "c1"}  # fmt: skip
    assert set(explicit.ids("Constraints")) == {(0, 1), (2, 3), (2, 4), (5, 6), (5, 7), (5, 8)}
    assert len(phenol.ids("Constraints")) == 6
    assert methanol.ids("Constraints") == dict.fromkeys([(0, 3), (0, 4), (0, 5), (1, 2)], "c1")
    smiles = [s for s, _ in load_molecule_set()[::40]] + ["O", "CCO", "C", "[Na+]"]
    fresh = SmirksAssigner("openff-2.3.0", sections=WITH)
    one_by_one = [fresh.assign(s) for s in smiles]
    batch = SmirksAssigner("openff-2.3.0", sections=WITH).assign_many(smiles)
    assert batch == one_by_one
    assert type(batch[0].terms["Constraints"]).__name__ == "PackedTerms"
    assert [a.not_assigned for a in batch] == [SAGE_LEFT_OUT] * len(smiles)
    cached = fresh.assign_many(smiles)  # every one a cache hit, packed
    assert cached == one_by_one and fresh.hits >= len(smiles)
    # the valence sections are what the default assigner gives, by the batch arrays too
    default = SmirksAssigner("openff-2.3.0").assign_many(smiles)
    assert [{s: a.terms[s] for s in SECTIONS} for a in batch] == [dict(a.terms) for a in default]
    totals = count_unique_parameters(batch)
    assert totals["Constraints"] == 3  # c1, c-tip3p-H-O, c-tip3p-H-O-H (water)
    assert totals["total"] == count_unique_parameters(default)["total"] + 3


def test_constraints_over_processes():
    smiles = ["CCO", "O", "c1ccccc1", "CN", "CC", "[NH4+]", "OCC"]
    sage = SmirksAssigner("openff-2.3.0", sections=WITH)
    one = SmirksAssigner("openff-2.3.0", sections=WITH)
    here = [one.assign(s) for s in smiles]
    assert sage.assign_many(smiles, n_jobs=2, chunksize=2) == here
    mapped = ["[H:4][C:1]([H:5])([H:6])[O:2][H:3]", "[O:1]([H:2])[H:3]"]
    assert sage.assign_many(mapped, n_jobs=2, chunksize=1, mapped=True) == [
        sage.assign(s, mapped=True) for s in mapped
    ]


@pytest.mark.parametrize(
    "force_field",
    [
        "openff-1.0.0",
        "openff-2.0.0",
        "openff-2.3.0",
        "openff_unconstrained-2.3.0",
        "tip3p",
        "tip4p_fb",
    ],  # fmt: skip
)
def test_constraints_agree_with_label_molecules(force_field):
    validate = pytest.importorskip("tying.chem.validate")
    try:
        ff = validate.openff_force_field(force_field)
        validate.openff_labels("O", ff, sections=["Constraints"])
    except Exception as err:  # a toolkit dependency missing at run time
        pytest.skip(f"OpenFF toolkit cannot label molecules here: {err}")
    water_model = force_field.startswith("tip")
    sections = ["vdW", "Constraints"] if water_model else WITH
    smiles = ["O", "[H]O[H]"] + ([] if water_model else ["CCO", "C1CC1", "OO", "[OH-]"])
    if force_field in ("openff-1.0.0", "openff-2.3.0"):
        smiles += [s for s, _ in load_molecule_set()[::15]]
    ours = SmirksAssigner(force_field, sections=sections, strict=False).assign_many(smiles)
    compared = 0
    for s, a in zip(smiles, ours, strict=True):
        theirs = validate.openff_labels(s, ff, sections=["Constraints"])
        assert validate.compare(a, theirs) == [], s
        compared += len(theirs["Constraints"])
    assert compared >= 6
