"""Assignment: last match wins, OpenFF term keys, impropers, coverage errors, the cache."""

from __future__ import annotations

import functools
import os

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rdkit import Chem  # noqa: E402

from tying.chem import (  # noqa: E402
    SmilesError,
    SmirksAssigner,
    UnassignedParameterError,
    count_unique_parameters,
    load_molecule_set,
    topology_terms,
    trefoil,
)
from tying.chem.molecules import molecule_from_smiles  # noqa: E402

from .helpers import bond, write_offxml  # noqa: E402


@pytest.fixture(scope="module")
def sage():
    return SmirksAssigner("openff-2.3.0")


def test_ethanol_known_parameters(sage):
    a = sage.assign("CCO")
    assert a.ids("Bonds") == {
        (0, 1): "b1", (0, 3): "b84", (0, 4): "b84", (0, 5): "b84",
        (1, 2): "b14", (1, 6): "b84", (1, 7): "b84", (2, 8): "b88",
    }  # fmt: skip
    assert a.count_unique()["Bonds"] == 4
    length = a.bonds[(0, 1)]["length"]
    assert str(length.unit) == "angstrom" and length.value == pytest.approx(1.525970013793)


def test_last_matching_pattern_wins(tmp_path):
    generic, specific = bond("[#6:1]-[#6:2]", "generic"), bond("[#6X4:1]-[#6X4:2]", "specific")
    general_first = SmirksAssigner(
        write_offxml(tmp_path, [generic, specific], name="a"), strict=False
    )
    specific_first = SmirksAssigner(
        write_offxml(tmp_path, [specific, generic], name="b"), strict=False
    )
    # propene: C0 (sp3) - C1 (sp2) = C2
    assert general_first.assign("CC=C").bonds[(0, 1)].id == "generic"  # only the generic matches
    assert general_first.assign("CC").bonds[(0, 1)].id == "specific"  # both match: last wins
    assert (
        specific_first.assign("CC").bonds[(0, 1)].id == "generic"
    )  # order decides, not specificity


def test_a_match_and_its_reverse_are_one_term(sage):
    a = sage.assign("OCC(=O)N")
    for section in ("Bonds", "Angles", "ProperTorsions"):
        keys = a.terms[section].keys()
        assert all(k[0] < k[-1] for k in keys)
        assert keys == topology_terms(molecule_from_smiles("OCC(=O)N"))[section]


def test_impropers_center_second_and_trefoil(sage):
    a = sage.assign("CC(C)=O", name="acetone")
    assert list(a.impropers) == [(0, 1, 2, 3)]  # carbonyl carbon 1 in the middle
    assert a.impropers[(0, 1, 2, 3)].id == "i1"  # generic trivalent carbon
    acetate = sage.assign("CC(=O)[O-]")
    assert acetate.impropers[(0, 1, 2, 3)].id == "i2"  # the later, carboxylate pattern wins
    orderings = trefoil((0, 1, 2, 3))
    assert {o[1] for o in orderings} == {1}
    assert sorted(tuple(sorted((o[0], o[2], o[3]))) for o in orderings) == [(0, 2, 3)] * 3
    assert len(set(orderings)) == 3
    benzene = sage.assign("c1ccccc1")
    assert len(benzene.impropers) == 6 and {k[1] for k in benzene.impropers} == set(range(6))


def test_atom_without_vdw_parameter(tmp_path):
    path = write_offxml(tmp_path, [bond("[*:1]~[*:2]", "any")], name="no-cl")
    assigner = SmirksAssigner(path, sections=("Bonds", "vdW"))
    assert assigner.assign("CO").vdw[(1,)].id == "n-o"
    with pytest.raises(
        UnassignedParameterError, match=r"no-cl has no vdW parameter for atom 1 \(Cl\) of 'CCl'"
    ):
        assigner.assign("CCl")
    loose = SmirksAssigner(path, sections=("Bonds", "vdW"), strict=False).assign("CCl")
    assert (1,) not in loose.vdw and len(loose.vdw) == 4


def test_bond_without_parameter_is_named(tmp_path):
    path = write_offxml(tmp_path, [bond("[#6:1]-[#1:2]", "ch")], name="ch-only")
    with pytest.raises(
        UnassignedParameterError,
        match=r"ch-only has no bond parameter for bond 0-1 \(C-C\) of 'ethane'",
    ):
        SmirksAssigner(path, sections=("Bonds",)).assign("CC", name="ethane")


def test_three_membered_rings_are_counted_right(sage):
    for smiles in ("C1CC1", "C1CO1", "C12C3C4C1C5C2C3C45"):  # cyclopropane, oxirane, cubane
        a = sage.assign(smiles)
        topo = topology_terms(molecule_from_smiles(smiles))
        assert a.terms["ProperTorsions"].keys() == topo["ProperTorsions"]


def test_cache_per_unique_molecule_and_remapping(sage):
    assigner = SmirksAssigner(sage.force_field)
    first = assigner.assign("OCC(=O)N")
    again = assigner.assign("NC(=O)CO")  # same molecule, atoms in another order
    assert (assigner.hits, assigner.misses) == (1, 1)
    fresh = SmirksAssigner(sage.force_field, cache=False).assign("NC(=O)CO")
    for section in fresh.terms:
        assert again.ids(section) == fresh.ids(section)
    assert again.elements == fresh.elements and again.smiles == first.smiles
    assigner.assign("OCC(=O)N", name="glycolamide")
    assert assigner.hits == 2
    assigner.clear_cache()
    assigner.assign("OCC(=O)N")
    assert (assigner.hits, assigner.misses) == (0, 1)


def test_rdkit_molecule_keeps_its_indices(sage):
    rd = Chem.AddHs(Chem.MolFromSmiles("OC(C)=O"))
    a = sage.assign(rd)
    assert a.elements[:4] == ("O", "C", "C", "O")
    assert a.bonds[(1, 3)].smirks.count("=") == 1  # C=O


def test_unsupported_section():
    with pytest.raises(
        ValueError, match=r"cannot assign sections \['Electrostatics'\]; supported: Bonds"
    ):
        SmirksAssigner("openff-2.3.0", sections=("Bonds", "Electrostatics"))


def test_unique_parameters_over_a_set(sage):
    assignments = sage.assign_many(load_molecule_set()[:40])
    counts = count_unique_parameters(assignments)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    for section, n in counts.items():
        if section != "total":
            assert 0 < n <= len(sage.force_field[section])
    rows = list(assignments[2].rows())
    assert {"section", "atoms", "elements", "id", "smirks"} <= rows[0].keys()


@pytest.mark.parametrize(
    ("molecule", "error", "match"),
    [
        ("", SmilesError, r"empty SMILES ''"),
        ("   ", SmilesError, r"empty SMILES"),
        # RDKit would read "CC" and take "O" as a title: ethane instead of an error.
        (
            "CC O",
            SmilesError,
            r"'CC O' contains whitespace at position 2; RDKit would read only 'CC'",
        ),
        ("CCO\n", SmilesError, r"leading or trailing whitespace; pass smiles.strip\(\)"),
        ("C1CC", SmilesError, r"cannot parse SMILES 'C1CC'"),
        ("c1cccc1", SmilesError, r"cannot sanitise SMILES 'c1cccc1'"),
        ("[CH3]", SmilesError, r"atom 0 \(C\) is a radical"),
        ("CC[O]", SmilesError, r"atom 2 \(O\) is a radical"),
        ("C*", SmilesError, r"atom 1 is a wildcard/dummy atom"),
        (None, TypeError, r"expected a SMILES string or an rdkit.Chem.Mol, got NoneType"),
        (42, TypeError, r"got int: 42"),
        (b"CCO", TypeError, r"got bytes: b'CCO'; decode bytes first"),
        (Chem.Mol(), SmilesError, r"the molecule has no atoms"),
    ],
)
def test_bad_input_to_assign_is_named(sage, molecule, error, match):
    before = (sage.hits, sage.misses, len(sage._by_text), len(sage._by_canonical))
    with pytest.raises(error, match=match):
        sage.assign(molecule, name=None)
    assert (sage.hits, sage.misses, len(sage._by_text), len(sage._by_canonical)) == before


def test_charged_species_and_mixtures_are_assigned(sage):
    # Supported by SMIRNOFF (and the toolkit): ions, zwitterions, salts as one molecule.
    for smiles in ("C[NH3+]", "CC(=O)[O-]", "[NH3+]CC(=O)[O-]", "C[N+](C)(C)C.[Cl-]"):
        a = sage.assign(smiles)
        assert len(a.vdw) == len(a.elements)


def test_name_and_sections_of_the_wrong_type(sage):
    with pytest.raises(TypeError, match="name must be a string or None, got int"):
        sage.assign("CCO", name=3)
    with pytest.raises(TypeError, match=r"got the string 'Bonds'; write sections=\['Bonds'\]"):
        SmirksAssigner("openff-2.3.0", sections="Bonds")


# -- the fast path (SMILES without hydrogen atoms) against the reference path --------------

EDGE_CASES = [
    "C1CC1",  # 3-ring: the completeness check counts term by term
    "C12C3C4C1C5C2C3C45",  # cubane
    "C1CCC1",  # 4-ring
    "[NH3+]CC(=O)[O-]",
    "C[N+](C)(C)C.[Cl-]",  # two components
    "[Na+].[Cl-]",  # atoms without hydrogens at all
    "C/C=C/C",
    "C[C@H](N)C(=O)O",
    "O",
    "[O-][N+](=O)c1ccccc1",
    "C#N",
    "c1ccc2c(c1)oc1ccccc12",
    "CS(=O)(=O)N",
    "OP(=O)(O)O",
]


def _both_paths(assigner, smiles):
    from tying.chem.molecules import canonical_order, parse_smiles

    mol, n_written = parse_smiles(smiles)
    canonical, _ = canonical_order(mol)
    outcomes = []
    for path in ("reference", "scanned"):
        try:
            if path == "reference":
                outcomes.append(assigner._assign_reference(mol, canonical, smiles))
            else:
                outcomes.append(assigner._assign_scanned(mol, canonical, smiles, n_written))
        except UnassignedParameterError as err:
            outcomes.append(str(err))
    return n_written, outcomes


@pytest.mark.parametrize("force_field", ["openff-2.3.0", "openff-1.0.0"])
@pytest.mark.parametrize("strict", [True, False])
def test_fast_path_equals_reference(force_field, strict):
    from tying.chem.generate import drug_like_smiles

    assigner = SmirksAssigner(force_field, strict=strict)
    molecules = [s for s, _ in load_molecule_set()[:: 1 if strict else 3]]
    molecules += drug_like_smiles(150, seed=1 if strict else 2) + EDGE_CASES
    scanned = 0
    for smiles in molecules:
        n_written, (reference, fast) = _both_paths(assigner, smiles)
        if n_written is None:
            continue  # a SMILES that writes a hydrogen atom only takes the reference path
        scanned += 1
        assert fast == reference, smiles
    assert scanned > 0.9 * len(molecules)


def test_smiles_with_hydrogen_atoms_take_the_reference_path(sage):
    # "[H]" atoms written in the SMILES are not where the fast path expects added ones.
    from tying.chem.molecules import canonical_order

    fresh = SmirksAssigner(sage.force_field, cache=False)
    for smiles in ("[H]OC", "[2H]C([2H])([2H])O", "C([H])([H])=O", "[H]C#N"):
        a = fresh.assign(smiles)
        mol = molecule_from_smiles(smiles)
        assert a == fresh._assign_reference(mol, canonical_order(mol)[0], smiles)
        assert len(a.vdw) == mol.GetNumAtoms()


@pytest.mark.parametrize("force_field", ["openff-2.3.0", "openff-1.0.0"])
def test_fast_term_dicts_equal_the_canonical_keys_on_every_pattern(force_field):
    # The fast path's per-pattern shortcut (a match is its own key, no slice), on the
    # query renumbered rarest atom first (search_order), against KEYS on the tagged atoms
    # of the pattern as written, for every pattern that matches real molecules.
    from tying.chem.assign import KEYS
    from tying.chem.generate import drug_like_smiles

    assigner = SmirksAssigner(force_field)
    sections = [s for s in assigner.sections for _ in assigner._compiled[s]]
    molecules = [s for s, _ in load_molecule_set()[::4]] + drug_like_smiles(40, seed=3)
    molecules += EDGE_CASES
    checked, reordered = set(), 0
    for smiles in molecules:
        mol = molecule_from_smiles(smiles)
        for (query, params, term_dict, parameter), c, section in zip(
            assigner._fast_plan, assigner._flat, sections
        ):
            matches = mol.GetSubstructMatches(query, params)
            written = mol.GetSubstructMatches(c.query, params)
            assert len(matches) == len(written), (smiles, parameter.id)
            if not matches:
                continue
            expected = {KEYS[section]([m[t] for t in c.tagged]): parameter for m in written}
            assert term_dict(matches, parameter) == expected, (smiles, parameter.id)
            checked.add(parameter.id)
            reordered += query is not c.query
    assert len(checked) > 100 and reordered > 1000


# -- _assign_batch (assign_many's stage-by-stage labelling) against assign one by one ---------

# Repeats, the same molecule written differently, names, hydrogens written, RDKit
# molecules, a 3-ring, and items that fail at each stage (type, name, parse, strict check).
_BATCH_POOL = [
    "CCO",
    "OCC",
    ("CCO", "ethanol"),
    "c1ccccc1O",
    "Oc1ccccc1",
    "[H]OC",
    "CO",
    "C1CC1",
    "C[C@H](N)C(=O)O",
    "[NH3+]CC(=O)[O-]",
    "CC(=O)Nc1ccc(O)cc1",
    ("CC(=O)Nc1ccc(O)cc1", "paracetamol"),
    "not a smiles",  # whitespace: SmilesError at parsing
    "C1CC",  # unclosed ring: SmilesError at parsing
    b"CCO",  # TypeError before parsing
    ("CC", 3),  # TypeError on the name
    "[Xe]",  # no vdW parameter: UnassignedParameterError in the last stage
]


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as err:
        return (type(err).__name__, str(err))


def _state(assigner):
    return (
        assigner.hits,
        assigner.misses,
        dict(assigner._by_text),
        {k: v for k, v in assigner._by_canonical.items()},
    )


def _one_by_one(assigner, items):
    results = []
    for k, (molecule, name) in enumerate(items):
        kind, value = _outcome(functools.partial(assigner.assign, molecule, name=name))
        if kind != "ok":
            return results, (k, kind, value)
        results.append(value)
    return results, None


def _batched(assigner, items):
    results, failure = assigner._assign_batch(items)
    if failure is None:
        return results, None
    k, err = failure
    return results, (k, type(err).__name__, str(err))


def _pool_items(picks):
    items = []
    for p in picks:
        entry = _BATCH_POOL[p]
        if entry == "[H]OC" and len(items) % 2:
            entry = Chem.MolFromSmiles("OC")  # an RDKit molecule: the reference path
        items.append(entry if isinstance(entry, tuple) else (entry, None))
    return items


@functools.cache
def _assigner_pair(force_field, cache: bool, strict: bool) -> tuple:
    return tuple(SmirksAssigner(force_field, cache=cache, strict=strict) for _ in range(2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.integers(0, len(_BATCH_POOL) - 1), max_size=12),
    cache=st.booleans(),
    strict=st.booleans(),
    warm=st.integers(0, 3),
)
def test_batch_equals_assign_one_by_one(sage, picks, cache, strict, warm):
    # Same results, same first error (position, type, text), same cache and counters.
    items = _pool_items(picks)
    # One pair of assigners per option, emptied (cache and counters) for each example:
    # building two per example compiled Sage 120 times, 112 s of this test under load.
    one, batch = _assigner_pair(sage.force_field, cache, strict)
    for a in (one, batch):
        a.clear_cache()
        assert _state(a) == (0, 0, {}, {})
    for a in (one, batch):  # some molecules cached beforehand
        for smiles in ("CO", "OCC", "c1ccccc1O")[:warm]:
            a.assign(smiles)
    expected = _one_by_one(one, items)
    got = _batched(batch, items)
    assert got == expected
    assert [r.name for r in got[0]] == [r.name for r in expected[0]]
    assert _state(batch) == _state(one)


def test_batch_equals_assign_on_drug_like_molecules(sage):
    from tying.chem.generate import drug_like_smiles

    smiles = drug_like_smiles(150, seed=4)
    items = [(s, None) for s in smiles + smiles[:10]] + [(s, "again") for s in smiles[5:15]]
    one = SmirksAssigner(sage.force_field)
    batch = SmirksAssigner(sage.force_field)
    expected = _one_by_one(one, items)
    got = _batched(batch, items)
    assert got == expected and got[1] is None
    assert _state(batch) == _state(one)


# -- the garbage collector is held off while a batch is labelled (assign.gc_paused) --------


def _gc_seen_during_batches(assigner, monkeypatch) -> list[bool]:
    """Record gc.isenabled() from inside each batch (at its pre-filter stage)."""
    import gc

    seen: list[bool] = []
    inner = assigner._candidates_of

    def spy(*args):
        seen.append(gc.isenabled())
        return inner(*args)

    monkeypatch.setattr(assigner, "_candidates_of", spy)
    return seen


def test_gc_is_off_inside_a_batch_and_back_on_after(sage, monkeypatch):
    import gc

    assigner = SmirksAssigner(sage.force_field)
    seen = _gc_seen_during_batches(assigner, monkeypatch)
    assert gc.isenabled()
    assigner.assign_many(["CCO", "c1ccccc1O"])
    assigner.assign("CCN")
    assert seen == [False, False, False] and gc.isenabled()
    # A failing batch switches it back on too.
    with pytest.raises(SmilesError, match="cannot parse SMILES"):
        assigner.assign_many(["CCC", "C1CC"])
    assert gc.isenabled()


def test_gc_left_off_by_the_caller_stays_off(sage):
    import gc

    gc.disable()
    try:
        SmirksAssigner(sage.force_field).assign_many(["CCO"])
        assert not gc.isenabled()
    finally:
        gc.enable()


def _thread_held_inside_a_batch(sage, monkeypatch):
    """A started thread labelling "CCO", held inside its batch until ``release`` is set."""
    import threading

    entered, release = threading.Event(), threading.Event()
    held = SmirksAssigner(sage.force_field)
    inner = held._candidates_of

    def wait_inside(*args):
        entered.set()
        assert release.wait(30)
        return inner(*args)

    monkeypatch.setattr(held, "_candidates_of", wait_inside)
    thread = threading.Thread(target=held.assign_many, args=(["CCO"],))
    thread.start()
    return thread, entered, release


def test_gc_comes_back_only_when_the_last_thread_leaves_its_batch(sage, monkeypatch):
    # Thread A is held inside a batch while thread B runs a whole one: B must not switch
    # the collector back on under A, and A's end must.
    import gc

    from tying.chem import gc_pause

    thread, entered, release = _thread_held_inside_a_batch(sage, monkeypatch)
    try:
        assert entered.wait(30)
        SmirksAssigner(sage.force_field).assign_many(["CCN"])
        assert not gc.isenabled()
    finally:
        release.set()
        thread.join(30)
    assert gc.isenabled() and gc_pause._GC_DEPTH == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")
def test_a_child_forked_during_a_batch_gets_the_collector_back(sage, monkeypatch):
    # A process forked (a user's fork-started Pool) while another thread is inside a
    # batch: in the child that batch never ends, so nothing would switch gc back on.
    import gc

    thread, entered, release = _thread_held_inside_a_batch(sage, monkeypatch)
    try:
        assert entered.wait(30)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's teardown
            from tying.chem.assign import gc_paused

            with gc_paused():
                pass
            os.write(write, b"1" if gc.isenabled() else b"0")
            os._exit(0)
        os.close(write)
        child_gc = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert not gc.isenabled()  # the parent's batch is still running
    finally:
        release.set()
        thread.join(30)
    assert child_gc == b"1" and gc.isenabled()


def test_batch_too_large_for_term_codes_is_labelled_one_by_one(sage, monkeypatch):
    # A batch whose term codes (molecule, then atoms, in base atoms + 1) would not fit
    # an int64 takes _assign_scanned molecule by molecule: the same results and errors.
    from tying.chem import batch_arrays
    from tying.chem.generate import drug_like_smiles

    items = [(s, None) for s in drug_like_smiles(20, seed=9)] + [("[Xe]", None)]
    expected = _one_by_one(SmirksAssigner(sage.force_field), items)
    monkeypatch.setattr(batch_arrays, "_CODE_LIMIT", 1000)
    calls = []
    batch = SmirksAssigner(sage.force_field)
    original = batch._assign_arrays_one_by_one
    monkeypatch.setattr(
        batch, "_assign_arrays_one_by_one", lambda *a: calls.append(1) or original(*a)
    )
    assert _batched(batch, items) == expected
    assert calls


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1) | st.integers(0, 300), max_size=20))
def test_packed_buffers_from_arrays_are_the_columns_buffers(values):
    # _assign_arrays' buffers: the type and contents packed.columns would choose.
    import numpy as np

    from tying.chem.packed import _buffer, _smallest

    got, expected = _buffer(np.array(values, dtype=np.intp)), _smallest(values)
    assert type(got) is type(expected) and list(got) == list(expected)
    assert getattr(got, "typecode", None) == getattr(expected, "typecode", None)


def test_batches_of_a_force_field_with_a_section_none_of_whose_patterns_is_decided(tmp_path):
    # Bonds only of shapes the chain table leaves to RDKit (an untagged atom, a ring
    # closure), and a vdW section it decides: assign_many's arrays (a section with no
    # decided pattern, terms only from RDKit's matches) equal the reference search.
    bonds = [bond("[#6:1]-[#6:2]-[#1]", "cc-h"), bond("[#6:1]-[#8:2]-[#1]", "co-h"),
             bond("[#6:1]~[#6:2]~[*]", "any-cc"), bond("[#6:1]1~[#6:2]~[#6]~[#6]~[#6]~[#6]1", "ring")]  # fmt: skip
    assigner = SmirksAssigner(write_offxml(tmp_path, bonds), strict=False)
    assert not assigner._chain.decided[: len(bonds)].any()
    molecules = ["CCO", "c1ccccc1CO", "C1CCCCC1", "OCC(O)CO", "C#CC", "O"]
    packed = assigner.assign_many(molecules)
    assigner._tabled = False
    assert packed == assigner.assign_many(molecules)
    assert packed[1].bonds[(0, 1)].id == "ring" and packed[0].bonds[(0, 1)].id == "any-cc"


# -- Stop 32: sections, flags, absent sections and counts are checked, not read silently ----


def test_sections_given_as_an_iterator_are_all_assigned():
    # The check for unknown names used the iterator up: no section was assigned, and
    # every molecule came back with no terms at all, without an error.
    a = SmirksAssigner("openff-2.3.0", sections=iter(["Bonds", "vdW"]))
    assert a.sections == ("Bonds", "vdW")
    labelled = a.assign("CCO")
    assert len(labelled.bonds) == 8 and len(labelled.vdw) == 9


@pytest.mark.parametrize(
    ("sections", "error", "message"),
    [
        ([], ValueError, r"sections is empty, so no term would be assigned; .*sections=None"),
        (iter([]), ValueError, r"sections is empty"),
        (["vdW", "Bonds", "vdW"], ValueError, r"sections lists vdW more than once"),
        (["Bonds", None], ValueError, r"cannot assign sections \[None\]"),
    ],
)
def test_empty_or_repeated_sections_are_refused(sections, error, message):
    with pytest.raises(error, match=message):
        SmirksAssigner("openff-2.3.0", sections=sections)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strict": "False"}, r"strict must be True or False, got str: 'False'"),
        ({"strict": None}, r"strict must be True or False, got NoneType: None"),
        ({"strict": 0}, r"strict must be True or False, got int: 0"),
        ({"cache": "no"}, r"cache must be True or False, got str: 'no'"),
    ],
)
def test_flags_that_are_not_bools_are_refused(kwargs, message):
    # strict="False" was true (strict), strict=None false: missing parameters unreported.
    with pytest.raises(TypeError, match=message):
        SmirksAssigner("openff-2.3.0", **kwargs)


def test_a_section_that_was_not_labelled_is_not_an_empty_one():
    # .angles of a molecule labelled with sections=["Bonds"] (or by a water model, vdW
    # only) was {}: ethanol read as having no angles, silently.
    bonds_only = SmirksAssigner("openff-2.3.0", sections=["Bonds"]).assign("CCO")
    assert len(bonds_only.bonds) == 8
    for read in (
        lambda: bonds_only.angles,
        lambda: bonds_only.propers,
        lambda: bonds_only.impropers,
        lambda: bonds_only.vdw,
        lambda: bonds_only.ids("Angles"),
    ):
        with pytest.raises(KeyError, match=r"has no \w+ section: it was labelled with sections"):
            read()
    water = SmirksAssigner("tip3p").assign("O")
    assert water.vdw[(0,)].id == "n-tip3p-O"
    with pytest.raises(KeyError, match=r"\(tip3p\) has no Bonds section.*<Bonds> section"):
        _ = water.bonds
    # A labelled section without terms is still an empty mapping.
    assert dict(SmirksAssigner("openff-2.3.0").assign("[Na+]").bonds) == {}


def test_count_unique_parameters_refuses_mixed_force_fields_and_non_assignments(sage):
    # Ids name parameters within one force field: b1 of openff-1.0.0 and of openff-2.3.0
    # were counted as one parameter (6 bonds for two ethanols instead of 4 + 4).
    parsley = SmirksAssigner("openff-1.0.0").assign("CCO")
    with pytest.raises(ValueError, match=r"item 1 was labelled with 'openff-1.0.0', the ones"):
        count_unique_parameters([sage.assign("CCO"), parsley])
    with pytest.raises(TypeError, match=r"got the str 'CCO', which would be read one character"):
        count_unique_parameters("CCO")
    with pytest.raises(TypeError, match=r"expected an iterable of Assignments, got Assignment"):
        count_unique_parameters(parsley)
    with pytest.raises(TypeError, match=r"item 0 is a str, not an Assignment"):
        count_unique_parameters(["CCO"])
    counts = count_unique_parameters(sage.assign(s) for s in ("CC", "CO"))
    assert counts["Bonds"] == 4 and count_unique_parameters([]) == {"total": 0}


def test_count_unique_parameters_refuses_assignments_labelled_with_other_sections(sage):
    # Stop 35: a section labelled for some molecules only was counted over those only:
    # a Bonds-only ethanol with a full propanol gave 2 angle and 2 vdW parameters for the
    # pair (total 10) where labelling both gives 3 and 5 (total 17), with no error.
    from tying.chem import SECTIONS

    bonds_only = SmirksAssigner(sage.force_field, sections=["Bonds"])
    with pytest.raises(
        ValueError,
        match=r"item 1 was labelled with sections \['Bonds', 'Angles', 'ProperTorsions', "
        r"'ImproperTorsions', 'vdW'\], the ones before with \['Bonds'\]; a section labelled "
        r"for some molecules only would be counted over those only; label every molecule",
    ):
        count_unique_parameters([bonds_only.assign("CCO"), sage.assign("CCC")])
    with_constraints = SmirksAssigner(sage.force_field, sections=(*SECTIONS, "Constraints"))
    with pytest.raises(ValueError, match=r"item 2 was labelled with sections \[.*'Constraints'"):
        count_unique_parameters([sage.assign("O"), sage.assign("CC"), with_constraints.assign("C")])
    # The same sections in another order, and molecules without bonds, still count.
    reordered = SmirksAssigner(sage.force_field, sections=list(reversed(SECTIONS)))
    both = count_unique_parameters(
        [sage.assign("CCO"), reordered.assign("CCC"), sage.assign("[Na+]")]
    )
    assert (
        both["total"] == count_unique_parameters(sage.assign_many(["CCO", "CCC", "[Na+]"]))["total"]
    )


def test_count_unique_parameters_refuses_one_id_naming_two_parameters(tmp_path):
    # Two force fields of one name (the file's stem): b2 is C-O in one and C-C in the
    # other, and the two were counted as one parameter (2 bonds instead of 3).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_offxml(tmp_path / "a", [bond("[*:1]~[*:2]", "b1"), bond("[#6:1]-[#8:2]", "b2")],
                         name="mine")  # fmt: skip
    second = write_offxml(tmp_path / "b", [bond("[*:1]~[*:2]", "b1"), bond("[#6:1]-[#6:2]", "b2")],
                          name="mine")  # fmt: skip
    labelled = [SmirksAssigner(p, sections=["Bonds"]).assign("CCO") for p in (first, second)]
    assert labelled[0].force_field == labelled[1].force_field == "mine"
    with pytest.raises(ValueError, match=r"item 1 \(mine\) uses Bonds 'b2' = \[#6:1\]-\[#6:2\], "
                       r"but an earlier item's 'b2' is \[#6:1\]-\[#8:2\] with length=1.5 angstrom"
                       r".* count each force field's assignments separately"):  # fmt: skip
        count_unique_parameters(labelled)
    # The same content read from two paths is one force field: counted as before.
    copy = tmp_path / "b" / "copy" / "mine.offxml"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    again = SmirksAssigner(copy, sections=["Bonds"]).assign("CCO")
    assert count_unique_parameters([labelled[0], again]) == {"Bonds": 2, "total": 2}
