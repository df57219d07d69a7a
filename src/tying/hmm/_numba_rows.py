"""The fused E-step of a unit of one to a few (long) sequences, vectorised over the
states (stop 24); used by :mod:`tying.hmm._numba_kernels`, imported only when numba is.

A unit of fewer than ``LANE_BLOCK // 2`` sequences runs one sequence at a time (lanes of
sequences would be mostly padding). Its recursion is, at every step, a ``K x K``
mat-vec product (forward: ``alpha_t = (A^T alpha_{t-1}) b_t``; backward: ``beta_t =
A (b_{t+1} beta_{t+1})``), and its statistics are rank-one updates (``xi += alpha_t
q_{t+1}^T``, ``sx[d] += x_d gamma_t``, ...). The stop 13 kernel (kept as
``tests/hmm/reference_kernels.rows_fb_stats_v13``) wrote them as scalar loops over the
states whose inner sums (dot products over ``j``) the compiler does not vectorise
without reassociating, about 74 ns a step at K=8, D=4.

Here the states are padded to ``Kp``, a whole number of blocks of 8 (one ``<8 x
double>`` vector each; padding states have no start and no emission, so they stay 0
and add nothing), and every state loop is a loop over blocks in explicit vector code
(numba intrinsics, as in :mod:`tying.hmm._numba_lanes`): a mat-vec product is a sum
over ``j`` of ``x_j`` times row ``j`` (four accumulators, added in a fixed order), a
rank-one update a multiply-add per block. The statistics are kept in padded block
accumulators and copied out once at the end. Every sum is in a fixed order, so the
bits do not depend on the thread or the call; they differ from the stop 13 kernel's
by rounding only (its sums are in another order, without fused multiply-adds).

The scaled recursion and its checks are the stop 13 kernel's: a sequence whose
scaling underflows or turns non-finite is flagged ``bad`` and adds nothing (the
caller recomputes it exactly in log space).

Measured 2026-12-02 (1 thread, load about 3): 51 ns a step at K=8, D=4 against the
stop 13 kernel's 74 (about 19 forward, 32 backward with the statistics); what is left is
mostly the step-to-step latency of the two recursions (docs/hmm-performance.md, "A few long sequences").

The compiled EM loops (``_numba_em``, ``_numba_em_full``) compile this kernel in; their
numba cache is keyed on this file's source too (:mod:`tying._numba_cache`).

Arguments of the intrinsics are 1-D C-contiguous float64 arrays (anything else does
not compile) with offsets in elements and ``nb``, the number of state blocks.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tying import _numba_cache
from tying.hmm._numba_lanes import _FLAGS, _V, LANE_BLOCK, _flat_f64, _ints, _splat, _vec
from tying.hmm._numba_scaled import _JIT, kept, scaling_fragile

BLOCK = LANE_BLOCK  # states per vector (the lane kernels' vector of 8 doubles)
_ACCS = 4  # independent accumulators of a mat-vec product (its sum is a chain otherwise)


def _base(context, builder, sig, args, i, off=None):
    """A pointer to ``args[i][args[off]]`` (the array's data when ``off`` is None)."""
    data = context.make_array(sig.args[i])(context, builder, args[i]).data
    if off is None:
        return data
    return builder.gep(data, [context.cast(builder, args[off], sig.args[off], types.intp)])


def _int(context, builder, sig, args, i):
    return _ints(context, builder, sig, args, [i])[0]


def _hsum(builder, v):
    """The 8 lanes of ``v`` added in a fixed tree: ((0+4)+(2+6)) + ((1+5)+(3+7))."""
    half = [builder.extract_element(v, ir.Constant(ir.IntType(32), i)) for i in range(BLOCK)]
    a = builder.fadd(half[0], half[4])
    b = builder.fadd(half[2], half[6])
    c = builder.fadd(half[1], half[5])
    d = builder.fadd(half[3], half[7])
    return builder.fadd(builder.fadd(a, b), builder.fadd(c, d))


def _blocks(builder, nb):
    """A loop over the ``nb`` blocks: yields the loop, its offset in doubles."""
    return cgutils.for_range(builder, nb)


def _off(builder, i):
    return builder.mul(i, ir.Constant(i.type, BLOCK))


@intrinsic
def blk_matvec(typingctx, A, lda, x, ox, n, out, oo, nb):
    """``out[oo + .] = sum_{j < n} x[ox + j] A[j lda + .]`` over ``nb`` blocks: four
    accumulators (``j`` mod 4), added as ``(a0 + a1) + (a2 + a3)``."""
    if not _flat_f64(A, x, out):
        return None
    sig = types.void(A, lda, x, ox, n, out, oo, nb)

    def codegen(context, builder, sig, args):
        pA = _base(context, builder, sig, args, 0)
        px = _base(context, builder, sig, args, 2, 3)
        po = _base(context, builder, sig, args, 5, 6)
        lda_, n_, nb_ = (_int(context, builder, sig, args, i) for i in (1, 4, 7))
        zero = ir.Constant(_V, [0.0] * BLOCK)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(_ACCS)]
        four = ir.Constant(n_.type, _ACCS)
        n4 = builder.sdiv(n_, four)

        def term(j, off, acc, first=False):
            coef = _splat(builder, builder.load(builder.gep(px, [j])))
            row = builder.load(_vec(builder, pA, builder.add(builder.mul(j, lda_), off)), align=8)
            prod = builder.fmul(coef, row, flags=_FLAGS)
            builder.store(
                prod if first else builder.fadd(builder.load(acc), prod, flags=_FLAGS), acc
            )

        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            for acc in accs:
                builder.store(zero, acc)
            # the first four terms set the accumulators (n >= 4), the others add to them
            big = builder.icmp_signed(">=", n_, four)
            with builder.if_then(big):
                for r in range(_ACCS):
                    term(ir.Constant(n_.type, r), off, accs[r], first=True)
            with cgutils.for_range(builder, n4, start=ir.Constant(n4.type, 1)) as jl:
                j0 = builder.mul(jl.index, four)
                for r in range(_ACCS):
                    term(builder.add(j0, ir.Constant(j0.type, r)), off, accs[r])
            with cgutils.for_range(builder, n_, start=builder.mul(n4, four)) as jl:
                term(jl.index, off, accs[0])
            a = [builder.load(acc) for acc in accs]
            s = builder.fadd(builder.fadd(a[0], a[1]), builder.fadd(a[2], a[3]))
            builder.store(s, _vec(builder, po, off), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def blk_gather(typingctx, x, ox, stride, n, out, nb):
    """``out[k] = x[ox + k stride]`` for ``k < n``, 0 for ``n <= k < 8 nb``: a step's ``n``
    values of a lane array as padded blocks, built in registers (no scalar stores that a
    vector load would wait for)."""
    if not _flat_f64(x, out):
        return None
    sig = types.void(x, ox, stride, n, out, nb)

    def codegen(context, builder, sig, args):
        px = _base(context, builder, sig, args, 0, 1)
        po = _base(context, builder, sig, args, 4)
        stride_, n_, nb_ = (_int(context, builder, sig, args, i) for i in (2, 3, 5))
        zero_d = ir.Constant(ir.DoubleType(), 0.0)
        last = builder.sub(n_, ir.Constant(n_.type, 1))
        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            v = ir.Constant(_V, [0.0] * BLOCK)
            for lane in range(BLOCK):
                k = builder.add(off, ir.Constant(off.type, lane))
                inside = builder.icmp_signed("<", k, n_)
                kk = builder.select(inside, k, last)  # every load in bounds
                val = builder.load(builder.gep(px, [builder.mul(kk, stride_)]))
                v = builder.insert_element(
                    v, builder.select(inside, val, zero_d), ir.Constant(ir.IntType(32), lane)
                )
            builder.store(v, _vec(builder, po, off), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def blk_prod(typingctx, x, ox, y, oy, out, oo, nb):
    """``out[oo + .] = x[ox + .] y[oy + .]`` over ``nb`` blocks."""
    if not _flat_f64(x, y, out):
        return None
    sig = types.void(x, ox, y, oy, out, oo, nb)

    def codegen(context, builder, sig, args):
        px = _base(context, builder, sig, args, 0, 1)
        py = _base(context, builder, sig, args, 2, 3)
        po = _base(context, builder, sig, args, 4, 5)
        nb_ = _int(context, builder, sig, args, 6)
        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            v = builder.fmul(
                builder.load(_vec(builder, px, off), align=8),
                builder.load(_vec(builder, py, off), align=8),
            )
            builder.store(v, _vec(builder, po, off), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def blk_scale(typingctx, x, ox, s, out, oo, nb):
    """``out[oo + .] = x[ox + .] s`` over ``nb`` blocks."""
    if not _flat_f64(x, out):
        return None
    sig = types.void(x, ox, s, out, oo, nb)

    def codegen(context, builder, sig, args):
        px = _base(context, builder, sig, args, 0, 1)
        po = _base(context, builder, sig, args, 3, 4)
        sv = _splat(builder, context.cast(builder, args[2], sig.args[2], types.float64))
        nb_ = _int(context, builder, sig, args, 5)
        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            v = builder.load(_vec(builder, px, off), align=8)
            builder.store(builder.fmul(v, sv), _vec(builder, po, off), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def blk_mul_sum(typingctx, x, ox, y, oy, out, oo, nb):
    """``out[oo + .] = x[ox + .] y[oy + .]`` over ``nb`` blocks; returns the sum of
    ``out`` (blocks added in order, then the lanes by :func:`_hsum`)."""
    if not _flat_f64(x, y, out):
        return None
    sig = types.float64(x, ox, y, oy, out, oo, nb)

    def codegen(context, builder, sig, args):
        px = _base(context, builder, sig, args, 0, 1)
        py = _base(context, builder, sig, args, 2, 3)
        po = _base(context, builder, sig, args, 4, 5)
        nb_ = _int(context, builder, sig, args, 6)
        acc = cgutils.alloca_once_value(builder, ir.Constant(_V, [0.0] * BLOCK))
        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            v = builder.fmul(
                builder.load(_vec(builder, px, off), align=8),
                builder.load(_vec(builder, py, off), align=8),
            )
            builder.store(v, _vec(builder, po, off), align=8)
            builder.store(builder.fadd(builder.load(acc), v), acc)
        return _hsum(builder, builder.load(acc))

    return sig, codegen


@intrinsic
def blk_outer(typingctx, x, ox, n, y, oy, out, oo, ld, nb):
    """``out[oo + j ld + .] += x[ox + j] y[oy + .]`` for ``j < n``, over ``nb`` blocks
    (``y``'s blocks loaded once, in registers over ``j`` when ``nb`` is 1)."""
    if not _flat_f64(x, y, out):
        return None
    sig = types.void(x, ox, n, y, oy, out, oo, ld, nb)

    def codegen(context, builder, sig, args):
        px = _base(context, builder, sig, args, 0, 1)
        py = _base(context, builder, sig, args, 3, 4)
        po = _base(context, builder, sig, args, 5, 6)
        n_, ld_, nb_ = (_int(context, builder, sig, args, i) for i in (2, 7, 8))
        with _blocks(builder, nb_) as bl:
            off = _off(builder, bl.index)
            yv = builder.load(_vec(builder, py, off), align=8)
            with cgutils.for_range(builder, n_) as jl:
                j = jl.index
                coef = _splat(builder, builder.load(builder.gep(px, [j])))
                p = _vec(builder, po, builder.add(builder.mul(j, ld_), off))
                w = builder.fadd(
                    builder.load(p, align=8), builder.fmul(coef, yv, flags=_FLAGS), flags=_FLAGS
                )
                builder.store(w, p, align=8)
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------- the kernel
@numba.njit(**_JIT)
def deal_rows(X, center, r0, R, XL, XcL):
    """Rows ``r0..r0+R-1`` of ``X`` dealt out over the S lanes in turn (row ``r0 + t S +
    s`` at ``[t, :, s]``, 0 past the last), raw (``XL``) and centred (``XcL``): what
    ``forward_backward._deal_rows`` writes, for the compiled EM loop."""
    Tp, D, S = XL.shape
    for t in range(Tp):
        for d in range(D):
            for s in range(S):
                i = t * S + s
                if i < R:
                    x = X[r0 + i, d]
                    XL[t, d, s] = x
                    XcL[t, d, s] = x - center[d]
                else:
                    XL[t, d, s] = 0.0
                    XcL[t, d, s] = 0.0


@numba.njit(**_JIT)
def _pad_rows(A, Kp, transpose):
    """``A`` (K, K) as a flat ``(Kp, Kp)`` array (its transpose with ``transpose``), 0 past K."""
    K = A.shape[0]
    out = np.zeros(Kp * Kp)
    for j in range(K):
        for k in range(K):
            if transpose:
                out[k * Kp + j] = A[j, k]
            else:
                out[j * Kp + k] = A[j, k]
    return out


@numba.njit(**_JIT)
def rows_fb_stats(
    startprob, transmat, b, m, XcL, r0, starts, lengths, lo, hi, full, alpha, inv_c,
    ll, bad, xi, first, nsum, sx, sxx,
):  # fmt: skip
    """:func:`~tying.hmm._numba_kernels.lanes_fb_stats` for a unit of one to a few (long)
    sequences, one at a time, vectorised over the states (see the module docstring).

    The unit's rows are dealt out over S lanes in turn (row ``r0 + t S + s`` at
    ``[t, :, s]``), so that the density and its ``exp`` run in the lane kernels;
    ``b (Tp, K, S)``, ``m (Tp, S)``, ``XcL (Tp, D, S)`` (centred rows); a step reads its
    row's K values into a padded block first. ``alpha (R, K)`` and ``inv_c (R,)`` are
    scratch (``alpha`` is used as it is when K is a whole number of blocks; else a padded
    copy is allocated). The outputs are those of ``lanes_fb_stats`` (``ll``, ``bad``
    indexed by sequence; the sums zeroed first); a bad sequence adds nothing.
    """
    K = transmat.shape[0]
    Tp, D, S = XcL.shape
    nb = (K + BLOCK - 1) // BLOCK
    Kp = nb * BLOCK
    R = alpha.shape[0]
    Ap = _pad_rows(transmat, Kp, False)  # forward: alpha_t = sum_j alpha_{t-1, j} A[j, :]
    ATp = _pad_rows(transmat, Kp, True)  # backward: beta_t = sum_k q_k A[:, k]
    if K == Kp:
        al = alpha.reshape(R * K)
    else:
        al = np.zeros(R * Kp)
    sp = np.zeros(Kp)
    for k in range(K):
        sp[k] = startprob[k]
    bf = b.reshape(Tp * K * S)
    xf = XcL.reshape(Tp * D * S)
    nbd = (D + BLOCK - 1) // BLOCK
    bb = np.zeros(Kp)  # a step's K values of b, then 0 for the padding
    bic = np.zeros(Kp)
    v = np.zeros(Kp)
    beta = np.zeros(Kp)
    bq = np.zeros(Kp)
    g = np.zeros(Kp)
    one = np.ones(1)
    xc = np.zeros(nbd * BLOCK)
    xx = np.zeros(D)
    De = D if full else 1
    acc = np.zeros(K * Kp)  # block accumulators, copied out at the end
    nsp = np.zeros(Kp)
    fsp = np.zeros(Kp)
    sxp = np.zeros(D * Kp)
    sxxp = np.zeros(D * De * Kp)
    fragile = scaling_fragile(transmat)  # a zero transition: the factors' product checked
    for s in range(lo, hi):
        o, L = starts[s] - r0, lengths[s]
        log_c = 0.0
        min_c = 1.0
        m_sum = 0.0
        prod = 1.0
        ic = 1.0
        tt, ss = o // S, o % S  # row i's place in the lanes, stepped without division
        for t in range(L):
            i = o + t
            if t > 0:
                ss += 1
                if ss == S:
                    ss = 0
                    tt += 1
            m_sum += m[tt, ss]
            blk_gather(bf, tt * K * S + ss, S, K, bb, nb)
            if t == 0:
                c = blk_mul_sum(sp, 0, bb, 0, al, i * Kp, nb)
            else:
                # the step before's row holds u = alpha c (not yet scaled): its product with
                # A does not wait for c's sum and reciprocal; the scale goes on b instead
                blk_matvec(Ap, Kp, al, (i - 1) * Kp, K, v, 0, nb)
                blk_scale(al, (i - 1) * Kp, ic, al, (i - 1) * Kp, nb)  # alpha_{t-1}
                blk_scale(bb, 0, ic, bic, 0, nb)
                c = blk_mul_sum(v, 0, bic, 0, al, i * Kp, nb)
            ic = 1.0 / c
            inv_c[i] = ic
            min_c = min(min_c, c)
            if prod < 1e-10:  # flush before multiplying: prod stays a normal number
                log_c += np.log(prod)
                prod = 1.0
            prod *= c
        blk_scale(al, (o + L - 1) * Kp, ic, al, (o + L - 1) * Kp, nb)  # the last alpha
        log_c += np.log(prod)
        total = log_c + m_sum
        ll[s] = total
        if not kept(total, min_c, log_c, fragile):
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
                blk_gather(bf, t1 * K * S + s1, S, K, bb, nb)
                blk_scale(bb, 0, inv_c[i + 1], bic, 0, nb)
                blk_prod(bic, 0, beta, 0, bq, 0, nb)  # q_{t+1}
                ss -= 1
                if ss < 0:
                    ss = S - 1
                    tt -= 1
                blk_matvec(ATp, Kp, bq, 0, K, beta, 0, nb)
                blk_outer(al, i * Kp, K, bq, 0, acc, 0, Kp, nb)
            t1, s1 = tt, ss
            blk_prod(al, i * Kp, beta, 0, g, 0, nb)
            blk_gather(xf, tt * D * S + ss, S, D, xc, nbd)
            if full:
                for d in range(D):
                    for e in range(d + 1):
                        xx[e] = xc[d] * xc[e]
                    blk_outer(xx, 0, d + 1, g, 0, sxxp, d * D * Kp, Kp, nb)
            else:
                for d in range(D):
                    xx[d] = xc[d] * xc[d]
                blk_outer(xx, 0, D, g, 0, sxxp, 0, Kp, nb)
            blk_outer(xc, 0, D, g, 0, sxp, 0, Kp, nb)
            blk_outer(one, 0, 1, g, 0, nsp, 0, Kp, nb)
        blk_outer(one, 0, 1, g, 0, fsp, 0, Kp, nb)
    for j in range(K):
        for k in range(K):
            xi[j, k] = transmat[j, k] * acc[j * Kp + k]
    for k in range(K):
        first[k] = fsp[k]
        nsum[k] = nsp[k]
        for d in range(D):
            sx[d, k] = sxp[d * Kp + k]
            for e in range(De):
                sxx[d, e, k] = sxxp[(d * De + e) * Kp + k]


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
