"""Chain and star patterns decided term by term from bit masks, not searched (claim C9 speed).

Most SMIRKS of the valence sections are a *chain of their tagged atoms*:
``[#6X4:1]-[#6X3:2]=[#8X1+0:3]`` has three atoms, all tagged, bonded 1-2-3 and
nothing else. Such a pattern matches a term (a bond, angle or proper torsion of
the molecule, or an atom for vdW) exactly when each atom of the term satisfies
its query atom and each bond its query bond, read forwards or backwards; an
improper that is its center (tag 2) bonded to three tagged atoms matches a center
and three of its neighbours taken in some order. When every query atom and bond
is a conjunction/disjunction/negation of primitives that an atom's or bond's
signature decides (element, connections, hydrogens, charge, aromaticity, ring
membership, smallest ring size; bond order and ring membership), no graph search
is needed. A recursive SMARTS of one bond (``$(*~[#6X3])``) and a vdW pattern of a
tagged atom with one untagged neighbour (``[#1:1]-[#6X4]``) are read as
*neighbour predicates* of the atom (:meth:`ChainTable.keys`).

:class:`ChainTable` keeps, per signature (cached) and per query position, one
Python int with a bit per pattern in file order; :meth:`ChainTable.label` ANDs a
term's masks, and the highest bit set is the last pattern matching it.
:meth:`ChainTable.label_arrays` does the same for a batch of molecules at once in
NumPy (the masks as rows of 64-bit words, every term of a section in one pass per
step; :mod:`tying.chem.chain_arrays`), which ``assign_many`` uses; ``label`` is the
per-molecule path and its reference. Everything
else (untagged atoms beyond one neighbour, deeper or ring-shaped recursions,
stereo, and any pattern whose queries a molecule's atoms leave undecided) is still
searched by RDKit, and the last match wins over both
(:meth:`~tying.chem.assign.SmirksAssigner._assign_scanned`).
``tests/chem/test_chain_table.py`` checks the result equals RDKit's search: random
patterns of every primitive kind, and every pattern of four installed force fields
over shipped, generated and MiniDrugBank molecules.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tying.chem._rdkit import Chem, quiet
from tying.chem.chain_arrays import (
    _label_arrays,
    _label_many,
    _Words,
)
from tying.chem.search_order import has_stereo
from tying.chem.smirks import (
    HYDROGEN,
    CompiledSmirks,
    evaluate,
    parse_atom_query,
    parse_bond_query,
    split_recursive,
)

# Atoms per term of each section decided here.
ARITY = {"Bonds": 2, "Angles": 3, "ProperTorsions": 4, "ImproperTorsions": 4, "vdW": 1}
_TAG = re.compile(r":\d+\]$")
_ANY = ("any",)  # '*' and '~': true on every atom / bond


def _decidable(tree: tuple) -> bool:
    """Whether a predicate tree reads only primitives a signature decides (ring sizes per atom)."""
    kind = tree[0]
    if kind in ("prim", "rsize", "any", "nbr"):
        return True
    if kind == "unknown":
        return False
    if kind == "not":
        return _decidable(tree[1])
    return all(_decidable(t) for t in tree[1])


def atom_tree(smarts: str, neighbours: dict | None = None) -> tuple | None:
    """A query atom's predicate tree, ``("any",)`` for ``*``; None when a signature cannot decide it.

    With ``neighbours`` (a dict the caller keeps), a conjunction of primitives and
    recursive SMARTS of one bond, ``$(*~[#6X3])``, is decided too: each such recursion
    is a *neighbour predicate* ``("nbr", id)`` (the atom satisfies the recursion's first
    atom and has a neighbour satisfying its second through its bond), interned in
    ``neighbours`` as ``(first, bond, second)`` trees.

    Example:
        >>> atom_tree("[*:1]"), atom_tree("[#6&X4:2]")
        (('any',), ('and', [('prim', 'Z', 6), ('prim', 'X', 4)]))
        >>> atom_tree("[#6&$(*~[#8]):1]") is None
        True
        >>> found = {}
        >>> atom_tree("[#6&$(*~[#8]):1]", found), list(found.values())
        (('and', [('prim', 'Z', 6), ('nbr', 0)]), [(0, (('any',), ('any',), ('prim', 'Z', 8)))])
    """
    body = _TAG.sub("]", smarts)
    if body in ("*", "[*]"):
        return _ANY
    if "$(" in body and neighbours is not None:
        return _with_neighbours(body[1:-1], neighbours)
    tree = parse_atom_query(smarts)
    return tree if _decidable(tree) else None


def _with_neighbours(body: str, neighbours: dict) -> tuple | None:
    """:func:`atom_tree` of a bracket atom's inside with recursive parts (see there)."""
    split = split_recursive(body)
    if split is None:
        return None
    recursive, outside = split
    if any(ch in piece for piece in outside for ch in ",!"):  # an OR or NOT outside
        return None
    primitives = "&".join(p for piece in outside for p in re.split("[&;]", piece) if p)
    parts = [atom_tree(f"[{primitives}]")] if primitives else []
    for text in recursive:
        if "$(" in text:
            return None
        with quiet():
            query = Chem.MolFromSmarts(text)
        if query is None or query.GetNumAtoms() != 2 or query.GetNumBonds() != 1:
            return None
        bond = query.GetBondWithIdx(0)
        first, second = (atom_tree(query.GetAtomWithIdx(k).GetSmarts()) for k in (0, 1))
        link = bond_tree(bond.GetSmarts())
        if first is None or second is None or link is None or bond.GetStereo() != 0:
            return None
        parts.append(("nbr", _intern(neighbours, (first, link, second))))
    if None in parts:
        return None
    return parts[0] if len(parts) == 1 else ("and", parts)


def bond_tree(smarts: str) -> tuple | None:
    """A query bond's predicate tree, ``("any",)`` for ``~``; None when undecidable.

    Example:
        >>> bond_tree("~"), bond_tree("-&@")
        (('any',), ('and', [('prim', 'Z', 1), ('prim', 'X', True)]))
    """
    if smarts == "~":
        return _ANY
    tree = parse_bond_query(smarts)
    return tree if _decidable(tree) else None


def truth(tree: tuple, sig: tuple, near: int = 0, near_open: int = 0) -> bool | None:
    """:func:`~tying.chem.smirks.evaluate`, with ``("any",)`` true and ring sizes decided.

    RDKit reads ``r<n>`` as "the smallest ring holding the atom has n atoms", from the
    same ring set as the signature's sizes (``sig[6]``, sorted), so it is decided where
    the pre-filter's three-valued reading leaves it open; bond signatures have no sizes.

    Example:
        >>> truth(("any",), (6, 4, 3, 0, False, False, ())), truth(atom_tree("[#8:1]"), (6,) * 7)
        (True, False)
        >>> truth(atom_tree("[#6;r6:1]"), (6, 3, 0, 0, True, True, (5, 6)))  # indole's C3a
        False
    """
    kind = tree[0]
    if kind == "any":
        return True
    if kind == "nbr":  # the atom's neighbour predicates: bits true, bits undecided
        bit = 1 << tree[1]
        return None if near_open & bit else bool(near & bit)
    if kind == "rsize":
        return None if len(sig) < 7 else bool(sig[6]) and sig[6][0] == tree[1]
    if kind == "not":
        v = truth(tree[1], sig, near, near_open)
        return None if v is None else not v
    if kind in ("and", "or"):
        values = [truth(t, sig, near, near_open) for t in tree[1]]
        if kind == "and":
            if False in values:
                return False
            return True if all(v is True for v in values) else None
        if True in values:
            return True
        return False if all(v is False for v in values) else None
    return evaluate(tree, sig)


def chain_queries(compiled: CompiledSmirks, arity: int) -> tuple[list[str], list[str]] | None:
    """The atom and bond SMARTS, in tag order, of a pattern that is a chain of its tagged atoms.

    None when the pattern has other atoms or bonds, fewer or more tagged atoms than
    ``arity``, a tagged pair not bonded in tag order, or a stereo query (a recursive SMARTS
    is left to :func:`atom_tree`).

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> chain_queries(compile_smirks(Parameter("Angles", "a", "[*:1]~[#8X2:2]-[#1:3]", 0, {})), 3)
        (['[*]', '[#8&X2]', '[#1]'], ['~', '-'])
        >>> chain_queries(compile_smirks(Parameter("Bonds", "b", "[#6:1]-[#8:2]-[#1]", 0, {})), 2)
    """
    query, tagged = compiled.query, compiled.tagged
    if len(tagged) != arity or query.GetNumAtoms() != arity or query.GetNumBonds() != arity - 1:
        return None
    if has_stereo(compiled):
        return None
    bonds = []
    for a, b in zip(tagged, tagged[1:]):
        bond = query.GetBondBetweenAtoms(a, b)
        if bond is None:
            return None
        bonds.append(bond.GetSmarts())
    return [compiled.atoms[t] for t in tagged], bonds


def neighbour_query(compiled: CompiledSmirks) -> tuple[str, str, str] | None:
    """``(tagged atom, bond, other atom)`` SMARTS of a vdW pattern of two atoms, one tagged.

    Such a pattern (``[#1:1]-[#6X4]``) matches an atom exactly when the atom satisfies
    the tagged query and some neighbour the other through the bond: a neighbour
    predicate of one atom. None for any other pattern, or one with stereo or recursion.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> neighbour_query(compile_smirks(Parameter("vdW", "n", "[#1:1]-[#6X4]", 0, {})))
        ('[#1]', '-', '[#6&X4]')
    """
    query, tagged = compiled.query, compiled.tagged
    if len(tagged) != 1 or query.GetNumAtoms() != 2 or query.GetNumBonds() != 1:
        return None
    if "$(" in compiled.parameter.smirks or has_stereo(compiled):
        return None
    other = 1 - tagged[0]
    bond = query.GetBondWithIdx(0).GetSmarts()
    return compiled.atoms[tagged[0]], bond, compiled.atoms[other]


def star_queries(compiled: CompiledSmirks) -> tuple[list[str], list[str]] | None:
    """The atom SMARTS (tag order) and the bond SMARTS (center to tags 1, 3, 4) of an
    improper pattern that is its center (tag 2) bonded to three tagged atoms and nothing else.

    None for any other pattern, or one with a stereo query.

    Example:
        >>> from tying.chem.offxml import Parameter
        >>> from tying.chem.smirks import compile_smirks
        >>> p = Parameter("ImproperTorsions", "i", "[*:1]~[#6X3:2](~[#8X1:3])~[#8:4]", 0, {})
        >>> star_queries(compile_smirks(p))
        (['[*]', '[#6&X3]', '[#8&X1]', '[#8]'], ['~', '~', '~'])
    """
    query, tagged = compiled.query, compiled.tagged
    if len(tagged) != 4 or query.GetNumAtoms() != 4 or query.GetNumBonds() != 3:
        return None
    if has_stereo(compiled):
        return None
    center = tagged[1]
    bonds = []
    for outer in (tagged[0], tagged[2], tagged[3]):
        bond = query.GetBondBetweenAtoms(center, outer)
        if bond is None:
            return None
        bonds.append(bond.GetSmarts())
    return [compiled.atoms[t] for t in tagged], bonds


class ChainTable:
    """The chain and star patterns of a force field, decided per term from signature bit masks.

    Args:
        patterns: the assigner's compiled patterns of every section, in one sequence.
        sections: each pattern's section name, in the same order.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> assigner = SmirksAssigner()
        >>> sections = [s for s in assigner.sections for _ in assigner._compiled[s]]
        >>> table = ChainTable(assigner._flat, sections)
        >>> bool(table.decided[0]), assigner._flat[0].parameter.smirks  # b1: a chain
        (True, '[#6X4:1]-[#6X4:2]')
    """

    def __init__(self, patterns: Sequence[CompiledSmirks], sections: Sequence[str]):
        n = len(patterns)
        self.decided = np.zeros(n, dtype=bool)
        atom_trees: dict[str, tuple[int, tuple]] = {}  # repr -> (id, tree)
        bond_trees: dict[str, tuple[int, tuple]] = {}
        near: dict[str, tuple[int, tuple]] = {}  # neighbour predicates (atom_tree)
        carriers: list[tuple[int, tuple]] = []  # (predicate id, the rest of its atom's tree)
        columns: dict[str, list[tuple[int, tuple[int, ...], tuple[int, ...]]]] = {}
        for i, (c, section) in enumerate(zip(patterns, sections, strict=True)):
            if section == "ImproperTorsions":
                chain = star_queries(c)
            else:
                arity = ARITY.get(section)
                chain = None if arity is None else chain_queries(c, arity)
            if chain is not None:
                trees = [atom_tree(a, near) for a in chain[0]]
                btrees = [bond_tree(b) for b in chain[1]]
            elif section == "vdW" and (pair := neighbour_query(c)) is not None:
                first, link, second = atom_tree(pair[0]), bond_tree(pair[1]), atom_tree(pair[2])
                if first is None or link is None or second is None:
                    continue
                trees = [("and", [first, ("nbr", _intern(near, (_ANY, link, second)))])]
                btrees = []
            else:
                continue
            if None in trees or None in btrees:
                continue
            for t in trees:
                carriers += _carried(t)
            self.decided[i] = True
            a_ids = tuple(_intern(atom_trees, t) for t in trees)
            b_ids = tuple(_intern(bond_trees, t) for t in btrees)
            columns.setdefault(section, []).append((i, a_ids, b_ids))
        self._atom_trees = [t for _, t in atom_trees.values()]
        # Neighbour predicates: (first atom, bond, second atom) trees, and per predicate
        # the rest of each atom tree holding it (where that is false, it is not read).
        self._near = [t for _, t in near.values()]
        self._carriers = carriers
        self._near_self: dict[tuple, tuple[int, int]] = {}  # sig -> (bits true, undecided)
        self._near_other: dict[tuple, tuple[int, int]] = {}  # (bond row, sig) -> the same
        # Per section: the decided patterns' global indices, and their atom and bond
        # query ids in tag order (one row per pattern).
        self.sections: dict[str, tuple[Any, Any, Any]] = {}
        for section, rows in columns.items():
            arity = ARITY[section]
            index = np.array([r[0] for r in rows], dtype=np.intp)
            at = np.array([r[1] for r in rows], dtype=np.intp).reshape(len(rows), arity)
            bt = np.array([r[2] for r in rows], dtype=np.intp).reshape(len(rows), arity - 1)
            self.sections[section] = (index, at, bt)
        # Bond masks per section and position: bit p set where pattern p's bond q
        # accepts a bond of truth row code * 2 + in_ring (code 1, 2, 3, 4 = aromatic).
        btrees = [t for _, t in bond_trees.values()]
        bond_ok = [[truth(t, (r // 2, bool(r % 2))) is True for t in btrees] for r in range(10)]
        self._bond_masks: dict[str, list[list[int]]] = {}
        for section, (index, at, bt) in self.sections.items():
            self._bond_masks[section] = [
                [_bits(bond_ok[r][bt[p, q]] for p in range(len(index))) for r in range(10)]
                for q in range(at.shape[1] - 1)
            ]
        # Atom masks per signature, cached: per section, per position q, bit p set where
        # the signature satisfies pattern p's atom q; and the bits of the patterns with
        # an atom the signature leaves undecided (only a signature without ring sizes:
        # scan_heavy's always has them, and truth decides every other primitive).
        self._masks: dict[tuple, dict[str, tuple[tuple[int, ...], int]]] = {}
        # A mask's bit_length -> the global index of its last pattern (0: none, -1).
        self._glob = {s: [-1, *index.tolist()] for s, (index, _, _) in self.sections.items()}
        self._words: _Words | None = None  # the masks as NumPy words (label_many), built once

    def masks(self, key: tuple) -> dict[str, tuple[tuple[int, ...], int]]:
        """Per section ``((mask of position 0, 1, ...), undecided)`` of one atom's key:
        its signature, or ``(signature, neighbour bits true, undecided)`` when the force
        field has neighbour predicates (:meth:`keys`)."""
        found = self._masks.get(key)
        if found is None:
            # Each new key's masks: a gather and a bit-pack per section, in NumPy. Bit by
            # bit in Python (the tests' reference) this was most of the extra CPU of a fresh
            # process's first molecules (about 0.5 ms per new key, ~140 keys in the first
            # 1,000 drug-like molecules).
            values = self._values(key)
            true = np.array([v is True for v in values], dtype=bool)
            open_ = np.array([v is None for v in values], dtype=bool)
            found = {}
            for section, (_, at, _) in self.sections.items():
                per_q = tuple(_pack(column) for column in true[at].T)  # at: (patterns, arity)
                found[section] = (per_q, _pack(open_[at].any(axis=1)))
            self._masks[key] = found
        return found

    def _values(self, key: tuple) -> list[bool | None]:
        """Every atom tree's truth (True, False, None: undecided) on one :meth:`masks` key."""
        sig, near, near_open = key if self._near else (key, 0, 0)
        return [truth(t, sig, near, near_open) for t in self._atom_trees]

    def keys(self, sigs: list[tuple], adjacency: list[list[tuple[int, int]]]) -> list[tuple]:
        """Each atom's :meth:`masks` key: its signature and, where some neighbour
        predicate can matter, which ones its neighbours make true (or leave undecided).

        Args:
            sigs: every atom's signature.
            adjacency: every atom's ``(neighbour, bond truth row)`` pairs.
        """
        if not self._near:
            return sigs
        out = []
        for sig, bonded in zip(sigs, adjacency, strict=True):
            own = self._near_self.get(sig)
            if own is None:
                own = self._near_self[sig] = self._own_bits(sig)
            own_true, own_open = own
            if not (own_true or own_open):
                out.append((sig, 0, 0))
                continue
            some_true = some_open = 0
            for n, c in bonded:
                key = (c, sigs[n])
                other = self._near_other.get(key)
                if other is None:
                    other = self._near_other[key] = self._other_bits(c, sigs[n])
                some_true |= other[0]
                some_open |= other[1]
            # Three-valued: own AND (some neighbour); undecided where either part is.
            near = own_true & some_true
            near_open = (own_open & (some_true | some_open)) | (own_true & some_open & ~some_true)
            out.append((sig, near, near_open))
        return out

    def keys_scanned(self, scan: Any, n_atoms: int) -> list[tuple]:
        """:meth:`keys` of a scanned molecule's atoms, its hydrogens known from their parents.

        The same keys as :meth:`keys` on the molecule's signatures and adjacency
        (``tests/chem/test_chain_table.py`` checks it): a hydrogen's only neighbour is its
        parent, through a single bond out of any ring, so its key follows from the
        parent's signature (computed once per signature); and a heavy atom's hydrogens
        are one neighbour signature however many there are (predicates OR over
        neighbours).

        Args:
            scan: a :func:`~tying.chem.smirks.scan_heavy` of the molecule.
            n_atoms: its atom count (hydrogens from ``len(scan.sigs)`` on).
        """
        sigs = scan.sigs
        n_written = len(sigs)
        if not self._near:
            return [*sigs, *[HYDROGEN] * (n_atoms - n_written)]
        near_self, near_other = self._near_self, self._near_other
        heavy: list[list[tuple[int, tuple]]] = [[] for _ in range(n_written)]
        for j, k, code, ring in scan.bonds:
            c = 2 * code + ring
            heavy[j].append((c, sigs[k]))
            heavy[k].append((c, sigs[j]))
        h_key = (2, HYDROGEN)  # a hydrogen seen from its parent
        out = []
        for sig, bonded in zip(sigs, heavy, strict=True):
            own = near_self.get(sig)
            if own is None:
                own = near_self[sig] = self._own_bits(sig)
            own_true, own_open = own
            if not (own_true or own_open):
                out.append((sig, 0, 0))
                continue
            some_true = some_open = 0
            for key in (*bonded, h_key) if sig[2] else bonded:
                other = near_other.get(key)
                if other is None:
                    other = near_other[key] = self._other_bits(*key)
                some_true |= other[0]
                some_open |= other[1]
            near = own_true & some_true
            near_open = (own_open & (some_true | some_open)) | (own_true & some_open & ~some_true)
            out.append((sig, near, near_open))
        if n_atoms > n_written:
            own = near_self.get(HYDROGEN)
            if own is None:
                own = near_self[HYDROGEN] = self._own_bits(HYDROGEN)
            if not (own[0] or own[1]):
                return out + [(HYDROGEN, 0, 0)] * (n_atoms - n_written)
            by_parent: dict[tuple, tuple] = {}
            for parent in scan.h_parents:
                psig = sigs[parent]
                key = by_parent.get(psig)
                if key is None:
                    other = near_other.get((2, psig))
                    if other is None:
                        other = near_other[(2, psig)] = self._other_bits(2, psig)
                    some_true, some_open = other
                    near = own[0] & some_true
                    near_open = (own[1] & (some_true | some_open)) | (
                        own[0] & some_open & ~some_true
                    )
                    key = by_parent[psig] = (HYDROGEN, near, near_open)
                out.append(key)
        return out

    def _own_bits(self, sig: tuple) -> tuple[int, int]:
        """Predicates whose first atom ``sig`` satisfies (or leaves open), where it matters:
        some atom tree holding the predicate is not false on ``sig`` otherwise."""
        matters = 0
        for k, rest in self._carriers:
            if truth(rest, sig, 0, -1) is not False:  # its other predicates: undecided
                matters |= 1 << k
        true = undecided = 0
        for k, (first, _, _) in enumerate(self._near):
            if matters >> k & 1:
                v = truth(first, sig)
                true |= (v is True) << k
                undecided |= (v is None) << k
        return true, undecided

    def _other_bits(self, code: int, sig: tuple) -> tuple[int, int]:
        """Predicates a neighbour of signature ``sig``, through a bond of truth row
        ``code``, satisfies (or leaves open)."""
        bond = (code // 2, bool(code % 2))
        true = undecided = 0
        for k, (_, link, second) in enumerate(self._near):
            if truth(link, bond) is False:
                continue
            v = truth(second, sig)
            true |= (v is True) << k
            undecided |= (v is None) << k
        return true, undecided

    def label(self, scan: Any, n_atoms: int) -> dict[str, tuple[dict, list[int]]]:
        """Each section's terms that decided patterns match, with the last one matching.

        Args:
            scan: a :func:`~tying.chem.smirks.scan_heavy` of the molecule; atoms from
                ``len(scan.sigs)`` on are hydrogens bonded to ``scan.h_parents``.
            n_atoms: the molecule's atom count.

        Returns:
            Per section ``(won, open)``: ``{canonical term key: global index of the last
            decided pattern matching it}`` (bonds, angles, proper torsions as
            :func:`~tying.chem.assign.valence_key`, atoms as ``(i,)``; terms no decided
            pattern matches are left out), and the global indices of the section's
            decided patterns that some atom of this molecule leaves undecided (search
            those as the other candidates).

        Example:
            >>> from tying.chem import SmirksAssigner
            >>> from tying.chem.molecules import parse_smiles
            >>> from tying.chem.smirks import scan_heavy
            >>> assigner = SmirksAssigner()
            >>> mol, n = parse_smiles("CO")
            >>> won, _ = assigner._chain.label(scan_heavy(mol, n), mol.GetNumAtoms())["Bonds"]
            >>> assigner._flat[won[(0, 1)]].parameter.id
            'b14'
        """
        n_written = len(scan.sigs)
        sigs = scan.sigs
        if n_atoms > n_written:
            sigs = [*sigs, *[HYDROGEN] * (n_atoms - n_written)]
        # Each atom's neighbours (index, bond truth row), ascending by index: scan.bonds
        # is sorted (j, then k > j), so a written atom gets its lower neighbours first,
        # then its higher ones, then its hydrogens.
        adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n_atoms)]
        bonds = []
        for j, k, code, ring in scan.bonds:
            c = 2 * code + ring
            adjacency[j].append((k, c))
            adjacency[k].append((j, c))
            bonds.append((j, k, c))
        heavy_bonds = bonds[:]
        for h, parent in enumerate(scan.h_parents, n_written):
            adjacency[parent].append((h, 2))  # single, not in a ring
            adjacency[h].append((parent, 2))
            bonds.append((parent, h, 2))
        # Each atom's row: one per distinct key of the molecule (hydrogens mostly share one).
        row_of: dict[tuple, int] = {}
        rows = [row_of.setdefault(key, len(row_of)) for key in self.keys(sigs, adjacency)]
        per_row = [self.masks(key) for key in row_of]
        nbrs = [[(n, c, rows[n]) for n, c in bonded] for bonded in adjacency]
        out = {}
        for section, (index, at, _) in self.sections.items():
            glob = self._glob[section]
            undecided = 0
            for m in per_row:
                undecided |= m[section][1]
            decided = ~undecided
            a = [[m[section][0][q] for m in per_row] for q in range(at.shape[1])]
            b = self._bond_masks[section]
            won: dict[tuple[int, ...], int] = {}
            if section == "vdW":
                (a0,) = a
                by_row = [glob[(x & decided).bit_length()] for x in a0]
                won = {(i,): by_row[r] for i, r in enumerate(rows) if by_row[r] >= 0}
            elif section == "Bonds":
                a0, a1 = a
                (b0,) = b
                for j, k, c in bonds:
                    rj, rk = rows[j], rows[k]
                    w = ((a0[rj] & a1[rk] | a0[rk] & a1[rj]) & b0[c] & decided).bit_length()
                    if w:
                        won[(j, k)] = glob[w]
            elif section == "Angles":
                a0, a1, a2 = a
                b0, b1 = b
                for j in range(n_written):
                    center = a1[rows[j]] & decided
                    if not center:
                        continue
                    ns = nbrs[j]
                    # The center's mask folded into each neighbour's as tag 1.
                    left = [a0[r] & b0[c] & center for _, c, r in ns]
                    right = [b1[c] & a2[r] for _, c, r in ns]
                    for x in range(len(ns) - 1):
                        i, lx, rx = ns[x][0], left[x], right[x]
                        for (k, _, _), ly, ry in zip(ns[x + 1 :], left[x + 1 :], right[x + 1 :]):
                            w = (lx & ry | ly & rx).bit_length()
                            if w:
                                won[(i, j, k)] = glob[w]
            elif section == "ImproperTorsions":  # each center and three of its neighbours
                a0, a1, a2, a3 = a
                b0, b1, b2 = b
                for j in range(n_written):
                    ns = nbrs[j]
                    if len(ns) < 3:
                        continue
                    center = a1[rows[j]] & decided
                    if not center:
                        continue
                    # Each neighbour as the pattern's tag 1, 3 or 4 (with its bond to the center).
                    t1 = [a0[r] & b0[c] for _, c, r in ns]
                    t3 = [a2[r] & b1[c] for _, c, r in ns]
                    t4 = [a3[r] & b2[c] for _, c, r in ns]
                    for x, y, z in itertools.combinations(range(len(ns)), 3):
                        m = center & (
                            t1[x] & (t3[y] & t4[z] | t3[z] & t4[y])
                            | t1[y] & (t3[x] & t4[z] | t3[z] & t4[x])
                            | t1[z] & (t3[x] & t4[y] | t3[y] & t4[x])
                        )
                        if m:
                            won[(ns[x][0], j, ns[y][0], ns[z][0])] = glob[m.bit_length()]
            else:  # ProperTorsions: around each bond between written atoms
                a0, a1, a2, a3 = a
                b0, b1, b2 = b
                for j, k, c in heavy_bonds:
                    rj, rk = rows[j], rows[k]
                    mid_f = a1[rj] & b1[c] & a2[rk] & decided
                    mid_b = a1[rk] & b1[c] & a2[rj] & decided
                    if not (mid_f or mid_b):
                        continue
                    outer = [
                        (m, b2[cm] & a3[rm], a0[rm] & b0[cm]) for m, cm, rm in nbrs[k] if m != j
                    ]
                    # Neighbours of j alike (the hydrogens: one row, one bond kind) match
                    # alike: their winners against each m are computed once.
                    alike: dict[tuple[int, int], list[tuple[int, int]]] = {}
                    for i, ci, ri in nbrs[j]:
                        if i == k:
                            continue
                        found = alike.get((ci, ri))
                        if found is None:
                            fi = mid_f & a0[ri] & b0[ci]
                            bi = mid_b & b2[ci] & a3[ri]
                            found = alike[(ci, ri)] = [
                                (m, glob[w])
                                for m, fm, bm in outer
                                if (w := (fi & fm | bi & bm).bit_length())
                            ]
                        for m, g in found:
                            if m != i:
                                won[(i, j, k, m) if i < m else (m, k, j, i)] = g
            out[section] = (won, index[_positions(undecided)].tolist() if undecided else [])
        return out

    def label_many(
        self, scans: Sequence[Any], n_atoms: Sequence[int]
    ) -> list[dict[str, tuple[dict, list[int]]]]:
        """:meth:`label` of each molecule, many at once: the same results, in NumPy.

        Every term of every molecule (bonds, angles, propers, impropers, atoms) is
        enumerated as arrays of atom indices, and its decided patterns' masks are
        ANDed as 64-bit words, one array operation per step over all terms of a
        section instead of Python per term. A molecule some of whose atoms leave a
        pattern undecided (see :meth:`masks`) is labelled by :meth:`label`.
        ``tests/chem/test_chain_table.py`` checks both agree, molecule by molecule.

        Args:
            scans: a :func:`~tying.chem.smirks.scan_heavy` of each molecule.
            n_atoms: each molecule's atom count.

        Returns:
            One :meth:`label` result per molecule, in order.

        Example:
            >>> from tying.chem import SmirksAssigner
            >>> from tying.chem.molecules import parse_smiles
            >>> from tying.chem.smirks import scan_heavy
            >>> table = SmirksAssigner()._chain
            >>> mols = [parse_smiles(s) for s in ("CCO", "c1ccccc1N")]
            >>> scans = [scan_heavy(m, n) for m, n in mols]
            >>> sizes = [m.GetNumAtoms() for m, _ in mols]
            >>> table.label_many(scans, sizes) == [table.label(s, k) for s, k in zip(scans, sizes)]
            True
        """
        return _label_many(self, scans, n_atoms)

    def label_arrays(
        self, scans: Sequence[Any], n_atoms: Sequence[int]
    ) -> tuple[list[Any], list[int], dict[str, tuple[np.ndarray, ...]]]:
        """:meth:`label_many`'s winners as arrays, before any dict is made.

        Returns:
            ``(out, batch, found)``: ``out[m]`` is :meth:`label`'s result for each
            molecule ``m`` labelled one by one (an atom leaves a pattern undecided) and
            None for the others, ``batch``: the others' indices, ascending; ``found``:
            per section ``(winners, keys, molecule, bounds)``: each term's global
            pattern index, its canonical key (shape ``(terms, arity)``, atom indices of
            its molecule), its molecule's position in ``batch``, and where each
            molecule's terms start (``bounds[x]:bounds[x + 1]``, in ``batch`` order).

        Example:
            >>> from tying.chem import SmirksAssigner
            >>> from tying.chem.molecules import parse_smiles
            >>> from tying.chem.smirks import scan_heavy
            >>> table = SmirksAssigner()._chain
            >>> mol, n = parse_smiles("CO")
            >>> out, batch, found = table.label_arrays([scan_heavy(mol, n)], [mol.GetNumAtoms()])
            >>> batch, found["Bonds"][1].tolist()[0], found["Bonds"][3].tolist()
            ([0], [0, 1], [0, 5])
        """
        return _label_arrays(self, scans, n_atoms)


def _carried(tree: tuple) -> list[tuple[int, tuple]]:
    """``(predicate id, the rest of the tree)`` for each neighbour predicate a top-level
    conjunction holds (the only place atom_tree puts them)."""
    if tree[0] == "nbr":
        return [(tree[1], _ANY)]
    if tree[0] != "and":
        return []
    out = []
    for k, part in enumerate(tree[1]):
        if part[0] == "nbr":
            rest = [p for m, p in enumerate(tree[1]) if m != k]
            out.append((part[1], rest[0] if len(rest) == 1 else ("and", rest)))
    return out


def _bits(flags: Any) -> int:
    """An int with bit p set where the p-th flag is true."""
    out = 0
    for p, flag in enumerate(flags):
        if flag:
            out |= 1 << p
    return out


def _pack(flags: np.ndarray) -> int:
    """:func:`_bits` of a boolean vector: bit p set where ``flags[p]``, packed by NumPy."""
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


def _positions(mask: int) -> list[int]:
    """The set bits of ``mask``, ascending."""
    return [p for p in range(mask.bit_length()) if mask >> p & 1]


def _intern(table: dict[str, tuple[int, tuple]], tree: tuple) -> int:
    """The id of ``tree`` in ``table`` (repr -> (id, tree)), added when new."""
    return table.setdefault(repr(tree), (len(table), tree))[0]
