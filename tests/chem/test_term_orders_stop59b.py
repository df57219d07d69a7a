"""A term read in another atom order, as the toolkit's labels read it (stop 59, second pass).

``label_molecules`` gives ``ValenceDict``/``ImproperDict``: ``labels["Bonds"][(1, 0)]``,
``(1, 0) in labels["Bonds"]`` and ``labels["Angles"].get((2, 1, 0))`` find the term stored
as ``(0, 1)`` / ``(0, 1, 2)``, and an improper is found by any order of its outer atoms.
``Assignment.__getitem__`` promises the toolkit's keys, but a reversed key was a bare
KeyError, ``in`` said False and ``.get`` None for a bond the molecule has, with no error
(a script walking RDKit bonds by ``(GetBeginAtomIdx(), GetEndAtomIdx())`` lost every bond
written high-to-low). Every order the toolkit accepts is accepted, on every route to an
Assignment (assign, packed assign_many, pickled); an order it refuses stays a KeyError.
"""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("rdkit")

from tying.chem import SmirksAssigner  # noqa: E402
from tying.chem.packed import is_packed  # noqa: E402

SMILES = "CC(=O)N"  # atoms 0 C, 1 C, 2 O, 3 N; improper at 1, amide N improper at 3


@pytest.fixture(scope="module")
def routes():
    assigner = SmirksAssigner("openff-2.3.0", cache=False)
    many = assigner.assign_many([SMILES] + [f"CC(=O)N{'C' * i}" for i in range(1, 8)])
    assert is_packed(many[0])  # the packed route, not only the per-molecule dicts
    one = assigner.assign(SMILES)
    return {"assign": one, "packed": many[0], "pickled": pickle.loads(pickle.dumps(one))}


@pytest.mark.parametrize("route", ["assign", "packed", "pickled"])
def test_valence_terms_are_found_in_either_direction(routes, route):
    a = routes[route]
    assert (2, 1) in a.bonds and a.bonds[(2, 1)] is a.bonds[(1, 2)]  # False / KeyError before
    assert a.bonds.get((2, 1)).id == "b21"
    assert a["Angles"][(2, 1, 0)] is a.angles[(0, 1, 2)]
    assert a.propers.get((7, 3, 1, 0)) is a.propers[(0, 1, 3, 7)]
    # what the toolkit refuses stays refused: a torsion with its middle atoms swapped
    assert (0, 3, 1, 7) not in a.propers and a.propers.get((0, 3, 1, 7)) is None
    with pytest.raises(KeyError):
        a.bonds[(0, 2)]  # not bonded
    # iteration and equality see the stored keys only
    assert list(a.bonds)[0] == (0, 1) and (1, 0) not in list(a.bonds)


@pytest.mark.parametrize("route", ["assign", "packed", "pickled"])
def test_an_improper_is_found_by_any_order_of_its_outer_atoms(routes, route):
    impropers = routes[route].impropers
    stored = impropers[(0, 1, 2, 3)]
    for order in [(2, 1, 0, 3), (3, 1, 2, 0), (0, 1, 3, 2), (3, 1, 0, 2)]:
        assert order in impropers and impropers[order] is stored and impropers.get(order) is stored
    for moved_center in [(1, 0, 2, 3), (0, 2, 1, 3)]:  # the toolkit's ImproperDict: KeyError
        assert moved_center not in impropers
        with pytest.raises(KeyError):
            impropers[moved_center]
