"""Chain and star patterns decided from signature masks equal RDKit's search of them."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tying.chem import SmirksAssigner, UnassignedParameterError, load_molecule_set  # noqa: E402
from tying.chem.assign import KEYS, _match_parameters  # noqa: E402
from tying.chem.chain_table import ChainTable, _bits, chain_queries, star_queries  # noqa: E402
from tying.chem.molecules import canonical_order, parse_smiles  # noqa: E402
from tying.chem.offxml import Parameter  # noqa: E402
from tying.chem.smirks import compile_smirks, scan_heavy  # noqa: E402

# Rings of 3 to 7, fused 5/6 and 6/6 systems (ring sizes the pre-filter leaves open), charges, aromatic
# heteroatoms, triple bonds, halogens, sulfur and phosphorus, a lone ion.
MOLECULES = [
    "C1CC1C(=O)O",
    "C1CCC1N",
    "c1ccc2[nH]ccc2c1",  # indole: fused 5/6
    "c1ccc2ccccc2c1",  # naphthalene: fused 6/6
    "C1CC2CCC1C2",  # norbornane
    "O=C1CCCCCC1",
    "[NH3+]CC(=O)[O-]",
    "C[N+](C)(C)C.[Cl-]",
    "[Na+].[Cl-]",
    "c1ccoc1C#N",
    "Cc1ncc(s1)C(F)(F)F",
    "OP(=O)(O)OCC(Br)I",
    "CS(=O)(=O)Nc1ccc(cc1)C(=O)N",
    "[O-][N+](=O)c1ccccc1O",
    "C=CC=O",
    "CC(C)(C)OC(=O)N1CCC(CC1)c1nc2ccccc2o1",
    "O",
    "C#C",
]


def _rdkit_last_match(patterns, sections, mol):
    """{section: {term key: index of the last pattern matching it}}, by RDKit's search."""
    params = _match_parameters(chirality=True, recursion=True)
    out: dict[str, dict] = {}
    for i, (c, section) in enumerate(zip(patterns, sections, strict=True)):
        won = out.setdefault(section, {})
        for m in mol.GetSubstructMatches(c.query, params):
            won[KEYS[section]([m[t] for t in c.tagged])] = i
    return out


def _tabled(table, patterns, sections, mol, n_written):
    """ChainTable.label's winners, with the patterns it leaves undecided searched by RDKit."""
    labelled = table.label(scan_heavy(mol, n_written), mol.GetNumAtoms())
    params = _match_parameters(chirality=True, recursion=True)
    out = {}
    for section in dict.fromkeys(sections):
        if section not in labelled:
            continue
        won, undecided = labelled[section]
        won = dict(won)
        searched = [i for i, s in enumerate(sections) if s == section and not table.decided[i]]
        for i in sorted({*searched, *undecided}):
            c = patterns[i]
            for m in mol.GetSubstructMatches(c.query, params):
                key = KEYS[section]([m[t] for t in c.tagged])
                if i > won.get(key, -1):
                    won[key] = i
        out[section] = won
    return out


ATOMS = ["*", "#6", "#6X4", "#6X3", "#6X2", "#7", "#7X3", "#7X2", "#8", "#8X2", "#8X1",
         "#1", "#9", "#17", "#16", "#15", "#6X3+0", "#7+1", "#8-1", "#6;a", "#7;a", "#6;A",
         "#6;R", "#6;!R", "#6;R0", "#6;r5", "#6;r6", "#7;r5", "*;r3", "#6X4,#7X3", "!#1",
         "#6H1", "#6H2", "#6X4;H3", "#6x0", "#7,#8", "#6&!a", "!#6;!#1",
         # recursive SMARTS of one bond: neighbour predicates (and ones left to RDKit)
         "#7X3$(*~[#6X3,#6X2])", "#6X3$(*=[#8,#16,#7])", "*$(*-[#1])", "#6$(*@[#7;r5])",
         "#8$([#8X2]-[#6;a])", "#6;$(*~[#8X1]);$(*~[#7])", "#7$(*~[#6]=[#8])",
         "#6,$(*~[#8])", "!$(*~[#8])", "#6$(*~[#8;$(*~[#6])])"]  # fmt: skip
BONDS = ["-", "=", ":", "~", "@", "!@", "-;!@", "-;@", "=,:", "#", "", "-,="]
ARITY = {"vdW": 1, "Bonds": 2, "Angles": 3, "ProperTorsions": 4, "ImproperTorsions": 4}


def _sigs_and_adjacency(mol):
    """Every atom's signature and (neighbour, bond truth row) pairs, read from RDKit."""
    from tying.chem.smirks import Prefilter, bond_signature_code

    adjacency = [[] for _ in range(mol.GetNumAtoms())]
    for bond in mol.GetBonds():
        j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        c = 2 * bond_signature_code(bond) + bond.IsInRing()
        adjacency[j].append((k, c))
        adjacency[k].append((j, c))
    return Prefilter.signatures(mol), adjacency


def _smirks(section: str, atoms: list[str], bonds: list[str]) -> str:
    a = [f"[{q}:{n}]" for n, q in enumerate(atoms, 1)]
    if section == "ImproperTorsions":  # center tag 2 bonded to tags 1, 3 and 4
        return f"{a[0]}{bonds[0]}{a[1]}({bonds[1]}{a[2]}){bonds[2]}{a[3]}"
    return a[0] + "".join(b + x for b, x in zip(bonds, a[1:]))


@st.composite
def force_fields(draw):
    """A few random chain / star patterns per section (and vdW atoms with one untagged
    neighbour), in file order."""
    patterns, sections = [], []
    for section, arity in ARITY.items():
        for _ in range(draw(st.integers(1, 4))):
            atoms = draw(st.lists(st.sampled_from(ATOMS), min_size=arity, max_size=arity))
            bonds = draw(st.lists(st.sampled_from(BONDS), min_size=3, max_size=3))
            smirks = _smirks(section, atoms, bonds)
            if section == "vdW" and draw(st.booleans()):  # [q:1]-[r]: a neighbour predicate
                smirks += f"{bonds[1]}[{draw(st.sampled_from(ATOMS))}]"
            p = Parameter(section, f"p{len(patterns)}", smirks, len(patterns), {})
            patterns.append(compile_smirks(p, valence=arity))
            sections.append(section)
    return patterns, sections


PREPARED = [parse_smiles(s) for s in MOLECULES]


@given(force_fields())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decided_patterns_give_rdkits_last_match(ff):
    # Random patterns built from every primitive kind the masks decide (elements,
    # connections, hydrogens, charges, aromaticity, ring membership and sizes, and
    # every bond kind), on molecules with fused rings and charges: the winners equal
    # RDKit's search of the same patterns in file order.
    patterns, sections = ff
    table = ChainTable(patterns, sections)
    assert table.decided.any()
    for smiles, (mol, n_written) in zip(MOLECULES, PREPARED, strict=True):
        expected = _rdkit_last_match(patterns, sections, mol)
        got = _tabled(table, patterns, sections, mol, n_written)
        for section, won in got.items():
            assert won == expected.get(section, {}), (smiles, section)
    # All molecules at once in NumPy (label_many) equal each molecule's label.
    scans = [scan_heavy(mol, n_written) for mol, n_written in PREPARED]
    sizes = [mol.GetNumAtoms() for mol, _ in PREPARED]
    for (mol, _), scan, n in zip(PREPARED, scans, sizes, strict=True):
        assert table.keys_scanned(scan, n) == table.keys(*_sigs_and_adjacency(mol))
    many = table.label_many(scans, sizes)
    for smiles, scan, n, got in zip(MOLECULES, scans, sizes, many, strict=True):
        assert got == table.label(scan, n), smiles


def test_ring_sizes_are_the_smallest_ring():
    # RDKit reads r6 as "the smallest ring holding the atom has 6 atoms": indole's fused
    # carbons (rings of 5 and 6) are r5, not r6. Decided the same way, and equal to RDKit.
    p = Parameter("Bonds", "b", "[#6;r6:1]:[#6;r5:2]", 0, {})
    q = Parameter("Bonds", "c", "[#6;r6:1]:[#6;r6:2]", 1, {})
    patterns = [compile_smirks(p, valence=2), compile_smirks(q, valence=2)]
    sections = ["Bonds", "Bonds"]
    table = ChainTable(patterns, sections)
    assert table.decided.all()
    mol, n_written = parse_smiles("c1ccc2[nH]ccc2c1")
    won, undecided = table.label(scan_heavy(mol, n_written), mol.GetNumAtoms())["Bonds"]
    assert undecided == []
    assert won == {(0, 1): 1, (1, 2): 1, (2, 3): 0, (7, 8): 0, (0, 8): 1}
    assert {"Bonds": won} == _rdkit_last_match(patterns, sections, mol)


def test_an_undecided_atom_leaves_its_pattern_to_rdkit():
    # A signature without ring sizes (6 fields) leaves "r5" open: the pattern is searched.
    from tying.chem.chain_table import truth

    tree = ChainTable(
        [compile_smirks(Parameter("Bonds", "b", "[#6;r5:1]-[#6:2]", 0, {}), valence=2)],
        ["Bonds"],
    )._atom_trees[0]
    assert truth(tree, (6, 4, 2, 0, False, True)) is None
    assert truth(tree, (7, 4, 2, 0, False, True)) is False


@pytest.mark.parametrize(
    ("smirks", "section", "chain"),
    [
        ("[#6X4:1]-[#6X3:2]=[#8X1+0:3]", "Angles", True),
        ("[#6X4:1]-[#6X3:2]=[#8X1+0]", "Bonds", False),  # an untagged atom
        ("[#7X3$(*~[#6]):1]-[#6:2]", "Bonds", True),  # recursion: atom_tree reads it
        ("[#6:1]/[#6:2]=[#6:3]/[#6:4]", "ProperTorsions", False),  # stereo
        ("[*:1]~[#6:2]1~[*:3]~[*:4]1", "ProperTorsions", False),  # a ring closure: 4 bonds
        ("[*:1]~[#6:2]~[*:3]~[*:4]", "ProperTorsions", True),
        ("[#6:1]-[#6:2]1-[#6:3]-[#6]-1", "Angles", False),  # a ring beyond the tags
    ],
)
def test_which_patterns_are_chains(smirks, section, chain):
    arity = {"Bonds": 2, "Angles": 3, "ProperTorsions": 4}[section]
    c = compile_smirks(Parameter(section, "x", smirks, 0, {}), valence=arity)
    assert (chain_queries(c, arity) is not None) is chain


def test_which_impropers_are_stars():
    def star(smirks):
        p = Parameter("ImproperTorsions", "i", smirks, 0, {})
        return star_queries(compile_smirks(p, valence=4))

    assert star("[*:1]~[#6X3:2](~[*:3])~[*:4]") is not None
    assert star("[*:1]~[#7X3$(*~[#6X3]):2](~[*:3])~[*:4]") is not None  # atom_tree reads it
    assert star("[*:1]~[#6X3:2](~[*:3])~[*:4]~[#8]") is None  # an untagged atom
    assert star("[*:1]1~[#6X3:2](~[*:3])~[*:4]~1") is None  # tags 1 and 4 bonded too


@pytest.mark.parametrize(
    ("atom", "decided"),
    [
        ("[#7X3$(*~[#6X3,#6X2]):1]", True),  # one bond: a neighbour predicate
        ("[#6;$(*=[#8]);$(*-[#7]):1]", True),  # two of them, joined by AND
        ("[#7X3$([#7X3]-[#6;a]):1]", True),  # the recursion's own first atom may say more
        ("[#7X3$(*@1-[*]=,:[*][*]=,:[*]@1):1]", False),  # a ring: RDKit searches it
        ("[#6$(*~[#8]~[#6]):1]", False),  # two bonds deep
        ("[#6,$(*~[#8]):1]", False),  # under an OR
        ("[!$(*~[#8]);#6:1]", False),  # under a NOT
        ("[#6$(*~[#8$(*~[#6])]):1]", False),  # nested
    ],
)
def test_which_recursions_are_neighbour_predicates(atom, decided):
    p = Parameter("Bonds", "b", f"{atom}-[*:2]", 0, {})
    table = ChainTable([compile_smirks(p, valence=2)], ["Bonds"])
    assert bool(table.decided[0]) is decided


def _paths(assigner, smiles):
    mol, n_written = parse_smiles(smiles)
    canonical, _ = canonical_order(mol)
    outcomes = []
    for tabled in (True, False):
        assigner._tabled = tabled
        try:
            outcomes.append(assigner._assign_scanned(mol, canonical, smiles, n_written))
        except UnassignedParameterError as err:
            outcomes.append(str(err))
    assigner._tabled = True
    return n_written, outcomes


@pytest.mark.parametrize(
    "force_field", ["openff-2.3.0", "openff-2.0.0", "openff-1.3.0", "openff-1.0.0"]
)
def test_tabled_path_equals_searching_every_candidate(force_field):
    # The whole assignment with decided patterns (the default) against RDKit's search
    # of every candidate (the path before chain_table), on shipped, generated and the
    # toolkit's own drug-like molecules, for four generations of force fields.
    from tying.chem.generate import drug_like_smiles
    from tying.chem.validate import toolkit_drug_like_smiles

    assigner = SmirksAssigner(force_field, cache=False)
    molecules = [s for s, _ in load_molecule_set()[::2]] + drug_like_smiles(120, seed=4)
    molecules += [s for s, _ in toolkit_drug_like_smiles()[::4]] + MOLECULES
    checked = 0
    for smiles in molecules:
        n_written, (tabled, searched) = _paths(assigner, smiles)
        if n_written is None:
            continue
        assert tabled == searched, smiles
        checked += 1
    assert checked > 0.9 * len(molecules)
    assert assigner._chain.decided.mean() > 0.5  # most patterns are decided, not searched


def test_scan_names_each_hydrogens_parent():
    from tying.chem.generate import drug_like_smiles

    for smiles in MOLECULES + drug_like_smiles(40, seed=6):
        mol, n_written = parse_smiles(smiles)
        scan = scan_heavy(mol, n_written)
        assert len(scan.h_parents) == mol.GetNumAtoms() - n_written
        for h, parent in enumerate(scan.h_parents, n_written):
            (neighbour,) = mol.GetAtomWithIdx(h).GetNeighbors()
            assert neighbour.GetIdx() == parent, smiles


@pytest.mark.parametrize(
    "force_field", ["openff-2.3.0", "openff-2.0.0", "openff-1.3.0", "openff-1.0.0"]
)
def test_label_many_equals_label_and_the_batch_equals_searching(force_field):
    # ChainTable.label_many (the batches of assign_many) against label molecule by
    # molecule, and whole batches against RDKit's search of every candidate, on shipped,
    # generated and the toolkit's drug-like molecules, in batches of odd sizes.
    from tying.chem.generate import drug_like_smiles
    from tying.chem.validate import toolkit_drug_like_smiles

    assigner = SmirksAssigner(force_field, cache=False, strict=False)
    molecules = [s for s, _ in load_molecule_set()[1::2]] + drug_like_smiles(150, seed=7)
    molecules += [s for s, _ in toolkit_drug_like_smiles()[1::3]] + MOLECULES
    prepared = [parse_smiles(s) for s in molecules]
    prepared = [(m, n) for m, n in prepared if n is not None]
    scans = [scan_heavy(m, n) for m, n in prepared]
    sizes = [m.GetNumAtoms() for m, _ in prepared]
    table = assigner._chain
    for lo, hi in ((0, 1), (1, 38), (38, 102), (102, len(scans))):
        many = table.label_many(scans[lo:hi], sizes[lo:hi])
        assert many == [table.label(s, n) for s, n in zip(scans[lo:hi], sizes[lo:hi])]
    tabled = assigner.assign_many(molecules)
    assigner._tabled = False
    searched = assigner.assign_many(molecules)
    assert tabled == searched


def test_label_arrays_from_two_threads_while_a_key_is_being_added():
    # Thread A is held while it adds a new atom key's mask rows; thread B labels the same
    # molecules meanwhile. B must neither read A's half-added row (an IndexError, or a
    # zero row: a silently missing label) nor shift the rows' flags: both get label's.
    import threading

    table = SmirksAssigner("openff-2.3.0", cache=False)._chain
    mols = [parse_smiles(s) for s in ("CCO", "c1ccccc1N", "CC(=O)[O-]", "C1CC1Cl")]
    scans, sizes = [scan_heavy(m, n) for m, n in mols], [m.GetNumAtoms() for m, _ in mols]
    expected = [table.label(s, n) for s, n in zip(scans, sizes, strict=True)]
    entered, release = threading.Event(), threading.Event()
    masks, holder = table.masks, []

    def held_masks(key):
        if threading.current_thread() is holder[0] and not entered.is_set():
            entered.set()
            release.wait(30)
        return masks(key)

    table.masks = held_masks
    got, errors = {}, []

    def run(name):
        try:
            got[name] = table.label_many(scans, sizes)
        except Exception as err:  # reported below
            errors.append(err)

    a, b = threading.Thread(target=run, args=("a",)), threading.Thread(target=run, args=("b",))
    holder.append(a)
    a.start()
    assert entered.wait(30)
    b.start()
    b.join(0.5)  # B runs now (before the fix) or waits for A's key (after it)
    release.set()
    a.join(30)
    b.join(30)
    assert not errors
    assert got == {"a": expected, "b": expected}


def test_a_child_forked_while_a_key_is_being_added_still_labels():
    # A process forked (a user's fork-started Pool) while another thread held the lock
    # that adds atom keys: in the child that thread never releases it, so labelling a
    # molecule with a new key would hang there forever.
    import os
    import select
    import signal

    table = SmirksAssigner("openff-2.3.0", cache=False)._chain
    mol, n = parse_smiles("CC")
    table.label_many([scan_heavy(mol, n)], [mol.GetNumAtoms()])  # the words exist
    mol, n = parse_smiles("CCO")  # an oxygen: a key not seen yet
    scan, size = scan_heavy(mol, n), mol.GetNumAtoms()
    expected = table.label(scan, size)
    table._words.lock.acquire()  # another thread adding a key when the process forks
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's teardown
            os.write(write, b"1" if table.label_many([scan], [size]) == [expected] else b"0")
            os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 20)
        got = os.read(read, 1) if ready else b"hung"
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
    finally:
        table._words.lock.release()
    assert got == b"1"


def _masks_bit_by_bit(table, key) -> dict:
    """``ChainTable.masks`` as the code before its NumPy packing made it, bit by bit."""
    values = table._values(key)
    found = {}
    for section, (_, at, _) in table.sections.items():
        n, arity = at.shape
        per_q = tuple(_bits(values[at[p, q]] is True for p in range(n)) for q in range(arity))
        undecided = _bits(any(values[at[p, q]] is None for q in range(arity)) for p in range(n))
        found[section] = (per_q, undecided)
    return found


def _every_key_masks_equal_the_reference(table) -> int:
    for key, found in table._masks.items():
        assert found == _masks_bit_by_bit(table, key), key
    return len(table._masks)


@given(force_fields())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_packed_masks_equal_the_bit_by_bit_reference_on_random_patterns(ff):
    # ChainTable.masks packs each key's bits with NumPy; _masks_bit_by_bit sets them one
    # by one in Python (the code before). Random patterns of every primitive kind, with
    # neighbour predicates (keys with undecided bits), on every test molecule.
    table = ChainTable(*ff)
    for mol, n_written in PREPARED:
        if n_written is not None:
            table.label(scan_heavy(mol, n_written), mol.GetNumAtoms())
    assert _every_key_masks_equal_the_reference(table) > 0


@pytest.mark.parametrize(
    "force_field", ["openff-2.3.0", "openff_unconstrained-2.2.1", "openff-1.3.0", "openff-1.0.0"]
)
def test_packed_masks_equal_the_bit_by_bit_reference_on_drug_like_keys(force_field):
    # Every atom key of shipped, generated and MiniDrugBank molecules, both label paths.
    from tying.chem.generate import drug_like_smiles
    from tying.chem.validate import toolkit_drug_like_smiles

    assigner = SmirksAssigner(force_field, cache=False, strict=False)
    molecules = [s for s, _ in load_molecule_set()] + drug_like_smiles(100, seed=8)
    molecules += [s for s, _ in toolkit_drug_like_smiles()] + MOLECULES
    assigner.assign_many(molecules)
    for smiles in molecules[::3]:
        assigner.assign(smiles)
    assert _every_key_masks_equal_the_reference(assigner._chain) > 100
