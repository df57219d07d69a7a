"""A batch of scanned molecules labelled as packed arrays, with no dict per term.

:meth:`SmirksAssigner._assign_batch <tying.chem.assign.SmirksAssigner._assign_batch>`
labels the molecules of a batch that the fast path scans (a SMILES that wrote no
hydrogen) all at once, from :data:`~tying.chem.assign._ARRAYS_FROM` of them on: the
chain table's winners of the decided patterns come as arrays, RDKit's matches of the
other candidates are merged into them (the later pattern wins), and each section's
terms of the whole batch become one pair of packed columns (:mod:`tying.chem.packed`).
The per-molecule path (:meth:`~tying.chem.assign.SmirksAssigner._assign_scanned`) is
its reference: equal results and errors (``tests/chem/test_assign.py``).

Moved out of :mod:`tying.chem.assign` (stop 50) to keep that module under 1,000 lines.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

import numpy as np

from tying.chem.chain_table import ARITY
from tying.chem.packed import _buffer, views

if TYPE_CHECKING:
    from tying.chem.assign import SmirksAssigner

# assign_arrays codes a term as one int64 (molecule, then atoms, in base atoms + 1).
_CODE_LIMIT = 2**62


def assign_arrays(assigner: SmirksAssigner, todo: dict[int, tuple]) -> dict[int, Any]:
    """:meth:`~SmirksAssigner._assign_scanned` of many molecules at once, packed.

    The decided patterns' winners come as arrays (:meth:`ChainTable.label_arrays`),
    RDKit's matches of each molecule's other candidates are merged into them (the
    later pattern wins, as in :func:`~tying.chem.assign._merge`), and each section's
    terms of the whole batch become one pair of packed columns, sorted by molecule and
    key: no dict or tuple per term is made. Equal results (``==``) and errors to
    :meth:`_assign_scanned` (``tests/chem/test_assign.py`` checks it).

    Args:
        assigner: the :class:`~tying.chem.assign.SmirksAssigner` labelling the batch.
        todo: ``{k: (mol, n_written, canonical SMILES, name, (scan, candidates))}``.

    Returns:
        ``{k: Assignment or the exception _assign_scanned raises}``; molecules the
        table labels one by one (an undecided atom) come back unpacked.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> batch = SmirksAssigner("openff-2.3.0").assign_many(["CCO", "CCN", "CCC", "CCS"])
        >>> batch[0] == SmirksAssigner("openff-2.3.0").assign("CCO")  # labelled here
        True
    """
    ks = list(todo)
    mols = [todo[k][0] for k in ks]
    sizes = [m.GetNumAtoms() for m in mols]
    scans = [todo[k][4][0] for k in ks]
    single, batch, found = assigner._chain.label_arrays(scans, sizes)
    out: dict[int, Any] = {}
    for x, labelled in enumerate(single):
        if labelled is not None:
            mol, n_written, smiles, name, (scan, candidates) = todo[ks[x]]
            try:
                out[ks[x]] = assigner._assign_scanned(
                    mol, smiles, name, n_written, (scan, candidates, labelled)
                )
            except Exception as err:  # raised in its turn by the caller
                out[ks[x]] = err
    if not batch:
        return out
    width = max(sizes[x] for x in batch) + 1
    plan, match = assigner._fast_plan, None
    # RDKit's matches of the searched candidates, per section: key, molecule, pattern.
    hits: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in assigner.sections}
    for b, x in enumerate(batch):
        candidates = todo[ks[x]][4][1]
        match = mols[x].GetSubstructMatches
        start = 0
        for section, stop in assigner._stops:
            end = bisect.bisect_left(candidates, stop, start)
            if end > start:
                keys, where, which = hits[section]
                for i in candidates[start:end]:
                    query, match_params, term_dict, _ = plan[i]
                    matches = match(query, match_params)
                    if matches:
                        found_i = term_dict(matches, i)
                        keys += found_i
                        which += found_i.values()
                        where += [b] * len(found_i)
            start = end
    counts = [[0] * len(assigner.sections) for _ in batch]
    cols = {}
    for q, section in enumerate(assigner.sections):
        arity = ARITY[section]
        if len(batch) * width**arity >= _CODE_LIMIT:  # codes would overflow: one by one
            return assigner._assign_arrays_one_by_one(todo, out, batch, ks)
        g, keys, where = _merged(found.get(section), hits[section], arity, width, len(batch))
        bounds = np.searchsorted(where, np.arange(len(batch) + 1)).tolist()
        for b in range(len(batch)):
            counts[b][q] = bounds[b + 1] - bounds[b]
        positions = assigner._positions[g]
        cols[section] = (arity, _buffer(keys.reshape(-1)), _buffer(positions))
    terms_of = views([tuple(c) for c in counts], cols, assigner._parameters)
    ff = assigner.force_field.name
    from tying.chem.assign import Assignment  # not at import: assign imports this module

    for x, terms in zip(batch, terms_of, strict=True):
        mol, n_written, smiles, name, (scan, _) = todo[ks[x]]
        n_atoms = sizes[x]
        elements = (*scan.symbols, *("H",) * (n_atoms - n_written))
        result = Assignment(smiles, name, ff, elements, terms, assigner.not_assigned)
        if assigner.strict:
            try:
                assigner._check_scanned(mol, result, name or smiles, scan, n_atoms)
            except Exception as err:
                out[ks[x]] = err
                continue
        out[ks[x]] = result
    return out


def _merged(
    decided: tuple[np.ndarray, ...] | None,
    hits: tuple[list, list, list],
    arity: int,
    width: int,
    n_molecules: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One section's winners of a batch: the chain table's, and RDKit's matches over them.

    Each term is coded as one int64, its molecule then its atoms in base ``width`` (so
    codes sort by molecule, then key); a term both sides match takes the later
    pattern, as :func:`~tying.chem.assign._merge` does.

    Args:
        decided: :meth:`ChainTable.label_arrays`'s ``(winners, keys, molecule, bounds)``
            of the section, or None when it decides none of its patterns.
        hits: RDKit's matches: lists of term keys, their molecules, their patterns.

    Returns:
        ``(winners, keys, molecule)`` of every term, sorted by molecule and key.
    """
    if decided is None:
        g = np.zeros(0, dtype=np.intp)
        keys = np.zeros((0, arity), dtype=np.intp)
        where = np.zeros(0, dtype=np.intp)
    else:
        g, keys, where, _ = decided
    found_keys, found_where, found_g = hits
    if found_keys:
        keys = np.concatenate([keys, np.array(found_keys, dtype=np.intp).reshape(-1, arity)])
        where = np.concatenate([where, np.array(found_where, dtype=np.intp)])
        g = np.concatenate([g, np.array(found_g, dtype=np.intp)])
    code = where.astype(np.int64)
    for q in range(arity):
        code = code * width + keys[:, q]
    # Sorted by code, then pattern: the last of each code is its latest pattern.
    order = np.lexsort((g, code))
    code = code[order]
    last = np.ones(len(code), dtype=bool)
    last[:-1] = code[1:] != code[:-1]
    order = order[last]
    return g[order], keys.take(order, 0), where[order]
