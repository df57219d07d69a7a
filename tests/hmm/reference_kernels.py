"""The first fused lane kernel, kept only as the reference ``lanes_fb_stats`` is tested against.

Its sums are per lane, added over the lanes at the end; the library's kernel
(:func:`tying.hmm._numba_kernels.lanes_fb_stats`) sums over the lanes at every
step. Imports numba: import it only in tests marked ``needs_numba``.
"""

from __future__ import annotations

import numba
import numpy as np

from tying.hmm._numba_kernels import _JIT, _up
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
