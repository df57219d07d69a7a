"""The HTML report: ``report/index.html``, ``report/results.json``, ``report/figures/``.

Example:
    >>> import tempfile, pathlib
    >>> from tying.experiments.runner import run_many
    >>> from tying.report import claim_folder, write_report
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> claim_folder(out, ["param-counts"], fresh=True)
    >>> records = run_many(["param-counts"], size="quick", out_dir=out)
    >>> paths = write_report(records, out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    >>> sorted(p.name for p in paths.values())
    ['index.html', 'results.json']
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

from tying.experiments import REGISTRY, load_all
from tying.experiments.claims import claim_for
from tying.experiments.output import (
    MANIFEST,
    OutputFolderError,
    _interrupt_deferred,
    claim_folder,
    expect_files,
    folder_lock,
    out_path,
    record_files,
)
from tying.experiments.registry import check_seed, check_size
from tying.experiments.runner import RunRecord, import_errors, workers_used
from tying.report.environment import collect_environment
from tying.report.html import render_page, summary_rows

_PAGE = ("index.html", "results.json")

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "OutputFolderError",
    "claim_folder",
    "read_results",
    "record_files",
    "results_dict",
    "write_report",
]

#: The layout of ``results.json``, stated in the file as ``schema_version``. Raise it
#: when a key is renamed, removed or changes meaning (adding a key does not), and teach
#: :func:`read_results` to migrate the older layout or to refuse it by name.
#: 1: stop 55 (the first stated version). A file without it is version 0: the same
#: layout, written before the version was stated.
SCHEMA_VERSION = 1
#: The keys every results.json of a version this tying reads holds.
_RESULTS_KEYS = ("passed", "total", "runtime_s", "environment", "experiments")


def results_dict(records: Sequence[RunRecord], environment: dict, runtime_s: float) -> dict:
    """The machine-readable report: one entry per experiment that ran, plus what is missing.

    Its first key, ``schema_version``, is :data:`SCHEMA_VERSION`.
    """
    load_all()
    records = _check_records(records, "results_dict")
    rows = summary_rows(records, REGISTRY)
    experiments = []
    for rec in records:
        entry = rec.to_dict()
        claim = claim_for(rec.id)
        entry["code"] = claim.code if claim else ""
        entry["shows"] = claim.shows if claim else ""
        experiments.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "passed": sum(r.passed for r in records),
        "total": len(records),
        "runtime_s": runtime_s,
        "environment": environment,
        "experiments": experiments,
        "not_run": [row["id"] for row in rows if row["status"] == "not-run"],
        "not_implemented": [
            {"id": row["id"], "code": row["code"], "claim": row["claim"]}
            for row in rows
            if row["status"] == "not-implemented"
        ],
        "import_failed": [
            {"id": row["id"], "code": row["code"], "module": row["module"]}
            for row in rows
            if row["status"] == "import-failed"
        ],
        "import_errors": import_errors(),
    }


def read_results(path: str | pathlib.Path) -> dict:
    """Read a ``results.json`` that ``tying report`` wrote, in this tying's layout.

    Args:
        path: the file, or the report folder holding it.

    Returns:
        Its contents, with ``schema_version`` equal to :data:`SCHEMA_VERSION`; a file of
        version 0 (written before the version was stated; the same layout) is migrated.

    Raises:
        ValueError: the file is not JSON, not a tying results.json (a key of the layout
            is missing), or states a version this tying does not read (a newer one, or
            not a whole number); the message names the file and the version.
        OSError: the file cannot be read.

    Example:
        >>> import json, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
        >>> _ = path.write_text(json.dumps({"schema_version": 99}))
        >>> try:
        ...     read_results(path)
        ... except ValueError as exc:
        ...     print(str(exc).split(":")[1].split(";")[0].strip())
        schema_version 99 is newer than this tying reads (1)
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a results.json tying wrote (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a results.json tying wrote (a JSON {type(data).__name__}, "
            "expected an object)"
        )
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(
            f"{path}: schema_version {version!r} is not a version tying writes (a whole "
            f"number, {SCHEMA_VERSION} for this tying); the file was not written by "
            "`tying report`, or was edited"
        )
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {version} is newer than this tying reads "
            f"({SCHEMA_VERSION}); read it with the tying that wrote it (its environment "
            "section names the version), or upgrade tying"
        )
    missing = [k for k in _RESULTS_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"{path}: not a results.json tying wrote (schema_version {version}): the "
            f"key(s) {', '.join(map(repr, missing))} are missing; write it again with "
            "`tying report`"
        )
    if version == 0:  # version 0 -> 1: the layout is the same, only the version is new
        data = {"schema_version": SCHEMA_VERSION, **data}
    return data


def _check_records(records: object, fn: str = "write_report") -> list[RunRecord]:
    """``records`` as a list of :class:`RunRecord`, or a TypeError that names the fix.

    One record said "object of type 'RunRecord' has no len()", a generator the same of
    itself, and a list of ``to_dict()`` dicts or of ids "'dict' object has no attribute
    'id'" (stop 60).
    """
    if isinstance(records, RunRecord):
        raise TypeError(
            f"{fn}() takes a list of RunRecords, got one RunRecord ({records.id!r}); pass [record]"
        )
    if isinstance(records, str | bytes | dict) or not isinstance(records, Iterable):
        raise TypeError(
            f"{fn}() takes a list of RunRecords (what run_many returns), got "
            f"{type(records).__name__} {records!r:.80}; run the experiments with "
            "tying.experiments.runner.run_many(ids, ...) and pass what it returns"
        )
    records = list(records)  # a generator is read once, here
    for i, rec in enumerate(records):
        if not isinstance(rec, RunRecord):
            raise TypeError(
                f"{fn}(): records[{i}] is a {type(rec).__name__} ({rec!r:.80}), "
                "expected a RunRecord (what run_many returns); pass the records themselves "
                "(a results.json entry or an id is not one)"
            )
        if rec.status not in _RAN:  # 'weird' said KeyError: 'weird' from the page (stop 60)
            raise ValueError(
                f"{fn}(): record {rec.id!r} has status {rec.status!r}; a run's status is one "
                f"of {', '.join(map(repr, _RAN))}: pass the record run_many returned"
            )
    return records


#: The statuses a run gives a record (the page's other badges are for ids not run).
_RAN = ("pass", "fail", "error", "missing-extra")


def _check_run(
    records: Sequence[RunRecord], size: str, seed: int, jobs: int, runtime_s: float
) -> tuple[int, int]:
    """``(seed, jobs)`` as ints, after checking that the page's header tells the truth."""
    check_size(size)
    seed = check_seed(seed)
    if isinstance(jobs, bool | np.bool_) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1 (worker processes), got {jobs!r}")
    if jobs > workers_used(int(jobs), len(records)):  # the header states what ran (stop 54)
        raise ValueError(
            f"jobs={jobs} for {len(records)} record(s), but run_many runs at most "
            f"{workers_used(int(jobs), len(records))} at once then; the page states the "
            "processes that ran: pass jobs=tying.experiments.runner.workers_used(jobs, "
            "len(records))"
        )
    if isinstance(runtime_s, bool) or not isinstance(runtime_s, int | float | np.number):
        raise ValueError(f"runtime_s must be a number of seconds, got {runtime_s!r}")
    if not (math.isfinite(runtime_s) and runtime_s >= 0):
        raise ValueError(f"runtime_s must be finite and >= 0 seconds, got {runtime_s!r}")
    ids = [r.id for r in records]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(
            f"records hold {', '.join(map(repr, twice))} more than once; the page has one "
            "section and one count per experiment: pass one record per id"
        )
    for rec in records:  # the page states one size and seed for every number on it
        if rec.size != size or rec.seed != seed:
            raise ValueError(
                f"record {rec.id!r} was run at size {rec.size!r}, seed {rec.seed}, but the "
                f"page would say size {size!r}, seed {seed}; pass the size and seed the "
                "records were run with (or run them again)"
            )
    return seed, int(jobs)


def _write_pair(out: pathlib.Path, files: list[tuple[pathlib.Path, bytes]]) -> None:
    """Write every file in full under a temporary name, then move each into place.

    ``Path.write_bytes`` truncates the old file first: a full disk, a file-size limit or a
    Ctrl-C in the middle left a half-written ``index.html`` (or a new page beside the old
    ``results.json``). Here a failure before the moves leaves the old files as they were,
    and the temporary files are removed (they are no file the user wrote).
    """
    mask = os.umask(0o22)  # mkstemp makes 0600 files; the page gets the usual mode
    os.umask(mask)
    temps: list[tuple[str, pathlib.Path]] = []
    try:
        for path, data in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                os.chmod(tmp, 0o666 & ~mask)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        with _interrupt_deferred():  # both files are moved, or neither (stop 56)
            # listed as pending only now that both are written: a full disk above left
            # them pending, and a page the user then edited was overwritten unrefused
            expect_files(out, [str(path.relative_to(out)) for _, path in temps])
            for tmp, path in temps:
                os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            pathlib.Path(tmp).unlink(missing_ok=True)


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | pathlib.Path,
    *,
    size: str,
    seed: int,
    jobs: int,
    runtime_s: float,
) -> dict[str, pathlib.Path]:
    """Write ``index.html`` and ``results.json`` into ``out_dir`` and list them in its manifest.

    Args:
        records: what :func:`tying.experiments.runner.run_many` returned (figures
            already saved under ``out_dir/figures``).
        out_dir: the report folder, checked with
            :func:`~tying.experiments.output.claim_folder` before the experiments ran.
        size, seed, jobs: how the experiments were run (shown in the environment);
            ``jobs`` is the number that ran at once
            (:func:`~tying.experiments.runner.workers_used`), not the ``--jobs`` asked.
        runtime_s: wall time of the whole run.

    Returns:
        ``{"html": path, "json": path}``.

    Raises:
        OutputFolderError: ``out_dir`` holds a file tying did not write (a user's
            ``index.html``, say) or cannot be written, or a figure a record lists is
            missing there or is no PNG (named); nothing is written then.
        TypeError: ``records`` is one record, or not an iterable of RunRecords (named).
        ValueError: a record's status is none a run gives (named).
        ValueError: a bad ``size``, ``seed``, ``jobs`` (also more than ran) or
            ``runtime_s``, an id twice in ``records``, or a record run at another size or seed than the page would
            state; TypeError: ``seed``/``jobs`` not an integer. Nothing is written then.
        OSError: a page file could not be written (a full disk); the old
            ``index.html`` and ``results.json`` are left as they were.
    """
    load_all()
    records = _check_records(records)
    seed, jobs = _check_run(records, size, seed, jobs, runtime_s)
    out = out_path(out_dir)
    with folder_lock(out):  # no other run rewrites the manifest meanwhile (stop 54)
        return _write_locked(records, out, size, seed, jobs, runtime_s)


_PNG = b"\x89PNG\r\n\x1a\n"


def _check_figures(records: Sequence[RunRecord], out: pathlib.Path) -> None:
    """Refuse a page that would show a figure that is not in ``out`` or is no PNG (stop 54).

    The page links every figure a record lists; one removed or overwritten since the
    run showed as a broken image beside the claim's verdict, and the manifest left it out.
    """
    for rec in records:
        for rel in rec.figures:
            path = out / rel
            try:
                with path.open("rb") as fh:
                    head = fh.read(len(_PNG))
            except OSError as exc:
                raise OutputFolderError(
                    f"{path}: figure of {rec.id!r} cannot be read ({exc.strerror or exc}); "
                    "the page would show a missing image. Run the experiments again with "
                    "this folder as out_dir"
                ) from None
            if head != _PNG or path.is_symlink():
                raise OutputFolderError(
                    f"{path}: figure of {rec.id!r} is not a PNG file tying wrote (it starts "
                    f"with {head!r}); the page would show a broken image. Run the "
                    "experiments again with this folder as out_dir"
                )


def _write_locked(records, out, size, seed, jobs, runtime_s) -> dict[str, pathlib.Path]:
    # refuses to overwrite a page the user made; the records' own figures are ours
    claim_folder(out, [r.id for r in records], fresh=False, writes_page=True)
    _check_figures(records, out)
    threads = sorted({r.threads for r in records})
    env = collect_environment(
        size=size, seed=seed, jobs=jobs, **{"torch threads per experiment": threads}
    )
    page = render_page(records, REGISTRY, env, runtime_s, import_errors())
    # Both files are encoded before either is written: a failure leaves the old pair. A
    # lone surrogate (an OS error naming a file whose name is not UTF-8) cannot be UTF-8:
    # it is written as its escape, ``\udcff``, which JSON reads back as the same string.
    results = json.dumps(results_dict(records, env, runtime_s), indent=2, ensure_ascii=False)
    page_bytes = page.encode("utf-8", errors="backslashreplace")
    json_bytes = (results + "\n").encode("utf-8", errors="backslashreplace")
    html_path, json_path = out / "index.html", out / "results.json"
    _write_pair(out, [(html_path, page_bytes), (json_path, json_bytes)])
    figures = [f for r in records for f in r.figures if (out / f).is_file()]
    record_files(out, [*_PAGE, *figures])
    return {"html": html_path, "json": json_path}
