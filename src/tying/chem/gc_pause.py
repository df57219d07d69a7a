"""Python's cyclic garbage collector held off while a batch is labelled.

Moved out of :mod:`tying.chem.assign` (stop 50) to keep that module under 1,000 lines;
:mod:`tying.chem.assign` re-exports :func:`gc_paused`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_GC_LOCK = threading.Lock()
_GC_DEPTH = 0  # batches running now (any thread) inside gc_paused
_GC_WE_DISABLED = False  # whether the outermost of them switched the collector off


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while a batch is labelled.

    A batch allocates thousands of short-lived tuples and dicts (RDKit's matches, the
    term dicts), freed by reference counting as soon as they are dropped (anything
    cyclic, such as a caught error's traceback, is collected once the collector is
    back on). Each 700 allocations still started a collection, and every so often a
    full one that walks every object in the process: cold labelling of 1,000
    drug-like molecules cost about 5 % more for that in a fresh process, and about
    10 % more in one holding the OpenFF toolkit's object graph (measured 2026-12-01,
    1 thread). The collector is switched back on when the last batch running in any
    thread ends, and only if it was on before: a caller's ``gc.disable()`` is kept,
    and nothing else about the collector changes. ``assign_many``'s batches are 64
    molecules (``assign``'s, one), so what waits for the collector stays small.

    Example:
        >>> import gc
        >>> with gc_paused():
        ...     inside = gc.isenabled()
        >>> inside, gc.isenabled()
        (False, True)
    """
    global _GC_DEPTH, _GC_WE_DISABLED
    with _GC_LOCK:
        if _GC_DEPTH == 0:
            _GC_WE_DISABLED = gc.isenabled()
            gc.disable()
        _GC_DEPTH += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_DEPTH -= 1
            if _GC_DEPTH == 0 and _GC_WE_DISABLED:
                gc.enable()
                _GC_WE_DISABLED = False


def _gc_after_fork_in_child() -> None:
    """A child forked while a batch ran in another thread: that batch never ends here.

    The child would keep the collector off for its whole life (and a lock held at the
    fork would never be released); it starts with no batch running and the collector
    as the parent had it before its batches.
    """
    global _GC_LOCK, _GC_DEPTH, _GC_WE_DISABLED
    _GC_LOCK = threading.Lock()
    if _GC_DEPTH and _GC_WE_DISABLED:
        gc.enable()
    _GC_DEPTH, _GC_WE_DISABLED = 0, False


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_gc_after_fork_in_child)
