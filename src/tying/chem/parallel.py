"""Label many molecules over processes, and the pieces a Dask recipe needs (claim C9 at scale).

:func:`assign_many` spreads molecules over a pool of fresh processes
(``forkserver`` where the platform has it, else ``spawn``: never ``fork``, which
would copy RDKit's and the caller's threads into the children). Each worker
builds one :class:`~tying.chem.assign.SmirksAssigner` for the force field and
labels chunks of molecules; results come back in input order and compact (term
key -> parameter position), and the parent rebuilds them against its own force
field, so every :class:`~tying.chem.offxml.Parameter` is still one object shared
by all molecules. The first molecule that fails (lowest index) is named, with its
index, in an error of the worker's own type.

For libraries beyond one machine, :func:`label_lines` turns lines of a SMILES
file into plain records; ``dask.bag.read_text(...).map_partitions(label_lines)``
runs it on any Dask cluster (see ``docs/chem.md``): an existing distributed
engine, no home-made one.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tying.chem.assign import Assignment, SmirksAssigner

# Compact result of one molecule: smiles, name, elements, {section: [(key, parameter position)]}.
Compact = tuple[str, Any, tuple[str, ...], dict[str, list[tuple[tuple[int, ...], int]]]]


def check_n_jobs(n_jobs: Any) -> int:
    """The number of processes ``n_jobs`` asks for: a positive int, or -1 for every core.

    Example:
        >>> check_n_jobs(2), check_n_jobs(-1) == (os.cpu_count() or 1)
        (2, True)
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(
            f"n_jobs must be a positive int or -1 (every core), got {n_jobs!r}; "
            f"use n_jobs=1 to label in this process"
        )
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


def assign_many(
    assigner: SmirksAssigner,
    molecules: Iterable[Any],
    *,
    n_jobs: int = 1,
    progress: bool = False,
    chunksize: int | None = None,
) -> list[Assignment]:
    """Label molecules with ``assigner``'s force field over ``n_jobs`` processes, in input order.

    Called by :meth:`SmirksAssigner.assign_many <tying.chem.assign.SmirksAssigner.assign_many>`;
    see there for the arguments.
    """

    n = check_n_jobs(n_jobs)
    items = [_split_item(i, m) for i, m in enumerate(molecules)]
    if chunksize is None:
        chunksize = max(1, min(200, len(items) // (8 * n) or 1))
    elif isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
    with _progress(progress, len(items), n) as advance:
        if n == 1 or len(items) <= chunksize:
            out = []
            for i, molecule, name in items:
                out.append(_call(assigner.assign, i, molecule, name))
                advance(1)
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
            todo.append((i, molecule, name))
        advance(len(items) - len(todo))
        chunks = [todo[k : k + chunksize] for k in range(0, len(todo), chunksize)]
        ff = assigner.force_field
        sections = {s: ff[s].parameters for s in assigner.sections}
        config = (str(ff.path), assigner.sections, assigner.strict)
        context = _context()
        with cf.ProcessPoolExecutor(
            max_workers=min(n, len(chunks)),
            mp_context=context,
            initializer=_init_worker,
            initargs=config,
        ) as pool:
            futures = [pool.submit(_label_chunk, chunk) for chunk in chunks]
            try:
                for future in futures:  # in submission order: the lowest failing index wins
                    for i, compact, error in future.result():
                        if error is not None:
                            raise error
                        results[i] = _rebuild(compact, sections, ff.name)
                        advance(1)
            except cf.process.BrokenProcessPool as err:
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
        _names_as_in_one_process(assigner, items, results, first)
        for molecule, i in first.items():
            if assigner.cache:
                assigner._by_text[molecule] = results[i]
        for i, molecule, name in items:
            if i not in results:  # a repeat of a SMILES labelled in this call
                results[i] = assigner._named(results[first[molecule]], name)
        return [results[i] for i in range(len(items))]


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
            if a.smiles in seen:
                wanted = seen[a.smiles]
            elif assigner.cache and a.smiles in assigner._by_canonical:
                wanted = assigner._by_canonical[a.smiles][1].name
            else:
                wanted = molecule if isinstance(molecule, str) else None
            if a.name != wanted:
                results[i] = dataclasses.replace(a, name=wanted)
        seen.setdefault(a.smiles, results[i].name)


def _context() -> Any:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The fork server imports RDKit and tying.chem once (``import tying`` also pulls in
    # torch, seconds on a busy machine); every worker forked from it starts with them.
    # Ignored when the server already runs (then it was started with its own list).
    context.set_forkserver_preload(["tying.chem.assign", "tying.chem.parallel"])
    return context


def _split_item(i: int, m: Any) -> tuple[int, Any, str | None]:
    if isinstance(m, tuple):
        if len(m) != 2:
            raise ValueError(
                f"molecule {i}: expected a SMILES, an RDKit Mol or a (molecule, name) pair, "
                f"got a tuple of {len(m)} items"
            )
        return i, m[0], m[1]
    return i, m, None


def _call(assign, i: int, molecule: Any, name: str | None):
    try:
        return assign(molecule, name=name)
    except Exception as err:
        raise _named_error(err, _label(i, molecule, name)) from err


def _label(i: int, molecule: Any, name: str | None) -> str:
    text = molecule if isinstance(molecule, str) else type(molecule).__name__
    return f"molecule {i} ({text!r}" + (f", {name!r})" if name else ")")


def _named_error(err: Exception, label: str) -> Exception:
    try:
        return type(err)(f"{label}: {err}")
    except Exception:  # an exception type that takes other arguments
        return RuntimeError(f"{label}: {type(err).__name__}: {err}")


def _rebuild(compact: Compact, sections: dict, force_field: str) -> Assignment:
    from tying.chem.assign import Assignment

    smiles, name, elements, terms = compact
    return Assignment(
        smiles,
        name,
        force_field,
        elements,
        {s: {key: sections[s][idx] for key, idx in rows} for s, rows in terms.items()},
    )


# -- worker side ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(path: str, sections: Sequence[str], strict: bool) -> None:
    from tying.chem.assign import SmirksAssigner
    from tying.chem.offxml import load_force_field

    _WORKER["assigner"] = SmirksAssigner(
        load_force_field(path), sections=list(sections), strict=strict
    )


def _label_chunk(chunk: list[tuple[int, Any, str | None]]) -> list[tuple[int, Any, Any]]:
    assigner = _WORKER["assigner"]
    out = []
    for i, molecule, name in chunk:
        try:
            a = assigner.assign(molecule, name=name)
        except Exception as err:
            out.append((i, None, _named_error(err, _label(i, molecule, name))))
            break  # the parent raises the first failure; the rest of the chunk is moot
        terms = {s: [(k, p.index) for k, p in t.items()] for s, t in a.terms.items()}
        out.append((i, (a.smiles, a.name, a.elements, terms), None))
    return out


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


# -- Dask recipe --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def worker_assigner(force_field: str, strict: bool = True) -> SmirksAssigner:
    """One assigner per process and force field, built on first use (for Dask tasks).

    Example:
        >>> worker_assigner("openff-2.3.0") is worker_assigner("openff-2.3.0")
        True
    """
    from tying.chem.assign import SmirksAssigner

    return SmirksAssigner(force_field, strict=strict)


def parse_smiles_line(line: str) -> tuple[str, str | None] | None:
    """One line of a SMILES file: ``SMILES[<whitespace>name]``; None for blanks and ``#`` comments.

    Example:
        >>> parse_smiles_line("CCO\\tethanol\\n"), parse_smiles_line("# header")
        (('CCO', 'ethanol'), None)
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(None, 1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else None)


def label_lines(
    lines: Iterable[str], force_field: str = "openff-2.3.0", *, strict: bool = True
) -> list[dict[str, Any]]:
    """Label the molecules of some lines of a SMILES file; one plain record per molecule.

    Made for ``dask.bag.read_text(paths).map_partitions(label_lines)``: it takes a
    partition's lines and returns picklable records (no RDKit or force-field
    objects), so any Dask scheduler can ship and store them.

    Args:
        lines: lines ``SMILES[<whitespace>name]``; blanks and ``#`` comments are skipped.
        force_field: an installed force field name or a path visible to the workers.
        strict: as :class:`~tying.chem.assign.SmirksAssigner`.

    Returns:
        ``[{"smiles", "name", "force_field", "ids": {section: {"0-1": "b1", ...}}}]``.

    Raises:
        SmilesError, UnassignedParameterError: naming the line's SMILES and name.

    Example:
        >>> rec = label_lines(["CCO ethanol", "", "C methane"])
        >>> [r["name"] for r in rec], rec[0]["ids"]["Bonds"]["0-1"]
        (['ethanol', 'methane'], 'b1')
    """
    assigner = worker_assigner(force_field, strict)
    out = []
    for line in lines:
        parsed = parse_smiles_line(line)
        if parsed is None:
            continue
        smiles, name = parsed
        try:
            a = assigner.assign(smiles, name=name)
        except Exception as err:
            raise _named_error(err, f"line {line.strip()!r}") from err
        out.append(
            {
                "smiles": smiles,
                "name": name,
                "force_field": a.force_field,
                "ids": {
                    s: {"-".join(map(str, k)): p.id for k, p in sorted(t.items())}
                    for s, t in a.terms.items()
                },
            }
        )
    return out
