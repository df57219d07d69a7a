"""A vectorised ``exp`` for the compiled EM loop on CPUs where NumPy's is scalar.

The compiled EM loop (:mod:`tying.hmm._numba_em`) calls NumPy's own float64 ``exp``
inner loop, so that its densities have the bits of ``np.exp``. On CPUs with AVX-512,
that loop is NumPy's SIMD code. Elsewhere (AVX2 CPUs such as AMD Zen 3) NumPy calls the
C library's ``exp`` one element at a time: about 4.5 ns an element, 40 % of a diag EM
fit of K=8 on such a machine (stop 38).

On glibc (2.28 and later) that scalar ``exp`` is the table method of ARM's optimized
routines: ``exp(x) = 2^(k/N) * exp(r)``, N = 128, with a degree-5 polynomial in ``r``.
Its arithmetic has no branch on the common path, so the same steps written here, in the
same order and with the same fused multiply-adds as glibc's ``__exp_fma`` build, compile
to vector code. :func:`loop_address` gives a C function with NumPy's inner-loop
signature that runs them: a drop-in replacement for the loop's address.

It is used only after :mod:`tying.hmm.fused_em` has checked, once a process, that it
gives **the same bits as ``np.exp``** on about 330,000 awkward and random values
(:func:`same_bits`: every range below, the thresholds, NaN, infinities); on any other C
library or NumPy build the check fails and NumPy's loop stays. The vector code covers
``x < 512``: the table method for ``|x| < 512``, glibc's subnormal-safe steps for
``-746 < x <= -512`` and +0.0 below. Overflow's range (``x >= 512``) and NaN go to
NumPy's own loop, one element at a time, so they too keep NumPy's bits.

Measured (stop 38, AMD EPYC Zen 3, a million values, one thread, busy machine): NumPy's
loop 5.0-5.1 ms; this one 1.7 ms (values in [-400, 0]), 2.8 ms (values in [-700, 0], a
quarter of them in the subnormal-safe range, where NumPy's took 8.0-8.2 ms).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from tying import _numba_cache

N = 128  # table entries: 2^(i/N), i = 0..N-1 (glibc's EXP_TABLE_BITS = 7)
INV_LN2_N = float.fromhex("0x1.71547652b82fep0") * N
SHIFT = float.fromhex("0x1.8p52")  # adding it rounds to an integer held in the low bits
NEG_LN2_HI_N = float.fromhex("-0x1.62e42fefa0000p-8")
NEG_LN2_LO_N = float.fromhex("-0x1.cf79abc9e3b3ap-47")
C2 = float.fromhex("0x1.ffffffffffdbdp-2")
C3 = float.fromhex("0x1.555555555543cp-3")
C4 = float.fromhex("0x1.55555cf172b91p-5")
C5 = float.fromhex("0x1.1111167a4d017p-7")
FAST = 512.0  # |x| below this: the table method's path with no special case
ZERO = -746.0  # x at or below this (or -inf): exp underflows to +0.0
TWO_M1022 = 2.0**-1022
CHUNK = 256  # elements checked for special inputs before a chunk is written


def _table() -> np.ndarray:
    """``[bits(T_0), bits(H_0) - 0, bits(T_1), bits(H_1) - (1 << 45), ...]`` with
    ``2^(i/N) ~= H_i (1 + T_i)``: ``H_i`` the double nearest ``2^(i/N)``, ``T_i`` the
    double nearest its relative error (60 significant digits, then rounded once)."""
    out = np.empty(2 * N, dtype=np.int64)
    with localcontext() as ctx:
        ctx.prec = 60
        for i in range(N):
            exact = Decimal(2) ** (Decimal(i) / N)
            h = float(exact)
            tail = float((exact - Decimal(h)) / Decimal(h))
            out[2 * i] = np.float64(tail).view(np.int64)
            out[2 * i + 1] = int(np.float64(h).view(np.int64)) - (i << 45)
    return out


TABLE = _table()


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64, as int64."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _double(typingctx, i):
    """The float64 with IEEE bits ``i`` (int64)."""
    if i != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma.f64``)."""
    if not all(t == types.float64 for t in (a, b, c)):
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@intrinsic
def _f64_at(typingctx, addr):
    """A ``float64*`` at integer address ``addr``."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.DoubleType().as_pointer())

    return types.CPointer(types.float64)(addr), codegen


@intrinsic
def _i64_at(typingctx, addr):
    """An ``int64*`` at address ``addr`` (an integer or a ``void*``)."""
    if not isinstance(addr, types.Integer | types.RawPointer):
        return None

    def codegen(context, builder, sig, args):
        if isinstance(sig.args[0], types.RawPointer):
            return builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.inttoptr(args[0], ir.IntType(64).as_pointer())

    return types.CPointer(types.int64)(addr), codegen


@intrinsic
def call_loop(typingctx, fn, argv, dims, steps, data):
    """``fn(argv, dims, steps, data)``: a NumPy inner loop ``void f(char **args, npy_intp
    *dims, npy_intp *steps, void *data)`` at address ``fn``, the others as integers or
    pointers (also the compiled EM loop's way to call NumPy's loops)."""
    sig = types.void(fn, argv, dims, steps, data)

    def codegen(context, builder, sig, llargs):
        vp = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [vp, vp, vp, vp])

        def as_ptr(a, t, ty):
            if isinstance(t, types.Integer):
                return builder.inttoptr(context.cast(builder, a, t, types.int64), ty)
            return builder.bitcast(a, ty)  # a pointer already

        f = as_ptr(llargs[0], sig.args[0], fnty.as_pointer())
        builder.call(f, [as_ptr(a, t, vp) for a, t in zip(llargs[1:], sig.args[1:], strict=True)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always", error_model="numpy")
def _select(mask, a, b):
    """``a`` where ``mask`` (all ones) else ``b`` (``mask`` 0), on the bits: no branch, so
    that the loops around it compile to vector code (branches kept them scalar: 2.2
    against 1.2-1.5 ms a million, stop 38)."""
    return _double((_bits(a) & mask) | (_bits(b) & ~mask))


@numba.njit(inline="always", error_model="numpy")
def _reduce(x):
    """``exp(x) = 2^(k/N) exp(r)``: glibc's ``tmp`` (``exp(r) - 1`` plus the table's
    tail) and ``sbits`` (the bits of ``2^(k/N)``), step for step, FMA build."""
    kd = _fma(INV_LN2_N, x, SHIFT)
    ki = _bits(kd)
    kd = kd - SHIFT
    r = _fma(kd, NEG_LN2_LO_N, _fma(kd, NEG_LN2_HI_N, x))
    idx = 2 * (ki & (N - 1))
    tail = _double(TABLE[idx])
    sbits = TABLE[idx + 1] + (ki << 45)
    r2 = r * r
    return _fma(r2 * r2, _fma(r, C5, C4), _fma(r2, _fma(r, C3, C2), tail + r)), sbits


@numba.njit(inline="always", error_model="numpy")
def _exp_fast(x):
    """glibc's ``exp`` for ``|x| < 512`` (no special case there)."""
    tmp, sbits = _reduce(x)
    scale = _double(sbits)
    return _fma(scale, tmp, scale)


@numba.njit(inline="always", error_model="numpy")
def _exp_vec(x):
    """glibc's ``exp`` step for step (``e_exp.c`` and its ``specialcase``, FMA build) for
    every ``x`` but NaN and ``x >= 512`` (:func:`_special`): the table method for
    ``|x| < 512``, its subnormal-safe scaling for ``-746 < x <= -512``, and +0.0 below."""
    tmp, sbits = _reduce(x)
    scale = _double(sbits)
    fast = _fma(scale, tmp, scale)
    # k < 0 and 512 <= |x|: scaled up by 2^1022 first, rounded once more below 1, then
    # scaled back (glibc rounds y to the subnormal precision before scaling it down).
    # No fused multiply-add here: glibc's build has none in this part (with them, 221 of
    # 400,000 values in [-746, -512] came out 1 ulp off)
    scale = _double(sbits + (1022 << 52))
    y = scale + scale * tmp
    lo = scale - y + scale * tmp
    hi = 1.0 + y
    lo = 1.0 - hi + y + lo
    low = _select(-np.int64(y < 1.0), (hi + lo) - 1.0, y) * TWO_M1022
    return _select(-np.int64(abs(x) < FAST), fast, _select(-np.int64(x <= ZERO), 0.0, low))


@numba.njit(inline="always", error_model="numpy")
def _special(x):
    """Inputs left to NumPy's own loop: overflow's range (``x >= 512``) and NaN."""
    return (x >= FAST) | (x != x)


@numba.njit(error_model="numpy", nogil=True, cache=True)
def exp_in_place(a, np_fn, np_data, one):
    """``a[i] = exp(a[i])`` with the bits of ``np.exp``.

    In place on purpose: with a source and a destination that may overlap, LLVM's
    run-time overlap check sent in-place calls to the scalar loop (3.3 against 1.9 ms a
    million, stop 38), as did loops over ``range(c0, c1)`` of the whole array. Chunks with a special input (:func:`_special`) run one element
    at a time, each special one through NumPy's loop ``np_fn`` (``one``: int64 scratch
    of 5 for its arguments); the others in vector code.
    """
    n = a.shape[0]
    for c0 in range(0, n, CHUNK):
        b = a[c0 : min(c0 + CHUNK, n)]  # a view: indexed from 0, the loops vectorise
        n_special = n_low = 0
        for i in range(b.shape[0]):
            n_special += _special(b[i])
            n_low += b[i] <= -FAST
        if n_special == 0 and n_low == 0:  # the common case: all on the table's path
            for i in range(b.shape[0]):
                b[i] = _exp_fast(b[i])
            continue
        if n_special == 0:  # the subnormal-safe steps cost 0.9 ns an element more
            for i in range(b.shape[0]):
                b[i] = _exp_vec(b[i])
            continue
        for i in range(b.shape[0]):
            if _special(b[i]):
                one[0] = b[i:].ctypes.data
                one[1] = one[0]
                one[2] = 1  # dims
                one[3] = 8  # steps
                one[4] = 8
                call_loop(np_fn, one.ctypes.data, one[2:].ctypes.data, one[3:].ctypes.data, np_data)
            else:
                b[i] = _exp_vec(b[i])


@numba.njit(error_model="numpy", nogil=True, cache=True)
def apply_loop(fn, data, a):
    """The inner loop at address ``fn`` on contiguous ``a``, in place, in one call."""
    one = np.empty(5, np.int64)
    one[0] = a.ctypes.data
    one[1] = one[0]
    one[2] = a.shape[0]  # dims
    one[3] = 8  # steps
    one[4] = 8
    call_loop(fn, one.ctypes.data, one[2:].ctypes.data, one[3:].ctypes.data, data)


_LOOP_SIG = types.void(
    types.CPointer(types.intp),
    types.CPointer(types.intp),
    types.CPointer(types.intp),
    types.voidptr,
)


def _exp_loop(args, dims, steps, data):
    """NumPy's unary inner-loop signature; ``data`` points at ``[numpy_fn, numpy_data]``
    (NumPy's own float64 exp loop, for special inputs and strided calls)."""
    n = dims[0]
    ctx = numba.carray(_i64_at(data), 2)
    if steps[0] != 8 or steps[1] != 8:
        call_loop(ctx[0], args, dims, steps, ctx[1])
        return
    dst = numba.carray(_f64_at(args[1]), n)
    if args[0] != args[1]:
        dst[:] = numba.carray(_f64_at(args[0]), n)
    one = np.empty(5, np.int64)
    exp_in_place(dst, ctx[0], ctx[1], one)


_COMPILED: dict = {}


def loop_address() -> int:
    """The address of the vectorised loop (compiled on first use, then cached on disk)."""
    if "loop" not in _COMPILED:
        _COMPILED["loop"] = numba.cfunc(_LOOP_SIG, error_model="numpy", nogil=True, cache=True)(
            _exp_loop
        )
    return _COMPILED["loop"].address


def same_bits(fn: int, data: int, n_random: int = 1 << 18) -> bool:
    """Whether the loop at ``fn`` (with ``data``) gives ``np.exp``'s bits on awkward and
    random inputs: every sign, the thresholds, tiny, huge, subnormal results, NaN, inf."""
    rng = np.random.default_rng(20261205)
    edges = [0.0, -0.0, 1e-300, -1e-300, 2.0**-54, -(2.0**-54), 2.0**-53, 511.999, -511.999,
             512.0, -512.0, 709.78, 709.79, 710.0, -708.39, -708.4, -745.13, -745.14, -745.2,
             -746.0, -746.1, -1e10, 1e10, np.inf, -np.inf, np.nan, -np.nan, 5e-324]  # fmt: skip
    x = np.concatenate([
        np.array(edges),
        rng.uniform(-800.0, 0.0, n_random),
        rng.uniform(-1.0, 1.0, n_random // 4),
        rng.uniform(-50.0, 50.0, n_random // 4),
        rng.uniform(-746.5, -500.0, n_random // 8),
        rng.uniform(500.0, 711.0, n_random // 16),
        -np.exp(rng.uniform(-60.0, 6.6, n_random // 8)),
        np.repeat(np.arange(-1000, 1000) * (np.log(2.0) / N), 3)
        + np.tile([-1e-12, 0.0, 1e-12], 2000),
    ])  # fmt: skip
    y = x.copy()
    apply_loop(fn, data, y)
    with np.errstate(all="ignore"):
        want = np.exp(x)
    return bool(np.array_equal(y.view(np.int64), want.view(np.int64)))


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
