"""The argument checks of :mod:`tying.experiments.output`: ids and relative paths.

A string where a list is expected was read as its letters: its figures went unchecked
(stop 60), a file tying was about to replace went unlisted and a figure to keep was
removed (stop 61). Every function of ``output`` that takes ids or paths checks them here.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable

__all__ = ["claimed_ids", "rel_paths"]


def claimed_ids(ids: object, fresh: object, writes_page: object) -> list[str]:
    """``ids`` as a list of str, after checking ``fresh`` and ``writes_page`` are bools.

    A string was read as its letters (``figures/p--*.png``: the check that a run would
    replace a figure a page shows missed it), and ``fresh="no"`` as True, which removes
    the folder's earlier output (stop 60).
    """
    for name, flag in (("fresh", fresh), ("writes_page", writes_page)):
        # np.True_ is a bool, as the rest of tying takes it (np.any(...) said "got
        # np.True_ (bool)"; stop 60 review); numpy is not imported here for it
        numpy_bool = type(flag).__module__ == "numpy" and type(flag).__name__ in ("bool", "bool_")
        if not (isinstance(flag, bool) or numpy_bool):
            raise TypeError(
                f"claim_folder(): {name} must be True or False, got {flag!r} "
                f"({type(flag).__name__}); fresh=True removes the folder's earlier output"
            )
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise TypeError(
            f"claim_folder(): ids must be a list of experiment ids, got {repr(ids)[:80]} "
            f"({type(ids).__name__}); pass [id] for one"
        )
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise TypeError(
            f"claim_folder(): ids must be experiment ids (str), got {repr(bad[0])[:80]} "
            f"({type(bad[0]).__name__}) among them"
        )
    return ids


def rel_paths(paths: object, where: str) -> list[str]:
    """``paths`` (relative paths) as a list of str; one path alone is refused.

    ``expect_files(out, "index.html")`` listed its letters as pending and left
    ``index.html`` unlisted, and ``remove_unlisted_figures(..., keep="figures/x--a.png")``
    kept its letters and removed that figure (stop 61). A path object is taken as the
    path it names.
    """
    if isinstance(paths, str | bytes | os.PathLike) or not isinstance(paths, Iterable):
        raise TypeError(
            f"{where}: expected a list of paths relative to the folder, got "
            f"{repr(paths)[:80]} ({type(paths).__name__}); pass [path] for one"
        )
    rels = []
    for rel in paths:
        if isinstance(rel, os.PathLike) and not isinstance(rel, bytes):
            rel = os.fspath(rel)
            rel = pathlib.PurePath(rel).as_posix() if isinstance(rel, str) else rel
        if not isinstance(rel, str):
            raise TypeError(
                f"{where}: expected paths (str) relative to the folder, got "
                f"{repr(rel)[:80]} ({type(rel).__name__}) among them"
            )
        rels.append(rel)
    return rels
