"""Stop 62: an RDKit molecule's ``_Name`` (an SD file's title) names its result.

The OpenFF toolkit's ``Molecule.from_rdkit`` takes the molecule's name from ``_Name``;
``assign`` and ``assign_many`` gave such a molecule, passed without ``name=``, the name
None, in one process and in workers, so an SD file's titles were lost.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from rdkit import Chem  # noqa: E402

from tying.chem import SmirksAssigner  # noqa: E402


def _titled(smiles: str, title: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    mol.SetProp("_Name", title)
    return mol


@pytest.fixture(scope="module")
def sage() -> SmirksAssigner:
    return SmirksAssigner("openff-2.3.0")


def test_assign_names_an_rdkit_molecule_by_its_title(sage: SmirksAssigner) -> None:
    assert sage.assign(_titled("CCO", "ethanol")).name == "ethanol"
    # a name given wins; an empty title is no name, as before
    assert sage.assign(_titled("CCO", "ethanol"), name="EtOH").name == "EtOH"
    assert SmirksAssigner("openff-2.3.0").assign(_titled("CCO", "")).name is None


def test_assign_many_names_rdkit_molecules_by_their_titles(sage: SmirksAssigner) -> None:
    mols = [_titled("CCO", "ethanol"), _titled("c1ccccc1O", "phenol"), (_titled("C", "m"), "CH4")]
    assert [a.name for a in sage.assign_many(mols)] == ["ethanol", "phenol", "CH4"]


def test_sd_file_titles_name_the_results(tmp_path) -> None:
    path = tmp_path / "two.sdf"
    with Chem.SDWriter(str(path)) as writer:
        for smiles, title in (("CCO", "ethanol"), ("CC(=O)O", "acetic acid")):
            writer.write(_titled(smiles, title))
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False))
    out = SmirksAssigner("openff-2.3.0").assign_many(mols)
    assert [a.name for a in out] == ["ethanol", "acetic acid"]


def test_error_labels_name_the_title(sage: SmirksAssigner) -> None:
    with pytest.raises(TypeError, match=r"molecule 1 \('Mol', 'bad one'\)"):
        sage.assign_many(["CCO", _titled("CCO", "bad one")], mapped=True)


def test_workers_name_rdkit_molecules_by_their_titles(sage: SmirksAssigner) -> None:
    # RDKit's pickles drop _Name: the parent reads it before sending the molecules
    mols = [_titled("CCO", "ethanol"), _titled("CCN", "ethylamine"), _titled("CCC", "propane")]
    out = sage.assign_many(mols, n_jobs=2, chunksize=1)
    assert [a.name for a in out] == ["ethanol", "ethylamine", "propane"]
