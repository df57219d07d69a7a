"""Queries renumbered rarest atom first (tying.chem.search_order): the same matches (issue 19)."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rdkit import Chem  # noqa: E402

from tying.chem import load_force_field, load_molecule_set, molecule_from_smiles  # noqa: E402
from tying.chem.assign import SECTIONS, _match_parameters  # noqa: E402
from tying.chem.generate import drug_like_smiles  # noqa: E402
from tying.chem.offxml import Parameter  # noqa: E402
from tying.chem.search_order import anchored, anchored_smarts, reordered, search_order  # noqa: E402
from tying.chem.smirks import compile_section, compile_smirks  # noqa: E402

from .test_assign import EDGE_CASES  # noqa: E402

MOLECULES = [s for s, _ in load_molecule_set()[::6]] + drug_like_smiles(30, seed=8) + EDGE_CASES
PARAMS = _match_parameters(chirality=True, recursion=True)


def _patterns(force_field):
    ff = load_force_field(force_field)
    return [c for s in SECTIONS if s in ff.sections for c in compile_section(ff, s)]


@pytest.fixture(scope="module", params=["openff-2.3.0", "openff-1.0.0"])
def patterns(request):
    return _patterns(request.param)


@pytest.fixture(scope="module")
def molecules():
    return [molecule_from_smiles(s) for s in MOLECULES]


def _back(matches, query_order):
    """Matches of a renumbered query, written in the atom order of the pattern as written."""
    return {tuple(m[query_order.index(i)] for i in range(len(query_order))) for m in matches}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_renumbered_query_finds_the_same_matches(patterns, molecules, data):
    c = data.draw(st.sampled_from(patterns))
    picked = data.draw(st.lists(st.sampled_from(molecules), min_size=1, max_size=6))
    query, tagged = reordered(c)
    order = search_order(c) if query is not c.query else tuple(range(c.query.GetNumAtoms()))
    assert [order[t] for t in tagged] == list(c.tagged)  # the same atoms carry the tags
    for mol in picked:
        written = set(mol.GetSubstructMatches(c.query, PARAMS))
        assert _back(mol.GetSubstructMatches(query, PARAMS), order) == written


def test_every_pattern_on_every_molecule_finds_the_same_matches(patterns, molecules):
    renumbered = 0
    for c in patterns:
        query, _ = reordered(c)
        if query is c.query:
            continue
        renumbered += 1
        order = search_order(c)
        for mol in molecules:
            written = set(mol.GetSubstructMatches(c.query, PARAMS))
            assert _back(mol.GetSubstructMatches(query, PARAMS), order) == written, c.parameter
    assert renumbered > 0.5 * len(patterns)


def test_the_rarest_atom_comes_first_and_the_order_stays_connected():
    c = compile_smirks(
        Parameter("ProperTorsions", "x", "[*:1]~[#6X4:2]-[#16X4:3]~[#1:4]", 0, {}), valence=4
    )
    order = search_order(c)
    assert order[0] == 2  # sulfur, then the carbon bonded to it, then the rest
    assert order[1] == 1
    bonded = {frozenset((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in c.query.GetBonds()}
    for k in range(1, len(order)):
        assert any(frozenset((order[k], j)) in bonded for j in order[:k])


def test_stereo_patterns_keep_their_query():
    for smirks in ("[#6:1]/[#6:2]=[#6:3]/[#1:4]", "[#1:1]-[#6@:2](-[#8])(-[#7])-[#6]"):
        valence = 4 if "/" in smirks else 2
        c = compile_smirks(Parameter("X", "s", smirks, 0, {}), valence=valence)
        assert reordered(c) == (c.query, c.tagged)


# -- recursive SMARTS started from their carrier atom's primitives (search_order.anchored) --


def test_every_anchored_pattern_on_every_molecule_finds_the_same_matches(patterns, molecules):
    rewritten = 0
    for c in patterns:
        a = anchored(c)
        if a is c:
            continue
        rewritten += 1
        assert a.parameter is c.parameter and a.tagged == c.tagged and a.atoms == c.atoms
        for mol in molecules:
            assert mol.GetSubstructMatches(a.query, PARAMS) == mol.GetSubstructMatches(
                c.query, PARAMS
            ), c.parameter
        # and renumbered rarest atom first, as the assigner searches it
        query, tagged = reordered(a)
        order = search_order(a) if query is not a.query else tuple(range(a.query.GetNumAtoms()))
        assert [order[t] for t in tagged] == list(c.tagged)
        for mol in molecules:
            written = set(mol.GetSubstructMatches(c.query, PARAMS))
            assert _back(mol.GetSubstructMatches(query, PARAMS), order) == written, c.parameter
    assert rewritten >= 10  # openff-2.3.0: 19 patterns, openff-1.0.0: 15


@pytest.mark.parametrize(
    "smarts, expected",
    [
        ("[#1:1]-[#6X3$(*=[#8]):2]", "[#1:1]-[#6X3$([#6X3]=[#8]):2]"),
        ("[#7&X3&$(*~[#6])&$(*-[#1]):1]", "[#7&X3$([#7&X3]~[#6])$([#7&X3]-[#1]):1]"),
        # only the outer level is rewritten; the inner recursion stays as written
        ("[#7X3$(*~[#6X3$(*=O)])]", "[#7X3$([#7X3]~[#6X3$(*=O)])]"),
        ("[#6X3,#7$(*=[#8]):1]", "[#6X3,#7$(*=[#8]):1]"),  # OR outside: unchanged
        ("[#6;X3$(*=[#8]):1]", "[#6;X3$(*=[#8]):1]"),  # low-precedence AND: unchanged
        ("[!#1$(*=[#8]):1]", "[!#1$(*=[#8]):1]"),  # NOT: unchanged
        ("[$(*~[#8])H1:1]", "[$(*~[#8])H1:1]"),  # starts with the recursion: unchanged
        ("[#6$([#6]=O):1]", "[#6$([#6]=O):1]"),  # recursion not starting with *: unchanged
        ("[$(*~[#8]):1]", "[$(*~[#8]):1]"),  # nothing to anchor to
        ("[#6:1]-[#8:2]", "[#6:1]-[#8:2]"),
    ],
)
def test_anchored_smarts_rewrites_only_a_plain_conjunction(smarts, expected):
    assert anchored_smarts(smarts) == expected


_PRIMITIVES = ["#6", "#7", "#8", "#16", "X1", "X2", "X3", "X4", "H0", "H1", "H2", "+0", "-1", "a", "A", "R", "R0", "r5", "r6"]  # fmt: skip
_RECURSIVE = ["*~[#8]", "*=[#8,#16]", "*-[#1]", "*@[#7]", "*~[#6X3]~[#8X1]", "*(~[#6])~[#6]", "*:[#7X2]", "*-[#6X4]-[#7]", "*@1-[*]=,:[*][*]=,:[*]@1"]  # fmt: skip
_NEIGHBOURS = ["[*:2]", "[#1:2]", "[#6:2]", "[#6X3:2]", "[#7,#8:2]"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prims=st.lists(st.sampled_from(_PRIMITIVES), min_size=1, max_size=3),
    recursive=st.lists(st.sampled_from(_RECURSIVE), min_size=1, max_size=2),
    joiner=st.sampled_from(["", "&"]),
    bond=st.sampled_from(["-", "~", "=", ":", "@"]),
    neighbour=st.sampled_from(_NEIGHBOURS),
    picked=st.lists(st.integers(0, len(MOLECULES) - 1), min_size=1, max_size=5),
)
def test_anchoring_any_conjunction_never_changes_a_match_set(
    molecules, prims, recursive, joiner, bond, neighbour, picked
):
    # The hypothesis property behind anchored: P & $(*R) matches exactly where
    # P & $([P]R) does, for random primitives P and recursive patterns R, as the
    # tagged atom of a two-atom pattern and on its own.
    atom = "[" + joiner.join(prims) + "".join(f"&$({r})" for r in recursive) + ":1]"
    for smarts in (atom, atom + bond + neighbour):
        original = Chem.MolFromSmarts(smarts)
        rewritten = Chem.MolFromSmarts(anchored_smarts(smarts))
        assert rewritten is not None, anchored_smarts(smarts)
        assert anchored_smarts(smarts) != smarts
        for k in picked:
            mol = molecules[k]
            assert mol.GetSubstructMatches(rewritten, PARAMS) == mol.GetSubstructMatches(
                original, PARAMS
            ), (smarts, anchored_smarts(smarts))


# Carriers whose primitives change meaning when moved or glued (review of stop 17):
# text after a recursion glued onto the text before it ("+" and "+" became "++",
# charge +2), a leading "H" ("one hydrogen" beside a recursion, a hydrogen atom alone),
# and a chiral carrier (its "@" reads the neighbours in the order the recursion writes them).
_MEANING_CHANGES = [
    "[#7+$(*~[#8])+:1]",
    "[+$(*~[#8])+:1]",
    "[D$(*~[#8])3:1]",
    "[R$(*~[#8])2:1]",
    "[H$(*~[#8]):1]",
    "[C@H$(*(F)(Cl)Br):1]",
    "[#6@$(*(-F)(-Cl)-Br):1]",
]
_TRICKY = ["O=[N+]([O-])c1ccccc1", "[O-][N+]#N", "OC1CC1", "OO", "C=C[O-]", "OCC(=O)[O-]",
           "F[C@H](Cl)Br", "F[C@@H](Cl)Br", "C[C@@](F)(Cl)Br"]  # fmt: skip


@pytest.mark.parametrize("smarts", _MEANING_CHANGES)
def test_anchoring_never_changes_what_a_carrier_means(smarts):
    original = Chem.MolFromSmarts(smarts)
    rewritten = Chem.MolFromSmarts(anchored_smarts(smarts))
    assert rewritten is not None, anchored_smarts(smarts)
    for smiles in _TRICKY:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        assert mol.GetSubstructMatches(rewritten, PARAMS) == mol.GetSubstructMatches(
            original, PARAMS
        ), (smarts, anchored_smarts(smarts), smiles)


@pytest.mark.parametrize(
    "smarts, expected",
    [
        # a primitive after the recursion stays its own primitive
        ("[#7+$(*~[#8])+:1]", "[#7+&+$([#7+&+]~[#8]):1]"),
        ("[#6$(*~[#8])X3:1]", "[#6&X3$([#6&X3]~[#8]):1]"),
        ("[H$(*~[#8]):1]", "[H$(*~[#8]):1]"),  # "H" up front alone is a hydrogen atom
        ("[C@H$(*(F)(Cl)Br):1]", "[C@H$(*(F)(Cl)Br):1]"),  # chirality: unchanged
    ],
)
def test_anchored_smarts_keeps_each_primitive_whole(smarts, expected):
    assert anchored_smarts(smarts) == expected


_AFTER = ["", "X3", "+", "-", "H1", "H", "D3", "R", "2", "+0", "@", "@@"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prims=st.lists(
        st.sampled_from(_PRIMITIVES + ["H", "+", "-", "D2", "@", "C", "c", "N"]),
        min_size=1,
        max_size=3,
    ),  # fmt: skip
    recursive=st.lists(
        st.sampled_from(_RECURSIVE + ["*(F)(Cl)Br", "*(-[#1])(-[#6])-[#8]"]), min_size=1, max_size=2
    ),  # fmt: skip
    after=st.sampled_from(_AFTER),
    picked=st.lists(st.integers(0, len(MOLECULES) + len(_TRICKY) - 1), min_size=1, max_size=5),
)
def test_anchoring_primitives_on_either_side_never_changes_a_match_set(
    molecules, prims, recursive, after, picked
):
    # Primitives before and after the recursive parts, glued ("" between them) as
    # SMARTS allows, leading "H", charges and chirality included.
    atom = "[" + "".join(prims) + "".join(f"$({r})" for r in recursive) + after + ":1]"
    original = Chem.MolFromSmarts(atom)
    if original is None:  # not SMARTS; the assigner refuses it before anchoring
        return
    rewritten = Chem.MolFromSmarts(anchored_smarts(atom))
    assert rewritten is not None, anchored_smarts(atom)
    tricky = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in _TRICKY]
    for k in picked:
        mol = (molecules + tricky)[k]
        assert mol.GetSubstructMatches(rewritten, PARAMS) == mol.GetSubstructMatches(
            original, PARAMS
        ), (atom, anchored_smarts(atom))


def test_the_stored_atom_frequencies_equal_a_fresh_count_of_the_shipped_file():
    import hashlib

    from tying.chem import _atom_frequencies
    from tying.chem.molecules import data_path
    from tying.chem.search_order import atom_frequencies, count_atom_frequencies

    digest = hashlib.sha256(data_path("molecules.smi").read_bytes()).hexdigest()
    assert _atom_frequencies.SOURCE_SHA256 == digest  # else: re-count (see that module)
    assert _atom_frequencies.FREQUENCIES == count_atom_frequencies()
    assert atom_frequencies() is _atom_frequencies.FREQUENCIES


def test_atom_frequencies_are_counted_when_the_shipped_file_is_not_the_stored_ones(monkeypatch):
    from tying.chem import _atom_frequencies
    from tying.chem.search_order import atom_frequencies, count_atom_frequencies

    stale = (((6, 4, 3, 0, False, False, ()), 1),)  # a table that no longer fits its file
    monkeypatch.setattr(_atom_frequencies, "FREQUENCIES", stale)
    monkeypatch.setattr(_atom_frequencies, "SOURCE_SHA256", "0" * 64)
    atom_frequencies.cache_clear()
    try:
        assert atom_frequencies() == count_atom_frequencies() != stale
    finally:
        atom_frequencies.cache_clear()
