"""label_lines given an OpenFF Molecule/Topology: its advice works when followed (review stop 57)."""

import warnings

import pytest

pytest.importorskip("rdkit")
openff = pytest.importorskip("openff.toolkit")

from tying.chem.lines import label_lines  # noqa: E402


def test_label_lines_advice_for_an_openff_molecule_works_when_followed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mol = openff.Molecule.from_smiles("CCO")
        top = openff.Topology.from_molecules([mol, openff.Molecule.from_smiles("O")])
    with pytest.raises(TypeError, match=r"reads lines of SMILES text: pass \[mol\.to_smiles\(\)\]"):
        label_lines(mol)  # it advised label_lines([molecule.to_rdkit()]): 'line 1 is a Mol'
    assert label_lines([mol.to_smiles()])[0]["ids"]["Bonds"]["0-1"]  # the advice, followed
    with pytest.raises(TypeError, match=r"\[m\.to_smiles\(\) for m in topology\.molecules\]"):
        label_lines(top)
    assert len(label_lines([m.to_smiles() for m in top.molecules])) == 2
