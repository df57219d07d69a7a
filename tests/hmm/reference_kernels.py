"""Earlier fused lane kernels, kept only as references ``lanes_fb_stats`` is tested against.

``lanes_fb_stats_v1`` (stop 13) keeps its sums per lane, added over the lanes at the
end; ``lanes_fb_stats_v22`` (stop 22) sums over the lanes at every step; the library's
kernel (:func:`tying.hmm._numba_kernels.lanes_fb_stats`, stop 23) keeps one accumulator
per lane of a block of 8 and sums the block at the end. The three orders of summation
give the same statistics to rounding. Imports numba: import it only in tests marked
``needs_numba``.
"""

from __future__ import annotations

import numba
import numpy as np

from tying.hmm._numba_kernels import _JIT, _LN2, _P_FLOOR, _TWO_64, _TWO_M64, _times_b_sum, _up
from tying.hmm.forward_backward import TINY


@numba.njit(**_JIT)
def lanes_fb_stats_v1(
    startprob, transmat, b, m, n_act, lens, XcL, full, alpha, ic,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """The first fused kernel (stop 13), kept as a reference for :func:`lanes_fb_stats`:
    its sums are per lane, added over the lanes at the end.

    Scaled forward-backward of one unit's lanes, fused with the Gaussian statistics.

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
    Sums are kept per lane (no horizontal reductions in the loop over time)
    and reduced over the lanes at the end, in lane order.
    """
    T, K, S = b.shape
    D = XcL.shape[1]
    n_real = lens.shape[0]
    v = np.empty((K, S))
    log_c = np.zeros(S)
    prod = np.ones(S)
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
        else:
            for k in range(K):
                for s in range(nr):
                    v[k, s] = 0.0
            for j in range(K):
                for k in range(K):
                    a = transmat[j, k]
                    for s in range(nr):
                        v[k, s] += alpha[t - 1, j, s] * a
            for k in range(K):
                for s in range(nr):
                    v[k, s] *= b[t, k, s]
        for s in range(nr):
            ic[t, s] = 0.0
        for k in range(K):
            for s in range(nr):
                ic[t, s] += v[k, s]
        for s in range(n):
            c = ic[t, s]
            min_c[s] = min(min_c[s], c)
            m_sum[s] += m[t, s]
            if prod[s] < 1e-10:  # log of a product of factors: one log per few steps
                log_c[s] += np.log(prod[s])
                prod[s] = 1.0
            prod[s] *= c
            ic[t, s] = 1.0 / c
        for s in range(n, nr):  # lanes past their end: nothing flows on
            ic[t, s] = 0.0
        for k in range(K):
            for s in range(nr):
                alpha[t, k, s] = v[k, s] * ic[t, s]
            for s in range(n, nr):  # exact zeros, even after a failed (NaN) lane
                alpha[t, k, s] = 0.0
    for s in range(n_real):
        total = log_c[s] + np.log(prod[s]) + m_sum[s]
        ll[s] = total
        # a factor below TINY has lost precision (subnormal) and its inverse overflows
        bad[s] = not np.isfinite(total) or not min_c[s] >= TINY
        if bad[s]:  # zero the lane: it then adds exactly nothing below
            for t in range(lens[s]):
                ic[t, s] = 0.0
                for k in range(K):
                    alpha[t, k, s] = 0.0
                    b[t, k, s] = 0.0
    # ---- backward, adding each step's posteriors into per-lane sums
    E = D if full else 1
    beta = np.zeros((K, S))
    nb = np.empty((K, S))
    q = np.empty((K, S))
    acc = np.zeros((K, K, S))
    n_l = np.zeros((K, S))
    sx_l = np.zeros((D, K, S))
    sxx_l = np.zeros((D, E, K, S))
    for t in range(T - 1, -1, -1):
        n0 = n_act[t]
        nr0 = _up(n0)
        n1 = n_act[t + 1] if t + 1 < T else 0
        nr1 = _up(n1)
        if n1 > 0:  # lanes that go on past t: beta[t] = A (b[t+1] beta[t+1] / c[t+1])
            for k in range(K):
                for s in range(nr1):
                    q[k, s] = b[t + 1, k, s] * beta[k, s] * ic[t + 1, s]
            for j in range(K):  # beta and the transition counts in one pass over q
                for s in range(nr1):
                    nb[j, s] = 0.0
                for k in range(K):
                    a = transmat[j, k]
                    for s in range(nr1):
                        qs = q[k, s]
                        nb[j, s] += a * qs
                        acc[j, k, s] += alpha[t, j, s] * qs
            for k in range(K):
                for s in range(nr1):
                    beta[k, s] = nb[k, s]
        for k in range(K):  # lanes whose last step is t
            for s in range(n1, n0):
                beta[k, s] = 1.0
        for k in range(K):  # the posteriors, kept in alpha[t]
            for s in range(nr0):
                gk = alpha[t, k, s] * beta[k, s]
                alpha[t, k, s] = gk
                n_l[k, s] += gk
        for d in range(D):
            for k in range(K):
                for s in range(nr0):
                    sx_l[d, k, s] += alpha[t, k, s] * XcL[t, d, s]
            if full:
                for e in range(d + 1):
                    for k in range(K):
                        for s in range(nr0):
                            sxx_l[d, e, k, s] += alpha[t, k, s] * (XcL[t, d, s] * XcL[t, e, s])
            else:
                for k in range(K):
                    for s in range(nr0):
                        x = XcL[t, d, s]
                        sxx_l[d, 0, k, s] += alpha[t, k, s] * (x * x)
    # ---- lane sums, in lane order
    for j in range(K):
        for k in range(K):
            tot = 0.0
            for s in range(S):
                tot += acc[j, k, s]
            xi[j, k] = transmat[j, k] * tot
    for k in range(K):
        tot = 0.0
        tf = 0.0
        for s in range(S):
            tot += n_l[k, s]
            tf += alpha[0, k, s]
        nsum[k] = tot
        first[k] = tf
    for d in range(D):
        for k in range(K):
            tot = 0.0
            for s in range(S):
                tot += sx_l[d, k, s]
            sx[d, k] = tot
        for e in range(E):
            for k in range(K):
                tot = 0.0
                for s in range(S):
                    tot += sxx_l[d, e, k, s]
                sxx[d, e, k] = tot


@numba.njit(**_JIT)
def lanes_fb_stats_v22(
    startprob, transmat, b, m, n_act, lens, XcL, full, alpha, ic,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """The lane kernel as it was at stop 22, kept as a reference for :func:`lanes_fb_stats`:
    each step's sums over the lanes are dot products, added into the unit's sums at every
    step (stop 23 keeps lane-block accumulators instead, summed over the block at the end).

    Scaled forward-backward of one unit's lanes, fused with the Gaussian statistics.

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
    v = np.empty((K, S))
    two_exp = np.zeros(S)  # the product of factors is prod * 2**two_exp
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
        else:  # v = alpha[t-1] A, a few terms per pass over the lanes (v loaded less often)
            if K == 1:
                a = transmat[0, 0]
                for s in range(nr):
                    v[0, s] = alpha[t - 1, 0, s] * a
                j = 1
            else:  # the first two terms set v (no zeroing pass)
                for k in range(K):
                    a0 = transmat[0, k]
                    a1 = transmat[1, k]
                    for s in range(nr):
                        v[k, s] = alpha[t - 1, 0, s] * a0 + alpha[t - 1, 1, s] * a1
                j = 2
            while K - j >= 5:  # four terms per pass, leaving at least one for the last pass
                for k in range(K):
                    a0 = transmat[j, k]
                    a1 = transmat[j + 1, k]
                    a2 = transmat[j + 2, k]
                    a3 = transmat[j + 3, k]
                    for s in range(nr):
                        w = v[k, s] + alpha[t - 1, j, s] * a0
                        w = w + alpha[t - 1, j + 1, s] * a1
                        w = w + alpha[t - 1, j + 2, s] * a2
                        v[k, s] = w + alpha[t - 1, j + 3, s] * a3
                j += 4
            while K - j >= 3:
                for k in range(K):
                    a0 = transmat[j, k]
                    a1 = transmat[j + 1, k]
                    for s in range(nr):
                        w = v[k, s] + alpha[t - 1, j, s] * a0
                        v[k, s] = w + alpha[t - 1, j + 1, s] * a1
                j += 2
            if j < K:  # the last one or two terms, times b, and the sum over states: one pass
                two = K - j == 2
                for k in range(K):
                    a0 = transmat[j, k]
                    a1 = transmat[j + 1, k] if two else 0.0
                    if two:
                        for s in range(nr):
                            w = v[k, s] + alpha[t - 1, j, s] * a0
                            v[k, s] = (w + alpha[t - 1, j + 1, s] * a1) * b[t, k, s]
                    else:
                        for s in range(nr):
                            v[k, s] = (v[k, s] + alpha[t - 1, j, s] * a0) * b[t, k, s]
                    if k == 0:
                        for s in range(nr):
                            ic[t, s] = v[0, s]
                    else:
                        for s in range(nr):
                            ic[t, s] += v[k, s]
            else:  # times b and the sum over states: one pass
                _times_b_sum(v, b, t, nr, ic)
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
        # a product below _P_FLOOR may have gone subnormal between two rescalings
        bad[s] = not np.isfinite(total) or not min_c[s] >= TINY or not min_p[s] >= _P_FLOOR
        if bad[s]:  # zero the lane: it then adds exactly nothing below
            for t in range(lens[s]):
                ic[t, s] = 0.0
                for k in range(K):
                    alpha[t, k, s] = 0.0
                    b[t, k, s] = 0.0
    # ---- backward: each step's posteriors are summed over the lanes at once
    E = D if full else 1
    beta = np.zeros((K, S))
    q = np.empty((K, S))
    acc = np.zeros((K, K))
    for j in range(K):
        nsum[j] = 0.0
        for k in range(K):
            xi[j, k] = 0.0
    for d in range(D):
        for k in range(K):
            sx[d, k] = 0.0
            for e in range(E):
                sxx[d, e, k] = 0.0
    for t in range(T - 1, -1, -1):
        n0 = n_act[t]
        nr0 = _up(n0)
        n1 = n_act[t + 1] if t + 1 < T else 0
        nr1 = _up(n1)
        if n1 > 0:  # lanes that go on past t: beta[t] = A q, q = b[t+1] beta[t+1] / c[t+1]
            for j in range(K):  # (q was made by step t+1's posterior pass)
                # beta[t, j] = sum_k A[j, k] q[k], a few terms per pass (beta loaded less
                # often), the first pass setting it; xi's terms: dot products over the lanes
                al = alpha[t, j]
                a0 = transmat[j, 0]
                tot0 = 0.0
                if K == 1:
                    for s in range(nr1):
                        q0 = q[0, s]
                        beta[j, s] = a0 * q0
                        tot0 += al[s] * q0
                    acc[j, 0] += tot0
                    continue
                a1 = transmat[j, 1]
                tot1 = 0.0
                if K >= 4:  # the first four terms set beta
                    a2 = transmat[j, 2]
                    a3 = transmat[j, 3]
                    tot2 = 0.0
                    tot3 = 0.0
                    for s in range(nr1):
                        q0 = q[0, s]
                        q1 = q[1, s]
                        q2 = q[2, s]
                        q3 = q[3, s]
                        beta[j, s] = a0 * q0 + a1 * q1 + a2 * q2 + a3 * q3
                        x = al[s]
                        tot0 += x * q0
                        tot1 += x * q1
                        tot2 += x * q2
                        tot3 += x * q3
                    acc[j, 0] += tot0
                    acc[j, 1] += tot1
                    acc[j, 2] += tot2
                    acc[j, 3] += tot3
                    k = 4
                else:
                    for s in range(nr1):
                        q0 = q[0, s]
                        q1 = q[1, s]
                        beta[j, s] = a0 * q0 + a1 * q1
                        tot0 += al[s] * q0
                        tot1 += al[s] * q1
                    acc[j, 0] += tot0
                    acc[j, 1] += tot1
                    k = 2
                while K - k >= 4:
                    a0 = transmat[j, k]
                    a1 = transmat[j, k + 1]
                    a2 = transmat[j, k + 2]
                    a3 = transmat[j, k + 3]
                    tot0 = 0.0
                    tot1 = 0.0
                    tot2 = 0.0
                    tot3 = 0.0
                    for s in range(nr1):
                        q0 = q[k, s]
                        q1 = q[k + 1, s]
                        q2 = q[k + 2, s]
                        q3 = q[k + 3, s]
                        w = beta[j, s] + a0 * q0
                        w = w + a1 * q1
                        w = w + a2 * q2
                        beta[j, s] = w + a3 * q3
                        x = al[s]
                        tot0 += x * q0
                        tot1 += x * q1
                        tot2 += x * q2
                        tot3 += x * q3
                    acc[j, k] += tot0
                    acc[j, k + 1] += tot1
                    acc[j, k + 2] += tot2
                    acc[j, k + 3] += tot3
                    k += 4
                while k + 1 < K:
                    a0 = transmat[j, k]
                    a1 = transmat[j, k + 1]
                    tot0 = 0.0
                    tot1 = 0.0
                    for s in range(nr1):
                        q0 = q[k, s]
                        q1 = q[k + 1, s]
                        w = beta[j, s] + a0 * q0
                        beta[j, s] = w + a1 * q1
                        tot0 += al[s] * q0
                        tot1 += al[s] * q1
                    acc[j, k] += tot0
                    acc[j, k + 1] += tot1
                    k += 2
                if k < K:
                    a0 = transmat[j, k]
                    tot0 = 0.0
                    for s in range(nr1):
                        q0 = q[k, s]
                        beta[j, s] += a0 * q0
                        tot0 += al[s] * q0
                    acc[j, k] += tot0
        for s in range(n1, n0):  # lanes whose last step is t
            for k in range(K):
                beta[k, s] = 1.0
        # the posteriors (kept in alpha[t]) and, from the same loads of beta, step t-1's
        # q = b[t] beta[t] / c[t] (on the lanes running at t: those that go on past t-1)
        if not full:  # diagonal statistics: _gamma_diag_stats
            _gamma_diag_stats_v22(alpha, beta, XcL, t, nr0, nsum, sx, sxx, b, ic, q)
            continue
        for k in range(K):
            tot = 0.0
            for s in range(nr0):
                be = beta[k, s]
                gk = alpha[t, k, s] * be
                alpha[t, k, s] = gk
                tot += gk
                q[k, s] = b[t, k, s] * be * ic[t, s]
            nsum[k] += tot
        for d in range(D):
            for k in range(K):
                tot = 0.0
                for s in range(nr0):
                    tot += alpha[t, k, s] * XcL[t, d, s]
                sx[d, k] += tot
            for e in range(d + 1):
                for k in range(K):
                    tot = 0.0
                    for s in range(nr0):
                        tot += alpha[t, k, s] * (XcL[t, d, s] * XcL[t, e, s])
                    sxx[d, e, k] += tot
    for j in range(K):
        first[j] = 0.0
        for s in range(S):
            first[j] += alpha[0, j, s]
        for k in range(K):
            xi[j, k] = transmat[j, k] * acc[j, k]


@numba.njit(**_JIT)
def _gamma_diag_stats_v22(alpha, beta, XcL, t, nr, nsum, sx, sxx, b, ic, q):
    """Step t's posteriors ``alpha[t] *= beta`` (kept in alpha) and their diagonal sums:
    ``nsum[k]``, ``sx[d, k]`` (gamma x) and ``sxx[d, 0, k]`` (gamma x^2), each a dot
    product over the lanes; and step t-1's ``q = b[t] beta / c[t]`` from the same loads.
    Per state, the first pass makes the posteriors and q and takes features 0 and 1, the
    next ones two features each: D = 4 is two passes per state (separate posterior,
    q and per-feature passes took six)."""
    K = alpha.shape[1]
    D = XcL.shape[1]
    for k in range(K):
        tot = 0.0
        t0 = 0.0
        t0x = 0.0
        if D == 1:
            for s in range(nr):
                be = beta[k, s]
                g = alpha[t, k, s] * be
                alpha[t, k, s] = g
                tot += g
                q[k, s] = b[t, k, s] * be * ic[t, s]
                x0 = XcL[t, 0, s]
                g0 = g * x0
                t0 += g0
                t0x += g0 * x0
            nsum[k] += tot
            sx[0, k] += t0
            sxx[0, 0, k] += t0x
            continue
        t1 = 0.0
        t1x = 0.0
        for s in range(nr):
            be = beta[k, s]
            g = alpha[t, k, s] * be
            alpha[t, k, s] = g
            tot += g
            q[k, s] = b[t, k, s] * be * ic[t, s]
            x0 = XcL[t, 0, s]
            x1 = XcL[t, 1, s]
            g0 = g * x0
            g1 = g * x1
            t0 += g0
            t0x += g0 * x0
            t1 += g1
            t1x += g1 * x1
        nsum[k] += tot
        sx[0, k] += t0
        sxx[0, 0, k] += t0x
        sx[1, k] += t1
        sxx[1, 0, k] += t1x
        d = 2
        while d + 1 < D:
            t0 = 0.0
            t0x = 0.0
            t1 = 0.0
            t1x = 0.0
            for s in range(nr):
                g = alpha[t, k, s]
                x0 = XcL[t, d, s]
                x1 = XcL[t, d + 1, s]
                g0 = g * x0
                g1 = g * x1
                t0 += g0
                t0x += g0 * x0
                t1 += g1
                t1x += g1 * x1
            sx[d, k] += t0
            sxx[d, 0, k] += t0x
            sx[d + 1, k] += t1
            sxx[d + 1, 0, k] += t1x
            d += 2
        if d < D:
            t0 = 0.0
            t0x = 0.0
            for s in range(nr):
                x0 = XcL[t, d, s]
                g0 = alpha[t, k, s] * x0
                t0 += g0
                t0x += g0 * x0
            sx[d, k] += t0
            sxx[d, 0, k] += t0x


@numba.njit(**_JIT)
def rows_fb_stats_v13(
    startprob, transmat, b, m, XcL, r0, starts, lengths, lo, hi, full, alpha, inv_c,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """The stop 13 kernel of a unit of one to a few (long) sequences, scalar over the
    states, kept as a reference for :func:`tying.hmm._numba_rows.rows_fb_stats`.

    Lanes of sequences would pad such a unit to a whole lane block of mostly
    empty lanes; here the recursion runs over the K states of one sequence.

    The unit's rows are dealt out over S lanes in turn (row ``r0 + t S + s`` at
    ``[t, :, s]``), so that the density and its ``exp`` run in the lane kernels;
    ``b (Tp, K, S)``, ``m (Tp, S)``, ``XcL (Tp, D, S)`` (centred rows); a step
    of the recursion reads its row's K values from the cache line its
    neighbours use. The sums over states are dot products over contiguous
    rows of ``transmat`` (forward: its transpose), which vectorise; the row's
    place in the lanes is stepped, not divided out.
    ``alpha (R, K)`` and ``inv_c (R,)`` are scratch. The outputs are those of
    :func:`lanes_fb_stats` (``ll``, ``bad`` indexed by sequence); a bad sequence
    adds nothing.
    """
    K = transmat.shape[0]
    Tp, D, S = XcL.shape
    AT = np.ascontiguousarray(transmat.T)
    beta = np.empty(K)
    bq = np.empty(K)
    g = np.empty(K)
    v = np.empty(K)
    xc = np.empty(D)
    acc = np.zeros((K, K))
    xi[...] = 0.0
    first[...] = 0.0
    nsum[...] = 0.0
    sx[...] = 0.0
    sxx[...] = 0.0
    for s in range(lo, hi):
        o, L = starts[s] - r0, lengths[s]
        log_c = 0.0
        min_c = 1.0
        m_sum = 0.0
        prod = 1.0
        tt, ss = o // S, o % S  # row i's place in the lanes, stepped without division
        for t in range(L):
            i = o + t
            if t > 0:
                ss += 1
                if ss == S:
                    ss = 0
                    tt += 1
            m_sum += m[tt, ss]
            c = 0.0
            if t == 0:
                for k in range(K):
                    w = startprob[k] * b[tt, k, ss]
                    v[k] = w
                    c += w
            else:
                for k in range(K):
                    w = 0.0
                    for j in range(K):
                        w += alpha[i - 1, j] * AT[k, j]
                    w *= b[tt, k, ss]
                    v[k] = w
                    c += w
            ic = 1.0 / c
            for k in range(K):
                alpha[i, k] = v[k] * ic
            inv_c[i] = ic
            min_c = min(min_c, c)
            if prod < 1e-10:  # flush before multiplying: prod stays a normal number
                log_c += np.log(prod)
                prod = 1.0
            prod *= c
        log_c += np.log(prod)
        total = log_c + m_sum
        ll[s] = total
        if not np.isfinite(total) or min_c < TINY:
            bad[s] = True
            continue
        bad[s] = False
        for k in range(K):
            beta[k] = 1.0
        t1, s1 = tt, ss  # the sequence's last row
        for t in range(L - 1, -1, -1):
            i = o + t
            tt, ss = t1, s1
            if t < L - 1:
                ic = inv_c[i + 1]
                for k in range(K):
                    bq[k] = b[t1, k, s1] * beta[k] * ic  # q_{t+1}
                ss -= 1
                if ss < 0:
                    ss = S - 1
                    tt -= 1
                for j in range(K):
                    a = alpha[i, j]
                    w = 0.0
                    for k in range(K):
                        acc[j, k] += a * bq[k]
                        w += transmat[j, k] * bq[k]
                    beta[j] = w
            t1, s1 = tt, ss
            for k in range(K):
                g[k] = alpha[i, k] * beta[k]
                nsum[k] += g[k]
            for d in range(D):
                xc[d] = XcL[tt, d, ss]
            if full:
                for d in range(D):
                    xd = xc[d]
                    for k in range(K):
                        sx[d, k] += g[k] * xd
                    for e in range(d + 1):
                        xde = xd * xc[e]
                        for k in range(K):
                            sxx[d, e, k] += g[k] * xde
            else:
                for d in range(D):
                    xd = xc[d]
                    xdd = xd * xd
                    for k in range(K):
                        sx[d, k] += g[k] * xd
                        sxx[d, 0, k] += g[k] * xdd
        for k in range(K):
            first[k] += g[k]
    for j in range(K):
        for k in range(K):
            xi[j, k] = transmat[j, k] * acc[j, k]


# ---------------------------------------------------------------- stop 23's full density
@numba.njit(**_JIT)
def lanes_density_full_v23(XL, n_act, means, linv, const, b, m):
    """Stop 23's ``lanes_density_full``: a loop over the lanes per ``(k, d, e)``, each row's
    sum in memory, without fused multiply-adds (kept as the reference the lane-block kernel
    of stop 24 is tested against)."""
    T, D, S = XL.shape
    K = means.shape[0]
    diff = np.empty((D, S))
    r = np.empty(S)
    for t in range(T):
        nr = _up(n_act[t])
        for k in range(K):
            for d in range(D):
                mu = means[k, d]
                for s in range(nr):
                    diff[d, s] = XL[t, d, s] - mu
            for s in range(nr):
                b[t, k, s] = 0.0
            for d in range(D):
                for s in range(nr):
                    r[s] = 0.0
                for e in range(d + 1):
                    w = linv[k, d, e]
                    for s in range(nr):
                        r[s] += w * diff[e, s]
                for s in range(nr):
                    b[t, k, s] += r[s] * r[s]
        _shift_lanes_v23(b, m, t, n_act[t], const)


@numba.njit(**_JIT)
def _shift_lanes_v23(b, m, t, n, const):
    """``b[t, k] = const[k] - b[t, k] / 2`` (the log-density), then minus its max over k."""
    K = b.shape[1]
    nr = _up(n)
    for s in range(nr):
        m[t, s] = -np.inf
    for k in range(K):
        c = const[k]
        for s in range(nr):
            v = c - 0.5 * b[t, k, s]
            b[t, k, s] = v
            m[t, s] = max(m[t, s], v)
    _minus_max_v23(b, m, t, n)


@numba.njit(**_JIT)
def _minus_max_v23(b, m, t, n):
    """``b[t, k, s] -= m[t, s]`` on the ``n`` live lanes (and their vector padding); lanes
    past their end get 0 in both (``exp(0) = 1``, multiplied by 0 downstream)."""
    K, S = b.shape[1], b.shape[2]
    nr = _up(n)
    for k in range(K):
        for s in range(nr):
            b[t, k, s] -= m[t, s]
    for s in range(n, S):
        m[t, s] = 0.0
        for k in range(K):
            b[t, k, s] = 0.0
