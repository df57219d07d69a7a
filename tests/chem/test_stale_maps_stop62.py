"""Stop 62: the stale-stereo check ranks without atom maps, as the toolkit rebuilds the molecule.

RDKit's legacy CIP ranking reads atom map numbers. Maps set on a molecule after it was
read (its R/S labels from before, the toolkit reading it right) were refused as stale,
and the advice, to perceive again with the maps on, made the toolkit read another
stereoisomer; a molecule read from a mapped SMILES (labels ranked by the maps, the
toolkit reading another stereoisomer) was labelled with no error.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from rdkit import Chem  # noqa: E402

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402

GLUCOSE = "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O"


def _mapped_after_reading() -> Chem.Mol:
    mol = Chem.MolFromSmiles(GLUCOSE)  # labels perceived here, without maps
    rng = random.Random(1)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(rng.randint(0, 5))
    return mol


def _unmapped(mol: Chem.Mol) -> str:
    mol = Chem.Mol(mol)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(0)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return Chem.MolToSmiles(mol)


@pytest.fixture(scope="module")
def sage() -> SmirksAssigner:
    return SmirksAssigner("openff-2.3.0")


def test_maps_set_after_reading_are_labelled(sage) -> None:
    mol = _mapped_after_reading()
    a = sage.assign(mol)
    assert a.ids("Bonds") == sage.assign(GLUCOSE).ids("Bonds")


def test_labels_ranked_by_maps_refused_with_advice_that_runs(sage) -> None:
    mol = Chem.MolFromSmiles(Chem.MolToSmiles(_mapped_after_reading()))  # ranked by maps
    with pytest.raises(SmilesError, match=r"atom map numbers change RDKit's CIP ranking"):
        sage.assign(mol)
    maps = [a.GetAtomMapNum() for a in mol.GetAtoms()]
    [a.SetAtomMapNum(0) for a in mol.GetAtoms()]
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    [a.SetAtomMapNum(n) for a, n in zip(mol.GetAtoms(), maps, strict=True)]
    ids = sorted(sage.assign(mol).ids("Bonds").values())  # atoms in another order
    assert ids == sorted(sage.assign(GLUCOSE).ids("Bonds").values())
    assert _unmapped(mol) == Chem.MolToSmiles(Chem.MolFromSmiles(GLUCOSE))


def test_toolkit_reads_what_the_check_passes() -> None:
    pytest.importorskip("openff.toolkit")
    from openff.toolkit import Molecule

    want = Chem.MolToSmiles(Chem.MolFromSmiles(GLUCOSE))
    read = Molecule.from_rdkit(_mapped_after_reading(), allow_undefined_stereo=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(read.to_rdkit())) == want
    # and reads another stereoisomer from the labels the check now refuses
    ranked = Chem.MolFromSmiles(Chem.MolToSmiles(_mapped_after_reading()))
    other = Molecule.from_rdkit(ranked, allow_undefined_stereo=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(other.to_rdkit())) != want


def test_mapped_rdkit_molecule_is_one_molecule_with_the_unmapped() -> None:
    # its canonical SMILES (the cache key, .smiles) carried the maps: two cache entries
    assigner = SmirksAssigner("openff-2.3.0")
    plain = assigner.assign("CO")
    mol = Chem.MolFromSmiles("CO")
    for k, atom in enumerate(mol.GetAtoms()):
        atom.SetAtomMapNum(k + 5)
    a = assigner.assign(mol)
    assert a.smiles == plain.smiles == "[H]OC([H])([H])[H]"
    assert (assigner.hits, assigner.misses) == (1, 1)
    assert a.ids("Bonds") == plain.ids("Bonds")
    assert [atom.GetAtomMapNum() for atom in mol.GetAtoms()] == [5, 6]  # the caller's kept
