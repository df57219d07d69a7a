"""The atom-typed baseline that C9 compares against."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    SmilesError,
    atom_types,
    count_type_tuples,
    molecule_from_smiles,
    type_tuples,
)


def test_atom_types_read_element_hybridisation_aromaticity_connectivity():
    types = atom_types(molecule_from_smiles("c1ccccc1C#N"))
    assert types[0] == ("C", "SP2", True, 3)
    assert types[6] == ("C", "SP", False, 2)
    assert types[7] == ("N", "SP", False, 1)


def test_a_tuple_and_its_reverse_are_one_type():
    t = type_tuples("OCCN")
    for section in ("Bonds", "Angles", "ProperTorsions"):
        assert all(min(x, x[::-1]) == x for x in t[section])
    assert len(t["ProperTorsions"]) == len({min(x, x[::-1]) for x in t["ProperTorsions"]})


def test_impropers_for_trivalent_centres_only():
    t = type_tuples("CC(C)=O")
    assert len(t["ImproperTorsions"]) == 1
    ((center, *others),) = t["ImproperTorsions"]
    assert center == ("C", "SP2", False, 3) and others == sorted(others)


def test_counts_grow_with_chemistry():
    small = count_type_tuples(["CCO"])
    more = count_type_tuples(["CCO", "c1ccccc1O", "CS(C)=O"])
    assert more["total"] > small["total"]
    assert more["Angles"] > small["Angles"]


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"])
def test_an_rdkit_molecule_is_typed_as_its_smiles(smiles):
    # Typed as given, Chem.MolFromSmiles("CCO") (no explicit hydrogens) needed 5 type
    # tuples instead of 16: every bond, angle and torsion to a hydrogen was left out.
    from rdkit import Chem

    raw = Chem.MolFromSmiles(smiles)
    assert type_tuples(raw) == type_tuples(smiles)
    assert count_type_tuples([raw]) == count_type_tuples([smiles])
    assert atom_types(raw) == atom_types(molecule_from_smiles(smiles))
    assert raw.GetNumAtoms() < len(atom_types(raw))  # the caller's molecule is not changed


def test_a_kekulized_molecule_keeps_its_aromatic_types():
    from rdkit import Chem

    kekule = Chem.MolFromSmiles("c1ccccc1O")
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    assert type_tuples(kekule) == type_tuples("c1ccccc1O")
    assert ("C", "SP2", True, 3) in atom_types(kekule)


def test_typing_refuses_what_is_not_a_molecule():
    from rdkit import Chem

    with pytest.raises(
        TypeError, match="type_tuples: expected a SMILES string or an RDKit molecule, got int"
    ):
        type_tuples(42)
    with pytest.raises(SmilesError, match="query atom"):
        count_type_tuples([Chem.MolFromSmarts("[#6][#8]")])


@pytest.mark.parametrize("smiles", ["CCO", b"CCO"])
def test_one_smiles_string_is_not_a_collection_of_molecules(smiles):
    # Stop 32: iterated, "CCO" was methane, methane and water: 7 type tuples, not 16.
    with pytest.raises(TypeError, match=r"count_type_tuples: expected a collection .* one char"):
        count_type_tuples(smiles)
    assert count_type_tuples(["CCO"])["total"] == 16
