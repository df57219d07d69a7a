"""Tile transforms of the Winograd F(4×4, 3×3) convolution (numba); imported only with numba.

See :mod:`tying.nn._winograd` for the algorithm and the autograd rules. The caller hands
each kernel one chunk of whole images at a time (``x[b0:b1]`` and that chunk's tiles).
A kernel copies a band of image rows (as many strips of 4 output rows as fit in
``_BAND_BYTES``) between the image layout (NCHW or channels-last, read through strides)
and a channels-last buffer that stays in cache, and runs the 1-D transforms on channel
vectors, so the innermost loops vectorise over channels. For NCHW, eight channels'
rows of the band are read or written side by side (``_CB``), so the band's side of the
copy moves eight contiguous values at a time (one channel's rows at a time cost 2-3
times as much on the Intel VM of 2026-12-06). The transform along a strip's
columns runs over the whole strip at once (one flat loop); the one along rows goes entry
row by entry row, so ``V``/``M``/``dM`` are written or read as six runs at a time, not
36 streams (measured 2026-12-04: in_fwd at 8×64 channels×33² 1.6 → 1.1 ms warm).

Layouts: ``V`` and ``dV`` are ``(36, N, C_in)``, ``M`` and ``dM`` are ``(36, N, C_out)``,
with ``N = B·th·tw`` tiles in the order ``(b, ti, tj)`` and the 36 entries of a 6×6
tile row-major. ``k`` holds the constants ``(2, 4, 5, 8, 0)`` in the arrays' dtype, so
float32 data is transformed in float32 (integer literals would promote to float64).
``p`` is the zero padding on every side. The output kernels return whether every value
they wrote is finite (each value times zero, summed: NaN iff one was not), so the caller
can fall back to the direct convolution, whose NaN and inf positions differ.

An innermost index must be the loop's own variable (``a[i, n, c]`` over ``c``, or a
slice's ``dst[j]``): numba wraps negative indices, and for a computed flat index such as
``a[off + j]`` LLVM then cannot prove it non-negative and emits scatters (a tile copy
written that way took 1 ms instead of 0.07).
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache

_jit = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
_BAND_BYTES = 1 << 18  # a band buffer of rows: 256 KB, well inside a 1 MB L2
# NCHW <-> band copies move _CB channels per image position, their rows read or written
# as _CB runs side by side, instead of one channel's rows at a time: the band's stores
# (or loads) then come _CB contiguous values at a time, not one every C values. At
# 8x64 channels x 32², 1 thread: in_fwd's copy 1.15 -> 0.55 ms (16: the same; 32: slower)
_CB = 8


@_jit
def _all_finite(acc):
    for i in range(acc.shape[0]):
        if acc[i] != acc[i]:  # NaN: some value times zero was not zero
            return False
    return True


@_jit
def _band(row_bytes, th):
    """How many strips of tiles one band buffer holds: ``_BAND_BYTES`` of rows, at least one."""
    return max(1, min(th, _BAND_BYTES // max(row_bytes, 1)))


@_jit
def in_fwd(x, p, th, tw, V, k):
    """``V[:, n] = Bᵀ d B`` for every 6×6 input tile ``d`` (zero padding ``p``)."""
    B, C, H, W = x.shape
    F2, F4, F5 = k[0], k[1], k[2]
    Wp = 4 * tw + 2
    R = _band(4 * Wp * C * V.itemsize, th)
    X = np.zeros((4 * R + 2, Wp, C), V.dtype)  # a band of padded rows, channels last
    T = np.empty((6, Wp, C), V.dtype)  # one strip's rows transformed: Bᵀ d for every column
    X2 = X.reshape((4 * R + 2, Wp * C))
    T2 = T.reshape((6, Wp * C))
    cl = x.strides[1] < x.strides[3]  # channels-last input: channels are the fast axis
    for b in range(B):
        for t0 in range(0, th, R):
            ns = min(R, th - t0)
            y0 = 4 * t0 - p  # the image row of the band's first row
            lo, hi = max(0, -y0), max(0, min(4 * ns + 2, H - y0))  # the rows inside the image
            for r in range(4 * ns + 2):
                if r < lo or r >= hi:
                    X[r, :, :] = 0.0
            if cl:
                for r in range(lo, hi):
                    for xx in range(W):
                        for c in range(C):
                            X[r, xx + p, c] = x[b, c, y0 + r, xx]
            else:  # eight channels' rows at a time, read side by side (see _CB)
                for c0 in range(0, C - C % _CB, _CB):
                    for r in range(lo, hi):
                        for xx in range(W):
                            for ci in range(_CB):
                                X[r, xx + p, c0 + ci] = x[b, c0 + ci, y0 + r, xx]
                for c in range(C - C % _CB, C):
                    for r in range(lo, hi):
                        for xx in range(W):
                            X[r, xx + p, c] = x[b, c, y0 + r, xx]
            for ts in range(ns):
                r0 = 4 * ts
                for j in range(Wp * C):  # columns of every tile of the strip: T = Bᵀ d
                    d0 = X2[r0, j]
                    d1 = X2[r0 + 1, j]
                    d2 = X2[r0 + 2, j]
                    d3 = X2[r0 + 3, j]
                    d4 = X2[r0 + 4, j]
                    d5 = X2[r0 + 5, j]
                    T2[0, j] = F4 * d0 - F5 * d2 + d4
                    T2[1, j] = -F4 * (d1 + d2) + d3 + d4
                    T2[2, j] = F4 * (d1 - d2) - d3 + d4
                    T2[3, j] = F2 * (d3 - d1) + (d4 - d2)
                    T2[4, j] = F2 * (d1 - d3) + (d4 - d2)
                    T2[5, j] = F4 * d1 - F5 * d3 + d5
                nt = (b * th + t0 + ts) * tw  # the strip's first tile
                for i in range(6):  # rows: V = T B; six rows of V at a time, each a run
                    q = 6 * i
                    for tj in range(tw):
                        n = nt + tj
                        x0 = 4 * tj
                        for c in range(C):
                            d0 = T[i, x0, c]
                            d1 = T[i, x0 + 1, c]
                            d2 = T[i, x0 + 2, c]
                            d3 = T[i, x0 + 3, c]
                            d4 = T[i, x0 + 4, c]
                            d5 = T[i, x0 + 5, c]
                            V[q, n, c] = F4 * d0 - F5 * d2 + d4
                            V[q + 1, n, c] = -F4 * (d1 + d2) + d3 + d4
                            V[q + 2, n, c] = F4 * (d1 - d2) - d3 + d4
                            V[q + 3, n, c] = F2 * (d3 - d1) + (d4 - d2)
                            V[q + 4, n, c] = F2 * (d1 - d3) + (d4 - d2)
                            V[q + 5, n, c] = F4 * d1 - F5 * d3 + d5


@_jit
def out_fwd(M, bias, th, tw, y, k):
    """``y = Aᵀ M A + bias`` per tile, cropped to ``y``; True when every value is finite."""
    B, C, Ho, Wo = y.shape
    F2, F4, F8, Z = k[0], k[1], k[3], k[4]
    Wq = 4 * tw
    R = _band(4 * Wq * C * M.itemsize, th)
    u = np.empty((6, Wq, C), M.dtype)  # one strip: M A for every tile, side by side
    Y = np.empty((4 * R, Wq, C), M.dtype)  # a band of output rows, channels last
    u2 = u.reshape((6, Wq * C))
    Y2 = Y.reshape((4 * R, Wq * C))
    acc = np.zeros(max(C, Wo), M.dtype)
    cl = y.strides[1] < y.strides[3]
    for b in range(B):
        for t0 in range(0, th, R):
            ns = min(R, th - t0)
            for ts in range(ns):
                nt = (b * th + t0 + ts) * tw
                for i in range(6):  # columns: u = M A; six rows of M at a time, each a run
                    q = 6 * i
                    for tj in range(tw):
                        n = nt + tj
                        x0 = 4 * tj
                        for c in range(C):
                            m0 = M[q, n, c]
                            m1 = M[q + 1, n, c]
                            m2 = M[q + 2, n, c]
                            m3 = M[q + 3, n, c]
                            m4 = M[q + 4, n, c]
                            m5 = M[q + 5, n, c]
                            u[i, x0, c] = m0 + m1 + m2 + m3 + m4
                            u[i, x0 + 1, c] = (m1 - m2) + F2 * (m3 - m4)
                            u[i, x0 + 2, c] = (m1 + m2) + F4 * (m3 + m4)
                            u[i, x0 + 3, c] = (m1 - m2) + F8 * (m3 - m4) + m5
                r0 = 4 * ts
                for j in range(Wq * C):  # rows of every tile of the strip: Y = Aᵀ u
                    m0 = u2[0, j]
                    m1 = u2[1, j]
                    m2 = u2[2, j]
                    m3 = u2[3, j]
                    m4 = u2[4, j]
                    m5 = u2[5, j]
                    Y2[r0, j] = m0 + m1 + m2 + m3 + m4
                    Y2[r0 + 1, j] = (m1 - m2) + F2 * (m3 - m4)
                    Y2[r0 + 2, j] = (m1 + m2) + F4 * (m3 + m4)
                    Y2[r0 + 3, j] = (m1 - m2) + F8 * (m3 - m4) + m5
            y0 = 4 * t0
            rows = max(0, min(4 * ns, Ho - y0))
            if cl:
                for r in range(rows):
                    for xx in range(Wo):
                        for c in range(C):
                            v = Y[r, xx, c] + bias[c]
                            y[b, c, y0 + r, xx] = v
                            acc[c] += v * Z
            else:  # eight channels' rows at a time, written side by side (see _CB)
                for c0 in range(0, C - C % _CB, _CB):
                    for r in range(rows):
                        for xx in range(Wo):
                            for ci in range(_CB):
                                v = Y[r, xx, c0 + ci] + bias[c0 + ci]
                                y[b, c0 + ci, y0 + r, xx] = v
                                acc[ci] += v * Z
                for c in range(C - C % _CB, C):
                    for r in range(rows):
                        for xx in range(Wo):
                            v = Y[r, xx, c] + bias[c]
                            y[b, c, y0 + r, xx] = v
                            acc[xx] += v * Z
    return _all_finite(acc)


@_jit
def out_adj(dy, th, tw, dM, k):
    """The adjoint of :func:`out_fwd` (bias aside): ``dM = A dY Aᵀ`` per tile, zero outside."""
    B, C, Ho, Wo = dy.shape
    F2, F4, F8 = k[0], k[1], k[3]
    Wq = 4 * tw
    R = _band(4 * Wq * C * dM.itemsize, th)
    D = np.zeros((4 * R, Wq, C), dM.dtype)  # a band of gradient rows, channels last
    u = np.empty((6, Wq, C), dM.dtype)  # one strip: A h for every column
    D2 = D.reshape((4 * R, Wq * C))
    u2 = u.reshape((6, Wq * C))
    cl = dy.strides[1] < dy.strides[3]
    for b in range(B):
        for t0 in range(0, th, R):
            ns = min(R, th - t0)
            y0 = 4 * t0
            rows = max(0, min(4 * ns, Ho - y0))
            for r in range(rows, 4 * ns):
                D[r, :, :] = 0.0
            if cl:
                for r in range(rows):
                    for xx in range(Wo):
                        for c in range(C):
                            D[r, xx, c] = dy[b, c, y0 + r, xx]
            else:  # eight channels' rows at a time, read side by side (see _CB)
                for c0 in range(0, C - C % _CB, _CB):
                    for r in range(rows):
                        for xx in range(Wo):
                            for ci in range(_CB):
                                D[r, xx, c0 + ci] = dy[b, c0 + ci, y0 + r, xx]
                for c in range(C - C % _CB, C):
                    for r in range(rows):
                        for xx in range(Wo):
                            D[r, xx, c] = dy[b, c, y0 + r, xx]
            for ts in range(ns):
                r0 = 4 * ts
                for j in range(Wq * C):  # u = A h (rows of every tile of the strip)
                    h0 = D2[r0, j]
                    h1 = D2[r0 + 1, j]
                    h2 = D2[r0 + 2, j]
                    h3 = D2[r0 + 3, j]
                    u2[0, j] = h0
                    u2[1, j] = h0 + h1 + h2 + h3
                    u2[2, j] = h0 - h1 + h2 - h3
                    u2[3, j] = h0 + F2 * h1 + F4 * h2 + F8 * h3
                    u2[4, j] = h0 - F2 * h1 + F4 * h2 - F8 * h3
                    u2[5, j] = h3
                nt = (b * th + t0 + ts) * tw
                for i in range(6):  # dM = u Aᵀ (columns); six rows of dM at a time, each a run
                    q = 6 * i
                    for tj in range(tw):
                        n = nt + tj
                        x0 = 4 * tj
                        for c in range(C):
                            h0 = u[i, x0, c]
                            h1 = u[i, x0 + 1, c]
                            h2 = u[i, x0 + 2, c]
                            h3 = u[i, x0 + 3, c]
                            dM[q, n, c] = h0
                            dM[q + 1, n, c] = h0 + h1 + h2 + h3
                            dM[q + 2, n, c] = h0 - h1 + h2 - h3
                            dM[q + 3, n, c] = h0 + F2 * h1 + F4 * h2 + F8 * h3
                            dM[q + 4, n, c] = h0 - F2 * h1 + F4 * h2 - F8 * h3
                            dM[q + 5, n, c] = h3


@_jit
def in_adj(dV, p, th, tw, dx, k):
    """The adjoint of :func:`in_fwd`: ``dx = Σ_tiles B dV Bᵀ``, cropped by the padding.

    Six padded rows are accumulated and roll down one strip at a time: after strip
    ``ti`` its first four rows get no more contributions and are written out. Returns
    True when every value written is finite.
    """
    B, C, H, W = dx.shape
    F2, F4, F5, Z = k[0], k[1], k[2], k[4]
    X = np.zeros((6, 4 * tw + 2, C), dV.dtype)
    t = np.empty((6, 6, C), dV.dtype)
    acc = np.zeros(max(C, W), dV.dtype)
    cl = dx.strides[1] < dx.strides[3]
    for b in range(B):
        X[:, :, :] = 0.0
        for ti in range(th + 1):
            if ti < th:
                for tj in range(tw):
                    n = (b * th + ti) * tw + tj
                    x0 = 4 * tj
                    for i in range(6):  # t = g B (rows of the tile)
                        q = 6 * i
                        for c in range(C):
                            g0 = dV[q, n, c]
                            g1 = dV[q + 1, n, c]
                            g2 = dV[q + 2, n, c]
                            g3 = dV[q + 3, n, c]
                            g4 = dV[q + 4, n, c]
                            g5 = dV[q + 5, n, c]
                            t[i, 0, c] = F4 * g0
                            t[i, 1, c] = -F4 * g1 + F4 * g2 - F2 * g3 + F2 * g4 + F4 * g5
                            t[i, 2, c] = -F5 * g0 - F4 * g1 - F4 * g2 - g3 - g4
                            t[i, 3, c] = g1 - g2 + F2 * g3 - F2 * g4 - F5 * g5
                            t[i, 4, c] = g0 + g1 + g2 + g3 + g4
                            t[i, 5, c] = g5
                    for s in range(6):  # X += B t (columns), accumulated over tiles
                        for c in range(C):
                            g0 = t[0, s, c]
                            g1 = t[1, s, c]
                            g2 = t[2, s, c]
                            g3 = t[3, s, c]
                            g4 = t[4, s, c]
                            g5 = t[5, s, c]
                            X[0, x0 + s, c] += F4 * g0
                            X[1, x0 + s, c] += -F4 * g1 + F4 * g2 - F2 * g3 + F2 * g4 + F4 * g5
                            X[2, x0 + s, c] += -F5 * g0 - F4 * g1 - F4 * g2 - g3 - g4
                            X[3, x0 + s, c] += g1 - g2 + F2 * g3 - F2 * g4 - F5 * g5
                            X[4, x0 + s, c] += g0 + g1 + g2 + g3 + g4
                            X[5, x0 + s, c] += g5
            # padded rows 4·ti .. 4·ti + 3 are final now (after the last strip: 4·th, +1)
            for r in range(4 if ti < th else 2):
                yy = 4 * ti + r - p
                if 0 <= yy < H:
                    if cl:
                        for xx in range(W):
                            for c in range(C):
                                v = X[r, xx + p, c]
                                dx[b, c, yy, xx] = v
                                acc[c] += v * Z
                    else:  # eight channels at a time, written side by side (see _CB)
                        for c0 in range(0, C - C % _CB, _CB):
                            for xx in range(W):
                                for ci in range(_CB):
                                    v = X[r, xx + p, c0 + ci]
                                    dx[b, c0 + ci, yy, xx] = v
                                    acc[ci] += v * Z
                        for c in range(C - C % _CB, C):
                            for xx in range(W):
                                v = X[r, xx + p, c]
                                dx[b, c, yy, xx] = v
                                acc[xx] += v * Z
            X[0, :, :] = X[4, :, :]
            X[1, :, :] = X[5, :, :]
            X[2:, :, :] = 0.0
    return _all_finite(acc)


@_jit
def kernel_adj(dU, K, out):
    """``out = Kᵀ dU``: ``(9, P)`` from ``dU (36, P)`` and ``K = G ⊗ G (36, 9)``, summed over
    the 36 entries in order, so the weight gradient does not depend on the thread count."""
    P = dU.shape[1]
    for j in range(9):
        row = out[j]
        k0 = K[0, j]
        for q in range(P):
            row[q] = k0 * dU[0, q]
        for e in range(1, 36):
            ke = K[e, j]
            src = dU[e]
            for q in range(P):
                row[q] += ke * src[q]


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
