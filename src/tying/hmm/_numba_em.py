"""numba code of the compiled EM iteration (:mod:`tying.hmm.fused_em`); imported only
when numba is.

One call of :func:`em_step` runs a whole EM iteration of an untied diagonal
Gaussian HMM: the E-step of every work unit (density, ``exp``, the lane
forward-backward with its statistics), the units' sums added in unit order,
and the compiled M-step, then the next iteration's precisions and constants.
Helper threads stay inside :func:`worker` for the whole fit: between E-steps
they spin on a shared counter instead of being woken by the pool (which made
them start 70-94 us late on a ~1 ms E-step), and they take units by an
atomic counter, so a thread that starts late (or never) only leaves its units
to the others. Results do not depend on which thread ran a unit.

``exp`` and ``log`` are NumPy's own inner loops, called through the function
pointers of the ufuncs (``fused_em._ufunc_loop``): the same bits as
``np.exp(b, out=b)`` on the old path, at NumPy's SIMD speed (numba's scalar
``exp`` is 5x slower here and rounds differently).

The lane kernels it compiles in (``_numba_kernels``, ``_numba_lanes``, ``_numba_rows``)
are part of its numba cache key (:mod:`tying._numba_cache`): a change there recompiles
this loop too.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tying import _numba_cache
from tying.hmm._numba_exp import call_loop  # a NumPy inner loop called by address
from tying.hmm._numba_kernels import (
    _np_sum,
    deal_rows,
    lanes_density_diag,
    lanes_fb_stats,
    mstep_diag_untied,
    sum_first_axis,
    to_lanes,
)
from tying.hmm._numba_rows import rows_fb_stats
from tying.hmm._numba_scaled import scaling_fragile
from tying.hmm._numba_windows import REL, dobrushin, rows_windows_fb_stats, windows_fb_stats
from tying.hmm.windows import FORGET, MIN_ROWS

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}  # no fastmath: NumPy's bits

# control words of the shared int64 array ``ctl``
CLAIM, DONE, STOP, DEAD, LEFT = 0, 1, 2, 3, 4  # LEFT: helpers out of :func:`worker`
TAIL = 5  # 1 once this iteration's tail item (see ``order``) is done
CTL_SIZE = 8  # then, per item of ``order``, the CPU cycles it took this iteration
# a lane layout's copy state ``fill`` (``LaneLayout.fill_state``): per unit, its rows are
# not yet copied into its lanes (0), being copied by a thread that claimed them (1), or
# there (2); the last entry is set when a thread died while copying
NOT_COPIED, COPYING, COPIED = 0, 1, 2
# the unit table's columns (one row per unit, int64)
(U_T, U_S, U_NREAL, U_XL, U_XCL, U_IC, U_M, U_B, U_ALPHA, U_NACT, U_LENS, U_SLOT,
 U_START, U_TAIL, U_ROWS, U_R0, U_WT, U_WS, U_WN, U_WINTS, U_WXL, U_WXCL, U_WIC, U_WM, U_WB,
 U_WALPHA) = range(26)  # fmt: skip
U_COLS = 26  # U_START: the unit's lanes' first rows of X (S values) in ``ints``
# U_WN: for a rows unit of at least ``windows.MIN_ROWS`` rows, its overlapping windows
# (stop 26; 0: none): a layout of Tw = U_WT steps by Sw = U_WS lanes (XL, XcL, ic, m on
# the data block, b, alpha on the recursion's, at U_WXL..U_WALPHA), filled with the
# dealt rows once per fit (:func:`copy_rows_windows_unit`) and run by every E-step whose
# transition matrix forgets (:func:`windows_unit_stats`); in ``ints`` from U_WINTS: its
# n_act (Tw), the lanes' first rows of X (Sw), then U_WN values of each of ``WIN_INTS``
WIN_INTS = ("wstart", "wlen", "core_lo", "core_hi", "lane_seq", "prev_lane", "next_lane")
# U_ROWS: 0 for a lane unit; for a unit of a few long sequences (``kind="rows"``, run by
# the rows kernel) its rows R (> 0), then U_R0 its first row of X, U_START its sequences'
# starts (from U_R0) in ``ints``, U_IC its ``inv_c`` (R,) and U_ALPHA its ``alpha`` (R, K),
# both on the recursion's block
# U_TAIL: the first step of the unit's tail, whose densities another thread may make
# (the item ``-1 - u`` of ``order``, claimed before the unit): T when it has none
# ``order``: the items threads claim in turn; ``u >= 0`` a unit's E-step, ``-1 - u`` the
# densities (and their exp) of unit u's tail steps, which balance two unequal units: the
# thread with the smaller unit makes them first, the other waits for them (``ctl[TAIL]``)
# only after its own densities of the steps before
# ``fns``: addresses of NumPy's exp/log loops (and their data) and of libc's sched_yield, usleep
F_EXP, F_EXP_DATA, F_LOG, F_LOG_DATA, F_YIELD, F_SLEEP = range(6)
# waiting: pause-spin for SPIN cycles (about 20 us at 2.6 GHz), then yield the core
# between checks until YIELD cycles (about 4 ms), then sleep 100 us between checks. The
# yield matters when no core is free: a thread that spun for long took the time slices
# of the thread it waited for (n_jobs=2 read 0.85x of n_jobs=1 with both cores busy)
SPIN, YIELD = 50_000, 10_000_000


# ---------------------------------------------------------------- intrinsics
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_PAUSE = "llvm.x86.sse2.pause"


def _item_pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx])


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """``old = arr[idx]; arr[idx] += val`` as one atomic (sequentially consistent) step."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, idx, val)

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, value, "seq_cst")

    return sig, codegen


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, new):
    """``old = arr[idx]; if old == expected: arr[idx] = new`` as one atomic step; ``old``."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, idx, expected, new)

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        cmp = context.cast(builder, args[2], sig.args[2], types.int64)
        val = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(ptr, cmp, val, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


@intrinsic
def atomic_load(typingctx, arr, idx):
    """``arr[idx]`` read from memory every time (acquire: later reads see what the
    writer stored before its release); a plain read could be hoisted out of a spin loop."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, idx)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item_pointer(context, builder, sig, args), "acquire", 8)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` (release: everything written before it is seen with it)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.void(arr, idx, val)

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _item_pointer(context, builder, sig, args), "seq_cst", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cpu_pause(typingctx):
    """x86 ``pause`` (spin-wait hint), or nothing on other CPUs."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:  # LLVM's intrinsic: numba's JIT has no inline-assembly parser
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, _PAUSE), [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``): a cheap clock for spin limits."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def call_int(typingctx, fn, arg):
    """Call ``int f(unsigned)`` at address ``fn`` (libc's ``usleep``, ``sched_yield``)."""
    sig = types.void(fn, arg)

    def codegen(context, builder, sig, llargs):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        addr = context.cast(builder, llargs[0], sig.args[0], types.int64)
        value = context.cast(builder, llargs[1], sig.args[1], types.int32)
        builder.call(builder.inttoptr(addr, fnty.as_pointer()), [value])
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------- NumPy's loops
@numba.njit(**_JIT)
def ufunc_in_place(fn, data, a):
    """``fn`` (a NumPy float64 unary inner loop) on contiguous ``a`` in place, in one call
    of the loop over every element, as NumPy calls it for ``np.exp(a, out=a)``."""
    flat = a.reshape(-1)
    argv = np.empty(2, np.int64)
    argv[0] = flat.ctypes.data
    argv[1] = flat.ctypes.data
    dims = np.empty(1, np.int64)
    dims[0] = flat.shape[0]
    steps = np.full(2, 8, np.int64)
    call_loop(fn, argv.ctypes.data, dims.ctypes.data, steps.ctypes.data, data)


# ---------------------------------------------------------------- waiting
@numba.njit(**_JIT)
def _wait(ctl, idx, target, below, fns):
    """Wait until ``ctl[idx] < target`` (``below``) or ``>= target`` (else), or until
    ``ctl[STOP]`` or ``ctl[DEAD]`` is set; returns False in the last two cases."""
    t0 = cycles()
    while True:
        v = atomic_load(ctl, idx)
        if (v < target) == below:
            return True
        if atomic_load(ctl, STOP) != 0 or atomic_load(ctl, DEAD) != 0:
            return False
        _back_off(t0, fns)


@numba.njit(**_JIT)
def _back_off(t0, fns):
    """One pause of a wait that began at cycle ``t0``: pause-spin, then yield, then sleep
    (see ``SPIN``, ``YIELD``)."""
    waited = cycles() - t0
    if waited < SPIN or waited < 0:  # < 0: the counter jumped (another core's)
        cpu_pause()
    elif waited < YIELD:
        call_int(fns[F_YIELD], 0)
    else:
        call_int(fns[F_SLEEP], 100)


# ---------------------------------------------------------------- the lane copy
@numba.njit(**_JIT)
def _claim_copy(fill, u, fns):
    """Whether this thread makes unit ``u``'s copy: it claims it (``fill[u]``: 0 -> 1),
    or another thread holds the claim and died before marking it done (then the copy is
    made here: the same values as that thread would have written); False once the other
    thread has marked it done (2)."""
    if atomic_cas(fill, u, NOT_COPIED, COPYING) != NOT_COPIED:
        t0 = cycles()
        while True:
            if atomic_load(fill, u) == COPIED:
                return False
            if atomic_load(fill, fill.shape[0] - 1) != 0:  # its thread died
                return True
            _back_off(t0, fns)
    return True


@numba.njit(**_JIT)
def copy_unit(fill, u, X, center, lane_start, n_act, XL, XcL, fns):
    """Make unit ``u``'s lanes hold their rows (``to_lanes``), whichever thread asks first
    (:func:`_claim_copy`), and mark it done."""
    if _claim_copy(fill, u, fns):
        to_lanes(X, center, lane_start, n_act, XL, XcL)
        atomic_store(fill, u, COPIED)


@numba.njit(**_JIT)
def copy_rows_unit(fill, u, X, center, r0, R, XL, XcL, fns):
    """:func:`copy_unit` for a unit of a few long sequences: its rows from ``r0`` dealt
    out over its lanes in turn (:func:`~tying.hmm._numba_rows.deal_rows`), as
    ``LaneLayout.fill`` deals them."""
    if _claim_copy(fill, u, fns):
        deal_rows(X, center, r0, R, XL, XcL)
        atomic_store(fill, u, COPIED)


@numba.njit(**_JIT)
def copy_rows_windows_unit(fill, u, X, center, ut, ints, block_a, XL, XcL, fns):
    """:func:`copy_rows_unit`, and the unit's windows layout (if it has one) from the same
    rows (``to_lanes``), under one claim: the diag loop's copy of a rows unit."""
    if _claim_copy(fill, u, fns):
        deal_rows(X, center, ut[u, U_R0], ut[u, U_ROWS], XL, XcL)
        if ut[u, U_WN] > 0:
            Tw, Sw, D, o = ut[u, U_WT], ut[u, U_WS], X.shape[1], ut[u, U_WINTS]
            XLw = block_a[ut[u, U_WXL] : ut[u, U_WXL] + Tw * D * Sw].reshape((Tw, D, Sw))
            XcLw = block_a[ut[u, U_WXCL] : ut[u, U_WXCL] + Tw * D * Sw].reshape((Tw, D, Sw))
            to_lanes(X, center, ints[o + Tw : o + Tw + Sw], ints[o : o + Tw], XLw, XcLw)
        atomic_store(fill, u, COPIED)


@numba.njit(**_JIT)
def windows_unit_stats(u, ut, block_a, block_b, ints, start, trans, means, prec, const, fns,
                       ll, bad, xi, first, nsum, sx, sxx):  # fmt: skip
    """Rows unit ``u``'s E-step through its windows layout (filled once per fit): the
    densities and their ``exp`` on the windows' rows, then
    :func:`~tying.hmm._numba_windows.windows_fb_stats`, with no copy (stop 26: the
    drop-in gathered ``b``, ``m`` and ``XcL`` into fresh lane arrays at every E-step,
    122 of its 353 us at 1 x 5000, K=8, D=4). The same windows, inputs and kernel as
    :func:`~tying.hmm._numba_windows.rows_windows_fb_stats`: the same bits.

    Returns:
        True when the windows' checks passed (``ll``, ``bad`` and the sums written);
        False: nothing written, the caller runs the rows kernel.
    """
    Tw, Sw, nw, o = ut[u, U_WT], ut[u, U_WS], ut[u, U_WN], ut[u, U_WINTS]
    K, D = means.shape
    n_act = ints[o : o + Tw]
    p = o + Tw + Sw
    ws, wl = ints[p : p + nw], ints[p + nw : p + 2 * nw]
    clo, chi = ints[p + 2 * nw : p + 3 * nw], ints[p + 3 * nw : p + 4 * nw]
    seq, prev, nxt = (ints[p + 4 * nw : p + 5 * nw], ints[p + 5 * nw : p + 6 * nw],
                      ints[p + 6 * nw : p + 7 * nw])  # fmt: skip
    XLw = block_a[ut[u, U_WXL] : ut[u, U_WXL] + Tw * D * Sw].reshape((Tw, D, Sw))
    XcLw = block_a[ut[u, U_WXCL] : ut[u, U_WXCL] + Tw * D * Sw].reshape((Tw, D, Sw))
    icw = block_a[ut[u, U_WIC] : ut[u, U_WIC] + Tw * Sw].reshape((Tw, Sw))
    mw = block_a[ut[u, U_WM] : ut[u, U_WM] + Tw * Sw].reshape((Tw, Sw))
    bw = block_b[ut[u, U_WB] : ut[u, U_WB] + Tw * K * Sw].reshape((Tw, K, Sw))
    alphaw = block_b[ut[u, U_WALPHA] : ut[u, U_WALPHA] + Tw * K * Sw].reshape((Tw, K, Sw))
    _densities(XLw, n_act, means, prec, const, bw, mw, fns, 0, Tw)
    n_seq = ll.shape[0]
    llq = np.empty(n_seq)
    badq = np.zeros(n_seq, np.bool_)
    failed = windows_fb_stats(start, trans, bw, mw, n_act, wl, XcLw, False, alphaw, icw, ws, clo,
                              chi, prev, nxt, seq, REL, llq, badq, xi, first, nsum, sx,
                              sxx)  # fmt: skip
    if failed:
        return False
    for q in range(n_seq):
        ll[q] = llq[q]
        bad[q] = badq[q]
    return True


@numba.njit(**_JIT)
def rows_unit_stats(u, ut, block_b, ints, start, trans, b, m, XcL, full, ll, bad, xi, first,
                    nsum, sx, sxx):  # fmt: skip
    """The rows kernel on unit ``u`` of a few long sequences (``ut[u, U_ROWS] > 0``), as
    ``forward_backward_stats.work`` runs it (through windows in the lanes where they
    pass their checks: :func:`~tying.hmm._numba_windows.rows_windows_fb_stats`): ``ll``,
    ``bad`` are the unit's slots."""
    R, n_real, K = ut[u, U_ROWS], ut[u, U_NREAL], trans.shape[0]
    alpha = block_b[ut[u, U_ALPHA] : ut[u, U_ALPHA] + R * K].reshape((R, K))
    inv_c = block_b[ut[u, U_IC] : ut[u, U_IC] + R]
    lens = ints[ut[u, U_LENS] : ut[u, U_LENS] + n_real]
    starts = ints[ut[u, U_START] : ut[u, U_START] + n_real]
    rows_windows_fb_stats(start, trans, b, m, XcL, 0, starts, lens, 0, n_real, full, alpha,
                          inv_c, ll, bad, xi, first, nsum, sx, sxx, MIN_ROWS)  # fmt: skip


# ---------------------------------------------------------------- one unit
@numba.njit(**_JIT)
def _densities(XL, n_act, means, prec, const, b, m, fns, t0, t1):
    """Steps ``t0..t1-1`` of a unit: shifted log-densities, then NumPy's ``exp`` of them
    (elementwise both: the same bits however the steps are cut)."""
    if t1 > t0:
        lanes_density_diag(XL[t0:t1], n_act[t0:t1], means, prec, const, b[t0:t1], m[t0:t1])
        ufunc_in_place(fns[F_EXP], fns[F_EXP_DATA], b[t0:t1])


@numba.njit(**_JIT)
def private_scratch(n):
    """``n`` float64s on cache lines of their own, which no other allocation shares.

    A unit's sums are added to at every step of its E-step. Written into the shared
    ``(units, ...)`` arrays, the end of one unit's row and the start of the next one's
    shared a cache line whenever the array did not start on one, so the two cores
    passed that line back and forth at every step: on two threads the units took 11 %
    more cycles than on one (150 x 400, stop 21). Here the sums live on lines of
    their own and are copied into the shared arrays once, at the end.
    """
    buf = np.empty((n + 7) // 8 * 8 + 8)  # whole lines, plus room to start on one
    off = (64 - buf.ctypes.data % 64) % 64 // 8
    return buf[off : off + n]


@numba.njit(**_JIT)
def _unit(u, tail, ctl, fill, X, center, ut, block_a, block_b, ints, start, trans, means, prec,
          const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
    """Unit ``u``'s E-step, as ``forward_backward_stats.work`` runs it for a lane unit;
    first, unless ``fill[u]`` says they are there, the copy of its rows of ``X`` into
    its lanes (:func:`copy_unit`), as ``LaneLayout.fill`` makes it. ``tail < 0``: only
    the densities of the unit's tail steps (see ``order``), then ``ctl[TAIL] = 1``."""
    T, S, n_real = ut[u, U_T], ut[u, U_S], ut[u, U_NREAL]
    D, K = means.shape[1], means.shape[0]
    XL = block_a[ut[u, U_XL] : ut[u, U_XL] + T * D * S].reshape((T, D, S))
    XcL = block_a[ut[u, U_XCL] : ut[u, U_XCL] + T * D * S].reshape((T, D, S))
    m = block_a[ut[u, U_M] : ut[u, U_M] + T * S].reshape((T, S))
    b = block_b[ut[u, U_B] : ut[u, U_B] + T * K * S].reshape((T, K, S))
    n_act = ints[ut[u, U_NACT] : ut[u, U_NACT] + T]
    lo = ut[u, U_SLOT]  # the unit's real lanes' slots in ll_u, bad_u
    rows = ut[u, U_ROWS] > 0  # a few long sequences: the rows kernel
    if atomic_load(fill, u) != COPIED:
        if rows:
            copy_rows_windows_unit(fill, u, X, center, ut, ints, block_a, XL, XcL, fns)
        else:
            copy_unit(fill, u, X, center, ints[ut[u, U_START] : ut[u, U_START] + S], n_act,
                      XL, XcL, fns)  # fmt: skip
    t1 = ut[u, U_TAIL]  # the steps before the tail (all T when it has none)
    if tail < 0:  # the tail item: only the tail's densities
        _densities(XL, n_act, means, prec, const, b, m, fns, t1, T)
        return
    KK, DK = K * K, D * K  # the unit's sums, on cache lines of their own
    sums = private_scratch(KK + 2 * K + 2 * DK)
    xi = sums[:KK].reshape((K, K))
    first = sums[KK : KK + K]
    nsum = sums[KK + K : KK + 2 * K]
    sx = sums[KK + 2 * K : KK + 2 * K + DK].reshape((D, K))
    sxx = sums[KK + 2 * K + DK :].reshape((D, 1, K))
    # a rows unit with windows (no tail item then) whose chain forgets: its windows
    # layout, else (a sticky chain, or a failed check) the rows kernel on the dealt rows
    if rows and ut[u, U_WN] > 0 and dobrushin(trans) <= FORGET and not scaling_fragile(trans):
        if windows_unit_stats(u, ut, block_a, block_b, ints, start, trans, means, prec, const,
                              fns, ll_u[lo : lo + n_real], bad_u[lo : lo + n_real], xi, first,
                              nsum, sx, sxx):  # fmt: skip
            xi_u[u] = xi
            first_u[u] = first
            n_u[u] = nsum
            sx_u[u] = sx
            sxx_u[u] = sxx
            return
    _densities(XL, n_act, means, prec, const, b, m, fns, 0, t1)
    if t1 < T and not _wait(ctl, TAIL, 1, False, fns):  # the tail's thread died: here then
        _densities(XL, n_act, means, prec, const, b, m, fns, t1, T)  # (the same values)
    if rows and ut[u, U_WN] > 0:  # windows tried above, or not to be tried: the rows kernel
        R = ut[u, U_ROWS]
        lens = ints[ut[u, U_LENS] : ut[u, U_LENS] + n_real]
        starts = ints[ut[u, U_START] : ut[u, U_START] + n_real]
        rows_fb_stats(start, trans, b, m, XcL, 0, starts, lens, 0, n_real, False,
                      block_b[ut[u, U_ALPHA] : ut[u, U_ALPHA] + R * K].reshape((R, K)),
                      block_b[ut[u, U_IC] : ut[u, U_IC] + R], ll_u[lo : lo + n_real],
                      bad_u[lo : lo + n_real], xi, first, nsum, sx, sxx)  # fmt: skip
    elif rows:  # fewer than windows.MIN_ROWS rows: the drop-in runs the rows kernel
        rows_unit_stats(u, ut, block_b, ints, start, trans, b, m, XcL, False,
                        ll_u[lo : lo + n_real], bad_u[lo : lo + n_real], xi, first, nsum, sx,
                        sxx)  # fmt: skip
    else:
        ic = block_a[ut[u, U_IC] : ut[u, U_IC] + T * S].reshape((T, S))
        alpha = block_b[ut[u, U_ALPHA] : ut[u, U_ALPHA] + T * K * S].reshape((T, K, S))
        lens = ints[ut[u, U_LENS] : ut[u, U_LENS] + n_real]
        lanes_fb_stats(
            start, trans, b, m, n_act, lens, XcL, False, alpha, ic,
            ll_u[lo : lo + n_real], bad_u[lo : lo + n_real], xi, first, nsum, sx, sxx,
        )  # fmt: skip
    xi_u[u] = xi
    first_u[u] = first
    n_u[u] = nsum
    sx_u[u] = sx
    sxx_u[u] = sxx


@numba.njit(**_JIT)
def _take_units(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans, means,
                prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
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
              prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u)  # fmt: skip
        ctl[CTL_SIZE + c] = cycles() - t0  # seen by the caller with DONE (below)
        if item < 0:
            atomic_store(ctl, TAIL, 1)
        atomic_add(ctl, DONE, 1)


@numba.njit(**_JIT)
def worker(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans, means,
           prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u):  # fmt: skip
    """A helper thread's whole fit: wait for units to claim, run them, until ``ctl[STOP]``."""
    U = order.shape[0]
    while _wait(ctl, CLAIM, U, True, fns):
        _take_units(ctl, order, fill, X, center, ut, block_a, block_b, ints, start, trans,
                    means, prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u,
                    sxx_u)  # fmt: skip
    atomic_add(ctl, LEFT, 1)  # the last write of this thread


@numba.njit(**_JIT)
def wait_left(ctl, n, fns):
    """Wait (without the GIL) until ``n`` helpers have left :func:`worker` (the caller
    has set ``ctl[STOP]``), or one died."""
    t0 = cycles()
    while atomic_load(ctl, LEFT) < n and atomic_load(ctl, DEAD) == 0:
        _back_off(t0, fns)


@numba.njit(**_JIT)
def _rebalance(ctl, order, ut):
    """Resize the tail item (``order[0]``, of unit ``order[1]``) from this iteration's
    item times (``ctl[CTL_SIZE:]``): move half the difference between the costlier
    unit's thread and the other's, at the tail's measured cycles per step, a quarter
    of the way there per iteration (item times vary by a few percent between
    iterations; one slow item moves it little). Where the tail ends changes no bit:
    densities are elementwise."""
    big = -1 - order[0]
    T, t1 = ut[big, U_T], ut[big, U_TAIL]
    steps = T - t1
    tail, head = ctl[CTL_SIZE], ctl[CTL_SIZE + 1]
    rest = 0
    for c in range(2, order.shape[0]):
        rest += ctl[CTL_SIZE + c]
    if steps <= 0 or tail <= 0 or head <= 0 or rest <= 0:
        return
    want = 0.5 * (head + tail - rest) / (tail / steps)  # steps that even the two threads
    delta = min(max(int(want + 0.5), 1), T // 2) - steps
    ut[big, U_TAIL] = T - (steps + (delta + 2) // 4)  # a quarter of the way (rounded)


@numba.njit(**_JIT)
def em_step(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans, means,
            prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u,
            slot_seq, ll, xi, first, nsum, sx, sxx,
            learn, sp_prior, tp_prior, w, mu0, center, covars, cp, cw, min_covar, empty,
            log2pi, logp):  # fmt: skip
    """One EM iteration on the calling thread (and the helpers in :func:`worker`).

    The E-step's units, then their sums in unit order (``xi``, ``first``, ``nsum``,
    ``sx``, ``sxx``: ``(K, K)``, ``(K,)``, ``(K,)``, ``(K, D)``, ``(K, D)``) and each
    sequence's log-likelihood in ``ll`` (sequence order). Then, unless a lane's scaling
    failed, the M-step in place (:func:`mstep_diag_untied`) and the next E-step's
    ``prec = 1 / covars`` and ``const = -(D log 2 pi - sum log prec) / 2`` (``logp``:
    scratch ``(K, D)``).

    Returns:
        The number of lanes whose scaling failed (the M-step did not run then: the
        caller redoes this E-step on the general path), or -1 when a helper thread
        died (``ctl[DEAD]``).
    """
    U = order.shape[0]  # items: the units, and a tail item
    K, D = means.shape
    copied = True  # every unit's lanes copied before this iteration (no copy in its times)
    for u in range(ut.shape[0]):
        copied = copied and atomic_load(fill, u) == COPIED
    atomic_store(ctl, DONE, 0)
    atomic_store(ctl, TAIL, 0)
    atomic_store(ctl, CLAIM, 0)  # the helpers may start: this iteration's parameters are set
    _take_units(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans, means,
                prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u, sxx_u)  # fmt: skip
    if not _wait(ctl, DONE, U, False, fns):  # every claimed unit has been written
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
    sxxT = np.empty((D, 1, K))
    sum_first_axis(sxx_u, sxxT)
    for k in range(K):
        for d in range(D):
            sx[k, d] = sxT[d, k]
            sxx[k, d] = sxxT[d, 0, k]
    if n_bad:
        return n_bad
    mstep_diag_untied(learn, start, sp_prior, first, trans, tp_prior, xi, means, w, mu0,
                      center, nsum, sx, sxx, covars, cp, cw, min_covar, empty)  # fmt: skip
    density_constants(covars, prec, const, logp, fns, log2pi)
    return 0


@numba.njit(**_JIT)
def np_sum(a):
    """``a.sum()`` of a contiguous float64 array with NumPy's bits: its pairwise sum
    (8-way blocks of at most 128 values, longer runs halved on a multiple of 8), the
    recursion unrolled onto a stack (numba's on-disk cache does not load recursion)."""
    n = a.shape[0]
    if n <= 128:
        return _np_sum(a, 0, n)
    lo = np.empty(64, np.int64)  # frames: a range, and its left half's sum once known
    cnt = np.empty(64, np.int64)
    stage = np.empty(64, np.int64)
    left = np.empty(64)
    sp = 0
    lo[0], cnt[0], stage[0] = 0, n, 0
    ret = 0.0
    returned = False
    while True:
        if returned:  # a sum for frame sp's pending half
            if sp < 0:
                return ret
            if stage[sp] == 1:  # its left half: now the right half
                left[sp] = ret
                stage[sp] = 2
                half = cnt[sp] // 2
                half -= half % 8
                sp += 1
                lo[sp], cnt[sp], stage[sp] = lo[sp - 1] + half, cnt[sp - 1] - half, 0
                returned = False
            else:  # both halves: this frame's sum goes to its parent
                ret = left[sp] + ret
                sp -= 1
            continue
        if cnt[sp] <= 128:
            ret = _np_sum(a, lo[sp], cnt[sp])
            sp -= 1
            returned = True
            continue
        stage[sp] = 1
        half = cnt[sp] // 2
        half -= half % 8
        sp += 1
        lo[sp], cnt[sp], stage[sp] = lo[sp - 1], half, 0


@numba.njit(**_JIT)
def em_run(n_max, tol, prev, budget, history, ctl, order, fill, X, center_x, ut, block_a,
           block_b, ints, start, trans, means, prec, const, fns, ll_u, bad_u, xi_u, first_u,
           n_u, sx_u, sxx_u, slot_seq, ll, xi, first, nsum, sx, sxx, learn, sp_prior,
           tp_prior, w, mu0, center, covars, cp, cw, min_covar, empty, log2pi,
           logp):  # fmt: skip
    """Up to ``n_max`` iterations of :func:`em_step`, each one's total log-likelihood
    (``ll.sum()``, NumPy's bits) in ``history``; stops after the first whose gain over
    the one before (``prev`` for the first; NaN: none) is below ``tol`` (the
    convergence monitor's test), or once ``budget`` CPU cycles have passed, so that
    the caller's thread sees Ctrl-C between batches.

    Returns:
        ``(count, status)``: iterations run (their M-steps included), and 0, or the
        :func:`em_step` code that stopped the batch before iteration ``count``'s
        M-step (lanes failed: > 0, a helper died: < 0).
    """
    t0 = cycles()
    for i in range(n_max):
        status = em_step(ctl, order, fill, X, center_x, ut, block_a, block_b, ints, start, trans,
                         means, prec, const, fns, ll_u, bad_u, xi_u, first_u, n_u, sx_u,
                         sxx_u, slot_seq, ll, xi, first, nsum, sx, sxx, learn, sp_prior,
                         tp_prior, w, mu0, center, covars, cp, cw, min_covar, empty, log2pi,
                         logp)  # fmt: skip
        if status != 0:
            return i, status
        total = np_sum(ll)
        history[i] = total
        if prev == prev and total - prev < tol:  # converged (prev is NaN before the first)
            return i + 1, 0
        prev = total
        if cycles() - t0 > budget:
            return i + 1, 0
    return n_max, 0


@numba.njit(**_JIT)
def density_constants(covars, prec, const, logp, fns, log2pi):
    """``prec = 1 / covars`` and ``const = -0.5 * (D * log2pi - np.log(prec).sum(1))``
    with NumPy's bits (its ``log`` loop, its pairwise sum); ``logp``: scratch like ``prec``."""
    K, D = covars.shape
    for k in range(K):
        for d in range(D):
            prec[k, d] = 1.0 / covars[k, d]
            logp[k, d] = prec[k, d]
    ufunc_in_place(fns[F_LOG], fns[F_LOG_DATA], logp)
    flat = logp.reshape(-1)
    for k in range(K):
        const[k] = -0.5 * (D * log2pi - _np_sum(flat, k * D, D))


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
