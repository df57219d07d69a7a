"""The group conv's tie as two numba loops (issue 19, stop 23); imported only with numba.

See :mod:`tying.nn._group_conv_tie` for the tables and the autograd rules. The
expanded bank ``(C_out, |G|, M)`` (``M = C_in·orientations_in·k²``) reads, for output
channel ``co``, the physical entries ``co·step + fwd[g, m]`` (``step = C_in·k²``: one
output channel of one physical block), so one small table serves every output
channel and the loops walk the bank in order. The backward sums, for each physical
entry, its ``|G|`` uses in ascending bank order, starting from ``0.0`` exactly as
``index_add_`` into zeros does, so the gradient keeps its bits (a ``-0.0`` sum stays
``+0.0``, NaN and inf land where they did).

Indices are cast to ``np.uintp``: with signed indices numba adds a wrap-around branch
per load, which stops LLVM from vectorising the gathers (measured 2× slower).
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def gather(phys, fwd, c_out, step, out):
    """``out[(co·|G| + g)·M + m] = phys[co·step + fwd[g, m]]`` for every output channel."""
    n_g, m_len = fwd.shape
    for co in range(c_out):
        pb = co * step
        for g in range(n_g):
            ob = (co * n_g + g) * m_len
            row = fwd[g]
            for m in range(m_len):
                out[np.uintp(ob + m)] = phys[np.uintp(pb + row[m])]


@_jit
def scatter_sum(grad, uses, c_out, block, out):
    """``out[src·block + co·M' + m] = 0 + Σ_j grad[co·slab + uses[src, j, m]]``, j ascending.

    ``+ 0.0`` (a float64 add of a float32 value is exact, and so is the cast back)
    turns a ``-0.0`` first use into ``+0.0``, as ``index_add_`` into zeros does.

    ``uses[src, j, m]`` is the ``j``-th use (in bank order) of physical entry ``m`` of
    block ``src`` within one output channel's slab of the bank; ``M' = step``.
    """
    n_src, n_use, m_len = uses.shape
    slab = grad.shape[0] // c_out
    for co in range(c_out):
        gb = co * slab
        for src in range(n_src):
            ob = src * block + co * m_len
            first = uses[src, 0]
            for m in range(m_len):
                out[np.uintp(ob + m)] = grad[np.uintp(gb + first[m])] + 0.0
            for j in range(1, n_use):
                row = uses[src, j]
                for m in range(m_len):
                    out[np.uintp(ob + m)] += grad[np.uintp(gb + row[m])]


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
