"""Atom-mapped SMILES: ``mapped=True`` numbers atoms by the map, as the toolkit's
``Molecule.from_mapped_smiles``; without it a reordering map is labelled in written
order with a warning (it was silent: every key named other atoms than a map-order user
read)."""

from __future__ import annotations

import random
import warnings

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner  # noqa: E402
from tying.chem._rdkit import Chem  # noqa: E402
from tying.chem.errors import SmilesError  # noqa: E402
from tying.chem.generate import drug_like_smiles  # noqa: E402


def _mapped(smiles: str, seed: int) -> tuple[str, object]:
    """A fully mapped SMILES of ``smiles`` in a random atom order, and the RDKit molecule
    whose atom ``k`` is map number ``k + 1`` (an independent route to map order)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    order = list(range(mol.GetNumAtoms()))
    random.Random(seed).shuffle(order)
    for atom, n in zip(mol.GetAtoms(), order, strict=True):
        atom.SetAtomMapNum(n + 1)
    text = Chem.MolToSmiles(mol)
    by_map = Chem.RenumberAtoms(mol, sorted(range(len(order)), key=order.__getitem__))
    for atom in by_map.GetAtoms():
        atom.SetAtomMapNum(0)
    return text, by_map


MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", *drug_like_smiles(5, seed=3)]


@pytest.mark.parametrize("k", range(len(MOLECULES)))
def test_mapped_labels_equal_the_molecule_renumbered_to_map_order(k):
    text, by_map = _mapped(MOLECULES[k], seed=k)
    assigner = SmirksAssigner("openff-2.3.0")
    want = SmirksAssigner("openff-2.3.0", cache=False).assign(by_map)
    # the cache holds another writing of the molecule: mapped must not reuse its order
    assigner.assign(MOLECULES[k])
    got = assigner.assign(text, mapped=True)
    assert got.elements == want.elements
    assert got.ids("Bonds") and all(got.ids(s) == want.ids(s) for s in got.terms)
    (many,) = assigner.assign_many([text], mapped=True)
    assert all(many.ids(s) == want.ids(s) for s in got.terms)


def test_mapped_labels_equal_the_toolkits_from_mapped_smiles():
    pytest.importorskip("openforcefields")
    from tying.chem import validate

    ff = validate.openff_force_field("openff-2.3.0")
    texts = [_mapped(s, seed=10 + k)[0] for k, s in enumerate(MOLECULES)]
    ours = SmirksAssigner("openff-2.3.0", strict=False).assign_many(texts, mapped=True)
    compared, bad = 0, []
    for text, a in zip(texts, ours, strict=True):
        theirs = validate.openff_labels(text, ff, mapped=True)
        compared += sum(map(len, theirs.values()))
        bad += validate.compare(a, theirs, text)
    assert compared > 500 and bad == []
    # the written order is another numbering: compared against map order it mismatches
    with pytest.warns(UserWarning, match="Pass mapped=True"):
        written = SmirksAssigner("openff-2.3.0", strict=False).assign_many(texts[:1])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert validate.compare(written, validate.openff_labels(texts[0], ff, mapped=True))


def test_a_reordering_map_without_mapped_warns_once_and_keeps_written_order():
    text, _ = _mapped("CCO", seed=1)
    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.warns(UserWarning, match=r"other than the written one.*Pass mapped=True"):
        written = assigner.assign(text)
    assert written.elements[0] != "H" or text.startswith("[H")
    with pytest.warns(UserWarning, match=r"and 1 more SMILES like it") as record:
        assigner.assign_many(["CC", text, _mapped("CCN", seed=2)[0]])
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a map in written order, or a partial one: no order
        assigner.assign("[CH3:1][CH2:2][OH:3]")
        assigner.assign("[CH3:1]CO")
        assigner.assign_many(["CCO", "c1:c:c:c:c:c1"])


@pytest.mark.parametrize(
    ("smiles", "match"),
    [
        ("CCO", "has no atom map"),
        ("[CH3:2][OH:1]", "4 hydrogens are implicit"),
        ("[C:1]([H:2])([H:3])([H])[O:5][H:6]", r"atoms \[3\].*have no map number"),
        ("[C:1]([H:2])([H:2])([H:4])[O:5][H:6]", r"\[2\] more than once"),
        ("[C:1]([H:2])([H:3])([H:4])[O:5][H:7]", r"must be 1\.\.6"),
    ],
)
def test_an_incomplete_map_is_refused_by_mapped(smiles, match):
    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.raises(SmilesError, match=match):
        assigner.assign(smiles, mapped=True)
    with pytest.raises(SmilesError, match=r"molecule 1 \(.*" + match):
        assigner.assign_many(["[C:1]([H:2])([H:3])([H:4])[H:5]", smiles], mapped=True)


def test_mapped_must_be_a_bool_and_reads_smiles_only():
    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.raises(TypeError, match="mapped must be True or False"):
        assigner.assign("[CH4:1]", mapped="True")
    with pytest.raises(TypeError, match="mapped=True reads the atom map of a SMILES"):
        assigner.assign(Chem.MolFromSmiles("C"), mapped=True)
    with pytest.raises(TypeError, match=r"molecule 1 \('Mol'\).*RenumberAtoms"):
        assigner.assign_many(["[CH4:1]", Chem.MolFromSmiles("C")], mapped=True)


def test_mapped_over_two_processes_equals_one_process_and_one_by_one():
    texts = [_mapped(s, seed=20 + k)[0] for k, s in enumerate(drug_like_smiles(24, seed=7))]
    one = SmirksAssigner("openff-2.3.0").assign_many(texts, mapped=True)
    two = SmirksAssigner("openff-2.3.0").assign_many(texts, mapped=True, n_jobs=2, chunksize=5)
    uncached = SmirksAssigner("openff-2.3.0", cache=False)
    single = [uncached.assign(t, mapped=True) for t in texts]
    assert one == two == single
    with pytest.raises(SmilesError, match=r"molecule 3 \(.*4 hydrogens are implicit"):
        SmirksAssigner("openff-2.3.0").assign_many(
            [*texts[:3], "[CH3:2][OH:1]"], mapped=True, n_jobs=2, chunksize=2
        )
