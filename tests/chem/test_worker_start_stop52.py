"""What an ``assign_many`` worker spends building its assigner, cut without changing a label
(stop 52).

A worker read the force field and built its assigner in about 0.25 s of CPU: the unit
texts were parsed afresh 2,588 times, every pattern's atoms were walked through RDKit's
Python sequences to find stereo no pattern had, each query atom's rarity was judged one
signature at a time, and a pre-filter only the reference path reads was built up front.
Each shortcut is checked here against the computation it replaces.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from tying.chem import SECTIONS, SmirksAssigner  # noqa: E402
from tying.chem.offxml import Parameter, load_force_field  # noqa: E402
from tying.chem.search_order import atom_frequencies, atom_weight, has_stereo  # noqa: E402
from tying.chem.smirks import (  # noqa: E402
    _atoms_and_bonds,
    _recursive_parts,
    compile_smirks,
    evaluate,
    parse_atom_query,
)
from tying.chem.units import parse_unit  # noqa: E402

# Stereo, ring-size, charge, NOT/OR and recursive queries the shipped files use little.
EXTRA = [
    "[#6@:1](-[#1:2])(-[#9])-[#17]",
    "[#6@@H:1]-[#8:2]",
    "[#6:1]/[#6:2]=[#6]/[#6]",
    "[#6:1]=;@[#6:2]",
    "[#6$([#6@H](F)Cl):1]-[#1:2]",
    "[#6;r5,r6:1]-[!#1;!r7:2]",
    "[+:1]-[-2,#7+1:2]",
    "[!$([#6]=O)&#6:1]~[R0,x0:2]",
    "[!!#6;A:1]-[c,n&H1:2]",
    "[#6&X4&H2&+0&A&R:1]-[Cl:2]",
]


def _patterns():
    sage = load_force_field("openff-2.3.0")
    shipped = [compile_smirks(p) for s in SECTIONS for p in sage[s]]
    extra = [compile_smirks(Parameter("Bonds", f"x{i}", s, i, {})) for i, s in enumerate(EXTRA)]
    return shipped + extra


def test_a_query_atoms_weight_equals_the_signature_by_signature_count():
    patterns = _patterns()
    smarts = {a for c in patterns for a in c.atoms}
    for c in patterns:
        for inner, _ in map(_atoms_and_bonds, _recursive_parts(c.atoms)):
            smarts.update(inner)
    assert len(smarts) > 100
    for s in sorted(smarts):
        tree = parse_atom_query(s)
        expected = sum(n for sig, n in atom_frequencies() if evaluate(tree, sig) is not False)
        assert atom_weight(s) == expected, s


def test_stereo_is_found_as_the_atom_and_bond_walk_finds_it():
    patterns = _patterns()
    unspecified = Chem.ChiralType.CHI_UNSPECIFIED
    found = 0
    for c in patterns:
        walked = (
            "/" in c.parameter.smirks
            or "\\" in c.parameter.smirks
            or any(a.GetChiralTag() != unspecified for a in c.query.GetAtoms())
            or any(b.GetStereo() != Chem.BondStereo.STEREONONE for b in c.query.GetBonds())
        )
        assert has_stereo(c) is walked, c.parameter.smirks
        found += walked
    assert found == 3  # three of EXTRA (an "@" inside a recursive part is not the atom's)


def test_a_parsed_unit_is_shared_and_a_bad_one_is_refused_every_time():
    text = "kilocalorie_per_mole ** 1 * angstrom ** -2"
    assert parse_unit(text) == parse_unit("angstrom**-2 * mole**-1 * kilocalorie")
    assert parse_unit(text).dimension == parse_unit(text).dimension
    for _ in range(2):  # an error is not cached away
        with pytest.raises(ValueError, match=r"unknown unit 'furlong'"):
            parse_unit("furlong ** 2")


def test_the_reference_pre_filter_is_built_only_when_needed_and_labels_alike():
    sage = SmirksAssigner("openff-2.3.0", cache=False)
    fast = sage.assign("OC(=O)c1ccccc1N")  # no written hydrogens: the fast path only
    assert sage._full_prefilter is None
    reference = sage.assign(Chem.AddHs(Chem.MolFromSmiles("OC(=O)c1ccccc1N")))
    assert sage._full_prefilter is not None  # an RDKit molecule: the reference path
    assert {s: fast.ids(s) for s in fast.terms} == {s: reference.ids(s) for s in fast.terms}
