"""Label the lines of a SMILES file as plain records: the Dask recipe (claim C9 beyond one machine).

:func:`label_lines` turns lines of a SMILES file into plain records;
``dask.bag.read_text(...).map_partitions(label_lines)`` runs it on any Dask cluster
(see ``docs/chem.md``): an existing distributed engine, no home-made one. Each
process keeps one assigner per force field content and sections
(:func:`worker_assigner`). Split from :mod:`tying.chem.parallel` (which still
exports these names) at stop 57.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tying.chem.errors import SmilesError
from tying.chem.mapped import check_flag, map_order, renumber, reordered, reordered_warning
from tying.chem.parallel import _in_batches, _named_error, check_many
from tying.chem.skipping import check_errors, label_each, reason, warn_skipped
from tying.chem.tables import MISSING_FIX, is_missing, row_fields, smiles_and_name

if TYPE_CHECKING:
    from tying.chem.assign import Assignment, SmirksAssigner


_ASSIGNERS: dict[tuple, SmirksAssigner] = {}
_ASSIGNERS_LOCK = threading.Lock()


def worker_assigner(
    force_field: str, strict: bool = True, sections: Sequence[str] | None = None
) -> SmirksAssigner:
    """One assigner per process, force field and sections, built on first use (for Dask tasks).

    Kept by the force field's content, not its name: a long-lived worker whose file
    was edited between two computations labels with the file as it is now (kept by
    name, it went on with the first reading). ``sections`` as
    :class:`~tying.chem.assign.SmirksAssigner`'s (None: the default five).

    Example:
        >>> worker_assigner("openff-2.3.0") is worker_assigner("openff-2.3.0")
        True
    """
    from tying.chem.assign import SmirksAssigner
    from tying.chem.offxml import load_force_field

    ff = load_force_field(force_field)  # keyed on the file's content
    sections = _sections_key(sections)
    key = (ff.path, ff.digest, strict, sections)
    with _ASSIGNERS_LOCK:  # a Dask worker runs tasks on threads
        assigner = _ASSIGNERS.get(key)
        if assigner is None:
            if len(_ASSIGNERS) >= 4:
                _ASSIGNERS.pop(next(iter(_ASSIGNERS)))
            assigner = _ASSIGNERS[key] = SmirksAssigner(ff, strict=strict, sections=sections)
    return assigner


def _sections_key(sections: Any) -> Any:
    """``sections`` read once into a tuple (an iterator is used up by reading it); a
    string is passed on whole, for SmirksAssigner's own TypeError."""
    if sections is None or isinstance(sections, str):
        return sections
    sections = tuple(sections)
    for s in sections:  # keys of a dict: refuse what SmirksAssigner would, before hashing
        if not isinstance(s, str):
            raise TypeError(
                f"sections must be a list of section names (str), got {type(s).__name__}: "
                f"{s!r:.80} in {list(sections)!r:.200}"
            )
    return sections


def _skipped_record(number: int, smiles, name, assigner, err: Exception) -> dict[str, Any]:
    return {
        "line": number,
        "smiles": smiles,
        "name": name,
        "force_field": assigner.force_field.name,
        "error": reason(err),
    }


def _in_map_order(a: Assignment, smiles: str, mapped: bool) -> Assignment:
    """``a`` renumbered into its SMILES' atom-map order when ``mapped`` (as
    ``assign_many(mapped=True)``); SmilesError for a map that is not complete."""
    return renumber(a, map_order(smiles, len(a.elements))) if mapped else a


def _warn_reordered(todo, mapped: bool) -> None:
    """Warn once, as ``assign_many``, when some line's SMILES maps every atom in another
    order than the written one and ``mapped`` is False (stop 58: label_lines said
    nothing, and its keys followed the written order)."""
    if mapped:
        return
    found = [(number, smiles) for (number, _), smiles, _ in todo if reordered(smiles)]
    if found:
        text = reordered_warning(found[0][1], len(found) - 1)
        warnings.warn(f"label_lines: line {found[0][0]}: {text}", UserWarning, stacklevel=3)


def _label_lines_skipping(
    assigner, todo, bad: dict[int, dict[str, Any]], mapped: bool = False
) -> list[dict[str, Any]]:
    """label_lines(errors="skip"): every line's record in line order, the bad ones with
    their error (lines that could not be read are in ``bad`` already)."""
    by_line = dict(bad)
    for ((number, line), smiles, name), a, err in label_each(assigner, todo):
        if err is None:
            try:
                a = _in_map_order(a, smiles, mapped)
            except SmilesError as map_err:
                err = map_err
        if err is not None:
            err = _named_error(err, f"line {number} ({line.strip()!r})")
            by_line[number] = _skipped_record(number, smiles, name, assigner, err)
        else:
            by_line[number] = {"line": number, **_record(smiles, name, a)}
    out = [by_line[k] for k in sorted(by_line)]
    reasons = [r["error"] for r in out if "error" in r]
    where = "their records hold 'error' in place of 'ids', and every record its 'line'"
    warn_skipped("label_lines", reasons, len(out), where)
    return out


def _record(smiles: str, name: str | None, a: Assignment) -> dict[str, Any]:
    return {
        "smiles": smiles,
        "name": name,
        "force_field": a.force_field,
        "not_assigned": list(a.not_assigned),  # sections left out (stop 34)
        "ids": {
            s: {"-".join(map(str, key)): p.id for key, p in sorted(t.items())}
            for s, t in a.terms.items()
        },
    }


# The characters str.splitlines ends a line at (a classic-Mac "\r" file split on "\n").
_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def parse_smiles_line(line: str) -> tuple[str, str | None] | None:
    """One line of a SMILES file: ``SMILES[<whitespace>name]``; None for blanks and ``#`` comments.

    Raises:
        SmilesError: when the line holds a line break inside (several lines of a file
            split on ``"\\n"`` only: the ones after the first were read as its name and
            lost, silently).

    Example:
        >>> parse_smiles_line("CCO\\tethanol\\n"), parse_smiles_line("# header")
        (('CCO', 'ethanol'), None)
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    found = _LINE_BREAK.search(text)
    if found is not None:
        raise SmilesError(
            f"one line holds a line break {found.group()!r} at position {found.start()}, so it "
            f"is several lines of the file and all but the first would be lost in its name; "
            f"split the text with str.splitlines() (or open the file in text mode)"
        )
    parts = text.split(None, 1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else None)


def _line_fix(line: Any) -> str:
    """How to pass what a non-str ``line`` holds: a table's rows as lines (stop 62), or text."""
    row = line[1] if isinstance(line, tuple) and len(line) == 2 else line  # df.iterrows()
    fields = row_fields(row) or row_fields(line)
    if fields is None:
        if line is None or is_missing(line):  # None: an empty cell of polars or an object column
            return MISSING_FIX
        return "decode the file's lines first (open it in text mode)"
    # a data frame's rows (iterrows, itertuples, to_records, to_dict('records')): the
    # advice to decode them was no fix (stop 62)
    smiles, name = smiles_and_name([f for f in fields if f != "Index"])
    pairs = f"zip(df[{smiles!r}], df[{name!r}])" if name else None
    text = f"(f'{{s}} {{n}}' for s, n in {pairs})" if pairs else f"df[{smiles!r}]"
    return (
        f"a table's rows are not lines: pass its columns as lines 'SMILES name', "
        f"label_lines({text}) (for a data frame df)"
    )


def label_lines(
    lines: Iterable[str],
    force_field: str = "openff-2.3.0",
    *,
    strict: bool = True,
    sections: Sequence[str] | None = None,
    errors: str = "raise",
    mapped: bool = False,
) -> list[dict[str, Any]]:
    """Label the molecules of some lines of a SMILES file; one plain record per molecule.

    Made for ``dask.bag.read_text(paths).map_partitions(label_lines)``: it takes a
    partition's lines and returns picklable records (no RDKit or force-field
    objects), so any Dask scheduler can ship and store them.

    Args:
        lines: lines ``SMILES[<whitespace>name]``; blanks and ``#`` comments are skipped.
        force_field: an installed force field name or a path visible to the workers.
        strict: as :class:`~tying.chem.assign.SmirksAssigner`.
        sections: as :class:`~tying.chem.assign.SmirksAssigner` (None: the five it
            assigns by default); add ``"Constraints"`` to label those too, as
            ``assign_many`` does with such an assigner.
        errors: ``"raise"`` (default) stops at the first line that cannot be labelled;
            ``"skip"`` labels the others, and each bad line keeps its place as a record
            ``{"line", "smiles", "name", "force_field", "error"}`` (no ``"ids"``; the
            error names its line), with one ``UserWarning`` giving their count. Every
            record then carries its ``"line"`` number (:mod:`tying.chem.skipping`).
        mapped: number each line's atoms by its SMILES' atom map, as
            ``assign_many(mapped=True)`` (the toolkit's ``from_mapped_smiles``). Without
            it, lines whose map orders every atom otherwise than the written order are
            labelled in written order with one ``UserWarning`` naming the first.

    Returns:
        ``[{"smiles", "name", "force_field", "not_assigned", "ids": {section: {"0-1":
        "b1", ...}}}]``; ``not_assigned`` lists the force field's sections left out
        (``Assignment.not_assigned``).

    Raises:
        SmilesError, UnassignedParameterError: naming the line's number (1-based, among
            the lines given: blanks and comments count) and its text (``errors="raise"``).
        TypeError, ValueError, KeyError: on bad ``sections`` or ``strict``, as
            :class:`~tying.chem.assign.SmirksAssigner`; ``TypeError`` on a non-bool ``mapped``.

    Example:
        >>> rec = label_lines(["CCO ethanol", "", "C methane"])
        >>> [r["name"] for r in rec], rec[0]["ids"]["Bonds"]["0-1"]
        (['ethanol', 'methane'], 'b1')
    """
    check_many(lines, "label_lines", "lines")
    skip = check_errors(errors, "label_lines")
    check_flag(mapped)
    assigner = worker_assigner(force_field, strict, sections)
    todo = []  # ((line number, line), smiles, name)
    bad: dict[int, dict[str, Any]] = {}  # errors="skip": line number -> its record
    for number, line in enumerate(lines, 1):
        try:
            if not isinstance(line, str):  # bytes, None: AttributeError deep in the parsing
                raise TypeError(
                    f"label_lines: line {number} is a {type(line).__name__} ({line!r:.80}), "
                    f"expected str; {_line_fix(line)}"
                )
            try:
                parsed = parse_smiles_line(line)
            except SmilesError as err:
                raise _named_error(err, f"line {number} ({line.strip()!r:.80})") from None
        except (TypeError, SmilesError) as err:
            if not skip:
                raise
            bad[number] = _skipped_record(number, None, None, assigner, err)
            continue
        if parsed is not None:
            todo.append(((number, line), *parsed))
    if skip:
        out = _label_lines_skipping(assigner, todo, bad, mapped)
        _warn_reordered(todo, mapped)
        return out
    out = []
    # Packed results come straight from the labelling's arrays (no dicts); each record
    # then decodes its molecule's terms once.
    for batch, done, failure in _in_batches(assigner, todo):
        if failure is not None:
            err = failure[1]
            number, line = batch[failure[0]][0]
            # The number finds the line in a file of thousands (the text may repeat).
            raise _named_error(err, f"line {number} ({line.strip()!r})") from err
        for ((number, line), smiles, name), a in zip(batch, done):
            try:
                a = _in_map_order(a, smiles, mapped)
            except SmilesError as err:
                raise _named_error(err, f"line {number} ({line.strip()!r})") from None
            out.append(_record(smiles, name, a))
    _warn_reordered(todo, mapped)
    return out
