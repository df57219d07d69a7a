"""Molecules read from SDF files label as the toolkit's ``Molecule.from_file`` (stop 53).

Hunted at stop 53, no defect found; kept as the guard of the route: formal charges,
explicit hydrogens written before the heavy atoms, isotopes and aromatic (type 4) bonds
in a mol block, read by RDKit with the hydrogens kept, by ``SDMolSupplier``, and through
the toolkit's own ``Molecule.to_rdkit()`` and ``to_smiles(mapped=True)``: the same
labels as ``label_molecules`` on the toolkit's molecule, term for term, in the file's
atom order.
"""

from __future__ import annotations

import random
import warnings

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from tying.chem import SECTIONS, SmirksAssigner  # noqa: E402
from tying.chem.terms import KEYS  # noqa: E402

try:
    from openff.toolkit import Molecule as OpenFFMolecule

    from tying.chem import validate
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

MOLECULES = ["C[N+](C)(C)CC(=O)[O-]", "[2H]C([2H])([2H])c1ccncc1", "CS(=O)(=O)[N-]c1ccccc1"]


@pytest.fixture(scope="module")
def toolkit_sage():
    return validate.openff_force_field("openff-2.3.0")


@pytest.mark.parametrize("k", range(len(MOLECULES)))
def test_a_molecule_from_an_sdf_file_labels_as_the_toolkits(tmp_path, toolkit_sage, k):
    mol = Chem.AddHs(Chem.MolFromSmiles(MOLECULES[k]))
    AllChem.Compute2DCoords(mol)
    order = list(range(mol.GetNumAtoms()))
    random.Random(k).shuffle(order)  # hydrogens among and before the heavy atoms
    mol = Chem.RenumberAtoms(mol, order)
    path = tmp_path / "m.sdf"
    path.write_text(Chem.MolToMolBlock(mol, kekulize=k != 1) + "$$$$\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_mol = OpenFFMolecule.from_file(str(path), allow_undefined_stereo=True)
        labels = toolkit_sage.label_molecules(theirs_mol.to_topology())[0]
    theirs = {s: {KEYS[s](key): p.id for key, p in labels[s].items()} for s in SECTIONS}
    # the file's atom order (hydrogens first here), not heavy atoms first
    assert [a.symbol for a in theirs_mol.atoms] == [a.GetSymbol() for a in mol.GetAtoms()]
    sage = SmirksAssigner("openff-2.3.0")
    inputs = {
        "MolFromMolFile": Chem.MolFromMolFile(str(path), removeHs=False),
        "SDMolSupplier": next(iter(Chem.SDMolSupplier(str(path), removeHs=False))),
        "to_rdkit": theirs_mol.to_rdkit(),
    }
    for how, rd in inputs.items():
        assert {s: sage.assign(rd).ids(s) for s in SECTIONS} == theirs, how
    mapped = sage.assign(theirs_mol.to_smiles(mapped=True), mapped=True)
    assert {s: mapped.ids(s) for s in SECTIONS} == theirs
