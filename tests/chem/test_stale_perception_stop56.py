"""RDKit molecules edited after they were perceived: refused (stop 56).

An RDKit molecule caches implicit-hydrogen counts; the OpenFF toolkit adds hydrogens
from the cache, tying.chem from a fresh count. With one explicit hydrogen of
cyclopropane removed (``RWMol.RemoveAtom``), the toolkit labelled a carbon with three
neighbours (Sage's C-C bonds ``b2``), tying a cyclopropane (``b1``), with no error.

An RDKit molecule keeps its stereo as chiral tags / bond directions (what RDKit's
matching reads) and as the R/S and E/Z labels perceived from them. Edit a tag after
reading (``InvertChirality``, ``SetStereo``) and the labels stay as they were. The
OpenFF toolkit reads the labels; tying read the tags: with a chiral pattern the
inverted atom got the other parameter than ``label_molecules`` gave, and a double bond
set ``STEREOE`` without bond directions was matched as cis (the toolkit: trans), with
no error. ``STEREOCIS``/``STEREOTRANS`` bonds, which the toolkit refuses, were labelled.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from tying.chem import SmilesError, SmirksAssigner  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)


@pytest.fixture(scope="module")
def chiral_file(tmp_path_factory):
    """Bonds told apart by the chirality of their carbon (``@`` vs ``@@``)."""
    return write_offxml(
        tmp_path_factory.mktemp("chiral"),
        [
            bond("[*:1]~[*:2]", "b0", 1.0),
            bond("[F:1]-[C@:2](Cl)(Br)", "b-ccw", 2.0),
            bond("[F:1]-[C@@:2](Cl)(Br)", "b-cw", 3.0),
            bond("[#6:1]/[#6:2]=[#6]/[#6]", "b-trans", 4.0),
            bond("[#6:1]/[#6:2]=[#6]\\[#6]", "b-cis", 5.0),
        ],
        vdw="",
    )


def _toolkit_ids(path, mol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = OpenFFForceField(str(path), load_plugins=False)
        off = OpenFFMolecule.from_rdkit(mol, allow_undefined_stereo=True)
        labels = ff.label_molecules(off.to_topology())[0]["Bonds"]
    return {tuple(sorted(k)): p.id for k, p in labels.items()}


def _inverted(smiles):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    for atom in mol.GetAtoms():
        if atom.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED:
            atom.InvertChirality()  # the R/S label perceived at parsing is left as it was
    return mol


def test_an_inverted_chiral_tag_with_its_old_label_is_refused(chiral_file):
    sage_like = SmirksAssigner(chiral_file, sections=["Bonds"], strict=False)
    stale = _inverted("F[C@H](Cl)Br")
    # the toolkit reads the label (R, as parsed: b-ccw); the tag now says S (b-cw)
    assert _toolkit_ids(chiral_file, stale)[(0, 1)] == "b-ccw"
    with pytest.raises(
        SmilesError, match=r"atom 1 \(C\) is labelled R, but its chiral tag gives S"
    ):
        sage_like.assign(stale)
    assert sage_like.hits == 0 and sage_like.misses == 0  # nothing cached
    # perceived again, the molecule is read, and as the toolkit reads it
    Chem.AssignStereochemistry(stale, cleanIt=True, force=True)
    ours = sage_like.assign(stale).ids("Bonds")
    assert ours[(0, 1)] == "b-cw" == _toolkit_ids(chiral_file, stale)[(0, 1)]


@pytest.mark.parametrize(
    ("stereo", "match"),
    [
        (
            Chem.BondStereo.STEREOE,
            r"bond 1 \(1-2, C=C\) is marked E, but its bond directions give no stereo",
        ),
        (
            Chem.BondStereo.STEREOCIS,
            r"bond 1 \(1-2, C=C\) has stereo STEREOCIS.*toolkit refuses it",
        ),
    ],
)
def test_a_double_bond_marked_without_its_directions_is_refused(chiral_file, stereo, match):
    mol = Chem.MolFromSmiles("CC=CC")
    mol.GetBondWithIdx(1).SetStereoAtoms(0, 3)
    mol.GetBondWithIdx(1).SetStereo(stereo)
    assigner = SmirksAssigner(chiral_file, sections=["Bonds"], strict=False)
    with pytest.raises(SmilesError, match=match):
        assigner.assign(mol)
    if stereo == Chem.BondStereo.STEREOE:  # the toolkit reads trans; tying had read cis
        assert _toolkit_ids(chiral_file, mol)[(0, 1)] == "b-trans"


def test_molecules_read_from_smiles_mol_blocks_and_conformers_are_not_refused(chiral_file):
    assigner = SmirksAssigner(chiral_file, sections=["Bonds"], strict=False)
    for smiles in ("F[C@H](Cl)Br", "F[C@@H](Cl)Br", "C/C=C/C", "C/C=C\\C", "C[C@H]1CC[C@@H](C)CC1"):
        parsed = Chem.MolFromSmiles(smiles)
        embedded = Chem.AddHs(parsed)
        AllChem.EmbedMolecule(embedded, randomSeed=7)
        block = Chem.MolFromMolBlock(Chem.MolToMolBlock(embedded), removeHs=False)
        expected = assigner.assign(smiles).ids("Bonds")
        for mol in (parsed, embedded, block):
            assert assigner.assign(mol).ids("Bonds") == expected, smiles
        assert expected == _toolkit_ids(chiral_file, block), smiles


def test_a_molecule_edited_without_new_hydrogen_counts_is_refused(tmp_path):
    path = write_offxml(
        tmp_path, [bond("[*:1]~[*:2]", "b0", 1.0), bond("[#6X4:1]-[#6X4:2]", "b-sp3")], vdw=""
    )
    assigner = SmirksAssigner(path, sections=["Bonds"], strict=False)
    edited = Chem.RWMol(Chem.AddHs(Chem.MolFromSmiles("C1CC1")))
    edited.RemoveAtom(3)  # a hydrogen of atom 0; atom 0's cached count of implicit H is 0
    theirs = _toolkit_ids(path, edited.GetMol())
    assert theirs[(0, 1)] == "b0"  # the toolkit read a carbon with three neighbours
    with pytest.raises(
        SmilesError,
        match=r"atom 0 \(C\) has 0 implicit hydrogens cached, but its bonds and charge now give 1.*"
        r"Chem.SanitizeMol\(mol\)",
    ):
        assigner.assign(edited.GetMol())
    assert assigner.misses == 0
    Chem.SanitizeMol(edited)  # perceived again: both read cyclopropane
    ours = assigner.assign(edited.GetMol()).ids("Bonds")
    assert ours == _toolkit_ids(path, edited.GetMol()) and ours[(0, 1)] == "b-sp3"


def test_a_molecule_never_sanitized_is_read_as_its_smiles():
    sage = SmirksAssigner("openff-2.3.0")
    raw = Chem.MolFromSmiles("OCC(=O)[O-]", sanitize=False)  # no cached counts at all
    assert sage.assign(raw).ids("Bonds") == sage.assign("OCC(=O)[O-]").ids("Bonds")


def test_worker_processes_read_rdkit_molecules_as_one_process_does():
    # Pickling loses which counts were never perceived (an unsanitized molecule came back
    # with 0 implicit H on every atom: refused as stale) and the R/S labels (a stale tag
    # was read): the parent ships the counts it had cached (stop 57: it ran the whole check).
    sage = SmirksAssigner("openff-2.3.0")
    raw = Chem.MolFromSmiles("OCC(=O)[O-]", sanitize=False)
    filler = ["CCO", "CCN", "CCC", "c1ccccc1"]
    one = sage.assign_many([raw, *filler], n_jobs=1)
    sage.clear_cache()
    two = sage.assign_many([raw, *filler], n_jobs=2, chunksize=1)
    assert [a.ids("Bonds") for a in two] == [a.ids("Bonds") for a in one]
    stale = _inverted("F[C@H](Cl)Br")
    messages = []
    for n_jobs in (1, 2):
        sage.clear_cache()
        with pytest.raises(SmilesError, match=r"atom 1 \(C\) is labelled R") as info:
            sage.assign_many([*filler, stale], n_jobs=n_jobs, chunksize=1)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
