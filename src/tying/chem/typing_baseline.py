"""The atom-typed baseline: how many parameters a classical typed force field would need.

A classical force field (AMBER/GAFF, CHARMM, OPLS style) first gives every atom
a *type* and then needs one bond parameter per pair of types, one angle
parameter per triple, one torsion parameter per quadruple. Here an atom's type
is what a chemist would write down first — element, hybridisation, aromaticity
and connectivity (number of bonded atoms, hydrogens included) — and this module
counts the distinct type tuples a set of molecules needs. Set against the
number of SMIRKS parameters the same molecules use
(:func:`tying.chem.assign.count_unique_parameters`), it shows claim C9: the
tuples multiply, the last-match-wins patterns do not.

Keys mirror the SMIRNOFF ones: a tuple and its reverse are one bond/angle/torsion
type; an improper is its central atom's type plus the sorted types of its three
neighbours (any atom with exactly three neighbours gets one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tying.chem._rdkit import Chem
from tying.chem.molecules import input_hint, molecule_from_smiles, prepare_molecule
from tying.chem.tables import refuse_table

AtomType = tuple[str, str, bool, int]


def atom_types(mol: Any) -> list[AtomType]:
    """Type of each atom: ``(element, hybridisation, aromatic, connectivity)``.

    Args:
        mol: an RDKit molecule, perceived as the assigner perceives it
            (:func:`~tying.chem.molecules.prepare_molecule`: MDL aromaticity, every
            hydrogen an atom appended after the existing ones, so their indices stay).

    Returns:
        One type per atom index of the perceived molecule.

    Raises:
        TypeError: when ``mol`` is not an RDKit molecule.
        SmilesError: as :func:`~tying.chem.molecules.prepare_molecule`.

    Example:
        >>> from tying.chem.molecules import molecule_from_smiles, prepare_molecule
        >>> atom_types(molecule_from_smiles("C=O"))[:2]
        [('C', 'SP2', False, 3), ('O', 'SP2', False, 1)]
    """
    return _types(prepare_molecule(mol))


def _types(mol: Any) -> list[AtomType]:
    return [
        (a.GetSymbol(), str(a.GetHybridization()), a.GetIsAromatic(), a.GetTotalDegree())
        for a in mol.GetAtoms()
    ]


def _canonical(t: tuple) -> tuple:
    return min(t, t[::-1])


def type_tuples(mol: Any) -> dict[str, set[tuple]]:
    """The distinct type tuples one molecule needs, per SMIRNOFF section name.

    Args:
        mol: a SMILES string or an RDKit molecule (perceived as :func:`atom_types` says;
            typed as given, a molecule without explicit hydrogens lost every bond,
            angle and torsion to a hydrogen, and a kekulized one its aromatic types).

    Returns:
        ``{"vdW": {...}, "Bonds": {...}, "Angles": {...}, "ProperTorsions": {...},
        "ImproperTorsions": {...}}``.

    Example:
        >>> {k: len(v) for k, v in type_tuples("CCO").items()}
        {'vdW': 3, 'Bonds': 4, 'Angles': 5, 'ProperTorsions': 4, 'ImproperTorsions': 0}
    """
    if isinstance(mol, str):
        mol = molecule_from_smiles(mol)
    elif isinstance(mol, Chem.Mol):
        mol = prepare_molecule(mol)
    else:  # stop 61: "expected an rdkit.Chem.Mol, got tuple", naming neither call nor fix
        hint = input_hint(mol)
        if isinstance(mol, tuple):
            hint = "; count_type_tuples takes (SMILES, name) pairs, type_tuples one molecule: pass pair[0]"
        raise TypeError(
            f"type_tuples: expected a SMILES string or an RDKit molecule, got "
            f"{type(mol).__name__} {mol!r:.80}{hint}"
        )
    types = _types(mol)
    nbrs = [[n.GetIdx() for n in a.GetNeighbors()] for a in mol.GetAtoms()]
    out: dict[str, set[tuple]] = {
        "vdW": {(t,) for t in types},
        "Bonds": set(),
        "Angles": set(),
        "ProperTorsions": set(),
        "ImproperTorsions": set(),
    }
    for b in mol.GetBonds():
        j, k = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        out["Bonds"].add(_canonical((types[j], types[k])))
        for i in nbrs[j]:
            for m in nbrs[k]:
                if i != k and m != j and i != m:
                    out["ProperTorsions"].add(_canonical((types[i], types[j], types[k], types[m])))
    for j, ns in enumerate(nbrs):
        for x in range(len(ns)):
            for y in range(x + 1, len(ns)):
                out["Angles"].add(_canonical((types[ns[x]], types[j], types[ns[y]])))
        if len(ns) == 3:
            out["ImproperTorsions"].add((types[j], *sorted(types[n] for n in ns)))
    return out


def count_type_tuples(molecules: Iterable[Any]) -> dict[str, int]:
    """Distinct type tuples over a set of molecules, per section and in total.

    Args:
        molecules: SMILES strings or RDKit molecules (as :func:`type_tuples`), or
            ``(molecule, name)`` pairs, as ``assign_many`` and
            :func:`~tying.chem.molecules.load_molecule_set` give them (stop 61: a pair
            was "expected an rdkit.Chem.Mol, got tuple").

    Returns:
        ``{section: count, ..., "total": sum}``.

    Raises:
        TypeError: for one SMILES string (or bytes) or a data frame instead of a
            collection of molecules, or an item that is not a molecule (names it).
        ValueError: for a tuple that is not a ``(molecule, name)`` pair.

    Example:
        >>> count_type_tuples(["CCO", "CC=O"])["Bonds"]
        7
    """
    if isinstance(molecules, (str, bytes)):
        # Iterated, a string is its characters: "CCO" was typed as methane, methane and
        # water (7 type tuples instead of 16), silently.
        raise TypeError(
            f"count_type_tuples: expected a collection of molecules, got the "
            f"{type(molecules).__name__} {molecules!r:.80}, which would be read one character "
            f"at a time; pass a list, e.g. count_type_tuples([{molecules!r:.80}])"
        )
    refuse_table(molecules, "count_type_tuples", "molecules")  # rows lost (stop 61)
    seen: dict[str, set[tuple]] = {}
    for i, mol in enumerate(molecules):
        if isinstance(mol, tuple):  # a (molecule, name) pair, as assign_many reads it
            if len(mol) != 2:
                raise ValueError(
                    f"count_type_tuples: molecule {i}: expected a SMILES, an RDKit Mol or a "
                    f"(molecule, name) pair, got a tuple of {len(mol)} items"
                )
            mol = mol[0]
        for section, tuples in type_tuples(mol).items():
            seen.setdefault(section, set()).update(tuples)
    out = {s: len(t) for s, t in seen.items()}
    out["total"] = sum(out.values())
    return out
