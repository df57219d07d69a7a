"""Tile transforms of the Winograd F(4×4, 3×3) convolution (numba); imported only with numba.

See :mod:`tying.nn._winograd` for the algorithm and the autograd rules. Each kernel
walks one strip of 4 output rows at a time: it copies the strip's rows between the
image layout (NCHW or channels-last, read through strides) and a small channels-last
buffer that stays in cache, and runs the 1-D transforms on channel vectors, so the
innermost loops vectorise over channels.

Layouts: ``V`` and ``dV`` are ``(36, N, C_in)``, ``M`` and ``dM`` are ``(36, N, C_out)``,
with ``N = B·th·tw`` tiles in the order ``(b, ti, tj)`` and the 36 entries of a 6×6
tile row-major. ``k`` holds the constants ``(2, 4, 5, 8, 0)`` in the arrays' dtype, so
float32 data is transformed in float32 (integer literals would promote to float64).
``p`` is the zero padding on every side. The output kernels return whether every value
they wrote is finite (each value times zero, summed: NaN iff one was not), so the caller
can fall back to the direct convolution, whose NaN and inf positions differ.
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache

_jit = numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})


@_jit
def _all_finite(acc):
    for i in range(acc.shape[0]):
        if acc[i] != acc[i]:  # NaN: some value times zero was not zero
            return False
    return True


@_jit
def in_fwd(x, p, th, tw, V, k):
    """``V[:, n, :] = Bᵀ d B`` for every 6×6 input tile ``d`` (zero padding ``p``)."""
    B, C, H, W = x.shape
    F2, F4, F5 = k[0], k[1], k[2]
    X = np.zeros((6, 4 * tw + 2, C), V.dtype)  # six padded rows, channels last
    t = np.empty((6, 6, C), V.dtype)
    cl = x.strides[1] < x.strides[3]  # channels-last input: channels are the fast axis
    for b in range(B):
        for ti in range(th):
            for r in range(6):
                yy = 4 * ti - p + r
                if 0 <= yy < H:
                    if cl:
                        for xx in range(W):
                            for c in range(C):
                                X[r, xx + p, c] = x[b, c, yy, xx]
                    else:
                        for c in range(C):
                            for xx in range(W):
                                X[r, xx + p, c] = x[b, c, yy, xx]
                else:
                    X[r, :, :] = 0.0
            for tj in range(tw):
                n = (b * th + ti) * tw + tj
                x0 = 4 * tj
                for s in range(6):  # columns: t = Bᵀ d
                    for c in range(C):
                        d0 = X[0, x0 + s, c]
                        d1 = X[1, x0 + s, c]
                        d2 = X[2, x0 + s, c]
                        d3 = X[3, x0 + s, c]
                        d4 = X[4, x0 + s, c]
                        d5 = X[5, x0 + s, c]
                        t[0, s, c] = F4 * d0 - F5 * d2 + d4
                        t[1, s, c] = -F4 * (d1 + d2) + d3 + d4
                        t[2, s, c] = F4 * (d1 - d2) - d3 + d4
                        t[3, s, c] = F2 * (d3 - d1) + (d4 - d2)
                        t[4, s, c] = F2 * (d1 - d3) + (d4 - d2)
                        t[5, s, c] = F4 * d1 - F5 * d3 + d5
                for i in range(6):  # rows: V = t B
                    q = 6 * i
                    for c in range(C):
                        d0 = t[i, 0, c]
                        d1 = t[i, 1, c]
                        d2 = t[i, 2, c]
                        d3 = t[i, 3, c]
                        d4 = t[i, 4, c]
                        d5 = t[i, 5, c]
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
    u = np.empty((6, 4, C), M.dtype)
    Y = np.empty((4, 4 * tw, C), M.dtype)
    acc = np.zeros(max(C, Wo), M.dtype)
    cl = y.strides[1] < y.strides[3]
    for b in range(B):
        for ti in range(th):
            for tj in range(tw):
                n = (b * th + ti) * tw + tj
                for i in range(6):  # columns: u = M A
                    q = 6 * i
                    for c in range(C):
                        m0 = M[q, n, c]
                        m1 = M[q + 1, n, c]
                        m2 = M[q + 2, n, c]
                        m3 = M[q + 3, n, c]
                        m4 = M[q + 4, n, c]
                        m5 = M[q + 5, n, c]
                        u[i, 0, c] = m0 + m1 + m2 + m3 + m4
                        u[i, 1, c] = (m1 - m2) + F2 * (m3 - m4)
                        u[i, 2, c] = (m1 + m2) + F4 * (m3 + m4)
                        u[i, 3, c] = (m1 - m2) + F8 * (m3 - m4) + m5
                for j in range(4):  # rows: Y = Aᵀ u
                    xx = 4 * tj + j
                    for c in range(C):
                        m0 = u[0, j, c]
                        m1 = u[1, j, c]
                        m2 = u[2, j, c]
                        m3 = u[3, j, c]
                        m4 = u[4, j, c]
                        m5 = u[5, j, c]
                        Y[0, xx, c] = m0 + m1 + m2 + m3 + m4
                        Y[1, xx, c] = (m1 - m2) + F2 * (m3 - m4)
                        Y[2, xx, c] = (m1 + m2) + F4 * (m3 + m4)
                        Y[3, xx, c] = (m1 - m2) + F8 * (m3 - m4) + m5
            for r in range(4):
                yy = 4 * ti + r
                if yy >= Ho:
                    break
                if cl:
                    for xx in range(Wo):
                        for c in range(C):
                            v = Y[r, xx, c] + bias[c]
                            y[b, c, yy, xx] = v
                            acc[c] += v * Z
                else:
                    for c in range(C):
                        for xx in range(Wo):
                            v = Y[r, xx, c] + bias[c]
                            y[b, c, yy, xx] = v
                            acc[xx] += v * Z
    return _all_finite(acc)


@_jit
def out_adj(dy, th, tw, dM, k):
    """The adjoint of :func:`out_fwd` (bias aside): ``dM = A dY Aᵀ`` per tile, zero outside."""
    B, C, Ho, Wo = dy.shape
    F2, F4, F8 = k[0], k[1], k[3]
    D = np.zeros((4, 4 * tw, C), dM.dtype)
    u = np.empty((6, 4, C), dM.dtype)
    cl = dy.strides[1] < dy.strides[3]
    for b in range(B):
        for ti in range(th):
            for r in range(4):
                yy = 4 * ti + r
                if yy < Ho:
                    if cl:
                        for xx in range(Wo):
                            for c in range(C):
                                D[r, xx, c] = dy[b, c, yy, xx]
                    else:
                        for c in range(C):
                            for xx in range(Wo):
                                D[r, xx, c] = dy[b, c, yy, xx]
                else:
                    D[r, :, :] = 0.0
            for tj in range(tw):
                n = (b * th + ti) * tw + tj
                for j in range(4):  # u = A h (rows of the tile)
                    xx = 4 * tj + j
                    for c in range(C):
                        h0 = D[0, xx, c]
                        h1 = D[1, xx, c]
                        h2 = D[2, xx, c]
                        h3 = D[3, xx, c]
                        u[0, j, c] = h0
                        u[1, j, c] = h0 + h1 + h2 + h3
                        u[2, j, c] = h0 - h1 + h2 - h3
                        u[3, j, c] = h0 + F2 * h1 + F4 * h2 + F8 * h3
                        u[4, j, c] = h0 - F2 * h1 + F4 * h2 - F8 * h3
                        u[5, j, c] = h3
                for i in range(6):  # dM = u Aᵀ (columns)
                    q = 6 * i
                    for c in range(C):
                        h0 = u[i, 0, c]
                        h1 = u[i, 1, c]
                        h2 = u[i, 2, c]
                        h3 = u[i, 3, c]
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
                    else:
                        for c in range(C):
                            for xx in range(W):
                                v = X[r, xx + p, c]
                                dx[b, c, yy, xx] = v
                                acc[xx] += v * Z
            X[0, :, :] = X[4, :, :]
            X[1, :, :] = X[5, :, :]
            X[2:, :, :] = 0.0
    return _all_finite(acc)


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
