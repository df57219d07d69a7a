"""The order in which RDKit visits a pattern's atoms: the rarest atom first (claim C9 speed).

RDKit's substructure search (VF2) maps query atom 0 first, then grows the match
through the query's atoms in index order. A SMIRKS is written for people, tagged
atoms first, and often starts with a wildcard (``[*:1]~[#6X4:2]-[*:3]``): the search
then tries every atom of the molecule, hydrogens included, as the start of a match
that fails at the next atom. :func:`search_order` renumbers the query so the atom
fewest molecule atoms can satisfy comes first, and each next one is the rarest
atom bonded to those already placed. The matches are the same set (a search
enumerates every match, whatever the order), with their atoms in the new order;
:func:`reordered` gives the query and the new position of each tagged atom.
On drug-like molecules the search costs about a fifth less (measured 2026-12-01).

A recursive SMARTS is searched the same way: before each search RDKit matches the
recursive pattern ``$(*~[#6X3])`` over the whole molecule, starting from every
atom, because its first atom ``*`` allows any. When the atom that carries it
requires more (``[#7X3$(*~[#6X3])]``: a nitrogen with three connections AND the
recursive pattern), :func:`anchored` writes those requirements into the recursive
pattern's first atom (``[#7X3$([#7X3]~[#6X3])]``): the same atoms satisfy the whole,
and the recursive search starts only from atoms that can. 19 of the 452 patterns of
``openff-2.3.0`` have such an atom; it takes about a tenth off the search
(measured 2026-12-01).

How rare an atom is comes from the signatures (:meth:`~tying.chem.smirks.Prefilter.signatures`)
of the shipped molecule set, judged by the pre-filter's three-valued predicate
(anything it cannot decide counts as a match): a general table of which atoms are
common, not fitted to any benchmark set.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from typing import Any

import numpy as np

from tying.chem._rdkit import Chem, quiet
from tying.chem.smirks import (
    CompiledSmirks,
    Prefilter,
    parse_atom_query,
    split_recursive,
)


@functools.lru_cache(maxsize=1)
def atom_frequencies() -> tuple[tuple[tuple, int], ...]:
    """``(signature, count)`` of every atom of the shipped molecule set (hydrogens included).

    The table counted once (:mod:`tying.chem._atom_frequencies`) when the shipped file
    is the one it was counted from (its SHA-256), else :func:`count_atom_frequencies`:
    the same values, without parsing the set in every process that builds an assigner.

    Example:
        >>> freq = dict(atom_frequencies())
        >>> freq[(1, 1, 0, 0, False, False, ())] > freq[(16, 2, 0, 0, False, False, ())]
        True
    """
    import hashlib

    from tying.chem import _atom_frequencies
    from tying.chem.molecules import data_path

    digest = hashlib.sha256(data_path("molecules.smi").read_bytes()).hexdigest()
    if digest == _atom_frequencies.SOURCE_SHA256:
        return _atom_frequencies.FREQUENCIES
    return count_atom_frequencies()


def count_atom_frequencies() -> tuple[tuple[tuple, int], ...]:
    """:func:`atom_frequencies` counted from the shipped molecule file (the reference).

    Example:
        >>> count_atom_frequencies() == atom_frequencies()
        True
    """
    from tying.chem.molecules import load_molecule_set, molecule_from_smiles

    counts: collections.Counter = collections.Counter()
    for smiles, _ in load_molecule_set():
        try:
            counts.update(Prefilter.signatures(molecule_from_smiles(smiles)))
        except Exception:  # noqa: S112 - a molecule this model cannot read is only not counted
            continue
    return tuple(sorted(counts.items()))


@functools.lru_cache(maxsize=4096)
def atom_weight(smarts: str) -> int:
    """How many atoms of the shipped set may satisfy one query atom's SMARTS.

    The predicate is evaluated on every signature at once (:func:`_truth`), equal to
    :func:`~tying.chem.smirks.evaluate` signature by signature
    (``tests/chem/test_worker_start_stop52.py``): that loop was a fifth of an
    ``assign_many`` worker's start-up.

    Example:
        >>> atom_weight("[#16&X4]") < atom_weight("[#6&X4]") < atom_weight("*")
        True
    """
    fields, counts = _signature_table()
    return int(counts[_truth(parse_atom_query(smarts), fields) > 0].sum())


@functools.lru_cache(maxsize=1)
def _signature_table() -> tuple[tuple[Any, ...], Any]:
    """The signatures of :func:`atom_frequencies` as columns (one array per field; the
    last, a tuple of ring sizes per signature or None where not known) and their counts."""
    table = atom_frequencies()
    columns = tuple(np.array([sig[f] for sig, _ in table]) for f in range(6))
    sizes = np.empty(len(table), dtype=object)
    sizes[:] = [sig[6] if len(sig) > 6 else None for sig, _ in table]
    return (*columns, sizes), np.array([n for _, n in table], dtype=np.int64)


_FIELD = {"Z": 0, "X": 1, "H": 2, "charge": 3, "aromatic": 4, "ring": 5}


def _truth(tree: tuple, fields: tuple[Any, ...]) -> Any:
    """:func:`~tying.chem.smirks.evaluate` on every signature: 0 False, 1 unknown, 2 True
    (Kleene's logic: AND is the minimum, OR the maximum, NOT ``2 - v``)."""
    kind = tree[0]
    if kind == "prim":
        return np.where(fields[_FIELD[tree[1]]] == tree[2], 2, 0)
    if kind == "rsize":  # unknown where the ring sizes are not known or hold the size
        return np.array([1 if s is None or tree[1] in s else 0 for s in fields[6]])
    if kind == "unknown":
        return np.ones(len(fields[0]), dtype=np.int64)
    if kind == "not":
        return 2 - _truth(tree[1], fields)
    values = [_truth(t, fields) for t in tree[1]]
    return np.minimum.reduce(values) if kind == "and" else np.maximum.reduce(values)


def search_order(compiled: CompiledSmirks) -> tuple[int, ...]:
    """The query atoms, rarest first, each next the rarest one bonded to those placed.

    Ties go to the lower index, so a pattern whose atoms are all alike keeps its order.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> c = compile_smirks(Parameter("ProperTorsions", "t", "[*:1]-[#6X4:2]-[#16X4:3]-[*:4]", 0, {}))
        >>> search_order(c)
        (2, 1, 0, 3)
    """
    query, weights = compiled.query, [atom_weight(a) for a in compiled.atoms]
    n = query.GetNumAtoms()
    neighbours = [[b.GetIdx() for b in query.GetAtomWithIdx(i).GetNeighbors()] for i in range(n)]
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < n:
        frontier = {j for i in order for j in neighbours[i]} - placed
        if not frontier:  # the first atom, or a pattern in several pieces
            frontier = set(range(n)) - placed
        nxt = min(frontier, key=lambda i: (weights[i], i))
        order.append(nxt)
        placed.add(nxt)
    return tuple(order)


def reordered(compiled: CompiledSmirks) -> tuple[Any, tuple[int, ...]]:
    """``(query, tagged)``: the query renumbered by :func:`search_order`, and its tagged atoms.

    A pattern with a stereo query (a chiral atom, a directional bond) is returned as it
    is: its stereo is read relative to the order of its atoms' bonds.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> c = compile_smirks(Parameter("Angles", "a", "[*:1]~[#8X2:2]-[*:3]", 0, {}))
        >>> query, tagged = reordered(c)
        >>> query.GetAtomWithIdx(0).GetSmarts(), tagged
        ('[#8&X2:2]', (1, 0, 2))
    """
    order = search_order(compiled)
    if order == tuple(range(len(order))) or has_stereo(compiled):
        return compiled.query, compiled.tagged
    position = {old: new for new, old in enumerate(order)}
    query = Chem.RenumberAtoms(compiled.query, list(order))
    return query, tuple(position[t] for t in compiled.tagged)


def has_stereo(compiled: CompiledSmirks) -> bool:
    """Whether a pattern has a stereo query: a chiral atom or a directional bond.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> has_stereo(compile_smirks(Parameter("X", "s", "[#6:1]/[#6]=[#6]/[#6]", 0, {})))
        True
    """
    smirks = compiled.parameter.smirks
    if "/" in smirks or "\\" in smirks:
        return True
    if "@" not in smirks:
        # A chiral tag comes only from '@' and bond stereo only from '/' or '\\' (checked on
        # every shipped pattern): the atom walk below, through RDKit's slow Python
        # sequences, was about a tenth of building an assigner (a worker's start-up).
        return False
    unspecified = Chem.ChiralType.CHI_UNSPECIFIED
    return any(a.GetChiralTag() != unspecified for a in compiled.query.GetAtoms()) or any(
        b.GetStereo() != Chem.BondStereo.STEREONONE for b in compiled.query.GetBonds()
    )


def anchored(compiled: CompiledSmirks) -> CompiledSmirks:
    """The pattern with each recursive SMARTS starting from its carrier atom's own primitives.

    A query atom written as a conjunction of primitives and recursive SMARTS that each
    start with ``*`` (``[#7X3$(*~[#6X3,#6X2]):2]``) gets those primitives as the
    recursive patterns' first atom (``[#7X3$([#7X3]~[#6X3,#6X2]):2]``). The atom's
    predicate is the same (``P and R`` where ``R`` is true only where ``P`` is too),
    so every search finds the same matches; RDKit's pre-search of the recursive
    pattern over the molecule then starts only at atoms satisfying ``P``. Atoms with
    an OR (``,``), a low-precedence AND (``;``), a NOT (``!``) or a chirality (``@``:
    it reads the neighbours in the order a pattern writes them) outside their
    recursive parts, atoms that begin with a recursive part, atoms whose primitives
    RDKit reads differently on their own (``[H$(*~O)]`` is "one hydrogen", ``[H]`` a
    hydrogen atom), and recursive patterns not starting with ``*``, are left as they
    are. Primitives on both sides of a recursion are joined with ``&``, never glued
    (``[+$(*~O)+]`` is charge +1 twice; ``++`` would be +2). The atoms, their order and their tags do not change.

    Args:
        compiled: a compiled pattern.

    Returns:
        ``compiled`` itself when no atom is rewritten, else a copy whose ``query`` is
        the rewritten pattern (``parameter``, ``atoms`` and ``tagged`` unchanged).

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> c = compile_smirks(Parameter("Angles", "a", "[*:1]~[#7X3$(*~[#6X3]):2]~[*:3]", 0, {}))
        >>> Chem.MolToSmarts(anchored(c).query)
        '[*:1]~[#7&X3&$([#7&X3]~[#6&X3]):2]~[*:3]'
    """
    smirks = anchored_smarts(compiled.parameter.smirks)
    if smirks == compiled.parameter.smirks:
        return compiled
    query = Chem.MolFromSmarts(smirks)
    old = compiled.query
    if (
        query is None
        or query.GetNumAtoms() != old.GetNumAtoms()
        or query.GetNumBonds() != old.GetNumBonds()
        or [a.GetAtomMapNum() for a in query.GetAtoms()]
        != [a.GetAtomMapNum() for a in old.GetAtoms()]
    ):  # not expected; the pattern as written is always right
        return compiled
    return dataclasses.replace(compiled, query=query)


_TAG = re.compile(r":\d+$")


def anchored_smarts(smarts: str) -> str:
    """:func:`anchored` on a SMARTS text: each eligible bracket atom rewritten.

    Example:
        >>> anchored_smarts("[#1:1]-[#6X3$(*=[#8]):2]")
        '[#1:1]-[#6X3$([#6X3]=[#8]):2]'
        >>> anchored_smarts("[#6X3,#7$(*=[#8]):1]")  # an OR outside: left as it is
        '[#6X3,#7$(*=[#8]):1]'
    """
    out, i = [], 0
    while i < len(smarts):
        if smarts[i] != "[":
            out.append(smarts[i])
            i += 1
            continue
        end = _closing(smarts, i, "[", "]")
        if end < 0:  # unbalanced: RDKit will say what is wrong with it
            return smarts
        out.append(_anchored_atom(smarts[i : end + 1]))
        i = end + 1
    return "".join(out)


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one at ``start`` (-1 when there is none)."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == opening:
            depth += 1
        elif text[k] == closing:
            depth -= 1
            if depth == 0:
                return k
    return -1


def _anchored_atom(atom: str) -> str:
    body = atom[1:-1]
    tag = _TAG.search(body)
    core = body[: tag.start()] if tag else body
    if core.startswith("$("):  # primitives after it: "H1" would read differently up front
        return atom
    split = split_recursive(core)
    if split is None:
        return atom
    # text after a recursion is a new primitive: never glued to the text before it
    recursive, outside = split
    # "&" between the pieces: "[+$(*~O)+]" is charge +1 twice, "++" would be +2
    primitives = "&".join(p for piece in outside for p in piece.split("&") if p)
    if (
        not recursive
        or not primitives
        or any(ch in primitives for ch in ",;!$@")  # "@": chirality reads the pattern's bonds
        or not all(r.startswith("*") for r in recursive)
        or (written := _without_recursion(f"[{core}]")) is None
        or written != _without_recursion(f"[{primitives}]")
    ):
        return atom
    parts = "".join(f"$([{primitives}]{r[1:]})" for r in recursive)
    return f"[{primitives}{parts}{tag.group(0) if tag else ''}]"


def _without_recursion(atom: str) -> str | None:
    """RDKit's own writing of a bracket atom's query, its recursive parts left out.

    The guard that the primitives, written on their own as the recursion's first atom,
    mean what they meant beside the recursion (``[H$(*~O)]`` is "one hydrogen", but
    ``[H]`` alone is a hydrogen atom); None when RDKit cannot read it.
    """
    with quiet():
        mol = Chem.MolFromSmarts(atom)
    if mol is None or mol.GetNumAtoms() != 1:
        return None
    text = mol.GetAtomWithIdx(0).GetSmarts()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text + "&"):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "&" and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    return "&".join(p for p in parts if not p.startswith("$("))
