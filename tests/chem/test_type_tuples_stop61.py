"""count_type_tuples reads the (molecule, name) pairs assign_many reads (stop 61).

``load_molecule_set()`` gives ``(smiles, name)`` pairs and ``assign_many`` labels them,
but the typed baseline of the same list, ``count_type_tuples(pairs)``, was
``TypeError: expected an rdkit.Chem.Mol, got tuple``, naming neither the call nor a fix.
"""

from __future__ import annotations

import pytest

from tying.chem import count_type_tuples, load_molecule_set, type_tuples


def test_pairs_count_as_their_molecules():
    pairs = load_molecule_set()[:40]
    assert count_type_tuples(pairs) == count_type_tuples([s for s, _ in pairs])


def test_what_is_not_a_molecule_is_named():
    with pytest.raises(ValueError, match=r"count_type_tuples: molecule 1: .*a tuple of 3 items"):
        count_type_tuples(["CCO", ("CCO", "ethanol", 3)])
    with pytest.raises(
        TypeError, match=r"type_tuples: expected a SMILES string .*got tuple .*pair\[0\]"
    ):
        type_tuples(("CCO", "ethanol"))
    with pytest.raises(TypeError, match=r"type_tuples: expected a SMILES string .*got int 3"):
        count_type_tuples([3])
