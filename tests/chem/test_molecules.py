"""Molecules as the OpenFF toolkit perceives them, and the shipped set of real molecules."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from rdkit import Chem  # noqa: E402

from tying.chem import (  # noqa: E402
    SmilesError,
    canonical_order,
    load_molecule_set,
    molecule_from_smiles,
    prepare_molecule,
)


def test_explicit_hydrogens_after_heavy_atoms():
    mol = molecule_from_smiles("CCO")
    assert [a.GetSymbol() for a in mol.GetAtoms()] == ["C", "C", "O"] + ["H"] * 6
    assert all(a.GetNumImplicitHs() == 0 for a in mol.GetAtoms())


@pytest.mark.parametrize(
    ("smiles", "aromatic"),
    [
        ("c1ccccc1", True),
        ("c1ccncc1", True),
        ("c1ccoc1", False),
        ("c1ccsc1", False),
        ("c1cc[nH]c1", False),
        ("c1c[nH]cn1", False),
    ],
)
def test_mdl_aromaticity(smiles, aromatic):
    # MDL aromaticity (OEAroModel_MDL): five-membered heteroaromatics are not aromatic.
    mol = molecule_from_smiles(smiles)
    assert mol.GetAtomWithIdx(0).GetIsAromatic() is aromatic


def test_prepare_molecule_resets_rdkit_aromaticity_and_keeps_indices():
    rd = Chem.MolFromSmiles("Oc1ccoc1")  # RDKit's own model calls furan aromatic
    assert rd.GetAtomWithIdx(1).GetIsAromatic()
    mol = prepare_molecule(rd)
    assert not mol.GetAtomWithIdx(1).GetIsAromatic()
    assert [a.GetSymbol() for a in mol.GetAtoms()][:6] == ["O", "C", "C", "C", "O", "C"]
    with pytest.raises(TypeError, match="expected an rdkit.Chem.Mol, got str"):
        prepare_molecule("CCO")


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("C1CC", r"cannot parse SMILES 'C1CC' \(broken\)"),
        ("CC(C)(C)(C)(C)C", r"cannot sanitise SMILES 'CC\(C\)\(C\)\(C\)\(C\)C' \(broken\)"),
    ],
)
def test_unparsable_smiles_is_named(smiles, message):
    with pytest.raises(SmilesError, match=message):
        molecule_from_smiles(smiles, name="broken")


def test_radicals_and_other_models_are_refused():
    with pytest.raises(SmilesError, match="atom 0 \\(C\\) is a radical"):
        molecule_from_smiles("[CH3]")
    with pytest.raises(ValueError, match="aromaticity model 'OEAroModel_MMFF' is not supported"):
        molecule_from_smiles("CCO", aromaticity_model="OEAroModel_MMFF")


def test_canonical_order_maps_two_writings_of_one_molecule():
    a, b = molecule_from_smiles("OCC"), molecule_from_smiles("CCO")
    (sa, oa), (sb, ob) = canonical_order(a), canonical_order(b)
    assert sa == sb
    for i, j in zip(oa, ob):
        assert a.GetAtomWithIdx(i).GetSymbol() == b.GetAtomWithIdx(j).GetSymbol()
        assert a.GetAtomWithIdx(i).GetDegree() == b.GetAtomWithIdx(j).GetDegree()


def test_shipped_set_is_large_unique_and_diverse():
    mols = load_molecule_set()
    assert len(mols) >= 200
    canon = {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s, _ in mols}
    assert len(canon) == len(mols), "duplicate molecules in the shipped set"
    assert len({n for _, n in mols}) == len(mols), "duplicate names in the shipped set"
    elements, charged, aromatic_n = set(), 0, 0
    for smiles, _ in mols:
        mol = molecule_from_smiles(smiles)
        elements |= {a.GetSymbol() for a in mol.GetAtoms()}
        charged += any(a.GetFormalCharge() for a in mol.GetAtoms())
        aromatic_n += any(a.GetIsAromatic() and a.GetSymbol() == "N" for a in mol.GetAtoms())
    assert {"C", "H", "N", "O", "S", "P", "F", "Cl", "Br", "I"} <= elements
    assert charged >= 40 and aromatic_n >= 30


def test_malformed_list_line(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("# comment\nCCO\tethanol\nCCC propane\n")
    with pytest.raises(
        ValueError, match=r"mols.smi:3: expected 'SMILES<TAB>name', got 'CCC propane'"
    ):
        load_molecule_set(path)


@pytest.mark.parametrize(
    ("smiles", "n_written"),
    [("CCO", 3), ("c1ccccc1", 6), ("[H]OC", None), ("[2H]C", None), ("C[NH3+]", 2),
     ("[NH3]->[Cu+2]", None)],
)  # fmt: skip
def test_parse_smiles_counts_the_written_atoms(smiles, n_written):
    from tying.chem.molecules import parse_smiles

    mol, n = parse_smiles(smiles)
    assert n == n_written
    if n is not None:  # the atoms after them are the appended hydrogens
        assert all(a.GetAtomicNum() > 1 for a in list(mol.GetAtoms())[:n])
        assert all(a.GetAtomicNum() == 1 for a in list(mol.GetAtoms())[n:])


@pytest.mark.parametrize(
    "smiles, message",
    [
        ("CC[CH]C*", r"atom 2 \(C\) is a radical"),  # the lowest index is named first
        ("C*C[O]", r"atom 1 is a wildcard/dummy atom"),
        ("[CH2]*", r"atom 0 \(C\) is a radical"),
        ("*[CH2]", r"atom 0 is a wildcard/dummy atom"),
    ],
)
def test_the_first_dummy_or_radical_atom_is_named(smiles, message):
    # Found by RDKit atom queries (not a Python loop): the same atom, the same error.
    with pytest.raises(SmilesError, match=message):
        molecule_from_smiles(smiles)


@pytest.mark.parametrize("smiles, written", [("[H]OC", None), ("[2H]C", None), ("OC", 2)])
def test_written_hydrogens_send_a_smiles_to_the_reference_path(smiles, written):
    from tying.chem.molecules import parse_smiles

    assert parse_smiles(smiles)[1] == written


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x85", "\xa0",
                                   "\u1680", "\u2003", "\u2028", "\u3000"])  # fmt: skip
def test_every_whitespace_character_is_refused_at_its_position(space):
    # The same characters as str.isspace (the check is one regular-expression search).
    from tying.chem.molecules import parse_smiles

    assert space.isspace()
    with pytest.raises(SmilesError, match=r"contains whitespace at position 2; RDKit would read"):
        parse_smiles(f"CC{space}O")


@pytest.mark.parametrize("smarts", ["[#6][#6][#8]", "CC=O", "C-C", "[CH3][OH]"])
def test_a_query_molecule_is_refused(smarts):
    # Stop 31: a molecule from Chem.MolFromSmarts was labelled as if it were one, e.g.
    # [#6][#6][#8] as a bare C-C-O without hydrogens, without an error.
    from tying.chem import SmirksAssigner

    query = Chem.MolFromSmarts(smarts)
    with pytest.raises(SmilesError, match=r"atom 0 \(.*\) is a query atom \(a SMARTS pattern"):
        prepare_molecule(query)
    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.raises(SmilesError, match=r"is a query atom.*build the molecule from a SMILES"):
        assigner.assign(query)
    assert (assigner.hits, assigner.misses) == (0, 0)


def test_a_query_bond_is_refused():
    mol = Chem.RWMol(Chem.MolFromSmiles("CCO"))
    mol.ReplaceBond(0, Chem.BondFromSmarts("~"))  # a plain-atom molecule with an any-bond
    with pytest.raises(SmilesError, match=r"bond 0 \(0-1, '~'\) is a query bond"):
        prepare_molecule(mol.GetMol())


def test_chirality_without_a_cip_label_is_dropped_as_the_toolkit_drops_it():
    # The ring atoms of trans-1,4-dimethylcyclohexane are stereo (cis/trans) but have no
    # R/S label: the toolkit keeps no chirality for them, a labelled centre keeps its own.
    ring = molecule_from_smiles("C[C@H]1CC[C@@H](C)CC1")
    assert all(a.GetChiralTag() == Chem.CHI_UNSPECIFIED for a in ring.GetAtoms())
    assert canonical_order(ring)[0] == canonical_order(molecule_from_smiles("CC1CCC(C)CC1"))[0]
    centre = molecule_from_smiles("C[C@H](O)CC")
    assert centre.GetAtomWithIdx(1).GetChiralTag() != Chem.CHI_UNSPECIFIED
    assert prepare_molecule(Chem.MolFromSmiles("C[C@H]1CC[C@@H](C)CC1")).GetAtomWithIdx(
        1
    ).GetChiralTag() == (Chem.CHI_UNSPECIFIED)


@pytest.mark.parametrize(
    "smiles, position, shown",
    [
        ("\ufeffCCO", 0, r"'\\ufeff' \(U\+FEFF\)"),  # a file's byte-order mark
        ("CCO\u200b", 3, r"'\\u200b' \(U\+200B\)"),  # a zero-width space pasted along
        ("CCO\x00", 3, r"'\\x00' \(U\+0000\)"),
        ("\xe9CCO", 0, r"'\xe9' \(U\+00E9\)"),
        ("CC(=O)[O-]\u2060", 10, r"'\\u2060' \(U\+2060\)"),
    ],
)
def test_a_character_outside_printable_ascii_is_refused(smiles, position, shown):
    # Stop 35: RDKit drops any such character at either end of a SMILES without a word,
    # so "\ufeffCCO" (the first line of a file with a byte-order mark) was labelled as
    # ethanol and kept with the invisible character as its name, cache key and record.
    from rdkit import RDLogger

    from tying.chem import SmirksAssigner
    from tying.chem.parallel import label_lines

    RDLogger.DisableLog("rdApp.*")
    try:
        assert Chem.MolFromSmiles(smiles) is not None  # what made it silent
    finally:
        RDLogger.EnableLog("rdApp.*")
    with pytest.raises(SmilesError, match=rf"contains {shown} at position {position}, which is "
                       r"not printable ASCII; RDKit drops such a character"):  # fmt: skip
        molecule_from_smiles(smiles)
    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.raises(SmilesError, match=r"not printable ASCII"):
        assigner.assign(smiles)
    assert (assigner.hits, assigner.misses) == (0, 0) and not assigner._by_text
    with pytest.raises(SmilesError, match=r"^line 2 \(.*\): SMILES .* not printable ASCII"):
        label_lines(["CC ethane", f"{smiles} x"])


def test_a_byte_order_mark_says_how_to_read_the_file():
    from tying.chem.parallel import label_lines

    with pytest.raises(SmilesError, match=r"a byte-order mark: read the file with "
                       r"encoding='utf-8-sig'"):  # fmt: skip
        label_lines(["\ufeffCCO ethanol", "CC ethane"])
    assert label_lines(["CCO caf\xe9"])[0]["name"] == "caf\xe9"  # names may be any text


@pytest.mark.parametrize(
    ("smiles", "bond"),
    [
        ("C~C", r"bond 0 \(0-1, '~'\)"),
        ("CCO~CC", r"bond 2 \(2-3, '~'\)"),
        ("c1ccccc1~C", r"bond 5 \(5-6, '~'\)"),
    ],
)
def test_an_any_bond_in_a_smiles_is_refused(smiles, bond):
    # Stop 36: RDKit reads SMARTS' any-bond '~' in a SMILES as a query bond; "C~C" was
    # labelled as two carbons with four hydrogens each and an unmatched bond (no error at
    # all with strict=False), where the OpenFF toolkit refuses it.
    from tying.chem import SmirksAssigner

    assigner = SmirksAssigner("openff-2.3.0", strict=False)
    with pytest.raises(SmilesError, match=bond + r" is a query bond .*write it as a bond"):
        assigner.assign(smiles)
    with pytest.raises(SmilesError, match=rf"molecule 0 .*{bond} is a query bond"):
        assigner.assign_many([smiles, "CCO"])
    assert (assigner.hits, assigner.misses) == (0, 0)
    assert not assigner._by_text and not assigner._by_canonical


@pytest.mark.parametrize(
    ("smiles", "bond"),
    [
        ("C:C", r"bond 0 \(0-1, C:C\)"),
        ("CC:OCC", r"bond 1 \(1-2, C:O\)"),
        ("CC:C", r"bond 1 \(1-2, C:C\)"),
    ],
)
def test_an_aromatic_bond_outside_an_aromatic_ring_is_refused(smiles, bond):
    # Stop 36: kekulization leaves such a bond aromatic; "C:C" got the aromatic bond b5
    # (strict or not) and "CC:OCC" no parameter for C:O, where label_molecules reads the
    # bond as single (b4, b17): a silent divergence on an undefined molecule.
    from tying.chem import SmirksAssigner

    for strict in (True, False):
        with pytest.raises(SmilesError, match=bond + r" is aromatic but in no aromatic ring"):
            SmirksAssigner("openff-2.3.0", strict=strict).assign(smiles)
    with pytest.raises(SmilesError, match=bond + r" is aromatic but in no aromatic ring"):
        prepare_molecule(Chem.MolFromSmiles(smiles))  # an RDKit molecule too


@pytest.mark.parametrize(
    "smiles",
    ["c1ccccc1:C", "C1:C:C:C:C:C:1", "C1=CC=CC=C1:C", "c1ccccc1:c1ccccc1", "[CH3:1][OH:2]"],
)
def test_aromatic_bonds_that_kekulize_are_read_as_before(smiles):
    # ':' inside or next to a ring that kekulizes is a bond order RDKit resolves (the
    # toolkit labels these alike); an atom map's ':' is no bond at all.
    mol = molecule_from_smiles(smiles)
    assert mol.GetNumAtoms() > 2


def test_a_non_molecule_input_names_how_to_pass_it():
    from tying.chem import SmirksAssigner

    assigner = SmirksAssigner("openff-2.3.0")
    with pytest.raises(TypeError, match=r"got NoneType: None; RDKit's readers .* yield None"):
        assigner.assign(None)
    with pytest.raises(TypeError, match=r"molecule 1 .*errors='skip'"):
        assigner.assign_many(["CCO", None])
    with pytest.raises(TypeError, match=r"decode bytes first"):
        assigner.assign(b"CCO")
    toolkit = pytest.importorskip("openff.toolkit")
    with pytest.raises(TypeError, match=r"got Molecule: .*pass an OpenFF Molecule as .*to_rdkit"):
        assigner.assign(toolkit.Molecule.from_smiles("CCO"))
