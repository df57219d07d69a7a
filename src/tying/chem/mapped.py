"""Atom-mapped SMILES: label in the map's atom order, or say which order was used.

A mapped SMILES (``[C:2]([H:3])([H:4])([H:5])[O:1][H:6]``) fixes an atom order apart
from the order the atoms are written in: QCArchive records and the OpenFF toolkit's
``Molecule.from_mapped_smiles`` put atom ``n - 1`` where map number ``n`` is. The
assigner's term keys follow the written order (as ``Molecule.from_smiles`` does), so
a user who indexes coordinates in map order would read every term off the wrong
atoms, with no error. So:

- ``assign(smiles, mapped=True)`` (and ``assign_many``) renumbers the result into the
  map's order, after checking that the map is complete as ``from_mapped_smiles``
  requires: every atom mapped, hydrogens included, numbers ``1..N`` each once;
- without ``mapped=True``, a SMILES whose complete map disagrees with its written
  order is labelled in the written order, as before, with a ``UserWarning`` that says
  so and names ``mapped=True``. A partial map (a few highlighted atoms, or the heavy
  atoms alone, their hydrogens implicit) or a map in written order is not an atom
  order, and gets no warning.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tying.chem._rdkit import Chem, quiet
from tying.chem.errors import SmilesError
from tying.chem.terms import KEYS


def map_numbers(smiles: str) -> list[int] | None:
    """The atom map number of each atom the SMILES writes (0: unmapped), or None when
    RDKit cannot read it (the assigner then raises its own error for it).

    Example:
        >>> map_numbers("[CH3:2][OH:1]"), map_numbers("CO")
        ([2, 1], [0, 0])
    """
    with quiet():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return None
    return [atom.GetAtomMapNum() for atom in mol.GetAtoms()]


def map_order(smiles: str, n_atoms: int) -> tuple[int, ...]:
    """Each written atom's index in map order (map number minus one), checked complete.

    Args:
        smiles: the mapped SMILES.
        n_atoms: the molecule's atom count once every hydrogen is explicit.

    Raises:
        SmilesError: when some atom has no map number (implicit hydrogens included),
            a number is used twice, or the numbers are not ``1..N``; the message names
            the atoms and the fix.

    Example:
        >>> map_order("[C:2]([H:3])([H:4])([H:5])[O:1][H:6]", 6)
        (1, 2, 3, 4, 0, 5)
    """
    numbers = map_numbers(smiles) or []
    label = f"mapped=True: SMILES {smiles!r}"
    if not any(numbers):
        raise SmilesError(
            f"{label} has no atom map; write one ([C:1]([H:2])...: every atom, hydrogens "
            f"included), or drop mapped=True to label in the written order"
        )
    if len(numbers) < n_atoms:
        raise SmilesError(
            f"{label} writes {len(numbers)} atoms but the molecule has {n_atoms}: "
            f"{n_atoms - len(numbers)} hydrogens are implicit, so they have no map number; "
            f"write every hydrogen as a mapped atom ([H:n]), as Molecule.from_mapped_smiles "
            f"requires, or drop mapped=True to label in the written order"
        )
    unmapped = [i for i, n in enumerate(numbers) if n == 0]
    if unmapped:
        raise SmilesError(
            f"{label}: atoms {unmapped[:10]} (written order, from 0) have no map number; "
            f"map every atom, or drop mapped=True to label in the written order"
        )
    if sorted(numbers) != list(range(1, n_atoms + 1)):
        twice = sorted(n for n, count in Counter(numbers).items() if count > 1)
        raise SmilesError(
            f"{label}: map numbers must be 1..{n_atoms}, each once; got "
            + (f"{twice[:10]} more than once" if twice else f"{sorted(numbers)[:12]}")
            + "; renumber the map"
        )
    return tuple(n - 1 for n in numbers)


def reordered(smiles: str) -> bool:
    """Whether ``smiles`` maps every atom of the molecule, hydrogens included, ``1..N``
    once each, in an order other than the written one: the maps ``mapped=True`` reads.
    A partial map, one in written order, or a map of the heavy atoms whose hydrogens are
    implicit (``[CH3:2][OH:1]``: an RDKit index map, a reaction's atom map) is not an
    atom order: ``mapped=True`` refuses it, so the warning advising it is not given.

    Example:
        >>> reordered("[C:2]([H:3])([H:4])([H:5])[O:1][H:6]"), reordered("[CH3:1][OH:2]")
        (True, False)
        >>> reordered("[CH3:1]O"), reordered("[CH3:2][OH:1]")
        (False, False)
    """
    if "[" not in smiles or ":" not in smiles:  # no map can be there (one scan, in C)
        return False
    with quiet():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return False
    atoms = list(mol.GetAtoms())
    numbers = [atom.GetAtomMapNum() for atom in atoms]
    if not numbers or 0 in numbers:
        return False
    # stop 58 (review): hydrogens written inside a bracket ([CH3:2]) have no map number;
    # the warning's "Pass mapped=True" then failed ("4 hydrogens are implicit")
    if any(atom.GetNumExplicitHs() for atom in atoms):
        return False
    written = list(range(1, len(numbers) + 1))
    return numbers != written and sorted(numbers) == written


def reordered_warning(smiles: str, more: int = 0) -> str:
    """The warning's text for a SMILES :func:`reordered` (``more``: others like it)."""
    others = f" (and {more} more SMILES like it)" if more else ""
    return (
        f"SMILES {smiles!r}{others} maps every atom it writes in an order other than "
        f"the written one; the term keys follow the written order (as Molecule.from_smiles). Pass "
        f"mapped=True to number atoms by their map (as Molecule.from_mapped_smiles)"
    )


def warn_if_reordered(smiles: str, stacklevel: int = 3) -> None:
    """Warn (``UserWarning``) when ``smiles`` is :func:`reordered`."""
    if reordered(smiles):
        warnings.warn(reordered_warning(smiles), UserWarning, stacklevel=stacklevel)


def renumber(assignment: Any, perm: Sequence[int]) -> Any:
    """``assignment`` with atom ``i`` renamed ``perm[i]`` (elements and every term key).

    Keys are re-canonicalised (:data:`~tying.chem.terms.KEYS`), so a term and its
    reverse stay one term.
    """
    elements = [""] * len(perm)
    for b, o in enumerate(perm):
        elements[o] = assignment.elements[b]
    terms = {
        s: {KEYS[s]([perm[i] for i in k]): p for k, p in t.items()}
        for s, t in assignment.terms.items()
    }
    return dataclasses.replace(assignment, elements=tuple(elements), terms=terms)


def check_flag(mapped: Any, molecule: Any = None) -> bool:
    """``mapped`` checked: a bool, and True only with a SMILES string (not a molecule).

    Raises:
        TypeError: on a non-bool (``"False"`` would read as true), or ``mapped=True``
            with an RDKit molecule, whose own atom indices are its order.
    """
    if not isinstance(mapped, bool):
        raise TypeError(f"mapped must be True or False, got {type(mapped).__name__}: {mapped!r}")
    if mapped and molecule is not None and not isinstance(molecule, str):
        raise TypeError(
            f"mapped=True reads the atom map of a SMILES string, got "
            f"{type(molecule).__name__}; an RDKit molecule keeps its own atom indices "
            f"(reorder it with Chem.RenumberAtoms), so drop mapped=True"
        )
    return mapped
