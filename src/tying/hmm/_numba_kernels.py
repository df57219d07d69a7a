"""numba kernels behind :mod:`tying.hmm.compiled`; imported only when numba is.

The fused Gaussian E-step in lane layout, its one-sequence-at-a-time variant for
units of few long sequences, and the diag M-step. The scaled forward-backward on
given log-densities (any HMM) is in :mod:`tying.hmm._numba_scaled`, re-exported
here with the shared JIT options ``_JIT``.

Each kernel handles the items ``lo..hi-1`` (sequences or pairs) one at a time
and writes only their slots of the outputs, so that chunks can run on
different threads (``nogil``) with results that do not depend on the split.
``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy (the
caller detects the sequence and recomputes it in log space) instead of raising.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tying import _numba_cache
from tying.hmm._numba_lanes import (
    lanes_beta_xi,
    lanes_density_full_step,
    lanes_density_step,
    lanes_forward,
    lanes_outer_tile,
    lanes_post_diag,
    lanes_sum,
)

# the kernels' options (_JIT, fastmath) and the scaled forward-backward on given
# log-densities, re-exported: compiled._kernels() hands out this module for both
# units of few, long sequences: one sequence at a time, vectorised over the states (stop
# 24; the stop 13 kernel, scalar over them, is tests/hmm/reference_kernels.rows_fb_stats_v13)
from tying.hmm._numba_rows import deal_rows, rows_fb_stats  # noqa: F401
from tying.hmm._numba_scaled import (  # noqa: F401
    _JIT,
    fb_log,
    fb_scaled,
    forward_scaled,
    kept,
    scaling_fragile,
    shift_rows,
    sum_first_axis,
)

# ------------------------------------------------- fused Gaussian E-step (issue 19)
# A work unit's sequences are laid out as "lanes": arrays (T, ..., S) with the
# sequences (sorted longest first) innermost, so that every step of the
# recursion is a loop over lanes, which the compiler vectorises (SIMD); a
# loop over K = 8 states per sequence does not vectorise and ran 3x slower.
# At step t the running lanes are the first n_act[t]. The lane count S is a
# multiple of LANE_BLOCK and loops run over whole blocks of lanes (``_up``):
# the compiler's vector loop then covers every lane, with no scalar remainder;
# lanes past their sequence's end carry zeros and add nothing.
LANE_BLOCK = 8
_LN2 = math.log(2.0)
_TWO_64, _TWO_M64 = 2.0**64, 2.0**-64
_P_FLOOR = 2.0**-1000  # products of factors stay above this, far from subnormal


@numba.njit(**_JIT)
def _up(n):
    """``n`` rounded up to a whole number of lane blocks."""
    return (n + LANE_BLOCK - 1) // LANE_BLOCK * LANE_BLOCK


@numba.njit(**_JIT)
def lanes_density_diag(XL, n_act, means, prec, const, b, m):
    """Shifted log-densities under diagonal Gaussians, in lane layout.

    ``XL (T, D, S)`` raw observations; ``means``/``prec`` ``(K, D)``; ``const[k]``
    the state's normalising constant. The exact form ``(x - mu)^2 / sigma^2`` on
    the raw data: no cancellation however far a point is from the means.
    Writes ``m[t, s] = max_k log p`` and ``b[t, k, s] = log p - m`` (padding: 0);
    the caller takes ``exp`` with NumPy's SIMD loop.

    One pass over a step's lane blocks (:func:`~tying.hmm._numba_lanes.lanes_density_step`):
    each state's sum over the features in registers, the maximum and the shift from the
    same block (stop 23; the loops of stop 22 took two passes per state at D = 4, eight
    at D = 16, and one more for the shift, each with its own set-up at every step).
    """
    T, D, S = XL.shape
    K = means.shape[0]
    muf = np.ascontiguousarray(means).reshape(-1)
    pf = np.ascontiguousarray(prec).reshape(-1)
    cf = np.ascontiguousarray(const)
    xf, bf, mf = XL.reshape(-1), b.reshape(-1), m.reshape(-1)
    for t in range(T):
        n = n_act[t]
        lanes_density_step(xf, t * D * S, S, D, _up(n) // LANE_BLOCK, muf, pf, cf, K, bf,
                           t * K * S, mf, t * S)  # fmt: skip
        for s in range(n, S):  # lanes past their end: 0 in both (exp(0) = 1, times 0 later)
            m[t, s] = 0.0
            for k in range(K):
                b[t, k, s] = 0.0


@numba.njit(**_JIT)
def lanes_density_full(XL, n_act, means, linv, const, b, m):
    """As :func:`lanes_density_diag` for full covariances: ``linv[k]`` is the inverse of
    the lower Cholesky factor of state k's covariance (lower triangular: what lies above
    its diagonal is not read), applied to ``x - mu_k`` itself.

    One pass over a step's lane blocks
    (:func:`~tying.hmm._numba_lanes.lanes_density_full_step`): four rows of ``L^-1`` at a
    time in registers (stop 24; the loop of stop 23, kept in tests/hmm, paid a loop over
    the lanes per ``(k, d, e)`` and cost 6x the multiply-adds' time at D = 16).
    """
    T, D, S = XL.shape
    K = means.shape[0]
    muf = np.ascontiguousarray(means).reshape(-1)
    lf = np.ascontiguousarray(linv).reshape(-1)
    cf = np.ascontiguousarray(const)
    xf, bf, mf = XL.reshape(-1), b.reshape(-1), m.reshape(-1)
    z = _aligned(D * LANE_BLOCK)
    for t in range(T):
        n = n_act[t]
        lanes_density_full_step(xf, t * D * S, S, D, _up(n) // LANE_BLOCK, muf, lf, cf, K, bf,
                                t * K * S, mf, t * S, z)  # fmt: skip
        for s in range(n, S):  # lanes past their end: 0 in both (exp(0) = 1, times 0 later)
            m[t, s] = 0.0
            for k in range(K):
                b[t, k, s] = 0.0


@numba.njit(**_JIT)
def lanes_shift(lb, lane_start, n_act, b, m):
    """Precomputed log-densities ``lb (n_samples, K)`` into lane layout, shifted by the row max."""
    T, K, S = b.shape
    for t in range(T):
        n = n_act[t]
        for s in range(n):
            r = lane_start[s] + t
            mx = lb[r, 0]
            for k in range(1, K):
                mx = max(mx, lb[r, k])
            m[t, s] = mx
            for k in range(K):
                b[t, k, s] = lb[r, k] - mx
        for s in range(n, S):
            m[t, s] = 0.0
            for k in range(K):
                b[t, k, s] = 0.0


@numba.njit(**_JIT)
def lanes_shift_in_place(b, n_act, m):
    """Log-densities already in lane layout ``b (T, K, S)``, shifted by their max over k."""
    T, K, S = b.shape
    for t in range(T):
        n = n_act[t]
        for s in range(n):
            mx = b[t, 0, s]
            for k in range(1, K):
                mx = max(mx, b[t, k, s])
            m[t, s] = mx
            for k in range(K):
                b[t, k, s] -= mx
        for s in range(n, S):
            m[t, s] = 0.0
            for k in range(K):
                b[t, k, s] = 0.0


@numba.njit(**_JIT)
def _times_b_sum(v, b, t, nr, ic):
    """``v[k] *= b[t, k]`` (t >= 0) and ``ic[t'] = sum_k v[k]`` in one pass per state,
    where t' = t, or 0 when t = -1 (no product: step 0's v holds b already)."""
    K = v.shape[0]
    u = max(t, 0)
    for k in range(K):
        if t >= 0:
            for s in range(nr):
                v[k, s] *= b[t, k, s]
        if k == 0:
            for s in range(nr):
                ic[u, s] = v[0, s]
        else:
            for s in range(nr):
                ic[u, s] += v[k, s]


@numba.njit(**_JIT)
def lanes_fb_stats(
    startprob, transmat, b, m, n_act, lens, XcL, full, alpha, ic,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """Scaled forward-backward of one unit's lanes, fused with the Gaussian statistics.

    ``b (T, K, S)`` emission probabilities over their row max, ``m (T, S)`` the
    maxima (:func:`lanes_density_diag`), ``lens`` the lengths of the real lanes
    (descending; the rest of the S lanes are padding), ``XcL (T, D, S)`` the
    centred observations (0 on padding). The posteriors are used as the
    backward pass makes them and added into this unit's sums: ``xi (K, K)``
    expected transitions, ``first (K,)`` posteriors at t=0, ``nsum (K,)`` sum
    of gamma, ``sx (D, K)`` sum of gamma * xc, and ``sxx`` ``(D, 1, K)`` sum of
    gamma * xc^2 (``full`` false) or ``(D, D, K)`` the lower triangle of sum of
    gamma * xc xc^T. Writes ``ll[s]`` and ``bad[s]`` of the real lanes (scaling
    failed: the lane adds nothing; the caller recomputes it in log space).

    ``b`` is overwritten for bad lanes; ``alpha (T, K, S)`` and ``ic (T, S)`` are
    scratch (kept by the caller: fresh large arrays cost page faults every call).
    Each step's sums are taken over the lanes at once (dot products over
    the lanes, in lane order, then added into the unit's sums in time order):
    per-lane accumulator arrays (the first kernel, kept in tests/hmm) pushed the inner
    loops' operands out of the L1 cache. The product of the scaling factors is
    kept as ``prod * 2**two_exp``, rescaled by 2**64 (exact) when it falls
    below 2**-64, with no log and no branch in the loop over lanes.
    """
    T, K, S = b.shape
    D = XcL.shape[1]
    n_real = lens.shape[0]
    v = _aligned(K * S).reshape((K, S))
    AT = np.ascontiguousarray(transmat.T)
    # flat views: the vector kernels take lane offsets
    ATf, af, vf, b_f, icf = (
        AT.reshape(-1),
        alpha.reshape(-1),
        v.reshape(-1),
        b.reshape(-1),
        ic.reshape(-1),
    )
    two_exp = np.zeros(S)  # the product of factors is prod * 2**two_exp
    fragile = scaling_fragile(transmat)
    prod = np.ones(S)
    min_p = np.ones(S)
    min_c = np.ones(S)
    m_sum = np.zeros(S)
    # ---- forward, normalised at every step
    for t in range(T):
        n = n_act[t]
        nr = _up(n)
        if t == 0:
            for k in range(K):
                p = startprob[k]
                for s in range(nr):
                    v[k, s] = p * b[0, k, s]
        else:  # v = (alpha[t-1] A) b[t] and ic[t] = sum_k v, four states per pass (_numba_lanes)
            lanes_forward(ATf, K, af, (t - 1) * K * S, S, nr // LANE_BLOCK, b_f, t * K * S, vf, icf,
                          t * S)  # fmt: skip
        if t == 0:
            _times_b_sum(v, b, -1, nr, ic)  # -1: v has b already; only the sum
        for s in range(n):  # no branch and no call: the compiler vectorises this loop
            c = ic[t, s]
            min_c[s] = min(min_c[s], c)
            m_sum[s] += m[t, s]
            p = prod[s] * c
            min_p[s] = min(min_p[s], p)  # below _P_FLOOR: a product went subnormal
            small = p < _TWO_M64
            prod[s] = p * _TWO_64 if small else p  # exact: a power of two
            two_exp[s] -= 64.0 if small else 0.0
            ic[t, s] = 1.0 / c
        for s in range(n, nr):  # lanes past their end: nothing flows on
            ic[t, s] = 0.0
        for k in range(K):
            for s in range(nr):
                alpha[t, k, s] = v[k, s] * ic[t, s]
        for s in range(n, nr):  # exact zeros, even after a failed (NaN) lane
            for k in range(K):
                alpha[t, k, s] = 0.0
    for s in range(n_real):
        total = two_exp[s] * _LN2 + np.log(prod[s]) + m_sum[s]
        ll[s] = total
        # a factor below TINY has lost precision (subnormal) and its inverse overflows;
        # a product below _P_FLOOR may have gone subnormal between two rescalings; with a
        # zero transition, factors that multiply below TINY may have dropped a state (kept)
        log_c = two_exp[s] * _LN2 + np.log(prod[s])
        bad[s] = not kept(total, min_c[s], log_c, fragile) or not min_p[s] >= _P_FLOOR
        if bad[s]:  # zero the lane: it then adds exactly nothing below
            for t in range(lens[s]):
                ic[t, s] = 0.0
                for k in range(K):
                    alpha[t, k, s] = 0.0
                    b[t, k, s] = 0.0
    # ---- backward: each step's sums over the lanes are added into lane-block-wide
    # accumulators (one per lane of a block: _numba_lanes), summed over the block once, at
    # the end (stop 23: a sum across a vector register at every step and for every term
    # was most of a step's cost at few lanes)
    E = D if full else 1
    LB = LANE_BLOCK
    beta = _aligned(K * S).reshape((K, S))
    beta[...] = 0.0
    q = _aligned(K * S).reshape((K, S))
    acc = _aligned(K * K * LB)  # xi's terms, (K, K, LB)
    n8 = _aligned(K * LB)  # (K, LB)
    sx8 = _aligned(D * K * LB)  # (D, K, LB)
    sxx8 = _aligned(D * E * K * LB)  # (D, E, K, LB)
    for a in (acc, n8, sx8, sxx8):
        a[:] = 0.0
    qf, xf, Af, bf = q.reshape(-1), XcL.reshape(-1), transmat.reshape(-1), beta.reshape(-1)
    for t in range(T - 1, -1, -1):
        n0 = n_act[t]
        nr0 = _up(n0)
        n1 = n_act[t + 1] if t + 1 < T else 0
        nr1 = _up(n1)
        if n1 > 0:  # lanes that go on past t: beta[t] = A q, q = b[t+1] beta[t+1] / c[t+1]
            for j in range(K):  # (q was made by step t+1's posterior pass); xi's terms
                lanes_beta_xi(Af, j * K, K, af, (t * K + j) * S, qf, S, nr1 // LB, bf, j * S,
                              acc, j * K * LB)  # fmt: skip
        for s in range(n1, n0):  # lanes whose last step is t
            for k in range(K):
                beta[k, s] = 1.0
        # the posteriors (kept in alpha[t]) and, from the same loads of beta, step t-1's
        # q = b[t] beta[t] / c[t] (on the lanes running at t: those that go on past t-1)
        nb0 = nr0 // LB
        if not full:  # posteriors, q and the diagonal sums: one pass over the lanes per state
            for k in range(K):
                og = (t * K + k) * S
                lanes_post_diag(af, og, bf, k * S, b_f, icf, t * S, qf, k * S, xf, t * D * S, S,
                                D, nb0, n8, k * LB, sx8, sxx8, k * LB, K * LB)  # fmt: skip
            continue
        for k in range(K):
            for s in range(nr0):
                be = beta[k, s]
                alpha[t, k, s] = alpha[t, k, s] * be
                q[k, s] = b[t, k, s] * be * ic[t, s]
        for k in range(K):  # n, and the (D, D) moments in 4 x 4 tiles (sx with the diagonal's)
            og = (t * K + k) * S
            lanes_sum(af, og, nb0, n8, k * LB)
            for d0 in range(0, D, 4):
                for e0 in range(0, d0 + 1, 4):
                    lanes_outer_tile(af, og, xf, t * D * S, S, D, nb0, d0, e0, sxx8, k * LB,
                                     E * K * LB, K * LB, sx8, k * LB, K * LB)  # fmt: skip
    for j in range(K):
        first[j] = 0.0
        for s in range(S):
            first[j] += alpha[0, j, s]
        nsum[j] = _sum_block(n8, j * LB)
        for k in range(K):
            xi[j, k] = transmat[j, k] * _sum_block(acc, (j * K + k) * LB)
    for d in range(D):
        for k in range(K):
            sx[d, k] = _sum_block(sx8, (d * K + k) * LB)
            for e in range(E):  # full: 0 above the diagonal
                sxx[d, e, k] = _sum_block(sxx8, ((d * E + e) * K + k) * LB)


@numba.njit(**_JIT)
def _aligned(n):
    """``n`` float64s starting on a cache line: a lane block is one 64-byte vector, which
    costs two accesses when it straddles two lines."""
    buf = np.empty(n + LANE_BLOCK)
    off = (64 - buf.ctypes.data % 64) % 64 // 8
    return buf[off : off + n]


@numba.njit(**_JIT)
def _sum_block(a, o):
    """The sum of a lane block's accumulators ``a[o:o+8]``, in a fixed order."""
    return ((a[o] + a[o + 1]) + (a[o + 2] + a[o + 3])) + (
        (a[o + 4] + a[o + 5]) + (a[o + 6] + a[o + 7])
    )


@numba.njit(**_JIT)
def to_lanes(X, center, lane_start, n_act, XL, XcL):
    """Rows of ``X`` into lane layout ``(T, D, S)``: raw (``XL``) and centred (``XcL``)."""
    T, D, S = XL.shape
    for t in range(T):
        n = n_act[t]
        for d in range(D):
            for s in range(S):
                if s < n:
                    x = X[lane_start[s] + t, d]
                    XL[t, d, s] = x
                    XcL[t, d, s] = x - center[d]
                else:
                    XL[t, d, s] = 0.0
                    XcL[t, d, s] = 0.0


# ---------------------------------------------------------------- diag M-step
_NOFAST = {"nogil": True, "cache": True, "error_model": "numpy"}  # no fastmath: NumPy's bits


@numba.njit(**_NOFAST)
def _np_sum(a, lo, n):
    """``a[lo:lo+n].sum()`` as NumPy adds a contiguous float64 run of ``n <= 128`` values
    (8 partial sums; NumPy splits longer runs in halves, which this does not do: no
    recursion, which numba's on-disk cache does not load safely), so the result has
    NumPy's bits. The caller keeps ``n <= 128``."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(**_NOFAST)
def _np_max(x, y):
    """``np.maximum(x, y)`` for scalars (NaN in ``x`` or ``y`` propagates, ties keep ``x``)."""
    if x >= y or x != x:
        return x
    return y


@numba.njit(**_NOFAST)
def mstep_diag_untied(
    learn, startprob, sp_prior, start, trans, tp_prior, xi,
    means, w, mu0, center, N, Sx, Sxx, covars, cp, cw, min_covar, empty,
):  # fmt: skip
    """The diag Gaussian HMM's M-step when no state shares anything, in place, with the
    bits of the NumPy M-step (``BaseHMM._mstep`` and ``GaussianHMM._update_emissions``):
    the same operations in the same order, no fastmath, NumPy's pairwise sums.

    ``learn``: 4 flags (startprob, transmat, means, covars). Priors come broadcast to
    their full shapes: ``sp_prior (K,)``, ``tp_prior (K, K)``, ``w``, ``mu0``, ``cp``,
    ``cw`` ``(K, D)``. ``start (K,)``, ``xi (K, K)``, ``N (K,)``, ``Sx``, ``Sxx (K, D)``
    are the E-step's statistics (centred on ``center``)."""
    K, D = means.shape
    if learn[0]:
        sp = np.empty(K)
        for k in range(K):
            v = _np_max((sp_prior[k] - 1.0) + start[k], 0.0)
            sp[k] = 0.0 if startprob[k] == 0 else v
        total = _np_sum(sp, 0, K)
        if total > 0:
            for k in range(K):
                startprob[k] = sp[k] / total
    if learn[1]:
        counts = np.empty(K * K)
        for j in range(K):
            for k in range(K):
                v = _np_max((tp_prior[j, k] - 1.0) + (xi[j, k] + 0.0), 0.0)
                counts[j * K + k] = 0.0 if trans[j, k] == 0 else v
        for j in range(K):
            total = _np_sum(counts, j * K, K)
            if total > 0:
                for k in range(K):
                    trans[j, k] = counts[j * K + k] / total
    if learn[2]:
        for k in range(K):
            ok = True
            for d in range(D):
                if not (w[k, d] + (N[k] + 0.0)) > empty:
                    ok = False
            if ok:
                for d in range(D):
                    denom = w[k, d] + (N[k] + 0.0)
                    pg = mu0[k, d] - center[d]
                    means[k, d] = (w[k, d] * pg + (Sx[k, d] + 0.0)) / denom + center[d]
    if learn[3]:
        for k in range(K):
            Nc = N[k] + 0.0
            ok = True  # empty only when neither posterior mass nor the prior counts
            for d in range(D):
                if not (_np_max(cw[k, d] - 1.0, 0.0) + Nc) > empty:
                    ok = False
            if not ok:
                continue
            for d in range(D):
                m = means[k, d] - center[d]
                md = (m + center[d]) - mu0[k, d]
                c = (w[k, d] * (md * md) + Sxx[k, d]) - (2.0 * m) * Sx[k, d]
                c = (c + N[k] * (m * m)) + 0.0
                denom = _np_max(_np_max(cw[k, d] - 1.0, 0.0) + Nc, 1e-5)
                covars[k, d] = _np_max((cp[k, d] + c) / denom, min_covar)


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
