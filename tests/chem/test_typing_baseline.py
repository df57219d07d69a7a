"""The atom-typed baseline that C9 compares against."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("openforcefields")

from tying.chem import atom_types, count_type_tuples, molecule_from_smiles, type_tuples  # noqa: E402


def test_atom_types_read_element_hybridisation_aromaticity_connectivity():
    types = atom_types(molecule_from_smiles("c1ccccc1C#N"))
    assert types[0] == ("C", "SP2", True, 3)
    assert types[6] == ("C", "SP", False, 2)
    assert types[7] == ("N", "SP", False, 1)


def test_a_tuple_and_its_reverse_are_one_type():
    t = type_tuples("OCCN")
    for section in ("Bonds", "Angles", "ProperTorsions"):
        assert all(min(x, x[::-1]) == x for x in t[section])
    assert len(t["ProperTorsions"]) == len({min(x, x[::-1]) for x in t["ProperTorsions"]})


def test_impropers_for_trivalent_centres_only():
    t = type_tuples("CC(C)=O")
    assert len(t["ImproperTorsions"]) == 1
    ((center, *others),) = t["ImproperTorsions"]
    assert center == ("C", "SP2", False, 3) and others == sorted(others)


def test_counts_grow_with_chemistry():
    small = count_type_tuples(["CCO"])
    more = count_type_tuples(["CCO", "c1ccccc1O", "CS(C)=O"])
    assert more["total"] > small["total"]
    assert more["Angles"] > small["Angles"]
