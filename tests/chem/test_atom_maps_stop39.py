"""An atom map does not make a ring atom chiral (stop 39).

RDKit ranks mapped atoms apart, so the ring stereo atoms of a mapped SMILES
(``[CH3:1][C@H:2]1...``, cis/trans 1,4-dimethylcyclohexane) got R/S labels that the
same SMILES without a map does not give. They stayed chiral and a chiral SMIRKS atom
(``[#6@:1]``) matched them, where the OpenFF toolkit, which strips the map before it
perceives stereo (``Molecule.from_smiles`` and ``from_mapped_smiles``), sees no
chirality: 16 of the 26 vdW/torsion labels of a mapped cis-1,4-dimethylcyclohexane
differed from ``label_molecules``, with no error, with ``mapped=True`` or without.
"""

from __future__ import annotations

import pathlib
import random

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import SmirksAssigner, find_force_field  # noqa: E402
from tying.chem._rdkit import Chem  # noqa: E402
from tying.chem.mapped import map_order, renumber  # noqa: E402

# Chiral patterns appended after Sage's own (last match wins).
CHIRAL_VDW = ["[#6@:1]", "[C@H:1]", "[#6@@H:1](~[#6])(~[#6])"]
CHIRAL_PROPER = "[#1:1]-[#6@:2]-[#6:3]-[#1:4]"
# Ring stereo (no R/S without a map) first, then true stereocentres (R/S either way).
RING_STEREO = [
    "C[C@H]1CC[C@@H](C)CC1",
    "C[C@H]1CC[C@H](C)CC1",
    "O[C@H]1C[C@@H](O)C1",
    "C[C@]1(O)CC[C@](C)(O)CC1",
    "O[C@@H]1CC[C@H](O)CC1",
]
TRUE_STEREO = ["C[C@H](N)C(=O)O", "F[C@](Cl)(Br)C", "O[C@H]1CCCC[C@@H]1O"]


@pytest.fixture(scope="module")
def chiral_ff(tmp_path_factory) -> str:
    text = pathlib.Path(find_force_field("openff-2.3.0")).read_text()
    atoms = "".join(
        f'<Atom smirks="{s}" id="vs{i}" epsilon="0.1 * kilocalorie_per_mole" '
        f'rmin_half="1.5 * angstrom"></Atom>\n'
        for i, s in enumerate(CHIRAL_VDW)
    )
    proper = (
        f'<Proper smirks="{CHIRAL_PROPER}" periodicity1="2" phase1="180.0 * degree" '
        f'k1="1.0 * kilocalorie_per_mole" idivf1="1.0" id="ts0"></Proper>\n'
    )
    text = text.replace("</vdW>", atoms + "</vdW>", 1)
    text = text.replace("</ProperTorsions>", proper + "</ProperTorsions>", 1)
    path = tmp_path_factory.mktemp("ff") / "chiral-1.0.0.offxml"
    path.write_text(text)
    return str(path)


def _mapped(smiles: str, order: list[int] | None = None) -> str:
    """``smiles`` with explicit hydrogens, every atom mapped (``order``: atom i gets map
    number order[i] + 1; default the written order)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    for atom in mol.GetAtoms():
        i = atom.GetIdx()
        atom.SetAtomMapNum((order[i] if order else i) + 1)
    return Chem.MolToSmiles(mol)


def _unmapped(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(0)
    return Chem.MolToSmiles(mol, canonical=False)  # the written order kept


def _ids(assignment) -> dict[str, dict[tuple[int, ...], str]]:
    return {s: assignment.ids(s) for s in assignment.terms}


@pytest.mark.filterwarnings("ignore:SMILES .* maps every atom:UserWarning")
@pytest.mark.parametrize("smiles", RING_STEREO + TRUE_STEREO)
def test_a_map_changes_no_label(chiral_ff, smiles):
    # Brute force, no anchor needed: the map numbers only name atoms, so a SMILES
    # labelled with its map (written order) equals the same SMILES without the map.
    assigner = SmirksAssigner(chiral_ff, strict=False, cache=False)
    mapped = _mapped(smiles)
    assert _ids(assigner.assign(mapped)) == _ids(assigner.assign(_unmapped(mapped)))
    plain = assigner.assign(_unmapped(mapped))  # written order; then into the map's order
    in_map_order = renumber(plain, map_order(mapped, len(plain.elements)))
    assert _ids(assigner.assign(mapped, mapped=True)) == _ids(in_map_order)


@pytest.mark.parametrize("smiles", RING_STEREO[:3])
def test_ring_stereo_atoms_of_a_mapped_smiles_are_not_chiral(chiral_ff, smiles):
    a = SmirksAssigner(chiral_ff, strict=False, cache=False).assign(_mapped(smiles), mapped=True)
    assert not ({"vs0", "vs1", "vs2"} & a.used()["vdW"]), a.used()["vdW"]
    assert "ts0" not in a.used()["ProperTorsions"]


def test_true_stereocentres_of_a_mapped_smiles_stay_chiral(chiral_ff):
    a = SmirksAssigner(chiral_ff, strict=False).assign(_mapped("C[C@H](N)C(=O)O"), mapped=True)
    assert {"vs0", "vs1", "vs2"} & a.used()["vdW"] and "ts0" in a.used()["ProperTorsions"]


@pytest.fixture(scope="module")
def toolkit_ff(chiral_ff):
    try:
        from tying.chem import validate

        ff = validate.openff_force_field(chiral_ff)
        validate.openff_labels("C", ff)
    except Exception as err:  # the toolkit or a dependency missing at run time
        pytest.skip(f"OpenFF toolkit cannot label molecules here: {type(err).__name__}: {err}")
    return validate, ff


@pytest.mark.filterwarnings("ignore:SMILES .* maps every atom:UserWarning")
@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    k=st.integers(0, len(RING_STEREO + TRUE_STEREO) - 1),
    seed=st.integers(0, 2**16),
    mapped=st.booleans(),
)
def test_any_atom_map_labels_as_the_toolkit(chiral_ff, toolkit_ff, k, seed, mapped):
    # Any atom order written as a map, read with mapped=True (from_mapped_smiles) or
    # without (from_smiles, written order): every label is the toolkit's.
    validate, ff = toolkit_ff
    smiles = (RING_STEREO + TRUE_STEREO)[k]
    n = Chem.AddHs(Chem.MolFromSmiles(smiles)).GetNumAtoms()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    text = _mapped(smiles, order)
    ours = SmirksAssigner(chiral_ff, strict=False).assign(text, mapped=mapped)
    # from_smiles of a mapped SMILES drops the map (and warns): the same as no map
    theirs = validate.openff_labels(text if mapped else _unmapped(text), ff, mapped=mapped)
    assert validate.compare(ours, theirs, text) == []
