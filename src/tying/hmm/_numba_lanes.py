"""One step of the fused E-step's lane kernels over whole blocks of lanes, written as
explicit vector code (numba intrinsics); used by :mod:`tying.hmm._numba_kernels`, imported
only when numba is.

Each step of the lane kernels adds, for every pair of states and for every state and
feature, a sum over the unit's lanes into the unit's statistics. As a loop over the
lanes with one total, each such sum paid the vectoriser's set-up, its remainder loop
and a sum across a vector register at every step, whatever the lanes: at 8-24 lanes
that fixed part was most of the step (stop 23). Here each sum keeps one accumulator
per lane of a block of ``LANE_BLOCK`` lanes (one ``<8 x double>`` vector, in
registers while the blocks are added), added into an accumulator array in memory once
per call; the caller adds the 8 lanes together once per unit, at the end. The other
passes of a step (the forward sum over states, ``beta``, the posteriors, the diag
density) are likewise one pass over the step's blocks per four states (or per state).

numba leaves LLVM's SLP vectoriser off, and its loop vectoriser turns a loop over
blocks with 8 scalar accumulators into gathers, so the vector code is emitted here
directly. Every sum is taken in a fixed order (blocks in turn, states and features in
index order), each product added with one rounding (a fused multiply-add where the
CPU has one): the same bits on every call, whichever thread runs it.

Arguments are 1-D C-contiguous float64 arrays (anything else does not compile: a
strided view would be read as if contiguous) with offsets in elements (the kernels
pass their own lane offsets, multiples of ``LANE_BLOCK``; not checked here) and
``nb``, the number of lane blocks.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANE_BLOCK = 8  # lanes per block: the kernels' lane counts are whole blocks
_V = ir.VectorType(ir.DoubleType(), LANE_BLOCK)
_FLAGS = ("contract",)  # a product and its sum may fuse; no reassociation


def _flat_f64(*arrays):
    """True when every type is a 1-D C-contiguous float64 array."""
    return all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float64
        for a in arrays
    )


def _addr(context, builder, aryty, ary, offty, off):
    """The address of ``ary[off]`` as a pointer to a block of ``LANE_BLOCK`` doubles."""
    data = context.make_array(aryty)(context, builder, ary).data
    idx = context.cast(builder, off, offty, types.intp)
    return builder.gep(data, [idx])


def _block(builder, base, i):
    """Lane block ``i`` (from ``base``) as a vector pointer."""
    off = builder.mul(i, ir.Constant(i.type, LANE_BLOCK))
    return builder.bitcast(builder.gep(base, [off]), _V.as_pointer())


def _accumulate(builder, nb, sources, outs, terms):
    """``outs[m] += sum over blocks i of terms(blocks i of sources)[m]``, lane by lane:
    the vector accumulators stay in registers over the blocks (``alloca`` promoted)."""
    zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in outs]
    with cgutils.for_range(builder, nb) as loop:
        vals = [builder.load(_block(builder, p, loop.index), align=8) for p in sources]
        for acc, term in zip(accs, terms(builder, vals), strict=True):
            builder.store(builder.fadd(builder.load(acc), term, flags=_FLAGS), acc)
    for acc, out in zip(accs, outs, strict=True):
        ptr = builder.bitcast(out, _V.as_pointer())
        builder.store(builder.fadd(builder.load(ptr, align=8), builder.load(acc)), ptr, align=8)


@intrinsic
def lanes_dot(typingctx, x, ox, y, oy, nb, out, oo):
    """``out[oo + l] += sum_i x[ox + 8 i + l] * y[oy + 8 i + l]`` for ``i < nb``, ``l < 8``."""
    if not _flat_f64(x, y, out):
        return None
    sig = types.void(x, ox, y, oy, nb, out, oo)

    def codegen(context, builder, sig, args):
        a = sig.args
        px = _addr(context, builder, a[0], args[0], a[1], args[1])
        py = _addr(context, builder, a[2], args[2], a[3], args[3])
        po = _addr(context, builder, a[5], args[5], a[6], args[6])
        n = context.cast(builder, args[4], a[4], types.intp)
        _accumulate(builder, n, [px, py], [po], lambda b, v: [b.fmul(v[0], v[1], flags=_FLAGS)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_sum(typingctx, x, ox, nb, out, oo):
    """``out[oo + l] += sum_i x[ox + 8 i + l]`` for ``i < nb``, ``l < 8``."""
    if not _flat_f64(x, out):
        return None
    sig = types.void(x, ox, nb, out, oo)

    def codegen(context, builder, sig, args):
        a = sig.args
        px = _addr(context, builder, a[0], args[0], a[1], args[1])
        po = _addr(context, builder, a[3], args[3], a[4], args[4])
        n = context.cast(builder, args[2], a[2], types.intp)
        _accumulate(builder, n, [px], [po], lambda b, v: [v[0]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_dot3(typingctx, g, og, x, ox, y, oy, nb, out, oo):
    """``out[oo + l] += sum_i g (x y)`` at lanes ``8 i + l`` of ``g``, ``x``, ``y`` (from
    ``og``, ``ox``, ``oy``): a state's full second moment of two features."""
    if not _flat_f64(g, x, y, out):
        return None
    sig = types.void(g, og, x, ox, y, oy, nb, out, oo)

    def codegen(context, builder, sig, args):
        a = sig.args
        pg = _addr(context, builder, a[0], args[0], a[1], args[1])
        px = _addr(context, builder, a[2], args[2], a[3], args[3])
        py = _addr(context, builder, a[4], args[4], a[5], args[5])
        po = _addr(context, builder, a[7], args[7], a[8], args[8])
        n = context.cast(builder, args[6], a[6], types.intp)

        def terms(b, v):
            return [b.fmul(v[0], b.fmul(v[1], v[2], flags=_FLAGS), flags=_FLAGS)]

        _accumulate(builder, n, [pg, px, py], [po], terms)
        return context.get_dummy_value()

    return sig, codegen


def _vec(builder, base, off):
    """The ``LANE_BLOCK`` doubles at ``base + off`` (``off`` an intp) as a vector pointer."""
    return builder.bitcast(builder.gep(base, [off]), _V.as_pointer())


def _splat(builder, x):
    """A double broadcast to every lane of a block."""
    v = builder.insert_element(ir.Constant(_V, None), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        v,
        ir.Constant(_V, None),
        ir.Constant(ir.VectorType(ir.IntType(32), LANE_BLOCK), [0] * LANE_BLOCK),
    )


_GROUP = 4  # states per pass of lanes_beta_xi


def _plus(builder, i, c):
    """``i + c`` for an LLVM integer ``i`` and a Python int ``c``."""
    return i if c == 0 else builder.add(i, ir.Constant(i.type, c))


def _ints(context, builder, sig, args, idx):
    return [context.cast(builder, args[i], sig.args[i], types.intp) for i in idx]


@intrinsic
def lanes_beta_xi(typingctx, A, oa, K, al, oal, q, S, nb, beta, ob, acc, oacc):
    """One state j of a backward step, over ``nb`` lane blocks: ``beta[ob + .] = sum_k
    A[oa + k] q[k S + .]`` (in k order, the first term setting it) and xi's terms
    ``acc[oacc + 8 k + l] += sum_i al[oal + 8 i + l] q[k S + 8 i + l]``. States go four
    at a time: their four lane-block accumulators stay in registers over the blocks, and
    beta's block is loaded and stored once per four terms."""
    if not _flat_f64(A, al, q, beta, acc):
        return None
    sig = types.void(A, oa, K, al, oal, q, S, nb, beta, ob, acc, oacc)

    def codegen(context, builder, sig, args):
        a = sig.args
        oa_, K_, oal_, S_, nb_, ob_, oacc_ = _ints(
            context, builder, sig, args, (1, 2, 4, 6, 7, 9, 11)
        )
        data = [context.make_array(a[i])(context, builder, args[i]).data for i in (0, 3, 5, 8, 10)]
        pA, pal, pq, pbeta, pacc = data
        pal = builder.gep(pal, [oal_])
        pbeta = builder.gep(pbeta, [ob_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        eight = ir.Constant(oa_.type, LANE_BLOCK)
        xaccs = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUP)]

        def group(k0, m):  # states k0..k0+m-1: their xi terms in registers over the blocks
            coefs = [
                _splat(
                    builder,
                    builder.load(builder.gep(pA, [builder.add(oa_, _plus(builder, k0, i))])),
                )
                for i in range(m)
            ]
            pqs = [builder.gep(pq, [builder.mul(_plus(builder, k0, i), S_)]) for i in range(m)]
            first = builder.icmp_signed("==", k0, ir.Constant(k0.type, 0))
            for x in xaccs[:m]:
                builder.store(zero, x)
            with cgutils.for_range(builder, nb_) as bl:
                off = builder.mul(bl.index, eight)
                alv = builder.load(_vec(builder, pal, off), align=8)
                bp = _vec(builder, pbeta, off)
                w = builder.select(first, zero, builder.load(bp, align=8))  # k = 0 sets beta
                for i in range(m):
                    qv = builder.load(_vec(builder, pqs[i], off), align=8)
                    w = builder.fadd(w, builder.fmul(coefs[i], qv, flags=_FLAGS), flags=_FLAGS)
                    xt = builder.fmul(alv, qv, flags=_FLAGS)
                    builder.store(builder.fadd(builder.load(xaccs[i]), xt, flags=_FLAGS), xaccs[i])
                builder.store(w, bp, align=8)
            for i in range(m):
                op = _vec(
                    builder, pacc, builder.add(oacc_, builder.mul(_plus(builder, k0, i), eight))
                )
                builder.store(
                    builder.fadd(builder.load(op, align=8), builder.load(xaccs[i])), op, align=8
                )

        four = ir.Constant(K_.type, _GROUP)
        n4 = builder.sdiv(K_, four)
        with cgutils.for_range(builder, n4) as gl:  # groups of four states, then one at a time
            group(builder.mul(gl.index, four), _GROUP)
        with cgutils.for_range(builder, K_, start=builder.mul(n4, four)) as kl:
            group(kl.index, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_post_diag(typingctx, al, og, beta, ob, b, ic, oic, q, oq, X, ox, S, D, nb, n8, on,
                    sx8, sxx8, osx, KL):  # fmt: skip
    """One state k of a backward step, over ``nb`` lane blocks: the posteriors ``g =
    al * beta`` (written back into ``al`` at ``og``), step t-1's ``q = (b beta) ic``
    (``b`` at ``og`` too), and their diagonal sums into lane-block accumulators:
    ``n8[on + l] += g``, and for each feature d (``X`` at ``ox + d S``) ``sx8[osx + d KL
    + l] += g x`` and ``sxx8[...] += (g x) x``."""
    if not _flat_f64(al, beta, b, ic, q, X, n8, sx8, sxx8):
        return None
    sig = types.void(al, og, beta, ob, b, ic, oic, q, oq, X, ox, S, D, nb, n8, on, sx8, sxx8,
                     osx, KL)  # fmt: skip

    def codegen(context, builder, sig, args):
        a = sig.args
        og_, ob_, oic_, oq_, ox_, S_, D_, nb_, on_, osx_, KL_ = _ints(
            context, builder, sig, args, (1, 3, 6, 8, 10, 11, 12, 13, 15, 18, 19)
        )
        pal, pbe, pb, pic, pq, pX, pn, psx, psxx = (
            context.make_array(a[i])(context, builder, args[i]).data
            for i in (0, 2, 4, 5, 7, 9, 14, 16, 17)
        )
        pal, pb = builder.gep(pal, [og_]), builder.gep(pb, [og_])
        pbe, pic, pq = builder.gep(pbe, [ob_]), builder.gep(pic, [oic_]), builder.gep(pq, [oq_])
        pX, psx, psxx = builder.gep(pX, [ox_]), builder.gep(psx, [osx_]), builder.gep(psxx, [osx_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        eight = ir.Constant(og_.type, LANE_BLOCK)
        nacc = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, nb_) as bl:
            off = builder.mul(bl.index, eight)
            be = builder.load(_vec(builder, pbe, off), align=8)
            gp = _vec(builder, pal, off)
            g = builder.fmul(builder.load(gp, align=8), be, flags=_FLAGS)
            builder.store(g, gp, align=8)
            bv = builder.load(_vec(builder, pb, off), align=8)
            icv = builder.load(_vec(builder, pic, off), align=8)
            qv = builder.fmul(builder.fmul(bv, be, flags=_FLAGS), icv, flags=_FLAGS)
            builder.store(qv, _vec(builder, pq, off), align=8)
            builder.store(builder.fadd(builder.load(nacc), g, flags=_FLAGS), nacc)
        op = _vec(builder, builder.gep(pn, [on_]), ir.Constant(og_.type, 0))
        builder.store(builder.fadd(builder.load(op, align=8), builder.load(nacc)), op, align=8)
        moments = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
        one = builder.icmp_signed("==", nb_, ir.Constant(nb_.type, 1))
        with builder.if_else(one) as (single, several):
            with single:  # one block: its products straight into the accumulators (the
                # same bits as the loop below, whose first term adds to 0), with no loop
                g = builder.load(_vec(builder, pal, ir.Constant(og_.type, 0)), align=8)
                with cgutils.for_range(builder, D_) as dl:
                    d = dl.index
                    x = builder.load(_vec(builder, pX, builder.mul(d, S_)), align=8)
                    gx = builder.fmul(g, x, flags=_FLAGS)
                    o = builder.mul(d, KL_)
                    for term, base in ((gx, psx), (builder.fmul(gx, x, flags=_FLAGS), psxx)):
                        p = _vec(builder, base, o)
                        builder.store(builder.fadd(builder.load(p, align=8), term), p, align=8)
            with several:

                def features(d0, m):  # features d0..d0+m-1: each block of g loaded once
                    pxs = [
                        builder.gep(pX, [builder.mul(_plus(builder, d0, i), S_)]) for i in range(m)
                    ]
                    for acc in moments[: 2 * m]:
                        builder.store(zero, acc)
                    with cgutils.for_range(builder, nb_) as bl:
                        off = builder.mul(bl.index, eight)
                        g = builder.load(_vec(builder, pal, off), align=8)  # the posteriors
                        for i in range(m):
                            x = builder.load(_vec(builder, pxs[i], off), align=8)
                            gx = builder.fmul(g, x, flags=_FLAGS)
                            gxx = builder.fmul(gx, x, flags=_FLAGS)
                            for acc, term in ((moments[2 * i], gx), (moments[2 * i + 1], gxx)):
                                builder.store(
                                    builder.fadd(builder.load(acc), term, flags=_FLAGS), acc
                                )
                    for i in range(m):
                        o = builder.mul(_plus(builder, d0, i), KL_)
                        for acc, base in ((moments[2 * i], psx), (moments[2 * i + 1], psxx)):
                            p = _vec(builder, base, o)
                            builder.store(
                                builder.fadd(builder.load(p, align=8), builder.load(acc)),
                                p,
                                align=8,
                            )

                two = ir.Constant(D_.type, 2)
                n2 = builder.sdiv(D_, two)
                with cgutils.for_range(builder, n2) as dl:  # features two at a time, then one
                    features(builder.mul(dl.index, two), 2)
                with cgutils.for_range(builder, D_, start=builder.mul(n2, two)) as dl:
                    features(dl.index, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_forward(typingctx, AT, K, x, ox, S, nb, b, ob, v, ic, oic):
    """One forward step over ``nb`` lane blocks: ``v[k S + .] = (sum_j AT[k K + j] x[ox + j
    S + .]) * b[ob + k S + .]`` (the sum in j order) and ``ic[oic + .] = sum_k v[k]`` (in k
    order). ``AT`` is the transition matrix transposed, ``x`` the step before's scaled
    forward variables. States go four at a time: each ``x`` block is loaded once per four."""
    if not _flat_f64(AT, x, b, v, ic):
        return None
    sig = types.void(AT, K, x, ox, S, nb, b, ob, v, ic, oic)

    def codegen(context, builder, sig, args):
        a = sig.args
        K_, ox_, S_, nb_, ob_, oic_ = _ints(context, builder, sig, args, (1, 3, 4, 5, 7, 10))
        pAT, px, pb, pv, pic = (
            context.make_array(a[i])(context, builder, args[i]).data for i in (0, 2, 6, 8, 9)
        )
        px, pb, pic = builder.gep(px, [ox_]), builder.gep(pb, [ob_]), builder.gep(pic, [oic_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        eight = ir.Constant(K_.type, LANE_BLOCK)
        four = ir.Constant(K_.type, _GROUP)
        n4 = builder.sdiv(K_, four)
        cacc = cgutils.alloca_once_value(builder, zero)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUP)]
        with cgutils.for_range(builder, nb_) as bl:
            off = builder.mul(bl.index, eight)
            builder.store(zero, cacc)

            def group(k0, m):  # states k0..k0+m-1, their sums over j in registers
                for acc in accs[:m]:
                    builder.store(zero, acc)
                rows = [builder.mul(_plus(builder, k0, i), K_) for i in range(m)]
                with cgutils.for_range(builder, K_) as jl:
                    j = jl.index
                    xv = builder.load(
                        _vec(builder, px, builder.add(builder.mul(j, S_), off)), align=8
                    )
                    for i in range(m):
                        coef = _splat(
                            builder, builder.load(builder.gep(pAT, [builder.add(rows[i], j)]))
                        )
                        term = builder.fmul(coef, xv, flags=_FLAGS)
                        builder.store(
                            builder.fadd(builder.load(accs[i]), term, flags=_FLAGS), accs[i]
                        )
                for i in range(m):
                    o = builder.add(builder.mul(_plus(builder, k0, i), S_), off)
                    w = builder.fmul(
                        builder.load(accs[i]), builder.load(_vec(builder, pb, o), align=8)
                    )
                    builder.store(w, _vec(builder, pv, o), align=8)
                    builder.store(builder.fadd(builder.load(cacc), w), cacc)

            with cgutils.for_range(builder, n4) as gl:
                group(builder.mul(gl.index, four), _GROUP)
            with cgutils.for_range(builder, K_, start=builder.mul(n4, four)) as kl:
                group(kl.index, 1)
            builder.store(builder.load(cacc), _vec(builder, pic, off), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_density_step(typingctx, XL, ox, S, D, nb, means, prec, const, K, b, ob, m, om):
    """One step's shifted diagonal Gaussian log-densities over ``nb`` lane blocks:
    ``v_k = const[k] - 0.5 sum_d (x_d - means[k D + d])^2 prec[k D + d]`` (the sum in d
    order; ``x_d`` at ``XL[ox + d S + .]``), ``m[om + .] = max_k v_k`` and ``b[ob + k S +
    .] = v_k - m``. A NaN ``v`` stays NaN in ``b`` (so the lane's scaling fails and the
    caller recomputes it), whatever the maximum."""
    if not _flat_f64(XL, means, prec, const, b, m):
        return None
    sig = types.void(XL, ox, S, D, nb, means, prec, const, K, b, ob, m, om)

    def codegen(context, builder, sig, args):
        a = sig.args
        ox_, S_, D_, nb_, K_, ob_, om_ = _ints(context, builder, sig, args, (1, 2, 3, 4, 8, 10, 12))
        pX, pmu, pp, pc, pb, pm = (
            context.make_array(a[i])(context, builder, args[i]).data for i in (0, 5, 6, 7, 9, 11)
        )
        pX, pb, pm = builder.gep(pX, [ox_]), builder.gep(pb, [ob_]), builder.gep(pm, [om_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        half = ir.Constant(_V, [-0.5] * LANE_BLOCK)
        eight = ir.Constant(S_.type, LANE_BLOCK)
        mx = cgutils.alloca_once_value(builder, ir.Constant(_V, [float("-inf")] * LANE_BLOCK))
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(_GROUP)]
        four = ir.Constant(K_.type, _GROUP)
        n4 = builder.sdiv(K_, four)
        with cgutils.for_range(builder, nb_) as bl:
            off = builder.mul(bl.index, eight)
            builder.store(ir.Constant(_V, [float("-inf")] * LANE_BLOCK), mx)

            def group(k0, m):  # states k0..k0+m-1: m independent sums, each x loaded once
                rows = [builder.mul(_plus(builder, k0, i), D_) for i in range(m)]
                for acc in accs[:m]:
                    builder.store(zero, acc)
                with cgutils.for_range(builder, D_) as dl:
                    d = dl.index
                    x = builder.load(
                        _vec(builder, pX, builder.add(builder.mul(d, S_), off)), align=8
                    )
                    for i in range(m):
                        at = builder.add(rows[i], d)
                        mu = _splat(builder, builder.load(builder.gep(pmu, [at])))
                        p = _splat(builder, builder.load(builder.gep(pp, [at])))
                        z = builder.fsub(x, mu)
                        term = builder.fmul(builder.fmul(z, z, flags=_FLAGS), p, flags=_FLAGS)
                        builder.store(
                            builder.fadd(builder.load(accs[i]), term, flags=_FLAGS), accs[i]
                        )
                for i in range(m):
                    k = _plus(builder, k0, i)
                    c = _splat(builder, builder.load(builder.gep(pc, [k])))
                    v = builder.fadd(
                        c, builder.fmul(half, builder.load(accs[i]), flags=_FLAGS), flags=_FLAGS
                    )
                    builder.store(
                        v, _vec(builder, pb, builder.add(builder.mul(k, S_), off)), align=8
                    )
                    old = builder.load(mx)
                    builder.store(builder.select(builder.fcmp_unordered(">", v, old), v, old), mx)

            with cgutils.for_range(builder, n4) as gl:  # four states at a time, then one by one
                group(builder.mul(gl.index, four), _GROUP)
            with cgutils.for_range(builder, K_, start=builder.mul(n4, four)) as kl:
                group(kl.index, 1)
            top = builder.load(mx)
            builder.store(top, _vec(builder, pm, off), align=8)
            with cgutils.for_range(builder, K_) as kl:
                bp = _vec(builder, pb, builder.add(builder.mul(kl.index, S_), off))
                builder.store(builder.fsub(builder.load(bp, align=8), top), bp, align=8)
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------- full covariances (stop 24)
_ROWS = 4  # rows of L^-1 per pass of lanes_density_full_step; features per side of a tile


@intrinsic
def lanes_density_full_step(typingctx, XL, ox, S, D, nb, means, linv, const, K, b, ob, m, om,
                            z):  # fmt: skip
    """One step's shifted full-covariance Gaussian log-densities over ``nb`` lane blocks:
    ``v_k = const[k] - 0.5 sum_d r_d^2`` with ``r_d = sum_{e <= d} linv[k D D + d D + e]
    (x_e - means[k D + e])`` (``x_e`` at ``XL[ox + e S + .]``; each sum in index order),
    ``m[om + .] = max_k v_k`` and ``b[ob + k S + .] = v_k - m`` (a NaN ``v`` stays NaN).
    ``z``: scratch of ``D * LANE_BLOCK`` doubles (a state's ``x - mu``, block by block).

    The rows of ``L^-1`` go four at a time: each block of ``x - mu`` is loaded once per
    four rows and their four sums stay in registers (the loop of stop 23 kept one row's
    sum in memory and paid a loop's set-up for every ``(d, e)``)."""
    if not _flat_f64(XL, means, linv, const, b, m, z):
        return None
    sig = types.void(XL, ox, S, D, nb, means, linv, const, K, b, ob, m, om, z)

    def codegen(context, builder, sig, args):
        a = sig.args
        ox_, S_, D_, nb_, K_, ob_, om_ = _ints(context, builder, sig, args, (1, 2, 3, 4, 8, 10, 12))
        pX, pmu, pL, pc, pb, pm, pz = (
            context.make_array(a[i])(context, builder, args[i]).data
            for i in (0, 5, 6, 7, 9, 11, 13)
        )
        pX, pb, pm = builder.gep(pX, [ox_]), builder.gep(pb, [ob_]), builder.gep(pm, [om_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        half = ir.Constant(_V, [-0.5] * LANE_BLOCK)
        eight = ir.Constant(S_.type, LANE_BLOCK)
        four = ir.Constant(D_.type, _ROWS)
        DD = builder.mul(D_, D_)
        mx = cgutils.alloca_once_value(builder, ir.Constant(_V, [float("-inf")] * LANE_BLOCK))
        quad = cgutils.alloca_once_value(builder, zero)
        rs = [cgutils.alloca_once_value(builder, zero) for _ in range(_ROWS)]
        n4 = builder.sdiv(D_, four)
        with cgutils.for_range(builder, nb_) as bl:
            off = builder.mul(bl.index, eight)
            builder.store(ir.Constant(_V, [float("-inf")] * LANE_BLOCK), mx)
            with cgutils.for_range(builder, K_) as kl:
                k = kl.index
                mrow = builder.mul(k, D_)
                lrow = builder.mul(k, DD)
                with cgutils.for_range(builder, D_) as el:  # z_e = x_e - mu_e, this block
                    e = el.index
                    x = builder.load(
                        _vec(builder, pX, builder.add(builder.mul(e, S_), off)), align=8
                    )
                    mu = _splat(builder, builder.load(builder.gep(pmu, [builder.add(mrow, e)])))
                    builder.store(
                        builder.fsub(x, mu), _vec(builder, pz, builder.mul(e, eight)), align=8
                    )
                builder.store(zero, quad)

                def coef(d, e, lrow=lrow):
                    at = builder.add(lrow, builder.add(builder.mul(d, D_), e))
                    return _splat(builder, builder.load(builder.gep(pL, [at])))

                def rows(d0, mr):  # rows d0..d0+mr-1 of L^-1 (x - mu), then their squares
                    ds = [_plus(builder, d0, i) for i in range(mr)]
                    for r in rs[:mr]:
                        builder.store(zero, r)
                    with cgutils.for_range(builder, d0) as el:  # columns left of the block
                        e = el.index
                        zv = builder.load(_vec(builder, pz, builder.mul(e, eight)), align=8)
                        for i in range(mr):
                            t = builder.fmul(coef(ds[i], e), zv, flags=_FLAGS)
                            builder.store(builder.fadd(builder.load(rs[i]), t, flags=_FLAGS), rs[i])
                    for j in range(mr):  # the block's own triangle: column d0 + j, rows >= it
                        zv = builder.load(_vec(builder, pz, builder.mul(ds[j], eight)), align=8)
                        for i in range(j, mr):
                            t = builder.fmul(coef(ds[i], ds[j]), zv, flags=_FLAGS)
                            builder.store(builder.fadd(builder.load(rs[i]), t, flags=_FLAGS), rs[i])
                    for i in range(mr):
                        r = builder.load(rs[i])
                        sq = builder.fmul(r, r, flags=_FLAGS)
                        builder.store(builder.fadd(builder.load(quad), sq, flags=_FLAGS), quad)

                with cgutils.for_range(builder, n4) as gl:  # four rows at a time, then one
                    rows(builder.mul(gl.index, four), _ROWS)
                with cgutils.for_range(builder, D_, start=builder.mul(n4, four)) as dl:
                    rows(dl.index, 1)
                c = _splat(builder, builder.load(builder.gep(pc, [k])))
                v = builder.fadd(
                    c, builder.fmul(half, builder.load(quad), flags=_FLAGS), flags=_FLAGS
                )
                builder.store(v, _vec(builder, pb, builder.add(builder.mul(k, S_), off)), align=8)
                old = builder.load(mx)
                builder.store(builder.select(builder.fcmp_unordered(">", v, old), v, old), mx)
            top = builder.load(mx)
            builder.store(top, _vec(builder, pm, off), align=8)
            with cgutils.for_range(builder, K_) as kl:
                bp = _vec(builder, pb, builder.add(builder.mul(kl.index, S_), off))
                builder.store(builder.fsub(builder.load(bp, align=8), top), bp, align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def lanes_outer_tile(typingctx, g, og, X, ox, S, D, nb, d0, e0, out, oo, sd, se, sx, osx, sdx):
    """A tile of a state's second moments over ``nb`` lane blocks: for features ``d`` in
    ``d0..d0+3`` and ``e`` in ``e0..e0+3`` (both ``< D``, and ``e <= d``; ``e0`` and ``d0``
    multiples of 4), ``out[oo + d sd + e se + l] += sum_i (g x_d) x_e`` at lanes ``8 i + l``
    (``g`` from ``og``, ``x_d`` at ``X[ox + d S + .]``). On the diagonal (``d0 == e0``) also
    ``sx[osx + d sdx + l] += sum_i g x_d``. The tile's sums stay in registers over the
    blocks: each block of ``g`` and of the features is loaded once per tile, not once per
    pair ``(d, e)`` (stop 23's ``lanes_dot3``: three loads per multiply-add). An edge tile
    (fewer than 4 features left) has code of its own size: no product is wasted."""
    if not _flat_f64(g, X, out, sx):
        return None
    sig = types.void(g, og, X, ox, S, D, nb, d0, e0, out, oo, sd, se, sx, osx, sdx)

    def codegen(context, builder, sig, args):
        a = sig.args
        og_, ox_, S_, D_, nb_, d0_, e0_, oo_, sd_, se_, osx_, sdx_ = _ints(
            context, builder, sig, args, (1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15)
        )
        pg, pX, po, psx = (
            context.make_array(a[i])(context, builder, args[i]).data for i in (0, 2, 9, 13)
        )
        pg, pX = builder.gep(pg, [og_]), builder.gep(pX, [ox_])
        po, psx = builder.gep(po, [oo_]), builder.gep(psx, [osx_])
        zero = ir.Constant(_V, [0.0] * LANE_BLOCK)
        eight = ir.Constant(S_.type, LANE_BLOCK)

        def tile(diag, nd):  # nd rows (features d0..d0+nd-1); 4 columns, or nd on the diagonal
            ne = nd if diag else _ROWS
            pds = [builder.gep(pX, [builder.mul(_plus(builder, d0_, i), S_)]) for i in range(nd)]
            pes = [builder.gep(pX, [builder.mul(_plus(builder, e0_, j), S_)]) for j in range(ne)]
            pairs = [(i, j) for i in range(nd) for j in range(ne) if not diag or j <= i]
            accs = {p: cgutils.alloca_once_value(builder, zero) for p in pairs}
            sxa = [cgutils.alloca_once_value(builder, zero) for _ in range(nd)] if diag else []
            with cgutils.for_range(builder, nb_) as bl:
                off = builder.mul(bl.index, eight)
                gv = builder.load(_vec(builder, pg, off), align=8)
                xd = [builder.load(_vec(builder, p, off), align=8) for p in pds]
                xe = xd if diag else [builder.load(_vec(builder, p, off), align=8) for p in pes]
                gx = [builder.fmul(gv, x, flags=_FLAGS) for x in xd]
                for i, acc in enumerate(sxa):
                    builder.store(builder.fadd(builder.load(acc), gx[i], flags=_FLAGS), acc)
                for (i, j), acc in accs.items():
                    t = builder.fmul(gx[i], xe[j], flags=_FLAGS)
                    builder.store(builder.fadd(builder.load(acc), t, flags=_FLAGS), acc)

            def add_into(base, o, acc):
                p = _vec(builder, base, o)
                builder.store(builder.fadd(builder.load(p, align=8), builder.load(acc)), p, align=8)

            for (i, j), acc in accs.items():
                o = builder.add(
                    builder.mul(_plus(builder, d0_, i), sd_),
                    builder.mul(_plus(builder, e0_, j), se_),
                )
                add_into(po, o, acc)
            for i, acc in enumerate(sxa):
                add_into(psx, builder.mul(_plus(builder, d0_, i), sdx_), acc)

        left = builder.sub(D_, d0_)  # features from d0 on: a full tile from 4

        def by_rows(diag, nd):  # the tile of min(left, 4) rows: 4, else 3, 2, 1
            if nd == 1:
                tile(diag, 1)
                return
            fits = builder.icmp_signed(">=", left, ir.Constant(left.type, nd))
            with builder.if_else(fits) as (yes, no):
                with yes:
                    tile(diag, nd)
                with no:
                    by_rows(diag, nd - 1)

        with builder.if_else(builder.icmp_signed("==", d0_, e0_)) as (on_diag, off_diag):
            with on_diag:
                by_rows(True, _ROWS)
            with off_diag:
                by_rows(False, _ROWS)
        return context.get_dummy_value()

    return sig, codegen
