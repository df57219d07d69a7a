"""Overlapping windows of a few long sequences in the lanes (session 25, issue 19); used
by :mod:`tying.hmm.windows`, imported only when numba is.

A unit of fewer than ``LANE_BLOCK // 2`` long sequences runs one sequence at a time
(:mod:`tying.hmm._numba_rows`), bound by the step-to-step latency of the two recursions.
Here each sequence is cut into segments ``[s_j, e_j)`` (its "cores") and lane ``j`` runs
the window ``[s_j - W, e_j + W)`` (clipped at the sequence's ends) as a sequence of its
own, in the lane kernels (:func:`~tying.hmm._numba_kernels.lanes_fb_stats`, whose body
this is, with a per-lane start and a core mask). The first window of a sequence starts
with ``startprob``, the others uniform; every window ends with ``beta = 1``. An HMM
filter forgets its start: after the burn-in, a lane's normalised alpha, its scale
factors (hence the log-likelihood of its core rows) and the direction of its beta are
the sequence's own, and lane ``j`` gives only its core's rows: their ``log c_t`` and
maxima, the posteriors of its core rows and the pairs ``(t, t+1)`` with ``t`` in the
core (alpha is zeroed outside the core after the forward pass; xi's terms are
``alpha_t q_{t+1}``, so that masks both).

Never silently wrong: the burn-in is checked at every boundary, per component and
relative (``|a_k - b_k| <= rel * max(|a_k|, |b_k|)``, what the filter's contraction in
Hilbert's projective metric keeps for the rows after it): lane ``j``'s normalised alpha
at row ``s_j - 1`` against lane ``j-1``'s at that row, and lane ``j``'s beta direction
at row ``e_j`` against lane ``j+1``'s. The kernel counts the boundaries that fail (and
burn-in rows whose scaling underflowed); the caller then discards the unit and runs the
rows kernel instead. A sequence any of whose lanes' core scaling failed (as in
``lanes_fb_stats``) is ``bad`` as a whole: all its lanes are zeroed before the backward
pass, so it adds nothing, and the caller recomputes it in log space.

The compiled kernels' numba cache is keyed on this file's source (:mod:`tying._numba_cache`).
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache
from tying.hmm._numba_kernels import (
    _LN2,
    _P_FLOOR,
    _TWO_64,
    _TWO_M64,
    LANE_BLOCK,
    _aligned,
    _sum_block,
    _times_b_sum,
    _up,
)
from tying.hmm._numba_lanes import (
    lanes_beta_xi,
    lanes_forward,
    lanes_outer_tile,
    lanes_post_diag,
    lanes_sum,
)
from tying.hmm._numba_rows import rows_fb_stats
from tying.hmm._numba_scaled import _JIT, scaling_fragile
from tying.hmm.forward_backward import TINY
from tying.hmm.windows import (
    BURN_IN,
    CORE_PER_BURN,
    FORGET,
    MAX_WINDOW_LANES,
    MIN_ROWS,  # noqa: F401 (the callers' usual min_rows)
    REL,
)

# the drop-in (:func:`rows_windows_fb_stats`) and the EM loop's windows (:func:`plan_rows`)
# try windows on a unit of at least ``MIN_ROWS`` rows whose transition matrix forgets
# (Dobrushin's coefficient at most ``FORGET``), ``BURN_IN`` rows each side of a core,
# cores of at least ``CORE_PER_BURN * BURN_IN`` rows on average, at most ``MAX_LANES``
# lanes, ``REL`` the check's tolerance: defined once, in :mod:`tying.hmm.windows`
MAX_LANES = MAX_WINDOW_LANES


@numba.njit(**_JIT)
def _agree(a, b, rel):
    """Whether ``a`` and ``b`` (K,) agree per component: ``|a_k - b_k| <= rel max(|a_k|,
    |b_k|)`` (both 0 allowed; a NaN never agrees)."""
    for k in range(a.shape[0]):
        x, y = a[k], b[k]
        if not abs(x - y) <= rel * max(abs(x), abs(y)):
            return False
    return True


@numba.njit(**_JIT)
def windows_fb_stats(
    startprob, transmat, b, m, n_act, lens, XcL, full, alpha, ic,
    wstart, core_lo, core_hi, prev_lane, next_lane, lane_seq, rel,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """The scaled forward-backward of a unit's windows, fused with the Gaussian statistics.

    The arguments of :func:`~tying.hmm._numba_kernels.lanes_fb_stats` (lanes sorted by
    window length, longest first; ``lens`` the windows' lengths), and per real lane: its
    window's first row ``wstart`` (in one numbering of the unit's rows), its core ``[core_lo,
    core_hi)`` in the window's own steps, the lanes holding the segments before and after
    it in its sequence (``prev_lane``, ``next_lane``; -1: none: the window starts with
    ``startprob``, else uniform) and its sequence ``lane_seq`` (0..n_seq-1). ``rel``: the
    burn-in check's relative tolerance.

    Writes ``ll[q]`` (the sum of its lanes' cores, in lane order) and ``bad[q]`` per
    sequence, and the unit's sums (``xi``, ``first``, ``nsum``, ``sx``, ``sxx``, as
    ``lanes_fb_stats``).

    Returns:
        The number of failed checks: boundaries whose burn-in did not converge, and
        windows whose burn-in rows' scaling failed. Anything but 0: the outputs are not
        to be used (the caller runs the rows kernel on the unit).
    """
    if scaling_fragile(transmat):
        # a zero transition: scaling may drop a state's mass, and a window that starts
        # from a uniform alpha could refill what the chain had dropped for good; the
        # rows kernel checks each sequence's factors instead (kept)
        return 1
    T, K, S = b.shape
    D = XcL.shape[1]
    n_real = lens.shape[0]
    n_seq = ll.shape[0]
    v = _aligned(K * S).reshape((K, S))
    AT = np.ascontiguousarray(transmat.T)
    ATf, af, vf, b_f, icf = (
        AT.reshape(-1),
        alpha.reshape(-1),
        v.reshape(-1),
        b.reshape(-1),
        ic.reshape(-1),
    )
    two_exp = np.zeros(S)
    prod = np.ones(S)
    min_p = np.ones(S)
    min_c = np.ones(S)  # over the core's rows (the sequence's own factors)
    min_w = np.ones(S)  # over the burn-in's rows
    m_sum = np.zeros(S)
    lo_f = np.zeros(S)  # the core as floats, for the branch-free loop below
    hi_f = np.zeros(S)
    uniform = 1.0 / K
    for s in range(n_real):
        lo_f[s] = core_lo[s]
        hi_f[s] = core_hi[s]
    # ---- forward, normalised at every step
    for t in range(T):
        n = n_act[t]
        nr = _up(n)
        if t == 0:
            for k in range(K):
                p = startprob[k]
                for s in range(nr):
                    start = p if s >= n_real or prev_lane[s] < 0 else uniform
                    v[k, s] = start * b[0, k, s]
            _times_b_sum(v, b, -1, nr, ic)
        else:
            lanes_forward(ATf, K, af, (t - 1) * K * S, S, nr // LANE_BLOCK, b_f, t * K * S, vf, icf,
                          t * S)  # fmt: skip
        tf = float(t)
        for s in range(n):
            c = ic[t, s]
            core = (tf >= lo_f[s]) & (tf < hi_f[s])  # no short-circuit: no branch
            cc = c if core else 1.0
            min_c[s] = min(min_c[s], cc)
            min_w[s] = min(min_w[s], 1.0 if core else c)
            m_sum[s] += m[t, s] if core else 0.0
            p = prod[s] * cc
            min_p[s] = min(min_p[s], p)
            small = p < _TWO_M64
            prod[s] = p * _TWO_64 if small else p
            two_exp[s] -= 64.0 if small else 0.0
            ic[t, s] = 1.0 / c
        for s in range(n, nr):
            ic[t, s] = 0.0
        for k in range(K):
            for s in range(nr):
                alpha[t, k, s] = v[k, s] * ic[t, s]
        for s in range(n, nr):
            for k in range(K):
                alpha[t, k, s] = 0.0
    n_fail = 0
    for q in range(n_seq):
        ll[q] = 0.0
        bad[q] = False
    for s in range(n_real):
        total = two_exp[s] * _LN2 + np.log(prod[s]) + m_sum[s]
        q = lane_seq[s]
        ll[q] += total
        if not np.isfinite(total) or not min_c[s] >= TINY or not min_p[s] >= _P_FLOOR:
            bad[q] = True
    for s in range(n_real):
        if bad[lane_seq[s]]:
            continue
        if not min_w[s] >= TINY:  # the burn-in's scaling failed: nothing to trust there
            n_fail += 1
        p = prev_lane[s]
        if p >= 0 and not bad[lane_seq[p]]:  # alpha at row s_j - 1, from both lanes
            tj = core_lo[s] - 1
            tp = wstart[s] + tj - wstart[p]
            if not _agree(alpha[tj, :, s], alpha[tp, :, p], rel):
                n_fail += 1
    if n_fail:
        return n_fail
    # the core mask (and a bad sequence's lanes zeroed: it adds nothing)
    for s in range(n_real):
        whole = bad[lane_seq[s]]
        for t in range(lens[s]):
            if whole or t < core_lo[s] or t >= core_hi[s]:
                for k in range(K):
                    alpha[t, k, s] = 0.0
                if whole:
                    ic[t, s] = 0.0
                    for k in range(K):
                        b[t, k, s] = 0.0
    # ---- backward (lanes_fb_stats'), with each lane's beta kept at its core's first
    # row and at the row after its core, for the check
    E = D if full else 1
    LB = LANE_BLOCK
    beta = _aligned(K * S).reshape((K, S))
    beta[...] = 0.0
    q = _aligned(K * S).reshape((K, S))
    acc = _aligned(K * K * LB)
    n8 = _aligned(K * LB)
    sx8 = _aligned(D * K * LB)
    sxx8 = _aligned(D * E * K * LB)
    for a in (acc, n8, sx8, sxx8):
        a[:] = 0.0
    keep = np.zeros((max(n_real, 1), 2, K))  # beta at core_lo (0) and at core_hi (1)
    at = np.zeros(T + 1, dtype=np.bool_)  # the steps at which some lane keeps its beta
    for s in range(n_real):
        at[core_lo[s]] = True
        at[core_hi[s]] = True
    qf, xf, Af, bf = q.reshape(-1), XcL.reshape(-1), transmat.reshape(-1), beta.reshape(-1)
    for t in range(T - 1, -1, -1):
        n0 = n_act[t]
        nr0 = _up(n0)
        n1 = n_act[t + 1] if t + 1 < T else 0
        nr1 = _up(n1)
        if n1 > 0:
            for j in range(K):
                lanes_beta_xi(Af, j * K, K, af, (t * K + j) * S, qf, S, nr1 // LB, bf, j * S,
                              acc, j * K * LB)  # fmt: skip
        for s in range(n1, n0):
            for k in range(K):
                beta[k, s] = 1.0
        for s in range(min(n0, n_real) if at[t] else 0):
            if t == core_lo[s]:
                for k in range(K):
                    keep[s, 0, k] = beta[k, s]
            elif t == core_hi[s]:
                for k in range(K):
                    keep[s, 1, k] = beta[k, s]
        nb0 = nr0 // LB
        if not full:
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
        for k in range(K):
            og = (t * K + k) * S
            lanes_sum(af, og, nb0, n8, k * LB)
            for d0 in range(0, D, 4):
                for e0 in range(0, d0 + 1, 4):
                    lanes_outer_tile(af, og, xf, t * D * S, S, D, nb0, d0, e0, sxx8, k * LB,
                                     E * K * LB, K * LB, sx8, k * LB, K * LB)  # fmt: skip
    da = np.empty(K)
    db = np.empty(K)
    for s in range(n_real):  # beta's direction at row e_j, from lanes j and j+1
        nx = next_lane[s]
        if nx < 0 or bad[lane_seq[s]]:
            continue
        sa = 0.0
        sb = 0.0
        for k in range(K):
            sa += keep[s, 1, k]
            sb += keep[nx, 0, k]
        for k in range(K):
            da[k] = keep[s, 1, k] / sa
            db[k] = keep[nx, 0, k] / sb
        if not _agree(da, db, rel):
            n_fail += 1
    if n_fail:
        return n_fail
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
            for e in range(E):
                sxx[d, e, k] = _sum_block(sxx8, ((d * E + e) * K + k) * LB)
    return 0


@numba.njit(**_JIT)
def dobrushin(transmat):
    """Dobrushin's ergodicity coefficient ``1 - min_{i,j} sum_k min(A_ik, A_jk)`` (0: every
    row the same, the chain forgets in one step; 1: two rows share no state)."""
    K = transmat.shape[0]
    worst = 1.0
    for i in range(K):
        for j in range(i + 1, K):
            s = 0.0
            for k in range(K):
                s += min(transmat[i, k], transmat[j, k])
            worst = min(worst, s)
    return 1.0 - worst


@numba.njit(**_JIT)
def plan_rows(starts, lengths, lo, hi, r0):
    """The windows of sequences ``lo..hi-1`` (``starts`` counted in a numbering where
    the unit's first row is ``r0``), as :func:`tying.hmm.windows.plan` makes them with
    integer cuts: what :func:`rows_windows_fb_stats` runs, and the EM loop's windows
    layout, filled once per fit (``_numba_em.copy_windows``). Depends on the lengths only.

    Returns:
        ``(wstart, wlen, core_lo, core_hi, lane_seq, prev_lane, next_lane, n_act)`` per
        lane, longest window first (``wstart`` from the unit's first row, ``lane_seq``
        0..hi-lo-1), and ``n_act`` per step of the longest window.
    """
    R = 0
    for q in range(lo, hi):
        R += lengths[q]
    W = BURN_IN
    want = (R + CORE_PER_BURN * W - 1) // (CORE_PER_BURN * W)
    n_lanes = min(MAX_LANES, (want + LANE_BLOCK - 1) // LANE_BLOCK * LANE_BLOCK)
    n_seq = hi - lo
    nseg = np.empty(n_seq, np.int64)
    total = 0
    for q in range(n_seq):
        L = lengths[lo + q]
        nseg[q] = max(1, min(max(1, n_lanes * L // R), L // (2 * W)))
        total += nseg[q]
    ws = np.empty(total, np.int64)
    wl = np.empty(total, np.int64)
    clo = np.empty(total, np.int64)
    chi = np.empty(total, np.int64)
    seq = np.empty(total, np.int64)
    seg = np.empty(total, np.int64)
    i = 0
    for q in range(n_seq):
        L, n, o = lengths[lo + q], nseg[q], starts[lo + q] - r0
        for j in range(n):
            a, e = j * L // n, (j + 1) * L // n
            wlo, whi = max(0, a - W), min(L, e + W)
            ws[i], wl[i], clo[i], chi[i], seq[i], seg[i] = (
                o + wlo,
                whi - wlo,
                a - wlo,
                e - wlo,
                q,
                j,
            )
            i += 1
    order = np.argsort(-wl, kind="mergesort")  # longest first, stable
    where = np.empty(total, np.int64)
    for r in range(total):
        where[order[r]] = r
    prev = np.full(total, -1, np.int64)
    nxt = np.full(total, -1, np.int64)
    for i in range(total):
        if seg[i] > 0:
            prev[where[i]] = where[i - 1]
            nxt[where[i - 1]] = where[i]
    ws, wl, clo, chi, seq = ws[order], wl[order], clo[order], chi[order], seq[order]
    n_act = np.zeros(wl[0], np.int64)
    for ln in range(total):
        for t in range(wl[ln]):
            n_act[t] += 1
    return ws, wl, clo, chi, seq, prev, nxt, n_act


@numba.njit(**_JIT)
def rows_windows_fb_stats(
    startprob, transmat, b, m, XcL, r0, starts, lengths, lo, hi, full, alpha, inv_c,
    ll, bad, xi, first, nsum, sx, sxx, min_rows,
):  # fmt: skip
    """:func:`~tying.hmm._numba_rows.rows_fb_stats`, same arguments and outputs, through
    windows where they apply and pass their checks, else the rows kernel itself.

    The windows are planned here (as :func:`tying.hmm.windows.plan`, with integer cuts)
    and their rows gathered from the unit's dealt layout (row ``i`` at ``[i // S, :,
    i % S]``) into private lane arrays. ``min_rows``: the fewest rows worth windows
    (``windows.MIN_ROWS``; ``windows.MIN_ROWS_DIAG`` for a diag unit the compiled loop
    gives a windows layout, so that the general loop keeps its bits).

    Returns:
        True when the windows' results were used, False when the rows kernel ran.
    """
    R = 0
    for q in range(lo, hi):
        R += lengths[q]
    if R < min_rows or not dobrushin(transmat) <= FORGET or scaling_fragile(transmat):
        rows_fb_stats(startprob, transmat, b, m, XcL, r0, starts, lengths, lo, hi, full, alpha,
                      inv_c, ll, bad, xi, first, nsum, sx, sxx)  # fmt: skip
        return False
    ws, wl, clo, chi, seq, prev, nxt, n_act = plan_rows(starts, lengths, lo, hi, r0)
    total = ws.shape[0]
    n_seq = hi - lo
    K, D = transmat.shape[0], XcL.shape[1]
    Sd = b.shape[2]
    S = (total + LANE_BLOCK - 1) // LANE_BLOCK * LANE_BLOCK
    T = wl[0]
    bL = np.empty((T, K, S))
    mL = np.empty((T, S))
    xL = np.empty((T, D, S))
    for t in range(T):
        for ln in range(S):
            if ln < total and t < wl[ln]:
                r = ws[ln] + t
                tt, ss = r // Sd, r % Sd
                mL[t, ln] = m[tt, ss]
                for k in range(K):
                    bL[t, k, ln] = b[tt, k, ss]
                for d in range(D):
                    xL[t, d, ln] = XcL[tt, d, ss]
            else:  # past the window's end, and padding lanes: zeros (nothing flows on)
                mL[t, ln] = 0.0
                for k in range(K):
                    bL[t, k, ln] = 0.0
                for d in range(D):
                    xL[t, d, ln] = 0.0
    llq = np.empty(n_seq)
    badq = np.zeros(n_seq, np.bool_)
    failed = windows_fb_stats(startprob, transmat, bL, mL, n_act, wl, xL, full, np.empty((T, K, S)),
                              np.empty((T, S)), ws, clo, chi, prev, nxt, seq, REL, llq, badq, xi,
                              first, nsum, sx, sxx)  # fmt: skip
    if failed:
        rows_fb_stats(startprob, transmat, b, m, XcL, r0, starts, lengths, lo, hi, full, alpha,
                      inv_c, ll, bad, xi, first, nsum, sx, sxx)  # fmt: skip
        return False
    for q in range(n_seq):
        ll[lo + q] = llq[q]
        bad[lo + q] = badq[q]
    return True


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
