"""Fused CPU kernels of the hashed embeddings (numba); imported only when numba is installed.

Each loop hashes, gathers (or scatters) and pools in one pass; see
:mod:`tying.nn.hashed_kernels` for the torch twin every kernel is tested against.
Arguments shared by all kernels: ``ids`` the looked-up rows (n,), ``coef`` the
:attr:`~tying.nn.hashing.PairHash.row_coef` of the row terms,
``c1, c2`` the column (entry mode) or block (block mode) terms, ``fac`` a weight per
item (dtype of ``w``), ``bags`` the output row of each item, ``acc`` whether to
accumulate into ``out`` (pooling) or overwrite it (a plain lookup).
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache

P = 2**31 - 1
_jit = numba.njit(cache=True, nogil=True)


@_jit
def _pair(a, c):  # (a + c) mod P for 0 <= a, c < P
    u = a + c
    return u - P if u >= P else u


@_jit
def _mod(u, B, inv):  # u mod B for 0 <= u < 2**31: a float quotient, then an exact fix-up
    q = np.int64(u * inv)
    b = u - q * B
    if b < 0:
        b += B
    elif b >= B:
        b -= B
    return b


@_jit
def _fold(v):  # v mod P for 0 <= v < 2**62 (P = 2**31 - 1): shifts and adds, vectorises
    v = (v & P) + (v >> 31)  # < 2**32
    v = (v & P) + (v >> 31)  # <= P + 1
    return v - P if v >= P else v


@_jit
def _row_fold(x, coef, o):
    """ρ(x) = (Σ_k coef_k · limb_k(x·width) + b) mod P, coef = coef[o : o+5]: the row term
    (:meth:`~tying.nn.hashing.PairHash.rows`), reduced by Mersenne folds, not int64 divisions."""
    y = x * coef[o]
    v = (
        (y & 0x1FFFFF) * coef[o + 1]
        + ((y >> 21) & 0x1FFFFF) * coef[o + 2]
        + (y >> 42) * coef[o + 3]
    )  # < 3 * 2**52
    u = _fold(v) + coef[o + 4]
    return u - P if u >= P else u


@_jit
def rows(ids, coef, r1, r2):
    for k in range(ids.shape[0]):
        r1[k] = _row_fold(ids[k], coef, 0)
        r2[k] = _row_fold(ids[k], coef, 5)


@_jit
def _row_hash(a, a2, c1, c1_mod, c2, p_mod, B, signed, f, idx, sg):
    """Bucket and signed weight of every entry of one row, into ``idx`` and ``sg`` (D,).

    ``((a + c) mod P) mod B`` from ``a mod B`` and ``c mod B``: ``a + c`` wraps past ``P``
    at most once, which subtracts ``P mod B``; and subtracting the odd ``P`` flips the
    parity of the sign hash. No division and no gather: LLVM vectorises this loop (the
    gather is a second loop), twice as fast as one fused loop.
    """
    a_mod = a % B
    for j in range(c1.shape[0]):
        v = a_mod + c1_mod[j]
        v = v - p_mod if a + c1[j] >= P else v
        v = v + B if v < 0 else v
        v = v - B if v >= B else v
        idx[j] = v
        t = a2 + c2[j]
        t = t + 1 if t >= P else t
        sg[j] = f if (t & 1) or not signed else -f


@_jit
def entry_fwd(w, ids, coef, c1, c2, signed, fac, bags, out, acc):
    B, D = w.shape[0], c1.shape[0]
    c1_mod, p_mod = c1 % B, P % B
    idx = np.empty(D, np.int64)
    sg = np.empty(D, w.dtype)
    for k in range(ids.shape[0]):
        a, a2 = _row_fold(ids[k], coef, 0), _row_fold(ids[k], coef, 5)
        _row_hash(a, a2, c1, c1_mod, c2, p_mod, B, signed, fac[k], idx, sg)
        dst = out[bags[k]]
        if acc:
            for j in range(D):
                dst[j] += sg[j] * w[idx[j]]
        else:
            for j in range(D):
                dst[j] = sg[j] * w[idx[j]]


@_jit
def entry_bwd(ids, coef, c1, c2, signed, fac, bags, g, gw):
    B, D = gw.shape[0], c1.shape[0]
    c1_mod, p_mod = c1 % B, P % B
    idx = np.empty(D, np.int64)
    sg = np.empty(D, gw.dtype)
    for k in range(ids.shape[0]):
        a, a2 = _row_fold(ids[k], coef, 0), _row_fold(ids[k], coef, 5)
        _row_hash(a, a2, c1, c1_mod, c2, p_mod, B, signed, fac[k], idx, sg)
        src = g[bags[k]]
        for j in range(D):
            gw[idx[j]] += sg[j] * src[j]


@_jit
def block_hash(ids, coef, c1, c2, signed, fac, B, off, sf):
    """Offset in the circular array and sign × item weight of every (item, block)."""
    inv = 1.0 / B
    for k in range(ids.shape[0]):
        a, a2, f = _row_fold(ids[k], coef, 0), _row_fold(ids[k], coef, 5), fac[k]
        for blk in range(c1.shape[0]):
            off[k, blk] = _mod(_pair(a, c1[blk]), B, inv)
            sf[k, blk] = f if not signed or _pair(a2, c2[blk]) & 1 else -f


@_jit
def block_fwd(w, off, sf, Z, bags, out, acc):
    # two branch-free runs per block (before and after the wrap): LLVM vectorises them;
    # a wrap test inside the loop made this 5x slower
    B = w.shape[0]
    for k in range(off.shape[0]):
        dst = out[bags[k]]
        for blk in range(off.shape[1]):
            o, s = off[k, blk], sf[k, blk]
            d = dst[blk * Z : (blk + 1) * Z]
            n1 = min(Z, B - o)
            head, tail = w[o : o + n1], w[: Z - n1]
            if acc:
                for t in range(n1):
                    d[t] += s * head[t]
                for t in range(Z - n1):
                    d[n1 + t] += s * tail[t]
            else:
                for t in range(n1):
                    d[t] = s * head[t]
                for t in range(Z - n1):
                    d[n1 + t] = s * tail[t]


@_jit
def block_bwd(off, sf, Z, bags, g, gw):
    B = gw.shape[0]
    for k in range(off.shape[0]):
        src = g[bags[k]]
        for blk in range(off.shape[1]):
            o, s = off[k, blk], sf[k, blk]
            gs = src[blk * Z : (blk + 1) * Z]
            n1 = min(Z, B - o)
            head, tail = gw[o : o + n1], gw[: Z - n1]
            for t in range(n1):
                head[t] += s * gs[t]
            for t in range(Z - n1):
                tail[t] += s * gs[n1 + t]


@_jit
def block_hash_fwd(w, ids, coef, c1, c2, signed, fac, Z, bags, out, acc, off, sf):
    """``block_hash`` then ``block_fwd``: one call from Python instead of two."""
    block_hash(ids, coef, c1, c2, signed, fac, w.shape[0], off, sf)
    block_fwd(w, off, sf, Z, bags, out, acc)


# ---- sparse-gradient kernels (sparse=True): the forward keeps the indices it read, the
# backward only signs and weighs the incoming gradient (the optimizer does the scatter)


@_jit
def entry_keep_fwd(w, ids, coef, c1, c2, signed, fac, bags, out, acc, idx):
    """``entry_fwd`` that also keeps every entry's bucket in ``idx`` (n, D)."""
    B, D = w.shape[0], c1.shape[0]
    c1_mod, p_mod = c1 % B, P % B
    sg = np.empty(D, w.dtype)
    for k in range(ids.shape[0]):
        a, a2 = _row_fold(ids[k], coef, 0), _row_fold(ids[k], coef, 5)
        ik = idx[k]
        _row_hash(a, a2, c1, c1_mod, c2, p_mod, B, signed, fac[k], ik, sg)
        dst = out[bags[k]]
        if acc:
            for j in range(D):
                dst[j] += sg[j] * w[ik[j]]
        else:
            for j in range(D):
                dst[j] = sg[j] * w[ik[j]]


@_jit
def entry_sparse_values(ids, coef, c2, signed, fac, bags, g, vals):
    """Per-entry sparse gradient values ``vals[k, j] = ±fac[k] · g[bags[k], j]`` (n, D).

    The sign is re-hashed (one add and a parity per entry, as in ``_row_hash``): cheaper
    than writing it in the forward and reading it back.
    """
    for k in range(ids.shape[0]):
        a2, f, src, v = _row_fold(ids[k], coef, 5), fac[k], g[bags[k]], vals[k]
        for j in range(c2.shape[0]):
            t = a2 + c2[j]
            t = t + 1 if t >= P else t
            v[j] = f * src[j] if (t & 1) or not signed else -f * src[j]


@_jit
def aligned_hash(ids, coef, c1, c2, signed, fac, R, bid, sf):
    """Aligned blocks: table row ``bid`` and sign × item weight ``sf`` of every block, (D/Z, n).

    Block-major so that every loop runs over the items, without division or branches:
    LLVM vectorises them (the item-major loop over the 4 blocks of a row did not).
    """
    n = ids.shape[0]
    r1, r2 = np.empty(n, np.int64), np.empty(n, np.int64)
    rows(ids, coef, r1, r2)
    inv = 1.0 / R
    for blk in range(c1.shape[0]):
        cb, cs, b_out, s_out = c1[blk], c2[blk], bid[blk], sf[blk]
        for k in range(n):
            u = r1[k] + cb
            u = u - P if u >= P else u
            q = np.int64(u * inv)  # u mod R: a float quotient, then an exact fix-up
            b = u - q * R
            b = b + R if b < 0 else b
            b_out[k] = b - R if b >= R else b
            t = r2[k] + cs
            t = t + 1 if t >= P else t  # (t - P) has the parity of t + 1 (P is odd)
            s_out[k] = fac[k] if (t & 1) or not signed else -fac[k]


@_jit
def aligned_copy(w, bid, sf, bags, out, acc, idx):
    """Rows of the aligned ``(B/Z, Z)`` table into ``out``: block ``i`` of item ``k`` is
    ``sf[i, k] · w[bid[i, k]]``, accumulated into ``out[bags[k]]`` when ``acc``.

    Also writes ``idx[k, i] = bid[i, k]``: the item-major order of a sparse gradient.
    """
    Z = w.shape[1]
    for k in range(bid.shape[1]):
        dst = out[bags[k]]
        for i in range(bid.shape[0]):
            b = bid[i, k]
            idx[k, i] = b
            s, src, d = sf[i, k], w[b], dst[i * Z : (i + 1) * Z]
            if acc:
                for t in range(Z):
                    d[t] += s * src[t]
            else:
                for t in range(Z):
                    d[t] = s * src[t]


@_jit
def aligned_fwd(w, ids, coef, c1, c2, signed, fac, bags, out, acc, idx, sf):
    """``aligned_hash`` then ``aligned_copy``: ``w`` the (B/Z, Z) table, ``idx`` (n, D/Z) the
    block rows read, ``sf`` (D/Z, n) their sign × item weight."""
    bid = np.empty((idx.shape[1], idx.shape[0]), np.int64)
    aligned_hash(ids, coef, c1, c2, signed, fac, w.shape[0], bid, sf)
    aligned_copy(w, bid, sf, bags, out, acc, idx)


@_jit
def sparse_values(sf, Z, bags, g, vals):
    """Aligned blocks' sparse gradient values ``vals[k, i] = sf[i, k] · g[bags[k], i·Z:(i+1)·Z]``.

    ``sf`` (D/Z, n) the sign × item weight of each block; ``vals`` (n, D/Z, Z).
    """
    for k in range(sf.shape[1]):
        src = g[bags[k]]
        for i in range(sf.shape[0]):
            s, v = sf[i, k], vals[k, i]
            for t in range(Z):
                v[t] = s * src[i * Z + t]


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
