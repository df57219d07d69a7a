"""The memory of a fit's lane arrays: one block per kind, kept for the next fit.

A compiled fit carves all its lane arrays (data, scaling, emissions, forward
pass) from two blocks (:func:`carve`). A fresh block is memory the kernel has
not mapped yet: the first E-step then takes a page fault per 4 KiB it
touches. Measured 2026-12-02 at 150 x 400, K=8 (12.7 MB of lanes): about
1,000 faults and 3-4 ms of system time on one thread, 3-15 ms on two (both
threads fault into one address space), in about half the fits; glibc gave
the freed blocks back to the kernel or not, depending on what else the fit
had allocated. So the blocks are kept here, up to :data:`KEEP_BYTES` in all,
and a later fit that needs a block of the same size takes a kept one that
nothing uses any more.

"Nothing uses it" is exact, not a guess: every array carved from a block
holds a reference to it (NumPy's ``base``), so a kept block whose only
references are this module's is in no one's hands. A block someone still
holds a view of (a caller's, a thread's) is never handed out twice. A taken
block holds the previous fit's values; every kernel writes what it reads
first (tested by filling kept blocks with NaN before a fit).

Example:
    >>> from tying.hmm import arenas
    >>> a = arenas.carve([{"x": (2, 3)}, {"y": (4,)}])
    >>> a[0]["x"].shape, a[1]["y"].shape, a[0]["x"].base is a[1]["y"].base
    ((2, 3), (4,), True)
    >>> a[0]["x"].ctypes.data % 64, a[1]["y"].ctypes.data % 64  # cache-line aligned
    (0, 0)
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading

import numpy as np

__all__ = ["KEEP_BYTES", "MIN_KEEP_BYTES", "address", "carve", "kept_bytes", "release"]

#: most bytes of blocks kept for later fits (the oldest go first); a block larger
#: than this is never kept. 150 x 400 sequences of 4 features, K=8: 12.7 MB a fit
KEEP_BYTES = 64 << 20

#: blocks smaller than this are not kept: malloc serves them from memory it keeps
MIN_KEEP_BYTES = 64 << 10

_STEP = 8  # float64s in 64 bytes: every array starts on a cache line
_KEPT: list[np.ndarray] = []  # oldest first
_LOCK = threading.Lock()


def _refs(blocks: list) -> list[int]:
    """Each block's reference count as seen from here (compared with :data:`_ALONE`)."""
    return [sys.getrefcount(b) for b in blocks]


def _forget_in_child() -> None:
    """A forked child starts with nothing kept and a fresh lock (the parent's may have
    been held by another thread at the fork)."""
    global _LOCK
    _LOCK = threading.Lock()
    _KEPT.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)

#: the count of a block that only the list passed to :func:`_refs` holds
_ALONE = _refs([np.empty(0)])[0]
#: without the GIL, counts are not exact at every moment: nothing is kept then
_EXACT = getattr(sys, "_is_gil_enabled", lambda: True)()


def address(a: np.ndarray) -> int:
    """The address of ``a``'s first element, as ``a.ctypes.data`` gives it.

    A fit reads the addresses of its lane arrays on every fit (the compiled loop's unit
    table holds their offsets): ``a.ctypes.data`` builds a ctypes wrapper and a dict
    each time (0.85 us, hot; several times that right after an E-step has flushed the
    caches), while a ctypes view of a writable C-contiguous buffer costs 0.28 us
    (2026-12-02). Any other array (read-only, strided, empty) takes ``ctypes.data``.

    Args:
        a: any NumPy array.

    Returns:
        Its data pointer, an int.

    Example:
        >>> a = np.zeros(4)
        >>> address(a) == a.ctypes.data, address(a[::2]) == a.ctypes.data
        (True, True)
    """
    if a.flags.c_contiguous and a.flags.writeable and a.size:
        try:
            return ctypes.addressof(ctypes.c_char.from_buffer(a))
        except (TypeError, ValueError, BufferError):  # a buffer ctypes cannot view
            pass
    return a.ctypes.data


def _take(n: int) -> np.ndarray:
    """A block of ``n`` float64s: a kept one that nothing else holds, else a new one."""
    if not _EXACT or n * 8 > KEEP_BYTES or n * 8 < MIN_KEEP_BYTES:
        return np.empty(n)
    with _LOCK:
        for i, count in enumerate(_refs(_KEPT)):
            if count == _ALONE and _KEPT[i].size == n:
                block = _KEPT.pop(i)
                _KEPT.append(block)  # the newest: dropped last
                return block  # the caller's reference marks it taken
        block = np.empty(n)
        _KEPT.append(block)
        total = sum(b.nbytes for b in _KEPT)
        while total > KEEP_BYTES:  # forget the oldest (one in use stays its user's)
            total -= _KEPT.pop(0).nbytes
        return block


def carve(shapes: list[dict], offsets: list | None = None) -> list[dict]:
    """Float64 arrays of the given shapes, carved from one block, each on whole cache
    lines of its own (it starts on a 64-byte boundary and no other array shares its
    last line), so that threads writing different arrays never share a line. The
    values are whatever the block held: write before reading.

    One block of several MB is also backed by huge pages when it is new (NumPy
    asks for them above 4 MiB): tens of faults instead of thousands for
    separate arrays (3,320 faults, 3.2 ms of system time, 200 x 500, 2026-12-01).

    Args:
        shapes: per unit, ``{name: shape}``.
        offsets: a list to append, per unit, ``(block, {name: offset})`` to: the block
            carved and each array's first element's place in it, in float64s (what a
            caller would otherwise read from each array's address).

    Returns:
        Per unit, ``{name: array}``.

    Example:
        >>> [d["a"].shape for d in carve([{"a": (3,)}, {"a": (2, 2)}])]
        [(3,), (2, 2)]
    """
    sizes = [[math.prod(shape) for shape in d.values()] for d in shapes]
    total = sum(-(-n // _STEP) * _STEP for row in sizes for n in row)
    block = _take(total + _STEP)
    off = (-address(block) % 64) // 8  # the first 64-byte boundary
    out = []
    for d, row in zip(shapes, sizes, strict=True):
        arrays, at = {}, {}
        for (name, shape), n in zip(d.items(), row, strict=True):
            arrays[name] = block[off : off + n].reshape(shape)
            at[name] = off
            off += -(-n // _STEP) * _STEP
        out.append(arrays)
        if offsets is not None:
            offsets.append((block, at))
    return out


def kept_bytes() -> int:
    """Bytes of blocks kept for later fits (some may still be in use).

    Returns:
        Their total size, at most :data:`KEEP_BYTES`.

    Example:
        >>> _ = release()
        >>> kept_bytes()
        0
    """
    with _LOCK:
        return sum(b.nbytes for b in _KEPT)


def release() -> int:
    """Forget every kept block (those in use stay their users' until they drop them):
    the memory goes back to the allocator.

    Returns:
        The bytes forgotten.

    Example:
        >>> _ = carve([{"a": (10_000,)}]); release() > 0  # 80 KB: kept
        True
    """
    with _LOCK:
        total = sum(b.nbytes for b in _KEPT)
        _KEPT.clear()
        return total
