"""An Assignment's terms iterate in the order of the toolkit's ``label_molecules`` dicts (stop 57).

The OpenFF toolkit's label dicts are in key order (sorted atom-index tuples, in every
section). Ours came in whatever order a labelling path built them, and two paths
differed for the same molecule: ``assign(smiles)`` and ``assign_many([...])`` (the batch
arrays) iterated one molecule's bonds, angles and torsions in two different orders, so
a parameter vector or a file written by iterating ``a.bonds.items()`` depended on how
the molecule had been labelled. Every path now gives the toolkit's order: one by one,
batched, remapped from the cache, renumbered by atom maps, pickled.
"""

from __future__ import annotations

import pickle
import warnings

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from tying.chem import SmirksAssigner  # noqa: E402

try:
    from openff.toolkit import ForceField as OpenFFForceField
    from openff.toolkit import Molecule as OpenFFMolecule
except ImportError as err:
    pytest.skip(f"OpenFF toolkit not importable: {err}", allow_module_level=True)

from .helpers import GENERIC_VDW, HEADER  # noqa: E402

SECTIONS = ("Bonds", "Angles", "ProperTorsions", "ImproperTorsions", "vdW", "Constraints")
SMILES = ["CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O", "OC1CC1", "CCN(CC)C(=O)c1ccccc1"]

#: every section with one catch-all parameter (a small file: Sage loads in seconds)
GENERIC = (
    HEADER + '<Bonds version="0.4" potential="harmonic"><Bond smirks="[*:1]~[*:2]" id="b1" '
    'length="1.5 * angstrom" k="500 * kilocalorie_per_mole / angstrom ** 2"/></Bonds>'
    '<Angles version="0.3" potential="harmonic"><Angle smirks="[*:1]~[*:2]~[*:3]" id="a1" '
    'angle="110 * degree" k="100 * kilocalorie_per_mole / radian ** 2"/></Angles>'
    '<ProperTorsions version="0.4" potential="k*(1+cos(periodicity*theta-phase))" '
    'default_idivf="auto"><Proper smirks="[*:1]~[*:2]~[*:3]~[*:4]" id="t1" periodicity1="3" '
    'phase1="0 * degree" k1="1 * kilocalorie_per_mole" idivf1="1"/></ProperTorsions>'
    '<ImproperTorsions version="0.3" potential="k*(1+cos(periodicity*theta-phase))" '
    'default_idivf="auto"><Improper smirks="[*:1]~[#6X3:2](~[*:3])~[*:4]" id="i1" '
    'periodicity1="2" phase1="180 * degree" k1="1 * kilocalorie_per_mole"/></ImproperTorsions>'
    '<Constraints version="0.3"><Constraint smirks="[#1:1]-[*:2]" id="c1"/></Constraints>\n'
    + GENERIC_VDW.replace('"[#1:1]"', '"[*:1]"')
    + "</SMIRNOFF>\n"
)


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    path = tmp_path_factory.mktemp("order") / "generic.offxml"
    path.write_text(GENERIC)
    return path


def test_terms_iterate_in_the_order_of_label_molecules(generic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = OpenFFForceField(str(generic))
        theirs = []
        for smiles in SMILES[:2]:
            labels = ff.label_molecules(OpenFFMolecule.from_smiles(smiles).to_topology())[0]
            theirs.append({s: list(labels[s]) for s in SECTIONS})
    ours = SmirksAssigner(generic, sections=list(SECTIONS), cache=False)
    assert [_orders(ours.assign(s)) for s in SMILES[:2]] == theirs
    assert [_orders(a) for a in ours.assign_many(SMILES)[:2]] == theirs  # batch arrays
    assert [len(t["ImproperTorsions"]) for t in theirs] == [7, 1]  # one per sp2 carbon


def _orders(a):
    return {s: list(a.terms[s]) for s in SECTIONS}


def test_every_labelling_path_iterates_in_key_order():
    sage = SmirksAssigner("openff-2.3.0", sections=list(SECTIONS), cache=False)
    one_by_one = [_orders(sage.assign(s)) for s in SMILES]
    batched = sage.assign_many(SMILES)  # 4 molecules: the packed batch arrays
    in_order = [{s: sorted(o[s]) for s in SECTIONS} for o in one_by_one]
    assert one_by_one == in_order  # before stop 57: the order of the matches
    assert [_orders(a) for a in batched] == in_order  # before: another order again
    assert [_orders(pickle.loads(pickle.dumps(a))) for a in batched] == in_order


def test_a_cache_hit_in_another_atom_order_iterates_in_key_order():
    sage = SmirksAssigner("openff-2.3.0")
    mol = Chem.MolFromSmiles(SMILES[0])
    sage.assign(mol)
    reversed_atoms = Chem.RenumberAtoms(mol, list(reversed(range(mol.GetNumAtoms()))))
    hit = sage.assign(reversed_atoms)
    assert sage.hits == 1
    for section in SECTIONS[:5]:
        assert list(hit.terms[section]) == sorted(hit.terms[section]), section
    mapped = sage.assign("[H:4][O:1][C:2]([H:5])([H:6])[C:3]([H:7])([H:8])[H:9]", mapped=True)
    assert list(mapped.bonds) == sorted(mapped.bonds) and (0, 1) in mapped.bonds
