"""Label many molecules over processes, and the pieces a Dask recipe needs (claim C9 at scale).

:func:`assign_many` spreads molecules over a pool of fresh processes
(``forkserver`` where the platform has it, else ``spawn``: never ``fork``, which
would copy RDKit's and the caller's threads into the children). Each worker
builds one :class:`~tying.chem.assign.SmirksAssigner` for the force field and
labels chunks of molecules; results come back in input order, packed as arrays of
atom indices and parameter positions (:func:`_encode`), and the parent decodes them
in C against its own force field (:func:`_decode`): every
:class:`~tying.chem.offxml.Parameter` is still one object shared by all molecules,
and the parent does little besides collecting, so the workers keep the cores. The first molecule that fails (lowest index) is named, with its
index, in an error of the worker's own type.

For libraries beyond one machine, :func:`~tying.chem.lines.label_lines` turns lines of a SMILES
file into plain records; ``dask.bag.read_text(...).map_partitions(label_lines)``
runs it on any Dask cluster (see ``docs/chem.md``): an existing distributed
engine, no home-made one.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import numbers
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tying.chem._rdkit import Chem
from tying.chem.errors import SmilesError
from tying.chem.mapped import check_flag, map_order, renumber, reordered, reordered_warning
from tying.chem.molecules import input_hint, molecule_name
from tying.chem.packed import columns, views
from tying.chem.skipping import (
    Labelled,
    check_errors,
    counts_a_miss,
    label_each,
    reason,
    warn_skipped,
)
from tying.chem.stale import CheckedMol
from tying.chem.tables import refuse_table, row_fields, row_hint, smiles_and_name
from tying.core.cpus import usable_cpus
from tying.core.pools import pool_context

if TYPE_CHECKING:
    from tying.chem.assign import Assignment, SmirksAssigner


def check_n_jobs(n_jobs: Any) -> int:
    """The number of processes ``n_jobs`` asks for: a positive int, or -1 for every usable CPU.

    Example:
        >>> check_n_jobs(2), check_n_jobs(-1) == usable_cpus()
        (2, True)
    """
    # NumPy's integers are ints here too (stop 58: n_jobs=np.int64(2) was refused), as in
    # tying.hmm's resolve_n_jobs and drug_like_smiles' seed; a bool or a float is not
    if not _is_count(n_jobs) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(
            f"n_jobs must be a positive int or -1 (every core), got {n_jobs!r}; "
            f"use n_jobs=1 to label in this process"
        )
    return usable_cpus() if n_jobs == -1 else int(n_jobs)


def _is_count(x: Any) -> bool:
    """An integer, Python's or NumPy's (``numbers.Integral``), but not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def capped_n_jobs(n_jobs: int, stacklevel: int = 2) -> int:
    """``n_jobs`` capped at the usable CPUs (never below 2), with a warning when it is.

    Labelling is CPU-bound: workers beyond the CPUs only take turns on them, each
    costing its start-up (~0.2 s of CPU to build its assigner) and its memory;
    ``n_jobs=16`` on 2 CPUs took 1.7x as long as ``n_jobs=2`` (stop 35). Results do not
    depend on ``n_jobs``. Two workers are always allowed, so that ``n_jobs=2`` spreads
    (and its tests test the pool) on one CPU too.

    Example:
        >>> capped_n_jobs(2)
        2
    """
    limit = max(usable_cpus(), 2)
    if n_jobs <= limit:
        return n_jobs
    warnings.warn(
        f"assign_many: n_jobs={n_jobs} is more than the CPUs this process may use "
        f"({usable_cpus()}); starting {limit} worker processes instead (labelling is CPU-bound: more "
        f"processes only add start-up time and memory; the results are the same). Pass "
        f"n_jobs=-1 for every usable CPU",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
    return limit


def check_many(values: Any, function: str, what: str) -> None:
    """Refuse a single item, or a mapping, where a collection of items is expected.

    A string is iterable too: ``assign_many("CCO")`` labelled methane, methane and
    water, and ``label_lines("CCO ethanol")`` one record per character; a dict gives
    its keys only, so the names of ``{smiles: name}`` were dropped. Both silently.

    Raises:
        TypeError: for a str, bytes, an RDKit molecule, a mapping or a non-iterable,
            naming ``function`` and what to pass instead.

    Example:
        >>> check_many(["CCO"], "assign_many", "molecules")
        >>> check_many("CCO", "assign_many", "molecules")
        Traceback (most recent call last):
        ...
        TypeError: assign_many: expected an iterable of molecules, got the str 'CCO', which would be read one character at a time; pass a list, e.g. assign_many(['CCO'])
    """
    if isinstance(values, (str, bytes)):
        example = values.decode(errors="replace") if isinstance(values, bytes) else values
        raise TypeError(
            f"{function}: expected an iterable of {what}, got the {type(values).__name__} "
            f"{values!r:.80}, which would be read one character at a time; pass a list, "
            f"e.g. {function}([{example!r:.80}])"
        )
    refuse_table(values, function, what)  # stop 61: its iteration gives its column names
    if isinstance(values, Mapping):
        raise TypeError(
            f"{function}: expected an iterable of {what}, got a {type(values).__name__}, whose "
            f"iteration gives its keys only; pass list(d.items()) for (SMILES, name) pairs, "
            f"or list(d) for the keys alone"
        )
    if not isinstance(values, Iterable):  # None, a number, one RDKit molecule
        # an OpenFF Molecule or Topology: how to pass it (stop 57: [topology] was advised)
        hint = input_hint(values) if type(values).__module__.startswith("openff.") else ""
        if hint and what == "lines":  # label_lines reads SMILES text, not molecules
            many = type(values).__name__ == "Topology"
            text = "[m.to_smiles() for m in topology.molecules]" if many else "[mol.to_smiles()]"
            hint = f"; {function} reads lines of SMILES text: pass {text}, or use assign_many"
        elif hint and type(values).__name__ == "Molecule":
            hint = f"; pass a list, e.g. {function}([molecule.to_rdkit()]) (same atom order)"
        raise TypeError(
            f"{function}: expected an iterable of {what}, got {type(values).__name__}"
            + (hint or f"; pass a list, e.g. {function}([molecule])")
        )


def default_chunksize(n_items: int, n_jobs: int) -> int:
    """Molecules per worker task when ``chunksize`` is not given: ~32 tasks a worker, <= 200 each.

    Many small tasks: a worker that finishes early takes another, so the last task
    (at most ~0.2 s of labelling) is all the imbalance at the end.

    Example:
        >>> default_chunksize(100_000, 2), default_chunksize(1_000, 2), default_chunksize(10, 4)
        (200, 15, 1)
    """
    return max(1, min(200, n_items // (32 * n_jobs) or 1))


def assign_many(
    assigner: SmirksAssigner,
    molecules: Iterable[Any],
    *,
    n_jobs: int = 1,
    progress: bool = False,
    chunksize: int | None = None,
    mapped: bool = False,
    errors: str = "raise",
) -> list[Assignment]:
    """Label molecules with ``assigner``'s force field over ``n_jobs`` processes, in input order.

    Called by :meth:`SmirksAssigner.assign_many <tying.chem.assign.SmirksAssigner.assign_many>`;
    see there for the arguments.
    """

    n = check_n_jobs(n_jobs)
    skip = check_errors(errors, "assign_many")
    if not isinstance(progress, bool):  # progress="no" showed a bar: no silent coercion
        raise TypeError(
            f"progress must be True or False, got {type(progress).__name__}: {progress!r}"
        )
    check_many(molecules, "assign_many", "molecules")
    items = [_split_item(i, m) for i, m in enumerate(molecules)]
    if check_flag(mapped):
        for i, molecule, name in items:
            try:
                check_flag(mapped, molecule)
            except TypeError as err:
                raise _named_error(err, _label(i, molecule, name)) from None
    n = capped_n_jobs(n, stacklevel=3)  # once the call is known good; points at the user
    skipped: dict[int, Exception] | None = {} if skip else None
    out = _assign_items(assigner, items, n, progress, chunksize, skipped)
    out = _in_map_order(out, items, skipped) if mapped else _warn_reordered(out, items)
    if skipped is None:
        return out
    skipped = dict(sorted(skipped.items()))
    reasons = [reason(err) for err in skipped.values()]
    where = "None in their places, each error in the result's .skipped ({index: error})"
    warn_skipped("assign_many", reasons, len(items), where)
    return Labelled(out, skipped)


def _in_map_order(out: list[Assignment], items, skipped=None) -> list[Assignment]:
    """Each result renumbered into its SMILES' atom-map order (:mod:`tying.chem.mapped`)."""
    for k, (i, molecule, name) in enumerate(items):
        if out[k] is None:  # skipped (errors="skip")
            continue
        try:
            out[k] = renumber(out[k], map_order(molecule, len(out[k].elements)))
        except SmilesError as err:
            if skipped is None:
                raise _named_error(err, _label(i, molecule, name)) from None
            out[k], skipped[i] = None, _named_error(err, _label(i, molecule, name))
    return out


def _warn_reordered(out: list[Assignment], items) -> list[Assignment]:
    """Warn once when some SMILES maps every atom in another order than the written one."""
    found = [m for _, m, _ in items if isinstance(m, str) and reordered(m)]
    if found:
        warnings.warn(reordered_warning(found[0], len(found) - 1), UserWarning, stacklevel=4)
    return out


def _assign_items(
    assigner, items, n: int, progress: bool, chunksize, skipped: dict | None = None
) -> list[Assignment]:
    """The results in input order; with ``skipped`` (errors="skip"), None for each molecule
    that fails, whose error (named by its index) goes into ``skipped``."""
    if chunksize is None:
        chunksize = default_chunksize(len(items), n)
    elif not _is_count(chunksize) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
    else:
        chunksize = int(chunksize)
    with _progress(progress, len(items), n) as advance:
        if n == 1 or len(items) <= chunksize:
            if skipped is not None:
                return _skipping_here(assigner, items, skipped, advance)
            out = []
            for batch, done, failure in _in_batches(assigner, items):
                out += done
                advance(len(done))
                if failure is not None:
                    i, molecule, name = batch[failure[0]]
                    raise _named_error(failure[1], _label(i, molecule, name)) from failure[1]
            return out
        # Repeated SMILES strings are labelled once (the assigner's cache would too).
        results: dict[int, Assignment] = {}
        todo, first = [], {}
        for i, molecule, name in items:
            if isinstance(molecule, str):
                if assigner.cache and molecule in assigner._by_text:
                    results[i] = assigner._named(assigner._by_text[molecule], name)
                    continue
                if molecule in first:
                    continue
                first[molecule] = i
            elif isinstance(molecule, Chem.Mol):  # with what pickling loses (its unperceived H)
                molecule = CheckedMol(molecule)
            todo.append((i, molecule, name))
        advance(len(items) - len(todo))
        chunks = [todo[k : k + chunksize] for k in range(0, len(todo), chunksize)]
        orders: dict[int, tuple[int, ...]] = {}  # canonical atom order of worker cache misses
        ff = assigner.force_field
        sections = assigner._parameters  # per section, its parameters in file order
        skip, failed = skipped is not None, {}  # failed: index -> error, not yet named
        # every molecule may be in the cache already: then no worker is started
        workers = _workers(worker_config(assigner), min(n, len(chunks))) if chunks else None
        with workers or contextlib.nullcontext() as pool:
            futures = []
            try:
                # submitting starts the workers: one that dies at once breaks the pipe
                futures += [pool.submit(_label_chunk, chunk, skip) for chunk in chunks]
                for future in futures:  # in submission order: the lowest failing index wins
                    packed = future.result()
                    done, error = _decode(packed, sections, ff.name, assigner.not_assigned)
                    if skip:
                        failed.update(error)  # (index, error) of each molecule skipped
                        advance(len(error))
                    elif error is not None:
                        raise error  # nothing cached or counted (see _count_as_one_process)
                    results.update(done)
                    orders.update(packed[3])
                    advance(len(done))
            except (cf.process.BrokenProcessPool, BrokenPipeError) as err:
                raise RuntimeError(
                    "assign_many: a worker process died before returning its molecules. "
                    "Workers start fresh and re-import the main script: when calling from a "
                    "script, put the call under `if __name__ == '__main__':`; otherwise the "
                    "machine may be out of memory (use fewer n_jobs)"
                ) from err
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        for i, molecule, _ in items:  # a repeat of a failing SMILES fails again
            if i not in results and isinstance(molecule, str) and first[molecule] in failed:
                failed[i] = failed[first[molecule]]
        _names_as_in_one_process(assigner, items, results, first)
        _count_as_one_process(assigner, items, results, orders, first, failed)
        for molecule, i in first.items():
            if assigner.cache and i in results:
                assigner._by_text[molecule] = results[i]
        for i, molecule, name in items:
            if i in failed:
                skipped[i] = _named_error(failed[i], _label(i, molecule, name))
                results[i] = None
            elif i not in results:  # a repeat of a SMILES labelled in this call
                # Without the cache one process labels a repeat anew: named by its SMILES.
                again = name if assigner.cache or name is not None else molecule
                results[i] = assigner._named(results[first[molecule]], again)
        return [results[i] for i in range(len(items))]


def _skipping_here(assigner, items, skipped: dict, advance) -> list[Assignment | None]:
    """``errors="skip"`` in this process: None for each failing molecule, its error
    (named by its index) in ``skipped``."""
    out = []
    for (i, molecule, name), a, err in label_each(assigner, items):
        if err is not None:
            skipped[i] = _named_error(err, _label(i, molecule, name))
        out.append(a)
        advance(1)
    return out


def _count_as_one_process(assigner, items, results, orders, first, failed=None) -> None:
    """Update the cache counters and the canonical cache as one process would have.

    Replays, in input order, what :meth:`SmirksAssigner.assign
    <tying.chem.assign.SmirksAssigner.assign>` does with its caches: a SMILES seen
    before (in the text cache, or earlier in this call) is a hit; otherwise a molecule
    whose canonical SMILES is cached (before this call, or from an earlier molecule of
    it) is a hit, and any other a miss, whose result is cached with its canonical atom
    order (sent by the worker that labelled it), so that a later call remaps it as one
    process would. Without the cache every molecule is a miss, as in one process.
    Called only when every molecule was labelled, or skipped (``failed``: index ->
    error, repeats included; a skipped molecule counts a miss when one process counted
    one, :func:`~tying.chem.skipping.counts_a_miss`): a failing call caches and counts
    nothing, where one process keeps what it labelled before the failure.
    """
    failed = failed or {}
    if not assigner.cache:
        assigner.misses += sum(i not in failed or counts_a_miss(failed[i]) for i, _, _ in items)
        return
    by_canonical = assigner._by_canonical
    for i, molecule, _ in items:
        if i in failed:
            assigner.misses += counts_a_miss(failed[i])
            continue
        if isinstance(molecule, str) and (molecule in assigner._by_text or first[molecule] != i):
            assigner.hits += 1  # the text cache
            continue
        a = results[i]
        if a.smiles in by_canonical:
            assigner.hits += 1
            continue
        assigner.misses += 1
        order = orders.get(i)
        if order is not None:  # always, for a molecule first labelled here (a worker miss)
            by_canonical[a.smiles] = (order, a)


def _names_as_in_one_process(assigner, items, results, first) -> None:
    """Give unnamed molecules the names one process would, whatever worker labelled them.

    In one process an unnamed molecule is named by its SMILES, unless the same
    molecule (canonical SMILES) came earlier: then it is that one's result, name
    included. A worker only knows the molecules it saw, so the names are settled
    here, in input order.
    """
    seen: dict[str, Any] = {}
    for i, molecule, name in items:
        if i not in results or (isinstance(molecule, str) and first.get(molecule) != i):
            continue  # text-cache hits and repeats are named from their first occurrence
        a = results[i]
        if name is None:
            if not assigner.cache:  # no molecule takes an earlier one's result
                wanted = molecule if isinstance(molecule, str) else None
            elif a.smiles in seen:
                wanted = seen[a.smiles]
            elif a.smiles in assigner._by_canonical:
                wanted = assigner._by_canonical[a.smiles][1].name
            else:
                wanted = molecule if isinstance(molecule, str) else None
            if a.name != wanted:
                results[i] = dataclasses.replace(a, name=wanted)
        seen.setdefault(a.smiles, results[i].name)


def _context() -> Any:
    # The fork server imports RDKit and tying.chem once (``import tying`` also pulls in
    # torch, seconds on a busy machine); every worker forked from it starts with them.
    # Added to the server's list (tying.core.pools), read when the server starts.
    return pool_context(["tying.chem.assign", "tying.chem.parallel"])


def _split_item(i: int, m: Any) -> tuple[int, Any, str | None]:
    if type(m) is tuple and len(m) == 2 and type(m[1]) is str:  # a (molecule, name) pair
        return i, m[0], m[1]
    if isinstance(m, str):
        return i, m, None
    _refuse_row(i, m)  # a table's row, df.iterrows()'s (index, row) included (stop 62)
    if isinstance(m, tuple):
        if len(m) != 2:
            raise ValueError(
                f"molecule {i}: expected a SMILES, an RDKit Mol or a (molecule, name) pair, "
                f"got a tuple of {len(m)} items; pass (SMILES, name) pairs"
            )
        return i, m[0], molecule_name(m[0], m[1])
    return i, m, molecule_name(m, None)  # an RDKit molecule's _Name (not pickled to workers)


def _refuse_row(i: int, m: Any) -> None:
    """Refuse a data frame's row given as a molecule, naming the columns to pass (stop 62).

    ``df.iterrows()`` (``(index, row)`` pairs) failed on "The truth value of a Series is
    ambiguous", ``df.itertuples()`` as "a tuple of 3 items", ``df.to_records()`` and
    ``df.to_dict("records")`` as rows that are not molecules: none named a fix. A named
    tuple of two fields, SMILES first (``df.itertuples(index=False)`` of a ``smiles,
    name`` frame), is a (SMILES, name) pair and is read as one.
    """
    row = m[1] if isinstance(m, tuple) and len(m) == 2 and row_fields(m[1]) else m
    fields = row_fields(row)
    if fields is None:
        return
    if row is m and isinstance(m, tuple) and len(m) == 2 and "Index" not in fields:
        if smiles_and_name(fields)[0] == fields[0]:
            return  # a (SMILES, name) pair with field names
    what = "an (index, row) pair of df.iterrows()" if row is not m else f"a {type(m).__name__}"
    raise TypeError(
        f"molecule {i}: expected a SMILES, an RDKit Mol or a (molecule, name) pair, got "
        f"{what} with fields {fields[:5]!r:.120}{row_hint(row, 'assign_many')}"
    )


# Molecules labelled stage by stage at a time (SmirksAssigner._assign_batch): enough for
# each stage's code to stay hot in the CPU caches, few enough to hold their RDKit molecules.
_BATCH = 64


def _in_batches(
    assigner: SmirksAssigner, items: Sequence[tuple[Any, Any, str | None]], *, pack: bool = True
) -> Iterator[tuple[Sequence[tuple[Any, Any, str | None]], list[Assignment], Any]]:
    """``(batch, results, failure)`` for each ``_BATCH`` of ``(tag, molecule, name)`` items.

    ``results`` and ``failure`` are :meth:`SmirksAssigner._assign_batch`'s on that batch
    (``failure[0]`` indexes into ``batch``); nothing more is labelled after a failure.
    """
    for k in range(0, len(items), _BATCH):
        batch = items[k : k + _BATCH]
        done, failure = assigner._assign_batch([(m, name) for _, m, name in batch], pack=pack)
        yield batch, done, failure
        if failure is not None:
            return


def _label(i: int, molecule: Any, name: str | None) -> str:
    text = molecule if isinstance(molecule, str) else type(molecule).__name__
    return f"molecule {i} ({text!r}" + (f", {name!r})" if name else ")")


def _named_error(err: Exception, label: str) -> Exception:
    try:
        return type(err)(f"{label}: {err}")
    except Exception:  # an exception type that takes other arguments
        return RuntimeError(f"{label}: {type(err).__name__}: {err}")


# A chunk's results, as a worker sends them back: per molecule (index, smiles, name,
# elements, terms per section); per section the key length, every key's atoms in one
# buffer and every key's parameter position in another, molecule after molecule
# (tying.chem.packed.columns); the first failure or None; and the canonical atom order
# of each molecule the worker labelled (not remapped), for the parent's cache. Buffers
# pickle as one copy, not as thousands of tuples, and the parent only wraps them: it
# does little besides collecting, so the workers keep the cores.
Packed = tuple[
    list[tuple[int, str, Any, tuple[str, ...], tuple[int, ...]]],
    dict[str, tuple[int, Any, Any]],
    Exception | None,
    dict[int, tuple[int, ...]],
]


def _encode(
    results: list[tuple[int, Assignment]],
    sections: Sequence[str],
    error: Exception | None,
    orders: dict[int, tuple[int, ...]] | None = None,
) -> Packed:
    counts, cols = columns([a for _, a in results], sections)
    molecules = [
        (i, a.smiles, a.name, a.elements, per) for (i, a), per in zip(results, counts, strict=True)
    ]
    return molecules, cols, error, orders or {}


def _decode(
    packed: Packed,
    parameters: dict[str, Sequence[Any]],
    force_field: str,
    not_assigned: tuple[str, ...],
) -> tuple[dict[int, Assignment], Exception | None]:
    """The Assignments of a packed chunk, with this process's Parameter objects.

    Each section's terms stay packed (:class:`~tying.chem.packed.PackedTerms`) until
    first read, so the parent's work per molecule is a few object creations, whatever
    its size.
    """
    from tying.chem.assign import Assignment

    molecules, cols, error, _ = packed
    counts = [m[4] for m in molecules]
    out = {
        i: Assignment(smiles, name, force_field, elements, terms, not_assigned)
        for (i, smiles, name, elements, _), terms in zip(
            molecules, views(counts, cols, parameters), strict=True
        )
    }
    return out, error


# -- worker side ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def worker_config(assigner: SmirksAssigner) -> tuple:
    """What a worker process builds its assigner from: the force field's path and the
    very bytes the parent read (not the file as it is now: it may have been edited
    since, and the parent decodes the workers' answers against its own parameters),
    the sections and strictness.

    Raises:
        ValueError: for a force field not read from a file as it is (made with
            ``dataclasses.replace`` or by hand): workers could not rebuild it.

    Example:
        >>> from tying.chem import SmirksAssigner
        >>> path, source, sections, strict = worker_config(SmirksAssigner("openff-2.3.0"))
        >>> source[:9], strict
        (b'<?xml ver', True)
    """
    from tying.chem.offxml import _PARSED

    ff = assigner.force_field
    if ff not in _PARSED:
        raise ValueError(
            f"assign_many over processes: force field {ff.name!r} was not read from a file "
            f"as it is (made with dataclasses.replace or by hand), and worker processes "
            f"rebuild it from the bytes of its file, so they would label with other "
            f"parameters; use n_jobs=1, or write it to an .offxml file and load that"
        )
    return (str(ff.path), ff.source, tuple(assigner.sections), assigner.strict)


def _init_worker(path: str, source: bytes, sections: Sequence[str], strict: bool) -> None:
    import pathlib

    from tying.chem.assign import SmirksAssigner
    from tying.chem.offxml import _load

    _WORKER["assigner"] = SmirksAssigner(
        _load(pathlib.Path(path), source), sections=list(sections), strict=strict
    )


#: Seconds a pool of worker processes is kept after an :func:`assign_many` call, for
#: the next call with the same force field, sections, strictness and process count
#: (starting workers costs about 0.25 s, half of labelling 1,000 molecules).
KEEP_WORKERS_S = 30.0

_KEPT: dict[str, Any] = {"key": None, "use": None, "timer": None}
_KEPT_LOCK = threading.Lock()


@dataclasses.dataclass(eq=False)
class _PoolUse:
    pool: cf.ProcessPoolExecutor
    users: int = 0


@contextlib.contextmanager
def _workers(config: tuple, n_workers: int) -> Iterator[cf.ProcessPoolExecutor]:
    """A pool of ``n_workers`` processes built with ``config``: the kept one when it
    matches, else a new one, kept from then on (the one it replaces is shut down by
    its last user).

    A pool that broke or was interrupted is not kept. Without calls the kept pool is
    shut down after :data:`KEEP_WORKERS_S` seconds (0: at the end of each call), and
    at the latest when Python exits; :func:`release_workers` shuts it down now.
    """
    key = (*config, n_workers)  # the force field's bytes themselves: compared, not hashed
    idle = None
    with _KEPT_LOCK:
        if _KEPT["timer"] is not None:
            _KEPT["timer"].cancel()
            _KEPT["timer"] = None
        use = _KEPT["use"]
        if use is None or _KEPT["key"] != key or getattr(use.pool, "_broken", False):
            if use is not None and use.users == 0:
                idle = use.pool
            use = _PoolUse(
                cf.ProcessPoolExecutor(
                    max_workers=n_workers,
                    mp_context=_context(),
                    initializer=_init_worker,
                    initargs=config,
                )
            )
            _KEPT.update(key=key, use=use)
        use.users += 1
    if idle is not None:
        idle.shutdown(wait=False, cancel_futures=True)
    healthy = False
    try:
        yield use.pool
        healthy = True
    except Exception as err:  # a molecule's error leaves the pool as good as it was
        broken = (cf.process.BrokenProcessPool, OSError)  # a worker died, a pipe broke
        healthy = not isinstance(err, broken) and not isinstance(err.__cause__, broken)
        raise
    finally:
        healthy = healthy and not getattr(use.pool, "_broken", False)
        with _KEPT_LOCK:
            use.users -= 1
            if _KEPT["use"] is use and (not healthy or KEEP_WORKERS_S <= 0):
                _KEPT.update(key=None, use=None)
            kept = _KEPT["use"] is use
            if kept and use.users == 0:
                timer = threading.Timer(KEEP_WORKERS_S, _release_idle, args=(use,))
                timer.daemon = True
                _KEPT["timer"] = timer
                timer.start()
        if not kept and use.users == 0:
            use.pool.shutdown(wait=False, cancel_futures=True)


def _release_idle(use: _PoolUse) -> None:
    with _KEPT_LOCK:
        if _KEPT["use"] is not use or use.users:
            return
        _KEPT.update(key=None, use=None, timer=None)
    use.pool.shutdown(wait=True)


def release_workers() -> bool:
    """Shut down the worker processes :func:`assign_many` keeps between calls.

    Returns:
        Whether a pool was kept. A call running in another thread keeps using it; the
        pool is shut down when that call ends.

    Example:
        >>> release_workers() in (True, False)
        True
    """
    with _KEPT_LOCK:
        use, timer = _KEPT["use"], _KEPT["timer"]
        if use is None:
            return False
        if timer is not None:
            timer.cancel()
        _KEPT.update(key=None, use=None, timer=None)
        idle = use.users == 0
    if idle:
        use.pool.shutdown(wait=True)
    return True


def _label_chunk(chunk: list[tuple[int, Any, str | None]], skip: bool = False) -> Packed:
    assigner = _WORKER["assigner"]
    out, error = [], None
    orders = {}
    if skip:  # every molecule: the error slot carries [(index, bare error), ...]
        error = []
        for (i, _, _), a, err in label_each(assigner, chunk):
            if err is not None:
                error.append((i, err))
                continue
            out.append((i, a))
            entry = assigner._by_canonical.get(a.smiles)
            if entry is not None and entry[1].terms is a.terms:  # labelled, not remapped
                orders[i] = entry[0]
        assigner.clear_cache()
        return _encode(out, assigner.sections, error, orders)
    for batch, done, failure in _in_batches(assigner, chunk):  # packed: columns slices them
        for (i, _, _), a in zip(batch, done):
            out.append((i, a))
            entry = assigner._by_canonical.get(a.smiles)
            if entry is not None and entry[1].terms is a.terms:  # labelled, not remapped
                orders[i] = entry[0]
        if failure is not None:
            i, molecule, name = batch[failure[0]]
            error = _named_error(failure[1], _label(i, molecule, name))
            break  # the parent raises the first failure; the rest of the chunk is moot
    # The parent caches what it gets back; a worker's own cache would only grow (a
    # chunk's repeats are already merged by the parent).
    assigner.clear_cache()
    return _encode(out, assigner.sections, error, orders)


class _NoProgress:
    def __enter__(self):
        return lambda k: None

    def __exit__(self, *exc):
        return False


def _progress(show: bool, total: int, n_jobs: int):
    if not show:
        return _NoProgress()
    return _RichProgress(total, n_jobs)


class _RichProgress:
    """The report's progress bar (rich): description, bar, done/total, elapsed, rate."""

    def __init__(self, total: int, n_jobs: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(
            f"labelling ({n_jobs} process{'es' if n_jobs > 1 else ''})", total=total
        )

    def __enter__(self):
        self._progress.__enter__()
        return lambda k: self._progress.update(self._task, advance=k)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


# The Dask recipe lives in tying.chem.lines (split at stop 57); its names are still
# read from here, lazily (lines imports this module).
_FROM_LINES = ("label_lines", "parse_smiles_line", "worker_assigner")


def __getattr__(name: str) -> Any:
    if name in _FROM_LINES:
        from tying.chem import lines

        return getattr(lines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
