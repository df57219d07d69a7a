"""tying.chem.terms: patterns whose term dicts skip matches, and the completeness counts."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem.molecules import molecule_from_smiles  # noqa: E402


@pytest.mark.parametrize(
    "smirks, expected",
    [
        ("[*:1]-[#6X4:2]-[#6X4:3]-[*:4]", True),
        ("[#6X4:1]-[#6X4:2]", True),
        ("[*:1]~[#6X4:2]-[#6X4:3]-[*:4]", False),  # ~ at one end, - at the other
        ("[#1:1]-[#6X4:2]-[#8:3]", False),
        ("[*:1]-[#6X4:2](-[#8])-[*:3]", False),  # an untagged atom
        ("[#6:1]/[#6:2]=[#6:3]/[#6:4]", False),  # directional bonds
        ("[#6:1]1-[#6:2]-[#6:3]-1", False),  # a ring, not a chain
    ],
)
def test_reversible_patterns_are_chains_that_read_the_same_both_ways(smirks, expected):
    # Such a pattern's term dict keeps only the matches that are their own key: sound
    # only if the reverse of every match is a match too.
    from tying.chem.offxml import Parameter
    from tying.chem.smirks import compile_smirks
    from tying.chem.terms import _reversible

    c = compile_smirks(Parameter("X", "x", smirks, 0, {}))
    assert _reversible(c) is expected
    if expected:
        mol = molecule_from_smiles("CC(C)CCO")
        matches = set(mol.GetSubstructMatches(c.query, uniquify=False))
        assert matches and {m[::-1] for m in matches} == matches


@pytest.mark.parametrize(
    "smirks, expected",
    [
        ("[*:1]~[#6X3:2](~[*:3])~[*:4]", True),
        ("[*:1]~[#7X3$(*~[#6X3]):2](~[*:3])~[*:4]", True),
        ("[*:1]~[#6X3:2](~[#8X1:3])~[#8:4]", False),  # the outer atoms differ
        ("[*:1]~[#6X3:2](-[*:3])~[*:4]", False),  # so do their bonds
        ("[*:1]~[#6X3:2](~[*:3])(~[*:4])-[#8]", False),  # an untagged atom
    ],
)
def test_outer_symmetric_impropers_match_in_every_order(smirks, expected):
    # Such a pattern's term dict keeps only the match with ascending outer atoms.
    import itertools

    from tying.chem.offxml import Parameter
    from tying.chem.smirks import compile_smirks
    from tying.chem.terms import _outer_symmetric

    c = compile_smirks(Parameter("ImproperTorsions", "x", smirks, 0, {}), valence=4)
    assert _outer_symmetric(c) is expected
    if expected:
        mol = molecule_from_smiles("CC(=O)Nc1ccccc1")
        matches = set(mol.GetSubstructMatches(c.query, uniquify=False))
        i, j, k, m = c.tagged
        for match in matches:
            outer = (match[i], match[k], match[m])
            for o in itertools.permutations(outer):
                assert tuple(_swap(match, (i, k, m), o)) in matches


def _swap(match, positions, values):
    out = list(match)
    for p, v in zip(positions, values):
        out[p] = v
    return out


@pytest.mark.parametrize(
    "smiles",
    ["C1CC1", "C1CC1O", "C1OC1C", "C12CC1C2", "C12C3C1C23", "C1CC11CC1", "C12C3C4C1C5C2C3C45",
     "C1CCC1", "c1ccccc1", "C1CC2CC1C2", "CC(C)(C)C", "[Na+].[Cl-]", "O", "C#C"],
)  # fmt: skip
def test_scan_counts_equal_the_topology_with_three_rings(smiles):
    # The completeness check's counts, exact with 3-rings too (bicyclobutane, tetrahedrane,
    # cubane: triangles the SSSR does not all list), so no molecule is checked term by term.
    from tying.chem.molecules import parse_smiles
    from tying.chem.smirks import scan_heavy
    from tying.chem.terms import scan_counts, topology_terms

    mol, n = parse_smiles(smiles)
    counts = scan_counts(scan_heavy(mol, n), mol.GetNumAtoms(), mol.GetNumBonds())
    assert counts == {s: len(t) for s, t in topology_terms(mol).items()}
