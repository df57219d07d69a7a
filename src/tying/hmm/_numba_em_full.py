"""numba code of the compiled EM iteration for full and tied covariances
(:mod:`tying.hmm.fused_em_full`); imported only when numba is.

The diag loop's machinery (:mod:`tying.hmm._numba_em`: the claim counter, the waits,
the lane copy, NumPy's ``exp`` loop, cache-line-private sums, the tail item) with
the full-covariance pieces in its place: the density of ``x - mu`` through each
covariance group's inverse Cholesky factor (``lanes_density_full``, the general
loop's kernel), ``(D, D)`` second moments from ``lanes_fb_stats(full=True)``, the
full M-step (covariances pooled per group, symmetrised, eigenvalues floored at
``min_covar``) and the next iteration's factors, all in compiled code, so helper
threads never wait for Python between E-steps.

The Cholesky factor, its inverse and the eigenvalue floor are computed here, not by
LAPACK: the parameters agree with the general loop's to rounding (1e-12 relative
is tested), and every thread count gives the same bits (units summed in unit order).

The lane kernels it compiles in (``_numba_kernels``, ``_numba_lanes``, ``_numba_rows``)
are part of its numba cache key (:mod:`tying._numba_cache`): a change there recompiles
this loop too.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tying import _numba_cache
from tying.hmm._numba_em import (  # the diag loop's primitives, re-used as they are
    CLAIM,
    COPIED,
    CTL_SIZE,
    DEAD,
    DONE,
    F_EXP,
    F_EXP_DATA,
    F_LOG,
    F_LOG_DATA,
    LEFT,
    STOP,
    TAIL,
    U_ALPHA,
    U_B,
    U_IC,
    U_LENS,
    U_M,
    U_NACT,
    U_NREAL,
    U_R0,
    U_ROWS,
    U_S,
    U_SLOT,
    U_START,
    U_T,
    U_TAIL,
    U_XCL,
    U_XL,
    _rebalance,
    _wait,
    atomic_add,
    atomic_load,
    atomic_store,
    copy_rows_unit,
    copy_unit,
    cycles,
    np_sum,
    private_scratch,
    rows_unit_stats,
    ufunc_in_place,
    wait_left,
)
from tying.hmm._numba_kernels import (
    _np_max,
    _np_sum,
    lanes_density_full,
    lanes_fb_stats,
    mstep_diag_untied,
    sum_first_axis,
)

__all__ = [
    "CLAIM", "CTL_SIZE", "DEAD", "DONE", "LEFT", "STOP", "TAIL", "NO_FACTOR",
    "density_constants_full", "em_run", "em_step", "mstep_full_covars", "wait_left", "worker",
]  # fmt: skip

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}  # no fastmath
#: :func:`em_step`'s code when the M-step ran but a new covariance has no Cholesky
#: factor (not positive definite, or not finite): the general loop takes over
NO_FACTOR = -2


# ---------------------------------------------------------------- the density's factors
@numba.njit(**_JIT)
def density_constants_full(covars, gmap, linv, const, logd, fns, log2pi):
    """Each state's ``linv[k]``: the inverse of the lower Cholesky factor of its group's
    covariance ``covars[gmap[k]]``, and ``const[k] = -(D log 2 pi + log det) / 2``, as
    ``GaussianHMM._density_kernel`` makes them with LAPACK (here by hand: equal to
    rounding). The log of the factor's diagonal is NumPy's ``log`` loop, its sum
    NumPy's pairwise sum; ``logd``: scratch ``(G, D)``.

    Returns:
        False (``linv``, ``const`` half-written) when a covariance has no Cholesky factor.
    """
    G, D = covars.shape[0], covars.shape[1]
    K = gmap.shape[0]
    L = np.zeros((D, D))
    inv = np.empty((G, D, D))
    for g in range(G):
        for j in range(D):
            for i in range(j, D):
                acc = covars[g, i, j]
                for p in range(j):
                    acc -= L[i, p] * L[j, p]
                if i == j:
                    if not acc > 0.0:  # also NaN
                        return False
                    L[j, j] = math.sqrt(acc)
                else:
                    L[i, j] = acc / L[j, j]
        for c in range(D):  # column c of L^-1: forward substitution of e_c
            for i in range(D):
                if i < c:
                    inv[g, i, c] = 0.0
                    continue
                acc = 1.0 if i == c else 0.0
                for p in range(c, i):
                    acc -= L[i, p] * inv[g, p, c]
                inv[g, i, c] = acc / L[i, i]
            logd[g, c] = L[c, c]
    ufunc_in_place(fns[F_LOG], fns[F_LOG_DATA], logd)
    flat = logd.reshape(-1)
    for k in range(K):
        g = gmap[k]
        logdet = 2.0 * _np_sum(flat, g * D, D)
        if not math.isfinite(logdet):
            return False
        const[k] = -0.5 * (D * log2pi + logdet)
        for i in range(D):
            for j in range(D):
                linv[k, i, j] = inv[g, i, j]
    return True


# ---------------------------------------------------------------- the covariance M-step
@numba.njit(**_JIT)
def _floor_eigenvalues(S, floor):
    """``GaussianHMM``'s ``_floor_eigenvalues`` for one symmetric ``S (D, D)``, in place:
    untouched when a Cholesky factor of ``S - floor I`` exists (every eigenvalue above
    the floor), else ``V max(w, floor) V^T`` from its eigen-decomposition."""
    D = S.shape[0]
    L = np.zeros((D, D))
    above = True
    for j in range(D):
        for i in range(j, D):
            acc = S[i, j] - (floor if i == j else 0.0)
            for p in range(j):
                acc -= L[i, p] * L[j, p]
            if i == j:
                if not acc > 0.0:
                    above = False
                    break
                L[j, j] = math.sqrt(acc)
            else:
                L[i, j] = acc / L[j, j]
        if not above:
            break
    if above:
        return
    w, V = np.linalg.eigh(S.copy())
    lowest = w[0]
    for i in range(D):
        lowest = min(lowest, w[i])
    if not lowest < floor:  # the Cholesky test's rounding: the general loop keeps S too
        return
    for i in range(D):
        for j in range(D):
            acc = 0.0
            for p in range(D):
                acc += (V[i, p] * _np_max(w[p], floor)) * V[j, p]
            S[i, j] = acc


@numba.njit(**_JIT)
def mstep_full_covars(means, center, mu0, w, N, Sx, Sxx, gmap, cp, cw, covars,
                      min_covar, empty):  # fmt: skip
    """The covariance update of ``GaussianHMM._update_emissions`` for full covariances
    whose means are untied (each state its own mean), in place: the corrections
    ``-Sx m^T - m Sx^T + N m m^T + w md md^T`` per state, pooled with ``Sxx`` per
    covariance group (state order, as ``np.add.at``), plus the prior ``cp (G, D, D)``,
    symmetrised, over ``max(cw - D, 0) + N``, eigenvalues floored at ``min_covar``.
    A group whose count ``max(cw - D, 0) + N`` is no more than ``empty`` keeps its covariance."""
    K, D = means.shape
    G = covars.shape[0]
    Nc = np.zeros(G)
    corr = np.zeros((G, D, D))
    S = np.empty((D, D))
    for k in range(K):
        g = gmap[k]
        Nc[g] += N[k]
        for d in range(D):
            md_d = (means[k, d] - center[d] + center[d]) - mu0[k, d]
            m_d = means[k, d] - center[d]
            for e in range(D):
                m_e = means[k, e] - center[e]
                md_e = (m_e + center[e]) - mu0[k, e]
                c = (-(Sx[k, d] * m_e)) - Sx[k, e] * m_d
                c = c + (N[k] * m_d) * m_e
                c = c + (w[k, d] * md_d) * md_e
                corr[g, d, e] += c
    for g in range(G):
        if not (_np_max(cw[g] - D, 0.0) + Nc[g]) > empty:  # neither mass nor prior counts
            continue
        for d in range(D):
            for e in range(D):
                S[d, e] = (Sxx[g, d, e] + corr[g, d, e]) + cp[g, d, e]
        denom = _np_max(cw[g] - D, 0.0) + Nc[g]
        for d in range(D):
            for e in range(d, D):
                v = (0.5 * (S[d, e] + S[e, d])) / denom
                covars[g, d, e] = v
                covars[g, e, d] = v
        _floor_eigenvalues(covars[g], min_covar)


# ---------------------------------------------------------------- one unit
@numba.njit(**_JIT)
def _densities(XL, n_act, means, linv, const, b, m, fns, t0, t1):
    """Steps ``t0..t1-1`` of a unit: shifted log-densities, then NumPy's ``exp``.
    (Stop 24: ``lanes_density_full`` is lane-block vector code; this file changed with it,
    so that numba's cache, keyed on this file, compiles the new kernels in.)"""
    if t1 > t0:
        lanes_density_full(XL[t0:t1], n_act[t0:t1], means, linv, const, b[t0:t1], m[t0:t1])
        ufunc_in_place(fns[F_EXP], fns[F_EXP_DATA], b[t0:t1])


@numba.njit(**_JIT)
def _unit(u, tail, ctl, fill, X, center, ut, block_a, block_b, ints, start, trans, means, linv,
          const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
    """Unit ``u``'s E-step (``_numba_em._unit`` with full covariances: ``(D, D, K)``
    second moments, lower triangle)."""
    T, S, n_real = ut[u, U_T], ut[u, U_S], ut[u, U_NREAL]
    D, K = means.shape[1], means.shape[0]
    XL = block_a[ut[u, U_XL] : ut[u, U_XL] + T * D * S].reshape((T, D, S))
    XcL = block_a[ut[u, U_XCL] : ut[u, U_XCL] + T * D * S].reshape((T, D, S))
    m = block_a[ut[u, U_M] : ut[u, U_M] + T * S].reshape((T, S))
    b = block_b[ut[u, U_B] : ut[u, U_B] + T * K * S].reshape((T, K, S))
    n_act = ints[ut[u, U_NACT] : ut[u, U_NACT] + T]
    lo = ut[u, U_SLOT]
    rows = ut[u, U_ROWS] > 0  # a few long sequences: the rows kernel
    if atomic_load(fill, u) != COPIED:
        if rows:
            copy_rows_unit(fill, u, X, center, ut[u, U_R0], ut[u, U_ROWS], XL, XcL, fns)
        else:
            copy_unit(fill, u, X, center, ints[ut[u, U_START] : ut[u, U_START] + S], n_act,
                      XL, XcL, fns)  # fmt: skip
    t1 = ut[u, U_TAIL]
    if tail < 0:
        _densities(XL, n_act, means, linv, const, b, m, fns, t1, T)
        return
    _densities(XL, n_act, means, linv, const, b, m, fns, 0, t1)
    if t1 < T and not _wait(ctl, TAIL, 1, False, fns):
        _densities(XL, n_act, means, linv, const, b, m, fns, t1, T)
    KK, DK, DDK = K * K, D * K, D * D * K
    sums = private_scratch(KK + 2 * K + DK + DDK)
    xi = sums[:KK].reshape((K, K))
    first = sums[KK : KK + K]
    nsum = sums[KK + K : KK + 2 * K]
    sx = sums[KK + 2 * K : KK + 2 * K + DK].reshape((D, K))
    sxx = sums[KK + 2 * K + DK :].reshape((D, D, K))
    if rows:
        rows_unit_stats(u, ut, block_b, ints, start, trans, b, m, XcL, True,
                        ll_u[lo : lo + n_real], bad_u[lo : lo + n_real], xi, first, nsum, sx,
                        sxx)  # fmt: skip
    else:
        ic = block_a[ut[u, U_IC] : ut[u, U_IC] + T * S].reshape((T, S))
        alpha = block_b[ut[u, U_ALPHA] : ut[u, U_ALPHA] + T * K * S].reshape((T, K, S))
        lens = ints[ut[u, U_LENS] : ut[u, U_LENS] + n_real]
        lanes_fb_stats(
            start, trans, b, m, n_act, lens, XcL, True, alpha, ic,
            ll_u[lo : lo + n_real], bad_u[lo : lo + n_real], xi, first, nsum, sx, sxx,
        )  # fmt: skip
    xi_u[u] = xi
    first_u[u] = first
    n_u[u] = nsum
    sx_u[u] = sx
    sxx_u[u] = sxx


@numba.njit(**_JIT)
def _take_units(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans, means,
                linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
    """Run the items of ``order`` while there are unclaimed ones."""
    U = order.shape[0]
    while True:
        c = atomic_add(ctl, CLAIM, 1)
        if c >= U:
            return
        item = order[c]
        u = item if item >= 0 else -1 - item
        t0 = cycles()
        _unit(u, item, ctl, fill, X, center, ut, block_a, block_b, ints, start, trans, means,
              linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u)  # fmt: skip
        ctl[CTL_SIZE + c] = cycles() - t0
        if item < 0:
            atomic_store(ctl, TAIL, 1)
        atomic_add(ctl, DONE, 1)


@numba.njit(**_JIT)
def worker(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans, means,
           linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
    """A helper thread's whole fit: wait for units to claim, run them, until ``ctl[STOP]``."""
    U = order.shape[0]
    while _wait(ctl, CLAIM, U, True, fns):
        _take_units(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans,
                    means, linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u,
                    sxx_u)  # fmt: skip
    atomic_add(ctl, LEFT, 1)


# ---------------------------------------------------------------- one iteration
@numba.njit(**_JIT)
def em_step(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans, means,
            linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u,
            slot_seq, ll, xi, first, nsum, sx, sxx, learn, sp_prior, tp_prior, w, mu0,
            center, covars, cp, cw, min_covar, empty, log2pi, gmap, logd, spare):  # fmt: skip
    """One EM iteration (``_numba_em.em_step`` for full covariances): the units' E-steps,
    their sums in unit order (``sxx (K, D, D)`` symmetric), then, unless a lane's
    scaling failed, the M-step in place (start, transitions and means by
    ``mstep_diag_untied``, covariances by :func:`mstep_full_covars`) and the next
    E-step's factors. ``spare (K, D)``: scratch for the diag M-step's unused
    covariance arguments.

    Returns:
        0; the number of lanes whose scaling failed (nothing updated); -1 when a helper
        died; ``NO_FACTOR`` when the M-step ran but a covariance has no Cholesky factor.
    """
    U = order.shape[0]
    K, D = means.shape
    copied = True
    for u in range(ut.shape[0]):
        copied = copied and atomic_load(fill, u) == COPIED
    atomic_store(ctl, DONE, 0)
    atomic_store(ctl, TAIL, 0)
    atomic_store(ctl, CLAIM, 0)
    _take_units(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans, means,
                linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u)  # fmt: skip
    if not _wait(ctl, DONE, U, False, fns):
        if atomic_load(ctl, DEAD) != 0:
            return -1
    if order[0] < 0 and copied:
        _rebalance(ctl, order, ut)
    n_bad = 0
    for u in range(ut.shape[0]):
        lo, n_real = ut[u, U_SLOT], ut[u, U_NREAL]
        for i in range(n_real):
            ll[slot_seq[lo + i]] = ll_u[lo + i]
            if bad_u[lo + i]:
                n_bad += 1
    sum_first_axis(xi_u, xi)
    sum_first_axis(first_u, first)
    sum_first_axis(n_u, nsum)
    sxT = np.empty((D, K))
    sum_first_axis(sx_u, sxT)
    sxxT = np.empty((D, D, K))
    sum_first_axis(sxx_u, sxxT)
    for k in range(K):
        for d in range(D):
            sx[k, d] = sxT[d, k]
            for e in range(d + 1):  # the lower triangle, mirrored
                sxx[k, d, e] = sxxT[d, e, k]
                sxx[k, e, d] = sxxT[d, e, k]
    if n_bad:
        return n_bad
    # start, transitions, means: the diag M-step's code is theirs too (covariances off)
    flags = learn.copy()
    flags[3] = False
    mstep_diag_untied(flags, start, sp_prior, first, trans, tp_prior, xi, means, w, mu0,
                      center, nsum, sx, spare, spare, spare, spare, min_covar,
                      empty)  # fmt: skip
    if learn[3]:
        G = covars.shape[0]
        pooled = np.zeros((G, D, D))  # Sxx per covariance group, states added in order
        for k in range(K):
            g = gmap[k]
            for d in range(D):
                for e in range(D):
                    pooled[g, d, e] += sxx[k, d, e]
        mstep_full_covars(means, center, mu0, w, nsum, sx, pooled, gmap, cp, cw,
                          covars, min_covar, empty)  # fmt: skip
    if not density_constants_full(covars, gmap, linv, const, logd, fns, log2pi):
        return NO_FACTOR
    return 0


@numba.njit(**_JIT)
def em_run(n_max, tol, prev, budget, history, ctl, order, fill, X, center_x, ut, block_a,
           block_b, ints, start, trans, means, linv, const, fns, ll_u, bad_u, xi_u, first_u,
           n_u, sx_u, sxx_u, slot_seq, ll, xi, first, nsum, sx, sxx, learn, sp_prior,
           tp_prior, w, mu0, center, covars, cp, cw, min_covar, empty, log2pi, gmap, logd,
           spare):  # fmt: skip
    """Up to ``n_max`` iterations of :func:`em_step` (``_numba_em.em_run``'s contract).

    Returns:
        ``(count, status)``: iterations run (their M-steps included) and 0, or the code
        that stopped the batch: lanes failed (> 0) or a helper died (-1) before
        iteration ``count``'s M-step; ``NO_FACTOR`` after it (``count`` includes it).
    """
    t0 = cycles()
    for i in range(n_max):
        status = em_step(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans,
                         means, linv, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u,
                         sxx_u, slot_seq, ll, xi, first, nsum, sx, sxx, learn, sp_prior,
                         tp_prior, w, mu0, center, covars, cp, cw, min_covar, empty, log2pi,
                         gmap, logd, spare)  # fmt: skip
        if status != 0 and status != NO_FACTOR:
            return i, status
        total = np_sum(ll)
        history[i] = total
        if status == NO_FACTOR:
            return i + 1, status
        if prev == prev and total - prev < tol:
            return i + 1, 0
        prev = total
        if cycles() - t0 > budget:
            return i + 1, 0
    return n_max, 0


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
