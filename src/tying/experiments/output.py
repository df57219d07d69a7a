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
removed with ``rmtree``: only listed files, one by one. ``tying report`` itself builds
the new report in ``DIR/.tying-build-XXXXXXXX/`` (:func:`start_build`) and moves it in
only when whole (:func:`install_build`), so a failed or interrupted run leaves the
earlier report as it was. Temporary files that only tying's own names produce (a page
file half-written by a run killed with ``kill -9``, a build folder) count as tying's
and are removed -- but never the build folder of a report still being written: a
running ``tying report`` holds a lock on its build folder (``flock``, released when the
process ends, however it ends), and a second ``tying report`` or ``tying run`` into the
same folder meanwhile is refused, naming that build folder, instead of deleting the
first one's figures mid-run (stop 51).

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
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress

from tying.experiments.interrupts import interrupt_deferred as _interrupt_deferred
from tying.experiments.output_arguments import claimed_ids as _claimed_ids
from tying.experiments.output_arguments import rel_paths as _rel_paths

try:  # POSIX; without it (Windows) a live build folder cannot be told from a killed one's
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MANIFEST",
    "OutputFolderError",
    "claim_folder",
    "discard_build",
    "expect_files",
    "folder_lock",
    "install_build",
    "out_path",
    "record_files",
    "remove_unlisted_figures",
    "start_build",
]

#: The manifest's file name inside the output folder.
MANIFEST = ".tying-report.json"
_FIGURES = "figures"
_PAGE_FILES = ("index.html", "results.json")
#: A report is built in ``DIR/.tying-build-XXXXXXXX/`` and moved into ``DIR`` when whole.
BUILD_PREFIX = ".tying-build-"
_RAND = "[a-z0-9_]{8}"  # the 8 characters tempfile.mkstemp/mkdtemp put in a name
_TEMP = rf"\.(?:index\.html|results\.json|tying-report\.json)\.{_RAND}\.tmp"
#: Files that only this module's own temporary names can produce: a page or manifest
#: file being written (``.index.html.k3j9x_2a.tmp``), or anything a report build
#: wrote. A ``kill -9`` mid-write leaves them; they are recognised and removed.
_LEFTOVER = re.compile(
    rf"{_TEMP}|{re.escape(BUILD_PREFIX)}{_RAND}/(?:"
    rf"{_TEMP}|\.tying-report\.json|index\.html|results\.json|figures/[A-Za-z0-9_-]+\.png)"
)


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message names the file or the reason and the fix."""


#: Build folders of this process, resolved path -> the open descriptor holding its flock
#: (None where it could not be locked: still this process's own build).
_HELD: dict[str, int | None] = {}
_BUILD_NAME = re.compile(rf"{re.escape(BUILD_PREFIX)}{_RAND}")


def _hold(build: pathlib.Path) -> None:
    """Lock ``build`` for this process: a report is being written in it."""
    _HELD[str(build.resolve())] = None  # ours, even where it cannot be locked
    if fcntl is None:  # pragma: no cover
        return
    try:
        fd = os.open(build, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: other processes cannot tell it apart
        os.close(fd)
        return
    _HELD[str(build.resolve())] = fd


def _release(build: pathlib.Path) -> None:
    fd = _HELD.pop(str(build.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


def _in_use(build: pathlib.Path) -> bool:
    """Whether ``build`` is the build folder of a report being written now (this process or another)."""
    if str(build.resolve()) in _HELD:
        return True
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(build, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # another process holds it: its report is being written
    except OSError:
        return False
    finally:
        os.close(fd)  # a lock taken here on a dead build is released with it
    return False


def _live_builds(out: pathlib.Path) -> list[str]:
    """The names of the build folders in ``out`` whose report is still being written."""
    try:
        names = sorted(os.listdir(out))
    except OSError:
        return []
    return [
        n
        for n in names
        if _BUILD_NAME.fullmatch(n)
        and not (out / n).is_symlink()
        and (out / n).is_dir()
        and _in_use(out / n)
    ]


def _refuse_busy(out: pathlib.Path) -> None:
    live = _live_builds(out)
    if live:
        raise OutputFolderError(
            f"--out {out}: another `tying report` is writing a report there now (its build "
            f"folder {out / live[0]} is in use); running a second one into the same folder "
            "would delete its files mid-run. Wait for it to finish, or choose another folder "
            "with --out"
        )


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
        elif _LEFTOVER.fullmatch(rel):
            ours.append(rel)  # a temporary file of ours that a killed run left behind
        else:
            foreign.append((rel, "was not written by tying"))
    return ours, foreign


def _nested_reports(out: pathlib.Path, foreign: list[tuple[str, str]]) -> list[str]:
    """The subfolders (relative) of ``out`` among ``foreign`` that are report folders of ours.

    ``tying report --out ro/sub`` then ``--out ro``: ``ro/sub``'s files are tying's, but
    another report's, and ``ro``'s manifest does not list them. They are refused all the
    same (a report never removes another one's files), but named for what they are.
    """
    nested = []
    for rel, _ in foreign:
        folder, _, name = rel.rpartition("/")
        if name != MANIFEST or not folder or any(folder.startswith(f"{n}/") for n in nested):
            continue
        try:
            _read_manifest(out / folder)
        except (OSError, OutputFolderError):
            continue  # a look-alike file of that name: not a manifest of ours
        nested.append(folder)
    return nested


def _report_above(out: pathlib.Path, rel: str) -> pathlib.Path | None:
    """The folder above ``out`` whose report's manifest lists ``out/rel``, or None."""
    where = pathlib.Path(os.path.abspath(out))  # ``..`` read as typed (stop 59 review)
    path = where / rel
    for folder in where.parents:
        try:
            if not (folder / MANIFEST).is_file():
                continue
            manifest = _read_manifest(folder)
        except (OSError, OutputFolderError):
            continue
        mine = path.relative_to(folder).as_posix()
        if mine in manifest["files"] or any(
            fnmatch.fnmatchcase(mine, p) for p in manifest["pending"]
        ):  # named as the user named --out: relative to here when it was
            return folder if out.is_absolute() else pathlib.Path(os.path.relpath(folder))
    return None


def _refuse_foreign(out: pathlib.Path, foreign: list[tuple[str, str]]) -> None:
    if not foreign:
        return
    nested = _nested_reports(out, foreign)
    others = [(r, w) for r, w in foreign if not any(r.startswith(f"{n}/") for n in nested)]
    if nested:
        sub = out / nested[0]
        also = [str(out / n) for n in nested[1:]] + [str(out / r) for r, _ in others]
        more = f" (and {len(also)} more that tying did not write for {out})" if also else ""
        raise OutputFolderError(
            f"--out {out} holds {sub}, the folder of another report (its manifest "
            f"{sub / MANIFEST} lists what tying wrote there){more}; a report never "
            f"overwrites or removes another one's files. Choose another folder with --out "
            f"(one that does not hold {sub}), or move {sub} out of {out}"
        )
    rel, why = others[0]
    more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
    above = _report_above(out, rel) if why == "was not written by tying" else None
    if above is not None:  # --out DIR/figures of a report in DIR: its files, not a user's
        raise OutputFolderError(
            f"--out {out} holds {out / rel}, a file of the report in {above} (its manifest "
            f"{above / MANIFEST} lists it){more}; a report inside another report's folder "
            f"would overwrite or remove that report's files. Choose a folder outside "
            f"{above} with --out"
        )
    raise OutputFolderError(
        f"--out {out} holds {out / rel}, which {why}{more}; tying never overwrites "
        "or removes files it did not write. Choose an empty or new folder with --out, "
        "or move those files away"
    )


def _report_around(out: pathlib.Path) -> pathlib.Path | None:
    """The nearest folder above ``out`` that holds a report of ours (its manifest), or None."""
    seen = set()
    # as typed, with ``..`` read as the user reads it (``Path.absolute`` keeps it:
    # ``--out ../other`` typed inside a report's folder was refused as inside it, stop 59
    # review), and through symbolic links
    typed = pathlib.Path(os.path.abspath(out))
    try:
        starts = [typed, out.resolve()]
    except (OSError, RuntimeError):  # a link loop: as typed only
        starts = [typed]
    for start in starts:
        for folder in start.parents:
            if folder in seen:
                continue
            seen.add(folder)
            try:
                if not (folder / MANIFEST).is_file():
                    continue
                _read_manifest(folder)
            except (OSError, OutputFolderError):
                continue  # unreadable, or a look-alike file: no report of ours
            return folder if out.is_absolute() else pathlib.Path(os.path.relpath(folder))
    return None


def _refuse_inside_report(out: pathlib.Path) -> None:
    """Refuse ``out`` inside another report's folder (stop 59).

    A report written there was accepted, and then the outer report's next run was
    refused until it was moved out: the outer report never removes another one's files.
    """
    with suppress(OSError, RuntimeError):
        if str(out.resolve()) in _HELD:  # this process's own build, inside its report
            return
    above = _report_around(out)
    if above is not None:
        raise OutputFolderError(
            f"--out {out} is inside {above}, the folder of another report (its manifest "
            f"{above / MANIFEST} lists what tying wrote there); a report written inside it "
            f"would block the next report into {above}, which never removes another "
            f"report's files. Choose a folder outside {above} with --out"
        )


def _remove_leftovers(out: pathlib.Path, rels: Iterable[str]) -> None:
    """Remove the temporary files of killed runs among ``rels``.

    A build folder whose report is still being written (:func:`_in_use`) is no
    leftover: its files are left alone.
    """
    builds = set()
    live = set(_live_builds(out))
    for rel in rels:
        if _LEFTOVER.fullmatch(rel) and rel.split("/", 1)[0] not in live:
            (out / rel).unlink(missing_ok=True)
            if rel.startswith(BUILD_PREFIX):
                builds.add(rel.split("/", 1)[0])
    for name in builds:  # emptied build folders; one holding anything else stays
        _remove_if_empty(out / name)


def _remove_if_empty(build: pathlib.Path) -> None:
    """Remove a build folder and its ``figures`` folder where they are empty."""
    for folder in (build / _FIGURES, build):
        try:
            folder.rmdir()
        except OSError:
            pass


def out_path(out_dir: str | os.PathLike) -> pathlib.Path:
    """``out_dir`` as a path; an empty or blank one is refused (stop 59).

    ``pathlib.Path("")`` is the current folder: ``out_dir=os.environ.get("OUT", "")``
    with the variable unset reported into (or was refused for) whatever folder the
    caller stood in, where ``tying report --out ""`` is refused. ``"."`` still means it.

    Args:
        out_dir: the output folder as given (a str, bytes or path); a leading ``~`` is
            the home folder, as a shell reads it.

    Returns:
        The folder as a :class:`pathlib.Path`.

    Raises:
        OutputFolderError: ``out_dir`` is an empty or blank string.

    Example:
        >>> out_path("report"), out_path(".")
        (PosixPath('report'), PosixPath('.'))
    """
    if isinstance(out_dir, str | bytes) and not out_dir.strip():
        raise OutputFolderError(
            f"out_dir {out_dir!r}: an empty or blank folder name is most likely an unset "
            "variable (an empty path means the current folder); give a folder such as "
            "'report' (it is created if missing), or '.' for the current folder"
        )
    path = os.fsdecode(out_dir) if isinstance(out_dir, bytes) else out_dir
    # "~/report" is the home folder's report, as a shell reads it: pathlib made a folder
    # named "~" in the current one (stop 62); only a leading "~" is read, and "~user" that
    # names no user stays as given (Path.expanduser raised for "~nobody")
    return pathlib.Path(os.path.expanduser(path))


def _check_path(out: pathlib.Path) -> bool:
    """Whether ``out`` is a folder already (False: it does not exist yet); refuse a file."""
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
    if not exists and out.is_symlink():  # mkdir said only "File exists" (stop 54)
        raise OutputFolderError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "create that folder first, or give another folder with --out"
        )
    return is_dir


def _check_contents(out: pathlib.Path) -> tuple[dict, list[str]]:
    """``(manifest, files of ours)`` of the folder ``out``; refuse one holding a foreign file."""
    manifest = _read_manifest(out)
    try:
        ours, foreign = _owned(out, manifest)
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot read what is there ({exc.strerror or exc}); choose a "
            "folder you can read and write"
        ) from None
    _refuse_foreign(out, foreign)
    return manifest, ours


#: Output folders this process holds the lock of: resolved path -> the lock file's descriptor.
_LOCKED: dict[pathlib.Path, int] = {}


def _locked_here(out: pathlib.Path) -> bool:
    """Whether this process holds the lock of ``out`` or of a folder above it (a build)."""
    where = out.resolve()
    return any(where == held or held in where.parents for held in _LOCKED)


@contextmanager
def folder_lock(out_dir: str | pathlib.Path) -> Iterator[None]:
    """Hold the output folder ``out_dir`` for this process while the block runs.

    Two runs writing into one folder at the same time read and rewrite its manifest
    in turn: one could drop the entries of the other's files, which the next run then
    refuses as foreign. ``tying report --out DIR`` and ``tying run ID --out DIR`` (and
    :func:`~tying.experiments.runner.run_experiment`, ``run_many`` and
    :func:`tying.report.write_report` given a folder) therefore hold ``flock`` on the
    folder ``DIR`` itself from their first check to their last write; a second one is
    refused at once (it does not wait), and nothing is written or removed then. The
    lock is on the folder, not on a lock file: a refused run leaves the folder exactly
    as it was. It goes when the block ends or the process ends, however it ends.
    Re-entrant in one process (a build folder inside a held folder counts as held).
    Without ``fcntl`` (Windows), or on a file system without locks, nothing is locked.

    Args:
        out_dir: the output folder; created when missing.

    Raises:
        OutputFolderError: another process holds the folder now (named, with the fix),
            ``out_dir`` is a file, lies inside another report's folder (named), or the
            folder cannot be created (the OS error is named).

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "rep"
        >>> with folder_lock(out):
        ...     out.is_dir()
        True
    """
    out = out_path(out_dir)
    if fcntl is None or _locked_here(out):
        yield
        return
    is_dir = _check_path(out)
    _refuse_inside_report(out)  # before the folder is created
    if not is_dir:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(
                f"--out {out}: cannot write there ({exc.strerror or exc}); choose a folder you "
                "can write to"
            ) from None
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot read it ({exc.strerror or exc}); choose a folder you can "
            "read and write"
        ) from None
    locks = True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputFolderError(
            f"--out {out}: another `tying report` or `tying run --out` is writing there now "
            "(it holds the folder's lock); two runs into one folder would drop each other's "
            "files from its manifest. Wait for it to finish, or choose another folder with "
            "--out"
        ) from None
    except OSError:  # a file system without locks: nothing to hold
        locks = False
    if not locks:
        os.close(fd)
        yield
        return
    where = out.resolve()
    _LOCKED[where] = fd
    try:
        yield
    finally:
        _LOCKED.pop(where, None)
        os.close(fd)  # releases the lock


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
        TypeError: ``ids`` is one string or holds a non-string, or ``fresh`` /
            ``writes_page`` is not a bool (nothing is checked or written then).
        OutputFolderError: ``out_dir`` is a file; it holds a file tying did not write
            (named, with the count of such files); a file tying wrote was changed
            since; the manifest is not one tying wrote; or the folder cannot be
            created or written (the OS error is named); or it is a symbolic link to
            nothing (named, with its target); or (``fresh=False``,
            ``writes_page=False``) the folder holds a report page of ours that shows a
            figure of ``ids``: the run would replace it, and the page would describe
            one run's numbers beside another run's figure; or another ``tying report``
            is being written into the folder now (its build folder is named); or
            it lies inside the folder of another report (named): the next report there
            would be refused until this one was moved out.
    """
    ids = _claimed_ids(ids, fresh, writes_page)
    out = out_path(out_dir)
    is_dir = _check_path(out)
    if is_dir:
        manifest, ours = _check_contents(out)
    _refuse_inside_report(out)
    if is_dir:
        _refuse_busy(out)
    else:
        manifest, ours = {"files": {}, "pending": []}, []
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
                if not _LEFTOVER.fullmatch(rel):
                    (out / rel).unlink()
                kept.pop(rel, None)
            _write_manifest(out, kept, pending)
        _remove_leftovers(out, ours)
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
        TypeError: ``paths`` is one path (a str or path object), or holds a non-path.
        OutputFolderError: a path is outside the folder or not a file.
    """
    rels = _rel_paths(paths, "record_files()")
    out = out_path(out_dir)
    manifest = _read_manifest(out)
    files = dict(manifest["files"])
    for rel in rels:
        if not _safe_rel(rel) or not (out / rel).is_file():
            raise OutputFolderError(f"{out / str(rel)}: not a file inside {out} to record")
        files[rel] = _sha256(out / rel)
    _write_manifest(out, files, [])


def expect_files(out_dir: str | pathlib.Path, paths: Iterable[str]) -> None:
    """List files tying is about to replace in ``out_dir`` as pending in its manifest.

    A file the manifest lists with its SHA-256 and that no longer matches it is refused
    as changed by the user. :func:`tying.report.write_report` replaces ``index.html`` and
    ``results.json`` and then lists their new hashes: a Ctrl-C or an error in between
    left the new files beside the old hashes, and every later run into the folder was
    refused ("changed since tying wrote it", stop 56). Listed as pending first, they are
    tying's whether the old or the new ones are there, until :func:`record_files`
    lists them again.

    Args:
        out_dir: a folder prepared with :func:`claim_folder`.
        paths: relative paths of files tying will write next.

    Raises:
        TypeError: ``paths`` is one path (a str or path object), or holds a non-path.
        OutputFolderError: a path is outside the folder, or the manifest cannot be
            read or written (the OS error is named).

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> claim_folder(out, [], fresh=True)
        >>> _ = (out / "index.html").write_text("<html>old</html>")
        >>> record_files(out, ["index.html"])
        >>> expect_files(out, ["index.html"])
        >>> _ = (out / "index.html").write_text("<html>new</html>")  # then interrupted
        >>> claim_folder(out, [], fresh=True)  # still tying's own file: not refused
    """
    rels = _rel_paths(paths, "expect_files()")
    out = out_path(out_dir)
    bad = [rel for rel in rels if not _safe_rel(rel)]
    if bad:
        raise OutputFolderError(f"{out / str(bad[0])}: not a path inside {out} to expect")
    manifest = _read_manifest(out)
    files = {rel: h for rel, h in manifest["files"].items() if rel not in rels}
    try:
        _write_manifest(out, files, [*manifest["pending"], *rels])
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); choose a folder you can "
            "write to"
        ) from None


def remove_unlisted_figures(
    out_dir: str | pathlib.Path, exp_id: str, keep: Iterable[str] = ()
) -> list[str]:
    """Remove the figures of ``exp_id`` that a stopped run began writing in ``out_dir``.

    An experiment stopped by its timeout may have written a figure, or part of one,
    that no manifest lists: the next run into the folder would refuse it as a user's
    file. Only ``figures/<exp_id>--<stem>.png`` files that the manifest does not list
    and ``keep`` does not name are removed; the folder was claimed before the run
    (:func:`claim_folder`), so no other file of that name can be a user's.

    Args:
        out_dir: the folder the experiment wrote into.
        exp_id: the stopped experiment's id.
        keep: relative paths to keep although not yet listed (other runs' figures).

    Returns:
        The relative paths removed.

    Raises:
        TypeError: ``keep`` is one path (a str or path object) or holds a non-path, or
            ``exp_id`` is not a str.

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> claim_folder(out, ["x"], fresh=True)
        >>> (out / "figures").mkdir(exist_ok=True)
        >>> _ = (out / "figures" / "x--half.png").write_bytes(b"PNG, cut off")
        >>> remove_unlisted_figures(out, "x")
        ['figures/x--half.png']
    """
    keep = _rel_paths(keep, "remove_unlisted_figures(): keep")
    if not isinstance(exp_id, str):
        raise TypeError(
            f"remove_unlisted_figures(): exp_id must be an experiment id (str), got "
            f"{repr(exp_id)[:80]} ({type(exp_id).__name__})"
        )
    out = out_path(out_dir)
    try:
        listed = set(_read_manifest(out)["files"]) | set(keep)
        names = sorted(os.listdir(out / _FIGURES))
    except (OSError, OutputFolderError):
        return []
    mine = re.compile(rf"{re.escape(exp_id)}--[A-Za-z0-9_-]+\.png")
    removed = []
    for name in names:
        rel = f"{_FIGURES}/{name}"
        path = out / rel
        if mine.fullmatch(name) and rel not in listed and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(rel)
    return removed


def start_build(out_dir: str | pathlib.Path, ids: Iterable[str]) -> pathlib.Path:
    """Check ``out_dir`` and make the folder a new report is built in, inside it.

    ``tying report`` writes figures and page into ``out_dir/.tying-build-XXXXXXXX/``
    and moves them into ``out_dir`` only when the page is whole
    (:func:`install_build`): a Ctrl-C, an exception or a ``kill -9`` before that
    leaves the earlier report in ``out_dir`` as it was. The build folder lies inside
    ``out_dir`` so that the move is a rename on one file system.

    Args:
        out_dir: the report folder (``--out``); it may not exist yet.
        ids: the experiment ids that will run.

    Returns:
        The build folder.

    Raises:
        TypeError: ``ids`` is one string or holds a non-string (as :func:`claim_folder`).
        OutputFolderError: as :func:`claim_folder` (nothing is written or removed then).

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> build = start_build(out, ["param-counts"])
        >>> build.parent == out, build.name.startswith(".tying-build-")
        (True, True)
        >>> discard_build(build); build.exists()
        False
    """
    # checked here, not by claim_folder: list("param-counts") is its letters (stop 60 review)
    ids = _claimed_ids(ids, False, True)
    out = out_path(out_dir)
    claim_folder(out, ids, fresh=False, writes_page=True)  # refusals first; removes nothing
    try:
        build = pathlib.Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=out))
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot write there ({exc.strerror or exc}); choose a folder you can "
            "write to"
        ) from None
    try:
        _hold(build)  # until install_build or discard_build: no other run removes it
        claim_folder(build, ids, fresh=True)
    except BaseException:
        discard_build(build)
        raise
    return build


def _as_build(build: str | os.PathLike) -> pathlib.Path:
    """``build`` as a path; refused unless it is named as :func:`start_build` names one.

    ``discard_build(out)`` or ``discard_build("")`` (the current folder) removed every
    file of the report there, and ``install_build("", out)`` moved the current folder's
    report away (stop 59 review): both take a build folder only.
    """
    path = pathlib.Path(os.fsdecode(build) if isinstance(build, bytes) else build)
    if not _BUILD_NAME.fullmatch(path.name):
        raise OutputFolderError(
            f"{str(build)!r} is not a build folder of start_build (a folder named "
            f"{BUILD_PREFIX}XXXXXXXX inside the report folder); discard_build and "
            "install_build remove or move the files tying wrote in it, so a report folder "
            "is not taken. Pass the folder start_build returned"
        )
    return path


def discard_build(build: str | pathlib.Path) -> None:
    """Remove a build folder of :func:`start_build` and the files tying wrote in it.

    A no-op when it is gone (installed, or removed before); a file in it that tying
    did not write is left, with the folder.

    Raises:
        OutputFolderError: ``build`` is not named as a build folder (a report folder,
            or ``""``, the current folder, would have lost its report).
    """
    build = _as_build(build)
    try:
        if not build.is_dir() or build.is_symlink():
            return
        try:
            ours, _ = _owned(build, _read_manifest(build))
        except (OSError, OutputFolderError):
            ours = []
        for rel in [*ours, MANIFEST]:
            (build / rel).unlink(missing_ok=True)
        _remove_if_empty(build)
    finally:
        _release(build)  # after the files are gone: no other run sees them as leftovers


def install_build(build: str | pathlib.Path, out_dir: str | pathlib.Path) -> None:
    """Move the whole report in ``build`` into ``out_dir``, replacing the earlier one.

    ``out_dir`` is checked again first (a file the user put there during the run
    refuses the move, and the earlier report stays). Every file is moved with a
    rename, figures first and the page last; the earlier report's files that the new
    one does not replace (stale figures) are then removed; a Ctrl-C meanwhile is held
    until the move is done.

    Args:
        build: the folder :func:`start_build` made, holding a finished report.
        out_dir: the report folder it was made in.

    Raises:
        OutputFolderError: ``out_dir`` now holds a file tying did not write, or the
            move failed (the OS error is named); ``build`` is not named as a build
            folder, or ``out_dir`` is empty or blank.
    """
    build, out = _as_build(build), out_path(out_dir)
    try:
        manifest = _read_manifest(out)
        ours, foreign = _owned(out, manifest)
        _refuse_foreign(out, foreign)
        new = _read_manifest(build)["files"]
        old = [r for r in ours if not _LEFTOVER.fullmatch(r) and r not in new]
        # the page last: index.html never names a figure that is not there yet
        order = sorted(new, key=lambda r: (r in _PAGE_FILES, r))
        with _interrupt_deferred():
            # while files move, both reports' files count as ours (a kill -9 here
            # leaves a folder the next run accepts)
            kept = {r: manifest["files"][r] for r in old if r in manifest["files"]}
            _write_manifest(out, kept, [*order, *old, *manifest["pending"]])
            (out / _FIGURES).mkdir(exist_ok=True)
            for rel in order:
                os.replace(build / rel, out / rel)
            for rel in old:
                (out / rel).unlink(missing_ok=True)
            _write_manifest(out, new, [])
            discard_build(build)
            _remove_leftovers(out, ours)
    except OSError as exc:
        raise OutputFolderError(
            f"--out {out}: cannot move the new report into place ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from None
