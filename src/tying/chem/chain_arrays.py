"""Many molecules labelled at once by the chain table, from NumPy word arrays (claim C9 speed).

:meth:`ChainTable.label <tying.chem.chain_table.ChainTable.label>` ANDs each term's
masks as Python ints, one molecule at a time. Here the same masks are rows of 64-bit
words (:class:`_Words`, one row per atom key seen, built once per table), every term
of every molecule of a batch (bonds, angles, propers, impropers, atoms) is
enumerated as arrays of atom indices, and each section's winners come from one array
operation per step over all its terms: the same winners, with no Python per term.
:meth:`ChainTable.label_arrays <tying.chem.chain_table.ChainTable.label_arrays>` and
:meth:`~tying.chem.chain_table.ChainTable.label_many` call into this module, which
``assign_many`` uses; ``label`` stays the per-molecule path and the reference
(``tests/chem/test_chain_table.py`` checks both agree, molecule by molecule). It was
split out of :mod:`tying.chem.chain_table` (house rule 1: one concept per module).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tying.chem.chain_table import ChainTable


class _Words:
    """Every atom key's masks as 64-bit words (per section and position), a row per key seen.

    ``rows[section][q]``: shape ``(capacity, words)``; row ``r`` holds position ``q``'s
    mask that :meth:`ChainTable.masks` gives for the ``r``-th key seen (bit ``p`` in
    word ``p // 64``). ``undecided[r]``: whether that key leaves any pattern undecided.
    ``bonds[section][q]``: shape ``(10, words)``, bond position ``q``'s mask per truth row.
    ``glob[section]``: a mask's highest bit (1-based; 0: none) -> the global index of
    that pattern (-1).
    """

    def __init__(self, table: ChainTable):
        self.table = table
        self.ids: dict[tuple, int] = {}
        self.lock = threading.Lock()  # adding keys (ids_of)
        self.pid = os.getpid()  # a forked child makes its own lock
        self.undecided: list[bool] = []
        self.words = {s: max(1, (len(i) + 63) // 64) for s, (i, _, _) in table.sections.items()}
        self.rows = {
            s: [np.zeros((64, self.words[s]), dtype=np.uint64) for _ in range(at.shape[1])]
            for s, (_, at, _) in table.sections.items()
        }
        self.bonds = {
            s: [
                np.array([_words(m, self.words[s]) for m in per_row], dtype=np.uint64)
                for per_row in table._bond_masks[s]
            ]
            for s in table.sections
        }
        self.glob = {s: np.array(g, dtype=np.intp) for s, g in table._glob.items()}

    def ids_of(self, keys: list[tuple]) -> list[int]:
        """Each key's row, adding the keys not seen before.

        Safe from several threads labelling with one table: a key is added under a
        lock and published in ``ids`` only once its rows and flag are written (a
        child forked while another thread held the lock starts a new one).
        """
        ids, out = self.ids, []
        for key in keys:
            r = ids.get(key)
            if r is None:
                if self.pid != os.getpid():  # forked: the lock's holder is not here
                    self.lock, self.pid = threading.Lock(), os.getpid()
                with self.lock:
                    r = ids.get(key)
                    if r is None:
                        r = len(self.undecided)
                        self._add(r, self.table.masks(key))
                        ids[key] = r
            out.append(r)
        return out

    def _add(self, r: int, masks: dict) -> None:
        open_ = False
        for s, (per_q, undecided) in masks.items():
            rows = self.rows[s]
            if r >= len(rows[0]):
                rows[:] = [np.concatenate([x, np.zeros_like(x)]) for x in rows]
            for q, mask in enumerate(per_q):
                rows[q][r] = _words(mask, self.words[s])
            open_ = open_ or bool(undecided)
        self.undecided.append(open_)


def _words(mask: int, n: int) -> list[int]:
    """A Python int's ``n`` low 64-bit words, least significant first."""
    return [(mask >> (64 * k)) & 0xFFFFFFFFFFFFFFFF for k in range(n)]


_LOW32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def _highest(m: np.ndarray) -> np.ndarray:
    """Per row of ``m`` (shape ``(n, words)``, uint64), its highest set bit, 1-based (0: none).

    Exact: each 32-bit half is a float64 without rounding, and ``frexp``'s exponent
    of a positive integer is its bit length.

    Example:
        >>> words = np.array([[0, 0], [1, 0], [2**63 + 5, 0], [7, 2**40]], dtype=np.uint64)
        >>> _highest(words).tolist()
        [0, 1, 64, 105]
    """
    n, w = m.shape
    if w == 1:
        word, base = m[:, 0], 0
    else:
        top = w - 1 - np.argmax(m[:, ::-1] != 0, axis=1)  # the highest word set (0 if none)
        word, base = m.take(np.arange(n) * w + top), 64 * top
    hi = np.frexp((word >> _32).astype(np.float64))[1]
    lo = np.frexp((word & _LOW32).astype(np.float64))[1]
    bits = np.where(hi > 0, hi + 32, lo)
    return np.where(bits > 0, bits + base, 0)


def _label_many(
    table: ChainTable, scans: Sequence[Any], n_atoms: Sequence[int]
) -> list[dict[str, tuple[dict, list[int]]]]:
    """:meth:`ChainTable.label` of many molecules at once (see :meth:`ChainTable.label_many`)."""
    out, batch, found = _label_arrays(table, scans, n_atoms)
    labelled: list[dict] = [{} for _ in batch]
    for section, (g, keys, _, bounds) in found.items():
        gl = g.tolist()
        tuples = list(zip(*(keys[:, q].tolist() for q in range(keys.shape[1]))))
        bl = bounds.tolist()
        for x, result in enumerate(labelled):
            lo, hi = bl[x], bl[x + 1]
            result[section] = (dict(zip(tuples[lo:hi], gl[lo:hi])), [])
    for m, result in zip(batch, labelled, strict=True):
        out[m] = result
    return out


def _label_arrays(
    table: ChainTable, scans: Sequence[Any], n_atoms: Sequence[int]
) -> tuple[list[Any], list[int], dict[str, tuple[np.ndarray, ...]]]:
    """:meth:`ChainTable.label_arrays` (see there)."""
    words = table._words
    if words is None:
        words = table._words = _Words(table)
    out: list[Any] = [None] * len(scans)
    rows_all: list[int] = []  # every atom's key row, molecule after molecule
    offsets: list[int] = []  # each labelled molecule's first atom
    heavy: list[tuple[int, int, int]] = []  # bonds among written atoms (j, k, truth row)
    hbonds: list[tuple[int, int]] = []  # (parent, hydrogen)
    batch: list[int] = []  # the molecules labelled here (the others: label)
    start = 0
    for m, (scan, n) in enumerate(zip(scans, n_atoms, strict=True)):
        n_written = len(scan.sigs)
        ids = words.ids_of(table.keys_scanned(scan, n))
        undecided = words.undecided
        if any(undecided[r] for r in set(ids)):
            out[m] = table.label(scan, n)  # some pattern left open: the per-molecule path
            continue
        batch.append(m)
        offsets.append(start)
        rows_all += ids
        heavy += [(start + j, start + k, 2 * code + ring) for j, k, code, ring in scan.bonds]
        hbonds += [(start + p, h) for h, p in enumerate(scan.h_parents, start + n_written)]
        start += n
    if not batch:
        return out, batch, {}
    n_total = start
    row = np.array(rows_all, dtype=np.intp)
    off = np.array(offsets, dtype=np.intp)
    mol_of = np.repeat(np.arange(len(batch)), np.diff([*offsets, n_total]))
    hb = np.array(heavy, dtype=np.intp).reshape(-1, 3)
    hh = np.array(hbonds, dtype=np.intp).reshape(-1, 2)
    # Every bond once (j < k) with its truth row; a hydrogen's is single, not in a ring.
    bj = np.concatenate([hb[:, 0], hh[:, 0]])
    bk = np.concatenate([hb[:, 1], hh[:, 1]])
    bc = np.concatenate([hb[:, 2], np.full(len(hh), 2, dtype=np.intp)])
    # Directed edges (center -> neighbour) sorted by center, then neighbour: each
    # atom's neighbours ascending, as label visits them.
    src, dst, code = np.concatenate([bj, bk]), np.concatenate([bk, bj]), np.concatenate([bc, bc])
    order = np.lexsort((dst, src))
    src, dst, code = src[order], dst[order], code[order]
    degree = np.bincount(src, minlength=n_total)
    first = _starts(degree)  # each atom's first edge
    found = {}
    # Rows of 2-D arrays are gathered with take (10x faster than fancy indexing there).
    for section in table.sections:
        a = [x.take(row, 0) for x in words.rows[section]]  # per position: each atom's mask
        b = words.bonds[section]
        glob = words.glob[section]
        if section == "vdW":
            w, keys = a[0], np.arange(n_total)[:, None]
        elif section == "Bonds":
            a0, a1 = a
            w = (a0.take(bj, 0) & a1.take(bk, 0) | a0.take(bk, 0) & a1.take(bj, 0)) & b[0].take(
                bc, 0
            )
            keys = np.stack([bj, bk], axis=1)
        elif section == "Angles":
            # Each edge (j -> i) with each edge (j -> k) of the same center, i < k.
            pl, pr = _pairs(degree, first, src)
            keep = dst[pl] < dst[pr]
            pl, pr = pl[keep], pr[keep]
            arm_l = a[0].take(dst, 0) & b[0].take(code, 0)  # a neighbour as tag 1, via its bond
            arm_r = b[1].take(code, 0) & a[2].take(dst, 0)  # as tag 3
            w = a[1].take(src[pl], 0) & (
                arm_l.take(pl, 0) & arm_r.take(pr, 0) | arm_l.take(pr, 0) & arm_r.take(pl, 0)
            )
            keys = np.stack([dst[pl], src[pl], dst[pr]], axis=1)
        elif section == "ImproperTorsions":
            # A neighbour as tag 1, 3 or 4, through its bond.
            t1 = a[0].take(dst, 0) & b[0].take(code, 0)
            t3 = a[2].take(dst, 0) & b[1].take(code, 0)
            t4 = a[3].take(dst, 0) & b[2].take(code, 0)
            w_parts, k_parts = [], []
            for d in np.unique(degree[degree >= 3]).tolist():
                centers = np.flatnonzero(degree == d)
                combos = np.array(list(itertools.combinations(range(d), 3)), dtype=np.intp)
                e = (first[centers][:, None, None] + combos[None]).reshape(-1, 3)
                x, y, z = e[:, 0], e[:, 1], e[:, 2]
                j = src[x]
                t1x, t1y, t1z = t1.take(x, 0), t1.take(y, 0), t1.take(z, 0)
                t3x, t3y, t3z = t3.take(x, 0), t3.take(y, 0), t3.take(z, 0)
                t4x, t4y, t4z = t4.take(x, 0), t4.take(y, 0), t4.take(z, 0)
                w_parts.append(
                    a[1].take(j, 0)
                    & (
                        t1x & (t3y & t4z | t3z & t4y)
                        | t1y & (t3x & t4z | t3z & t4x)
                        | t1z & (t3x & t4y | t3y & t4x)
                    )
                )
                k_parts.append(np.stack([dst[x], j, dst[y], dst[z]], axis=1))
            if not w_parts:
                w_parts, k_parts = [a[1][:0]], [np.zeros((0, 4), dtype=np.intp)]
            w, keys = np.concatenate(w_parts), np.concatenate(k_parts)
        else:  # ProperTorsions: i-j-k-m around each bond j-k between written atoms
            j, k, c = hb[:, 0], hb[:, 1], hb[:, 2]
            # A neighbour as tag 1 (or 4), through its bond.
            end0 = a[0].take(dst, 0) & b[0].take(code, 0)
            end3 = b[2].take(code, 0) & a[3].take(dst, 0)
            # Each bond with each edge (j -> i), i != k: the middle and one end, both ways.
            dj = degree[j]
            t = np.repeat(np.arange(len(j)), dj)
            el = first[j][t] + np.arange(len(t)) - np.repeat(_starts(dj), dj)
            keep = dst[el] != k[t]
            t, el = t[keep], el[keep]
            jt, kt = j[t], k[t]
            mid = b[1].take(c[t], 0)
            left_f = a[1].take(jt, 0) & mid & a[2].take(kt, 0) & end0.take(el, 0)
            left_b = a[1].take(kt, 0) & mid & a[2].take(jt, 0) & end3.take(el, 0)
            # Each such (bond, i) with each edge (k -> m), m != j and m != i.
            dk = degree[kt]
            x = np.repeat(np.arange(len(t)), dk)
            er = first[kt][x] + np.arange(len(x)) - np.repeat(_starts(dk), dk)
            i, m, jx, kx = dst[el][x], dst[er], jt[x], kt[x]
            keep = (m != jx) & (m != i)
            x, er, i, m, jx, kx = x[keep], er[keep], i[keep], m[keep], jx[keep], kx[keep]
            w = left_f.take(x, 0) & end3.take(er, 0) | left_b.take(x, 0) & end0.take(er, 0)
            # The key (i, j, k, m), or its reverse when m < i.
            forward = (i < m).astype(np.intp)
            second = kx + (jx - kx) * forward
            keys = np.stack([np.minimum(i, m), second, jx + kx - second, np.maximum(i, m)], axis=1)
        g = glob[_highest(w)]
        hit = np.flatnonzero(g >= 0)
        g, keys = g[hit], keys.take(hit, 0)
        mols = mol_of[keys[:, 1 if section == "ImproperTorsions" else 0]]
        if section in ("Bonds", "ImproperTorsions"):  # (hydrogens' bonds, degrees) last
            by = np.argsort(mols, kind="stable")
            g, keys, mols = g[by], keys.take(by, 0), mols[by]
        keys = keys - off[mols][:, None]
        found[section] = (g, keys, mols, np.searchsorted(mols, np.arange(len(batch) + 1)))
    return out, batch, found


def _pairs(degree: np.ndarray, first: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every ordered pair of edges ``(e1, e2)`` with the same center (``e1 == e2`` too)."""
    count = degree[src]
    e1 = np.repeat(np.arange(len(src)), count)
    e2 = first[src[e1]] + np.arange(len(e1)) - np.repeat(_starts(count), count)
    return e1, e2


def _starts(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums: where each block of ``counts`` starts."""
    out = np.zeros(len(counts), dtype=np.intp)
    np.cumsum(counts[:-1], out=out[1:])
    return out
