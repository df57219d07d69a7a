"""topology_terms of an RDKit molecule as RDKit builds it, and of a SMILES (stop 61).

``topology_terms(Chem.MolFromSmiles("CCO"))`` read the molecule as given, without its
hydrogens: 2 bonds, 1 angle and no torsion, where its assignment and the OpenFF
toolkit's ``Molecule`` have 8, 13 and 12, with no error; a SMILES string was a bare
``AttributeError``.
"""

from __future__ import annotations

import pytest

from tying.chem import SmirksAssigner, molecule_from_smiles, topology_terms

Chem = pytest.importorskip("rdkit.Chem")


@pytest.mark.parametrize("smiles", ["CCO", "C1CC1C#N", "c1ccncc1O", "[NH3+]CC(=O)[O-]"])
def test_terms_of_an_rdkit_molecule_are_those_of_its_assignment(smiles):
    a = SmirksAssigner("openff-2.3.0").assign(smiles)
    for given in (Chem.MolFromSmiles(smiles), smiles, molecule_from_smiles(smiles)):
        terms = topology_terms(given)
        for section in ("Bonds", "Angles", "ProperTorsions", "vdW"):
            assert terms[section] == set(a[section]), (given, section)


def test_counts_agree_with_the_openff_toolkit():
    Molecule = pytest.importorskip("openff.toolkit").Molecule
    theirs = Molecule.from_smiles("CCO")
    terms = topology_terms(Chem.MolFromSmiles("CCO"))
    assert len(terms["Bonds"]) == theirs.n_bonds == 8
    assert len(terms["Angles"]) == theirs.n_angles == 13
    assert len(terms["ProperTorsions"]) == theirs.n_propers == 12
    assert len(terms["vdW"]) == theirs.n_atoms == 9


def test_existing_atoms_keep_their_indices():
    mol = Chem.AddHs(Chem.MolFromSmiles("OC"))  # hydrogens after both heavy atoms already
    order = [2, 0, 3, 1, 4, 5]
    shuffled = Chem.RenumberAtoms(mol, order)
    assert topology_terms(shuffled)["Bonds"] == {
        tuple(sorted(i for i in range(6) if order[i] in (b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
        for b in mol.GetBonds()
    }


def test_what_is_not_a_molecule_is_refused_by_name():
    with pytest.raises(TypeError, match=r"expected a SMILES string or an RDKit molecule, got int"):
        topology_terms(3)
    with pytest.raises(TypeError, match=r"got NoneType None; RDKit's readers .* yield None"):
        topology_terms(None)
