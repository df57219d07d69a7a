"""Review of stop 62: maps set after reading on a molecule whose atoms the toolkit ranks by them.

The OpenFF toolkit's ``from_rdkit`` sanitizes (clearing ``_StereochemDone``) and then
perceives with ``cleanIt=False``: an atom left without a label is labelled anew, ranked by
the atom map numbers. cis-1,4-dimethylcyclohexane read without maps has no R/S; with maps
set after reading the toolkit read its ring atoms as S, S (another molecule for a chiral
pattern) while it was labelled here as achiral, with no error.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from rdkit import Chem  # noqa: E402

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402

CIS = "C[C@H]1CC[C@@H](C)CC1"


def _mapped_after_reading() -> Chem.Mol:
    mol = Chem.MolFromSmiles(CIS)  # no R/S without maps
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(atom.GetIdx() + 1)
    return mol


def test_atoms_the_toolkit_ranks_by_maps_are_refused_with_advice_that_runs() -> None:
    sage = SmirksAssigner("openff-2.3.0", sections=["Bonds"])
    mol = _mapped_after_reading()
    with pytest.raises(SmilesError, match=r"atom 1 \(C\) is labelled S.*clear the maps"):
        sage.assign(mol)
    [a.SetAtomMapNum(0) for a in mol.GetAtoms()]  # the advice
    assert sage.assign(mol).ids("Bonds") == sage.assign(CIS).ids("Bonds")


def test_the_toolkit_reads_another_molecule_with_the_maps() -> None:
    pytest.importorskip("openff.toolkit")
    from openff.toolkit import Molecule

    want = Molecule.from_smiles(CIS, allow_undefined_stereo=True)
    mol = _mapped_after_reading()
    read = Molecule.from_rdkit(mol, allow_undefined_stereo=True)
    assert [a.stereochemistry for a in read.atoms][1:5:3] == ["S", "S"]
    assert not read.is_isomorphic_with(want)
    [a.SetAtomMapNum(0) for a in mol.GetAtoms()]
    assert Molecule.from_rdkit(mol, allow_undefined_stereo=True).is_isomorphic_with(want)
