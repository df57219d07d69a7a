"""Compiling SMIRKS (once per force field, clear errors) and the soundness of the pre-filter."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import (  # noqa: E402
    SmirksAssigner,
    SmirksError,
    compile_section,
    load_force_field,
    load_molecule_set,
    molecule_from_smiles,
)
from tying.chem.offxml import Parameter  # noqa: E402
from tying.chem.smirks import (  # noqa: E402
    Prefilter,
    compile_smirks,
    evaluate,
    parse_atom_query,
    parse_bond_query,
    scan_heavy,
)

from .helpers import bond, write_offxml  # noqa: E402

C_SP3 = (6, 4, 3, 0, False, False)  # methyl carbon
C_AR = (6, 3, 1, 0, True, True)  # benzene carbon
H = (1, 1, 0, 0, False, False)
O_MINUS = (8, 1, 0, -1, False, False)


def test_each_pattern_is_compiled_once_per_force_field():
    ff = load_force_field("openff-2.3.0")
    assert compile_section(ff, "Bonds") is compile_section(ff, "Bonds")
    assert SmirksAssigner(ff)._compiled["Bonds"] is SmirksAssigner(ff)._compiled["Bonds"]


def test_malformed_smirks_names_its_id():
    p = Parameter("Bonds", "b-broken", "[#6X4:1]-[#6X4:2", 0, {})
    with pytest.raises(
        SmirksError, match=r"Bonds parameter 'b-broken': RDKit cannot parse its SMIRKS"
    ):
        compile_smirks(p, valence=2, force_field="my-ff")


def test_malformed_smirks_in_a_force_field_file(tmp_path):
    path = write_offxml(
        tmp_path, [bond("[#6:1]-[#6:2]", "b1"), bond("[#6:1]-[#8:2", "b-typo")], name="typo-ff"
    )
    with pytest.raises(SmirksError, match=r"typo-ff Bonds parameter 'b-typo'.*\[#6:1\]-\[#8:2"):
        SmirksAssigner(path)


def test_wrong_tags_are_refused():
    three = Parameter("Bonds", "b-3", "[#6:1]-[#6:2]-[#6:3]", 0, {})
    with pytest.raises(SmirksError, match=r"has tags \[1, 2, 3\], expected \[1, 2\]"):
        compile_smirks(three, valence=2)
    apart = Parameter("Angles", "a-apart", "[#6:1]-[#6:3]-[#6:2]", 0, {})
    with pytest.raises(SmirksError, match="tags :1 and :2 are not bonded"):
        compile_smirks(apart, valence=3)
    improper = Parameter("ImproperTorsions", "i-x", "[*:1]~[*:2]~[*:3]~[*:4]", 0, {})
    with pytest.raises(SmirksError, match="tags :2 and :4 are not bonded"):
        compile_smirks(improper, valence=4)


@pytest.mark.parametrize(
    ("smarts", "sig", "expected"),
    [
        ("[#6&X4:1]", C_SP3, True),
        ("[#6&X4:1]", C_AR, False),
        ("[!#1:1]", H, False),
        ("[!#1:1]", C_AR, True),
        ("[#6&X3,#7:2]", C_AR, True),
        ("[#6&a:3]", C_SP3, False),
        ("[#8&X1&-:2]", O_MINUS, True),
        ("[#8&X1&+0]", O_MINUS, False),
        ("[#6&X4&H3]", C_SP3, True),
        ("[#6&R]", C_SP3, False),
        ("[#6&$(*~[#8]):1]", C_SP3, None),  # recursive SMARTS: undecided, so never excluded
        ("[#6&$(*~[#8]):1]", H, False),  # ... unless another primitive decides
        ("[#6&r6]", C_SP3, None),
        # Ring sizes (7th field: sizes of the SSSR rings holding the atom) rule r<n> out
        # only when the atom is in no ring of that size; otherwise undecided.
        ("[*;r3:2]", (*C_SP3, ()), False),
        ("[*;r3:2]", (*C_SP3, (5, 6)), False),
        ("[*;r3:2]", (*C_SP3, (3,)), None),
        ("[#6;!r3:2]", (*C_SP3, (6,)), True),
        ("[#6;r5]", (*C_AR, (5, 6)), None),
        ("*", H, None),
        ("c", C_AR, True),
        ("C", C_AR, False),
    ],
)
def test_three_valued_atom_predicates(smarts, sig, expected):
    assert evaluate(parse_atom_query(smarts), sig) is expected


@pytest.mark.parametrize(
    ("smarts", "sig", "expected"),
    [
        ("-", (1, False), True),
        ("-", (4, True), False),
        ("", (4, True), True),
        ("", (2, False), False),
        ("=,:", (2, True), True),
        ("-&!@", (1, True), False),
        ("@", (1, False), False),
        ("~", (3, False), None),
    ],
)
def test_three_valued_bond_predicates(smarts, sig, expected):
    assert evaluate(parse_bond_query(smarts), sig) is expected


def _unsound(force_field: str, molecules) -> tuple[int, int, list[str]]:
    """Patterns the pre-filter skipped although RDKit finds a match (must be none)."""
    assigner = SmirksAssigner(force_field, strict=False)
    flat, params = assigner._flat, assigner._match_params
    prefilter = Prefilter(flat)
    skipped = total = 0
    wrong = []
    for smiles, name in molecules:
        mol = molecule_from_smiles(smiles)
        keep = set(prefilter.candidates(mol))
        for i, compiled in enumerate(flat):
            total += 1
            if i not in keep:
                skipped += 1
                if mol.GetSubstructMatches(compiled.query, params):
                    wrong.append(f"{name}: {compiled.parameter.id}")
    return skipped, total, wrong


@pytest.mark.parametrize("force_field", ["openff-2.3.0", "openff-1.0.0"])
def test_prefilter_never_drops_a_match_subset(force_field):
    skipped, total, wrong = _unsound(force_field, load_molecule_set()[::6])
    assert wrong == []
    assert skipped > 0.6 * total  # and it does skip most searches


@pytest.mark.parametrize("seed", [0, 7])
def test_prefilter_never_drops_a_match_on_generated_molecules(seed):
    from tying.chem.generate import drug_like_smiles

    molecules = [(s, s) for s in drug_like_smiles(60, seed=seed)]
    skipped, total, wrong = _unsound("openff-2.3.0", molecules)
    assert wrong == []
    assert skipped > 0.6 * total


def test_neighbour_counts_rule_patterns_out():
    # [#1:1]-[#6X3:2]-[#1:3] needs an sp2 carbon with two hydrogens (=CH2): benzene has
    # sp2 carbons and C-H bonds, but no such carbon.
    from tying.chem.smirks import possible_elements

    c = compile_smirks(Parameter("Angles", "a", "[#1:1]-[#6X3:2]-[#1:3]", 0, {}), valence=3)
    prefilter = Prefilter([c])
    assert prefilter.candidates(molecule_from_smiles("c1ccccc1")) == []
    assert prefilter.candidates(molecule_from_smiles("C=C")) == [0]
    assert possible_elements(parse_atom_query("[#6&X4,#7&X3:1]")) == {6, 7}
    assert possible_elements(parse_atom_query("[!#1:1]")) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "force_field", ["openff-2.3.0", "openff-2.0.0", "openff-1.3.0", "openff-1.0.0"]
)
def test_prefilter_never_drops_a_match_full_set(force_field):
    skipped, total, wrong = _unsound(force_field, load_molecule_set())
    assert wrong == []


def _fast_and_plain(force_field: str, molecules) -> int:
    """Check that the scan's candidates and counts equal the plain per-atom ones."""
    from tying.chem.assign import _term_counts
    from tying.chem.molecules import parse_smiles

    prefilter = Prefilter(SmirksAssigner(force_field, strict=False)._flat)
    checked = 0
    for smiles in molecules:
        mol, n_written = parse_smiles(smiles)
        if n_written is None:
            continue
        scan = scan_heavy(mol, n_written)
        n_atoms = mol.GetNumAtoms()
        assert prefilter.candidates_of(scan, n_atoms) == prefilter.candidates(mol), smiles
        plain = Prefilter.signatures(mol)
        assert scan.sigs == plain[:n_written], smiles
        assert scan.symbols == [a.GetSymbol() for a in mol.GetAtoms()][:n_written]
        counts = _term_counts(mol)
        assert scan.three_ring == (counts is None), smiles
        if counts is not None:
            d = scan.degrees
            assert sum(x * (x - 1) // 2 for x in d) == counts["Angles"], smiles
            propers = sum((d[j] - 1) * (d[k] - 1) for j, k, _, _ in scan.bonds)
            assert propers == counts["ProperTorsions"], smiles
        checked += 1
    return checked


@pytest.mark.parametrize("force_field", ["openff-2.3.0", "openff-1.0.0"])
def test_scan_gives_the_plain_candidates(force_field):
    from tying.chem.generate import drug_like_smiles

    molecules = [s for s, _ in load_molecule_set()] + drug_like_smiles(200, seed=3)
    molecules += ["C1CC1", "[Na+].[Cl-]", "O", "C#N", "C[N+](C)(C)C.[Cl-]", "[O-][N+](=O)C"]
    assert _fast_and_plain(force_field, molecules) > 0.9 * len(molecules)


def test_recursive_smarts_rule_out_only_when_required():
    # A required $(...) needs its atoms and bonds somewhere in the molecule; one in a
    # branch of an OR does not (regression: openff-1.0.0 t75 on DMAP).
    required = compile_smirks(
        Parameter("Bonds", "r", "[#7X3$(*~[#8X1]):1]-[#6:2]", 0, {}), valence=2
    )
    branch = compile_smirks(
        Parameter("Bonds", "o", "[#7X2,#7X3$(*~[#8X1]):1]~[#6:2]", 1, {}), valence=2
    )
    prefilter = Prefilter([required, branch])
    amine, pyridine = molecule_from_smiles("CN(C)C"), molecule_from_smiles("c1ccncc1")
    assert prefilter.candidates(amine) == [1]  # no O X1 anywhere: only the OR one is kept
    assert prefilter.candidates(pyridine) == [1]
    assert pyridine.GetSubstructMatches(branch.query)  # and the kept one does match
    nitro = molecule_from_smiles("C[N+](=O)[O-]")
    assert prefilter.candidates(nitro) == [0, 1] and nitro.GetSubstructMatches(required.query)


@pytest.mark.parametrize(
    "smarts, expected",
    [
        ("#6X4", ([], ["#6X4"])),
        ("#7$(*~[#6]($(*=O)))X3:2", (["*~[#6]($(*=O))"], ["#7", "X3:2"])),
        ("$(*=O)$(*-N)", (["*=O", "*-N"], ["", "", ""])),
        ("#7$(*~[#6]", None),  # never closed
    ],
)
def test_split_recursive_cuts_at_the_top_level_parts_only(smarts, expected):
    # The one splitter of the pre-filter (_recursive_parts) and of anchoring (search_order).
    from tying.chem.smirks import split_recursive

    assert split_recursive(smarts) == expected


@pytest.mark.parametrize(
    "smirks",
    ["[2#1:1]", "[#6;13:1]", "[13C,#7:1]", "[!2#1:1]", "[#6:1]-[$(*-[2#1]):2]-[#8]"],
)
def test_isotope_patterns_are_refused(smirks):
    # Stop 32: the OpenFF toolkit's molecules carry no isotopes, so [2#1:1] labelled
    # deuterium here and nothing there (a deuterated methanol's H: ours nD, theirs n12).
    valence = 1 if smirks.count(":") == 1 else None
    p = Parameter("vdW", "nD", smirks, 0, {})
    with pytest.raises(SmirksError, match=r"vdW parameter 'nD': SMIRKS .* tests an isotope mass"):
        compile_smirks(p, valence=valence, force_field="iso")


def test_patterns_without_isotopes_still_compile():
    for smirks in ("[#1:1]", "[#6X4:1]-[#1:2]", "[#6:1]-,:1CC1", "[$(*~[#8]):1]"):
        compile_smirks(Parameter("vdW", "n", smirks, 0, {}), force_field="plain")


def test_tag_errors_give_the_section_its_article():
    # Stop 36: the messages read "a Angles parameter", "a ImproperTorsions term".
    angle = Parameter("Angles", "a-2", "[#6:1]-[#6:2]", 0, {})
    with pytest.raises(SmirksError, match=r"expected \[1, 2, 3\] for an Angles parameter"):
        compile_smirks(angle, valence=3)
    improper = Parameter("ImproperTorsions", "i-x", "[*:1]~[*:2]~[*:3]~[*:4]", 0, {})
    with pytest.raises(SmirksError, match="would not be an ImproperTorsions term"):
        compile_smirks(improper, valence=4)
    bond = Parameter("Bonds", "b-1", "[#6:1]-[#6:2]-[#6:3]", 0, {})
    with pytest.raises(SmirksError, match=r"expected \[1, 2\] for a Bonds parameter"):
        compile_smirks(bond, valence=2)
