"""A molecule's terms, keyed as the OpenFF toolkit keys them (claim C9).

A *term* is what a SMIRNOFF parameter applies to: an atom (vdW), a bond, an angle, a
proper or an improper torsion, named by its atoms. Terms are keyed as the OpenFF
toolkit keys them, so that a match and its reverse are one term:

- bonds, angles, proper torsions: the tuple, reversed when it would start with
  the larger index (``(2, 1, 0)`` is ``(0, 1, 2)``);
- impropers: the central atom (tag 2) stays second and the three others are
  sorted. The energy applies such an improper in three orderings, the
  *trefoil* (:func:`trefoil`), each with ``k / 3`` (``idivf="auto"``).

This module holds those keys (:data:`KEYS`), the per-pattern functions that turn
RDKit's raw matches straight into them (the assigner's hot loop), and the terms a
molecule has (:func:`topology_terms`, or counted from a scan, :func:`scan_counts`),
against which an assignment is checked complete. It was split out of
:mod:`tying.chem.assign`, which re-exports its public names, to keep that module to
the assignment itself (house rule 1: one concept per module).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tying.chem.errors import UnassignedParameterError
from tying.chem.search_order import has_stereo
from tying.chem.smirks import CompiledSmirks

if TYPE_CHECKING:
    from tying.chem.assign import Assignment


def valence_key(atoms: Sequence[int]) -> tuple[int, ...]:
    """Canonical key of a bond, angle or proper torsion: a tuple and its reverse are one term.

    Example:
        >>> valence_key((3, 1, 0)), valence_key((0, 1, 3))
        ((0, 1, 3), (0, 1, 3))
    """
    t = tuple(atoms)
    return t[::-1] if t[0] > t[-1] else t


def improper_key(atoms: Sequence[int]) -> tuple[int, int, int, int]:
    """Canonical key of an improper: central atom (tag 2) second, the other three sorted.

    Example:
        >>> improper_key((5, 1, 0, 3))
        (0, 1, 3, 5)
    """
    a, c, d = sorted((atoms[0], atoms[2], atoms[3]))
    return (a, atoms[1], c, d)


def trefoil(key: Sequence[int]) -> tuple[tuple[int, int, int, int], ...]:
    """The three orderings in which an improper ``(i, j, k, l)`` (center ``j``) is applied.

    Example:
        >>> trefoil((0, 1, 2, 3))
        ((0, 1, 2, 3), (2, 1, 3, 0), (3, 1, 0, 2))
    """
    i, j, k, m = key
    return ((i, j, k, m), (k, j, m, i), (m, j, i, k))


def _atom_key(atoms: Sequence[int]) -> tuple[int, ...]:
    return tuple(atoms)


KEYS: dict[str, Callable[[Sequence[int]], tuple[int, ...]]] = {
    "Bonds": valence_key,
    "Angles": valence_key,
    "ProperTorsions": valence_key,
    "ImproperTorsions": improper_key,
    "vdW": _atom_key,
    "Constraints": valence_key,  # opt-in (tying.chem.constraints): a pair, keyed as a bond
}


def topology_terms(mol: Any) -> dict[str, set[tuple[int, ...]]]:
    """Every bond, angle, proper torsion and atom of a molecule, as canonical keys.

    Args:
        mol: a SMILES string or an RDKit molecule, perceived as the assigner perceives it
            (:func:`~tying.chem.molecules.prepare_molecule`: every hydrogen an atom,
            appended after the existing ones, so their indices stay). Before stop 61 an
            RDKit molecule was read as given: ``Chem.MolFromSmiles("CCO")`` had 2 bonds,
            1 angle and no torsion, where its assignment and the toolkit's ``Molecule``
            have 8, 13 and 12; a SMILES string was a bare ``AttributeError``.

    Returns:
        ``{"Bonds": {...}, "Angles": {...}, "ProperTorsions": {...}, "vdW": {...}}``.

    Raises:
        TypeError: when ``mol`` is neither a SMILES string nor an RDKit molecule.
        SmilesError: as :func:`~tying.chem.molecules.molecule_from_smiles` or
            :func:`~tying.chem.molecules.prepare_molecule`.

    Example:
        >>> t = topology_terms("CO")
        >>> len(t["Bonds"]), len(t["Angles"]), len(t["ProperTorsions"])
        (5, 7, 3)
    """
    from tying.chem.molecules import input_hint, molecule_from_smiles, prepare_molecule

    if isinstance(mol, str):
        return _topology_terms(molecule_from_smiles(mol))
    if not hasattr(mol, "GetAtoms"):
        raise TypeError(
            f"topology_terms: expected a SMILES string or an RDKit molecule, got "
            f"{type(mol).__name__} {mol!r:.80}{input_hint(mol)}"
        )
    return _topology_terms(prepare_molecule(mol))


def _topology_terms(mol: Any) -> dict[str, set[tuple[int, ...]]]:
    """:func:`topology_terms` of a molecule already perceived (every hydrogen an atom)."""
    nbrs = [[n.GetIdx() for n in a.GetNeighbors()] for a in mol.GetAtoms()]
    bonds = {valence_key((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds()}
    angles = {(i, j, k) for j, ns in enumerate(nbrs) for i in ns for k in ns if i < k}
    propers = set()
    for j, k in bonds:
        for i in nbrs[j]:
            for m in nbrs[k]:
                if i != k and m != j and i != m:
                    propers.add(valence_key((i, j, k, m)))
    atoms = {(i,) for i in range(len(nbrs))}
    return {"Bonds": bonds, "Angles": angles, "ProperTorsions": propers, "vdW": atoms}


def _term_counts(mol: Any) -> dict[str, int] | None:
    """How many atoms, bonds, angles and propers ``mol`` has; None if it has a 3-ring.

    In a 3-ring two tuples of a torsion fold onto one atom, which counting by
    degrees does not see; such molecules are checked term by term instead.
    """
    if any(len(r) == 3 for r in mol.GetRingInfo().AtomRings()):
        return None
    degree = [0] * mol.GetNumAtoms()
    bonds = []
    for i in range(mol.GetNumBonds()):
        b = mol.GetBondWithIdx(i)
        j, k = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        degree[j] += 1
        degree[k] += 1
        bonds.append((j, k))
    return {
        "vdW": len(degree),
        "Bonds": len(bonds),
        "Angles": sum(d * (d - 1) // 2 for d in degree),
        "ProperTorsions": sum((degree[j] - 1) * (degree[k] - 1) for j, k in bonds),
    }


def scan_counts(scan: Any, n_atoms: int, n_bonds: int) -> dict[str, int]:
    """How many atoms, bonds, angles and proper torsions a scanned molecule has.

    Angles and propers from the degrees (hydrogens have degree 1: no angle, no
    torsion around their bond). Around a bond ``j-k`` a torsion ``i-j-k-m`` needs
    ``i != m``: an atom bonded to both (a 3-ring) would fold one, so each common
    neighbour of ``j`` and ``k`` takes one off (hydrogens are never one).

    Args:
        scan: a :func:`~tying.chem.smirks.scan_heavy` of the molecule.
        n_atoms: its atom count; n_bonds: its bond count.

    Example:
        >>> from tying.chem.molecules import parse_smiles
        >>> from tying.chem.smirks import scan_heavy
        >>> mol, n = parse_smiles("C1CC1O")
        >>> counts = scan_counts(scan_heavy(mol, n), mol.GetNumAtoms(), mol.GetNumBonds())
        >>> counts == {s: len(t) for s, t in topology_terms(mol).items()}
        True
    """
    d = scan.degrees
    propers = sum((d[j] - 1) * (d[k] - 1) for j, k, _, _ in scan.bonds)
    if scan.three_ring:
        nbrs: list[set[int]] = [set() for _ in d]
        for j, k, _, _ in scan.bonds:
            nbrs[j].add(k)
            nbrs[k].add(j)
        propers -= sum(len(nbrs[j] & nbrs[k]) for j, k, _, _ in scan.bonds)
    return {
        "vdW": n_atoms,
        "Bonds": n_bonds,
        "Angles": sum(x * (x - 1) // 2 for x in d),
        "ProperTorsions": propers,
    }


def _check_complete(mol: Any, a: Assignment, label: str, counts: dict[str, int] | None) -> None:
    # Every assigned key is a real term: compile_smirks checked that the tagged
    # atoms are bonded in each pattern. So a full count (``counts``: _term_counts) means
    # a complete assignment; None (a 3-ring) checks term by term.
    # Impropers and constraints cover some terms only: nothing to check complete.
    sections = [s for s in a.terms if s not in ("ImproperTorsions", "Constraints")]
    if counts is not None and all(len(a.terms[s]) == counts[s] for s in sections):
        return
    topo = _topology_terms(mol)
    what = {"Bonds": "bond", "Angles": "angle", "ProperTorsions": "proper torsion", "vdW": "vdW"}
    for section in sections:
        missing = sorted(topo[section].difference(a.terms[section]))
        if missing:
            shown = ", ".join(
                f"{'-'.join(map(str, k))} ({'-'.join(a.elements[i] for i in k)})"
                for k in missing[:5]
            )
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UnassignedParameterError(
                f"{a.force_field} has no {what[section]} parameter for "
                f"{'atom' if section == 'vdW' else what[section]} {shown}{more} of {label!r}; "
                f"use a force field that covers these atoms, or SmirksAssigner(strict=False)"
            )


_PREFIX = {n: tuple(range(n)) for n in range(1, 9)}


def _term_keys(section: str, tagged: tuple[int, ...]) -> Callable[[Any], set]:
    """A function from a pattern's raw matches to its canonical term keys (see :data:`KEYS`).

    One comprehension per pattern: this runs for every match of every pattern, so
    the tagged atoms are picked and canonicalised in one pass.
    """
    n = len(tagged)
    if section == "vdW":
        (t,) = tagged
        return lambda matches: {(m[t],) for m in matches}
    if section == "ImproperTorsions":
        a, c, b, d = tagged[1], tagged[0], tagged[2], tagged[3]

        def improper(matches):
            out = set()
            for m in matches:
                x, y, z = sorted((m[c], m[b], m[d]))
                out.add((x, m[a], y, z))
            return out

        return improper
    if tagged == _PREFIX[n]:  # tags on the first atoms: slice in C, reverse if needed
        last = n - 1
        if n == 2:
            return lambda matches: {m[:2] if m[0] < m[1] else (m[1], m[0]) for m in matches}
        return lambda matches: {m[:n] if m[0] < m[last] else m[last::-1] for m in matches}
    pick = operator.itemgetter(*tagged)
    return lambda matches: {t if t[0] < t[-1] else t[::-1] for t in map(pick, matches)}


def _term_dict(
    section: str, tagged: tuple[int, ...], n_query: int, symmetric: bool = False
) -> Callable[[Any, Any], dict]:
    """A function ``(raw matches, parameter) -> {canonical term key: parameter}`` for one pattern.

    What :func:`_term_keys` gives, with the parameter attached, in one dict comprehension
    (one hash per match instead of three: set, dict, update). Where the tagged atoms are
    the whole pattern in tag order, a match is its own key (or its reverse), with no
    slice. ``tests/chem/test_assign.py`` checks it against :data:`KEYS` on every pattern.
    """
    n = len(tagged)
    if section == "vdW":
        (t,) = tagged
        if n_query == 1:  # a one-atom pattern: each match is already the key (i,)
            return dict.fromkeys
        return lambda matches, p: {(m[t],): p for m in matches}
    if section == "ImproperTorsions":
        if symmetric and n_query == 4:  # every order of the three outer atoms matches
            c, a, b, d = tagged
            return lambda matches, p: {
                (m[c], m[a], m[b], m[d]): p for m in matches if m[c] < m[b] < m[d]
            }
        keys = _term_keys(section, tagged)
        return lambda matches, p: dict.fromkeys(keys(matches), p)
    if tagged == _PREFIX[n]:
        last = n - 1
        if symmetric and n_query == n:  # see below
            return lambda matches, p: {m: p for m in matches if m[0] < m[last]}
        if n == 2:
            if n_query == 2:
                return lambda matches, p: {(m if m[0] < m[1] else (m[1], m[0])): p for m in matches}
            return lambda matches, p: {(m[:2] if m[0] < m[1] else (m[1], m[0])): p for m in matches}
        if n_query == n:
            return lambda matches, p: {(m if m[0] < m[last] else m[::-1]): p for m in matches}
        return lambda matches, p: {(m[:n] if m[0] < m[last] else m[last::-1]): p for m in matches}
    pick = operator.itemgetter(*tagged)
    if symmetric and n_query == n:
        # Every match comes with its reverse (:func:`_reversible`): keep the half that
        # is already its own key, and pick only those.
        first, last = tagged[0], tagged[-1]
        return lambda matches, p: {pick(m): p for m in matches if m[first] < m[last]}
    # The key, or its reverse, picked straight from the match (one tuple, not two).
    first, last, back = tagged[0], tagged[-1], operator.itemgetter(*tagged[::-1])
    return lambda matches, p: {(pick(m) if m[first] < m[last] else back(m)): p for m in matches}


def _reversible(compiled: CompiledSmirks) -> bool:
    """Whether a pattern is a chain of its tagged atoms that reads the same both ways.

    Then the reverse of every match is a match too (the pattern maps onto itself end to
    end), so a term's two orderings both come back and one of them is enough.
    """
    query, n = compiled.query, len(compiled.tagged)
    if compiled.tagged != _PREFIX.get(n) or query.GetNumAtoms() != n or n < 2:
        return False
    if has_stereo(compiled):  # directional bonds do not simply read backwards
        return False
    if query.GetNumBonds() != n - 1 or compiled.atoms != compiled.atoms[::-1]:
        return False
    bonds = []
    for i in range(n - 1):
        bond = query.GetBondBetweenAtoms(i, i + 1)
        if bond is None:
            return False
        bonds.append(bond.GetSmarts())
    return bonds == bonds[::-1]


def _outer_symmetric(compiled: CompiledSmirks) -> bool:
    """Whether an improper pattern is its four tagged atoms with three alike outer atoms.

    The same SMARTS on tags 1, 3 and 4, bonded to the center (tag 2) by the same bond
    SMARTS and not to each other: then each of the six orders of the outer atoms of a
    match is a match too, and the one with them ascending is enough.
    """
    query, tagged = compiled.query, compiled.tagged
    if len(tagged) != 4 or query.GetNumAtoms() != 4 or query.GetNumBonds() != 3:
        return False
    if has_stereo(compiled):
        return False
    center, outer = tagged[1], (tagged[0], tagged[2], tagged[3])
    if len({compiled.atoms[i] for i in outer}) != 1:
        return False
    bonds = [query.GetBondBetweenAtoms(center, i) for i in outer]
    return None not in bonds and len({b.GetSmarts() for b in bonds}) == 1
