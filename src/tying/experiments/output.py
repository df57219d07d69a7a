"""The output folder: the report writes, overwrites and removes only files it wrote itself.

``tying report --out DIR`` and ``tying run ID --out DIR`` keep a manifest,
``DIR/.tying-report.json``, of every file they wrote (relative path and SHA-256).
Before any experiment runs, :func:`claim_folder` checks ``DIR``:

- it must be a folder (or not exist yet) that this process can create and write;
- every file in it must be one the manifest lists, unchanged since it was written
  (or a figure that a run of ours interrupted before it could list it);
- any other file -- a user's ``index.html``, ``figures/thesis.png``, a symlink --
  refuses the whole folder, naming the file. Nothing is removed or overwritten then;
- ``tying run`` (``fresh=False``) into a folder holding a report page of ours is
  refused when it would replace a figure that page shows (the page would then
  describe one run's numbers beside another run's figure).

A report (``fresh=True``) then removes its own previous files (stale figures);
``tying run`` (``fresh=False``) keeps them and adds its figures. Nothing is ever
removed with ``rmtree``: only listed files, one by one.

Example:
    >>> import pathlib, tempfile
    >>> from tying.experiments.output import OutputFolderError, claim_folder, record_files
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> claim_folder(out, ["param-counts"], fresh=True)
    >>> _ = (out / "index.html").write_text("<html></html>")
    >>> record_files(out, ["index.html"])
    >>> claim_folder(out, ["param-counts"], fresh=True)  # its own output: fine
    >>> _ = (out / "notes.txt").write_text("mine")
    >>> try:
    ...     claim_folder(out, ["param-counts"], fresh=True)
    ... except OutputFolderError as exc:
    ...     print("refused:", "notes.txt" in str(exc))
    refused: True
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence

__all__ = ["MANIFEST", "OutputFolderError", "claim_folder", "record_files"]

#: The manifest's file name inside the output folder.
MANIFEST = ".tying-report.json"
_FIGURES = "figures"
_PAGE_FILES = ("index.html", "results.json")


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message names the file or the reason and the fix."""


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_rel(rel: object) -> bool:
    """A manifest entry may only name a file below the folder: no absolute path, no ``..``."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    parts = pathlib.PurePosixPath(rel).parts
    return not rel.startswith("/") and ".." not in parts and "." not in parts


_LEGACY_TITLE = "<title>tying — experiment report</title>"


def _legacy_report(out: pathlib.Path) -> dict[str, str]:
    """The files of a report folder written by a tying from before the manifest, or {}.

    Such a folder is recognised only when it is nothing else: an ``index.html`` with
    tying's title, a ``results.json`` with tying's keys, and exactly the figures that
    results.json lists. Anything more (a user's file) and it is not adopted, so the
    folder is refused as any other.
    """
    try:
        entries = _entries(out)
        page = (out / "index.html").read_text(encoding="utf-8", errors="replace")
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if _LEGACY_TITLE not in page or not isinstance(results, dict):
        return {}
    if not {"passed", "total", "environment", "experiments"} <= set(results):
        return {}
    figures = set()
    for record in results.get("experiments") or []:
        for rel in record.get("figures", []) if isinstance(record, dict) else []:
            if not (isinstance(rel, str) and _safe_rel(rel) and rel.startswith(f"{_FIGURES}/")):
                return {}
            figures.add(rel)
    expected = {"index.html", "results.json", *figures}
    if set(entries) != expected or any((out / rel).is_symlink() for rel in entries):
        return {}
    return {rel: _sha256(out / rel) for rel in entries}


def _read_manifest(out: pathlib.Path) -> dict:
    path = out / MANIFEST
    if not path.exists() and not path.is_symlink():
        # a report written before the manifest existed is adopted as tying's own
        return {"files": _legacy_report(out), "pending": []}
    bad = (
        f"{path} is not a manifest written by tying (it lists the files a report wrote); "
        "remove it, or choose another folder with --out"
    )
    if path.is_symlink() or not path.is_file():
        raise OutputFolderError(bad)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise OutputFolderError(bad) from None
    files, pending = (data.get("files"), data.get("pending")) if isinstance(data, dict) else (0, 0)
    if (
        not isinstance(files, dict)
        or not isinstance(pending, list)
        or not all(_safe_rel(k) and isinstance(v, str) for k, v in files.items())
        or not all(_safe_rel(p) for p in pending)
    ):
        raise OutputFolderError(bad)
    return {"files": dict(files), "pending": list(pending)}


def _write_manifest(out: pathlib.Path, files: dict[str, str], pending: Sequence[str]) -> None:
    data = {
        "written_by": "tying (report/run --out)",
        "about": "files tying wrote here; it overwrites or removes only these",
        "files": dict(sorted(files.items())),
        "pending": list(pending),
    }
    # a fresh temporary name, never one a user's file could already have
    fd, tmp = tempfile.mkstemp(prefix=MANIFEST + ".", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, out / MANIFEST)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _entries(out: pathlib.Path) -> list[str]:
    """Every non-folder entry below ``out`` (files, symlinks, ...), relative, POSIX style."""
    found = []

    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(out, onerror=fail, followlinks=False):
        base = pathlib.Path(root)
        for name in dirs:  # a symlinked folder is not walked into: it counts as an entry
            if (base / name).is_symlink():
                found.append((base / name).relative_to(out).as_posix())
        found += [(base / name).relative_to(out).as_posix() for name in files]
    return sorted(found)


def _owned(out: pathlib.Path, manifest: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """(files of ours, [(foreign file, why)]) among the entries of ``out``."""
    ours, foreign = [], []
    for rel in _entries(out):
        if rel == MANIFEST:
            continue
        path = out / rel
        if path.is_symlink() or not path.is_file():
            foreign.append((rel, "is not a regular file tying wrote"))
        elif rel in manifest["files"]:
            if _sha256(path) == manifest["files"][rel]:
                ours.append(rel)
            else:
                foreign.append((rel, "was changed since tying wrote it"))
        elif any(fnmatch.fnmatchcase(rel, p) for p in manifest["pending"]):
            ours.append(rel)  # written by a run of ours that was interrupted before listing it
        else:
            foreign.append((rel, "was not written by tying"))
    return ours, foreign


def claim_folder(
    out_dir: str | pathlib.Path, ids: Iterable[str], *, fresh: bool, writes_page: bool = False
) -> None:
    """Check that ``out_dir`` may receive output for ``ids``; create it and mark it as ours.

    Call it before any experiment runs: every refusal happens while nothing has been
    written or removed yet.

    Args:
        out_dir: the folder (``--out``). It may not exist yet.
        ids: experiment ids whose figures (``figures/<id>--*.png``) will be written.
        fresh: True for a report (its previous files are removed first, so no stale
            figure survives); False for ``tying run`` (earlier figures are kept).
        writes_page: True when the caller rewrites ``index.html`` and ``results.json``
            itself (:func:`tying.report.write_report`), so figures of ``ids`` already
            there may be shown by the page; False for a run that only adds figures.

    Raises:
        OutputFolderError: ``out_dir`` is a file; it holds a file tying did not write
            (named, with the count of such files); a file tying wrote was changed
            since; the manifest is not one tying wrote; or the folder cannot be
            created or written (the OS error is named); or (``fresh=False``,
            ``writes_page=False``) the folder holds a report page of ours that shows a
            figure of ``ids``: the run would replace it, and the page would describe
            one run's numbers beside another run's figure.
    """
    out = pathlib.Path(out_dir)
    try:  # a name too long for the file system, a path through an unreadable folder
        exists, is_dir = out.exists(), out.is_dir()
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot use that path ({exc.strerror or exc}); choose a folder "
            "path this system accepts and you can read"
        ) from None
    if exists and not is_dir:
        raise OutputFolderError(
            f"--out {out} is a file, not a folder; give a folder (it is created if missing)"
        )
    if is_dir:
        manifest = _read_manifest(out)
        try:
            ours, foreign = _owned(out, manifest)
        except OSError as exc:
            raise OutputFolderError(
                f"--out {out}: cannot read what is there ({exc.strerror or exc}); choose a "
                "folder you can read and write"
            ) from None
        if foreign:
            rel, why = foreign[0]
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise OutputFolderError(
                f"--out {out} holds {out / rel}, which {why}{more}; tying never overwrites "
                "or removes files it did not write. Choose an empty or new folder with --out, "
                "or move those files away"
            )
    else:
        manifest, ours = {"files": {}, "pending": []}, []
    ids = list(ids)
    pending = [f"{_FIGURES}/{i}--*.png" for i in ids]
    page = [rel for rel in _PAGE_FILES if rel in ours]
    shown = [rel for rel in ours if any(fnmatch.fnmatchcase(rel, p) for p in pending)]
    if not fresh and not writes_page and page and shown:
        raise OutputFolderError(
            f"--out {out} holds a report ({out / page[0]}) that shows {out / shown[0]}; "
            "a run there would replace that figure and leave the page describing another "
            "run's numbers. Choose another folder with --out, or run `tying report` there "
            "again (it rewrites the page with the figures)"
        )
    if fresh:
        pending += list(_PAGE_FILES)
    kept = {rel: manifest["files"][rel] for rel in ours if rel in manifest["files"]}
    try:
        out.mkdir(parents=True, exist_ok=True)
        # writing the manifest first is the writability check, and it lists what we
        # still own (so an interrupted removal below leaves nothing unaccounted for)
        _write_manifest(out, kept, [*manifest["pending"], *pending])
        if fresh:
            for rel in ours:
                (out / rel).unlink()
                kept.pop(rel, None)
            _write_manifest(out, kept, pending)
        (out / _FIGURES).mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); choose a folder you can "
            "write to"
        ) from None


def record_files(out_dir: str | pathlib.Path, paths: Iterable[str]) -> None:
    """Add files just written (paths relative to ``out_dir``) to the manifest.

    Args:
        out_dir: a folder prepared with :func:`claim_folder`.
        paths: relative paths, e.g. ``"index.html"``, ``"figures/a--b.png"``.

    Raises:
        OutputFolderError: a path is outside the folder or not a file.
    """
    out = pathlib.Path(out_dir)
    manifest = _read_manifest(out)
    files = dict(manifest["files"])
    for rel in paths:
        if not _safe_rel(rel) or not (out / rel).is_file():
            raise OutputFolderError(f"{out / str(rel)}: not a file inside {out} to record")
        files[rel] = _sha256(out / rel)
    _write_manifest(out, files, [])
