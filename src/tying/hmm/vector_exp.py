"""``np.exp(a, out=a)`` for the E-step, vectorised where NumPy's float64 ``exp`` is not.

On CPUs without AVX-512 (AMD Zen 3, for one) NumPy's float64 ``exp`` calls glibc's
``exp`` one element at a time, about 4.5 ns an element: up to 40 % of a Gaussian EM
fit. :mod:`tying.hmm._numba_exp` holds glibc's method written step for step, which
LLVM compiles to vector code (1.7 ns). This module decides, once a process, whether it
may be used: only where it gives **the bits of ``np.exp``** on about 330,000 awkward and
random values (:func:`tying.hmm._numba_exp.same_bits`). Elsewhere (NumPy's own AVX-512
loop, another C library, no numba), or with ``TYING_HMM_VECTOR_EXP=0`` set, every
caller keeps ``np.exp``. Either way the results are the same bits; only the time
differs.

Callers: the compiled EM loop (:mod:`tying.hmm.fused_em`, by the loop's address) and
the general loop's fused E-step and compiled forward-backward
(:mod:`tying.hmm.forward_backward`, by :func:`exp_in_place`).
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

log = logging.getLogger(__name__)

_STATE: dict = {"loop": None}  # None: not decided yet; False: NumPy's; else (address, ctx)
_LOCK = threading.Lock()  # two fits on two threads decide once


def loop() -> tuple[int, np.ndarray] | None:
    """``(address, numpy_loop)`` of the vectorised loop where it gives ``np.exp``'s bits,
    else None. ``numpy_loop`` (int64: NumPy's exp loop and its data) is the ``data``
    argument the loop takes; it stays alive for the process."""
    if _STATE["loop"] is None:
        with _LOCK:
            if _STATE["loop"] is None:
                _STATE["loop"] = _decide() or False
    return _STATE["loop"] or None


def _decide() -> tuple[int, np.ndarray] | None:
    if os.environ.get("TYING_HMM_VECTOR_EXP", "1") == "0":
        return None
    try:
        from tying.hmm import _numba_exp
        from tying.hmm.fused_em import _ufunc_loop

        numpy_loop = np.array(_ufunc_loop(np.exp), dtype=np.int64)
        address = _numba_exp.loop_address()
        if not _numba_exp.same_bits(address, numpy_loop.ctypes.data):
            log.debug("tying.hmm: NumPy's exp is not glibc's here; NumPy's loop stays")
            return None
    except Exception as err:  # no numba, or it could not build it: NumPy's is as right
        log.debug("tying.hmm: the vectorised exp is off (%s); NumPy's loop stays", err)
        return None
    return address, numpy_loop


def exp_in_place(a: np.ndarray) -> np.ndarray:
    """``np.exp(a, out=a)``, the same bits, vectorised where :func:`loop` allows.

    Args:
        a: a float64 array; C-contiguous ones take the vectorised loop (the others,
            and every array where it is not used, take ``np.exp``).

    Returns:
        ``a``.

    Example:
        >>> a = np.array([0.0, -1.0, -800.0])
        >>> exp_in_place(a).tolist() == np.exp([0.0, -1.0, -800.0]).tolist()
        True
    """
    found = loop() if a.dtype == np.float64 and a.flags.c_contiguous else None
    if found is None:
        with np.errstate(invalid="ignore"):  # NaN rows are the callers' to flag
            np.exp(a, out=a)
        return a
    from tying.hmm import _numba_exp

    _numba_exp.exp_in_place(a.reshape(-1), found[1][0], found[1][1], np.empty(5, np.int64))
    return a
