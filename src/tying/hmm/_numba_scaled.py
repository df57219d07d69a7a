"""numba kernels of the scaled forward-backward on given emission log-densities.

The recursions behind :func:`tying.hmm.forward_backward` and
:func:`tying.hmm.forward_log_likelihood` when the compiled path is on: they
take any HMM's ``(n_samples, K)`` log-densities and run one sequence at a time
over its K states, for every emission model; ``sum_first_axis`` adds their
per-sequence statistics in index order (the fused EM adds its units' with it
too). They live apart from :mod:`tying.hmm._numba_kernels` (the fused Gaussian
E-step in lane layout and the diag M-step), which re-exports them, so that
:func:`tying.hmm.compiled._kernels` keeps handing out one module with every
kernel. ``_JIT`` is defined here and imported there: every fastmath kernel of
the two modules compiles with the same options.

Each kernel handles the items ``lo..hi-1`` (sequences or pairs) one at a time
and writes only their slots of the outputs, so that chunks can run on
different threads (``nogil``) with results that do not depend on the split.
``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy (the
caller detects the sequence and recomputes it in log space) instead of raising.
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache
from tying.hmm.forward_backward import (  # the same thresholds on every path
    EXACT_SCALING_MIN_TRANSITION,
    LOG_TINY,
    TINY,
)

_JIT = {
    "nogil": True,
    "cache": True,
    "error_model": "numpy",
    "fastmath": {"reassoc", "contract", "arcp"},
}


@numba.njit(**_JIT)
def scaling_fragile(transmat):
    """Whether scaling may drop a state's mass for ``transmat`` (a transition at most
    ``EXACT_SCALING_MIN_TRANSITION``, or NaN): ``not forward_backward.scaling_is_exact``,
    in the kernels. Each kernel that keeps a scaled result asks it of the matrix it is
    given, so that no caller can forget the check: a sequence of such a model keeps its
    scaled result only when its factors multiply to at least ``TINY`` (:func:`kept`).
    A column of zeros (a state no state enters) does not count, as there."""
    K = transmat.shape[0]
    entered = False
    for j in range(K):
        hi = 0.0
        lo = np.inf
        for i in range(K):
            x = transmat[i, j]
            if not abs(x) < np.inf:  # NaN or inf
                return True
            hi = max(hi, x)
            lo = min(lo, x)
        if hi > 0.0:
            entered = True
            if not lo > EXACT_SCALING_MIN_TRANSITION:
                return True
    return not entered


@numba.njit(**_JIT)
def kept(total, min_c, log_c, fragile):
    """Whether a sequence keeps its scaled result: a finite log-likelihood ``total``, no
    factor below ``TINY`` (``min_c``), and, for a :func:`scaling_fragile` model, factors
    whose product's log ``log_c`` is at least ``LOG_TINY`` (forward_backward.LOG_TINY:
    a state the scaling dropped then changes nothing measurable)."""
    return np.isfinite(total) and min_c >= TINY and (not fragile or log_c >= LOG_TINY)


# ---------------------------------------------------------------- forward-backward
@numba.njit(**_JIT)
def fb_scaled(startprob, transmat, b, m, r0, starts, lengths, lo, hi, gamma, ll, xi_seq, bad):
    """Scaled forward-backward of sequences lo..hi-1.

    ``b`` and ``m`` hold rows ``r0..`` of the concatenated emissions as
    ``exp(log_b - m)`` and ``m`` (the row maxima); NumPy computes them before
    the call because its vectorised ``exp`` is several times faster than a
    compiled scalar one.

    Writes ``gamma`` rows of those sequences, ``ll[s]``, ``xi_seq[s]`` (expected
    transitions of sequence s) and ``bad[s]`` (scaling failed: recompute in log
    space; its gamma/xi are then left at zero).
    """
    K = transmat.shape[0]
    trans_t = np.ascontiguousarray(transmat.T)  # row k: the transitions into state k
    t_max = 0
    for s in range(lo, hi):
        t_max = max(t_max, lengths[s])
    alpha = np.empty((t_max, K))
    inv_c = np.empty(t_max)
    beta = np.empty(K)
    beta_prev = np.empty(K)
    q = np.empty(K)
    acc = np.empty((K, K))
    fragile = scaling_fragile(transmat)
    for s in range(lo, hi):
        o, L = starts[s], lengths[s]
        ob = o - r0  # the sequence's first row in b and m
        log_c = 0.0
        min_c = 1.0
        m_sum = 0.0
        for t in range(L):
            m_sum += m[ob + t]
            if t == 0:
                for k in range(K):
                    alpha[0, k] = startprob[k] * b[ob, k]
            else:  # local accumulators: the compiler keeps them in registers
                for k in range(K):
                    v = 0.0
                    for j in range(K):
                        v += alpha[t - 1, j] * trans_t[k, j]
                    alpha[t, k] = v * b[ob + t, k]
            c = 0.0
            for k in range(K):
                c += alpha[t, k]
            for k in range(K):
                alpha[t, k] /= c
            inv_c[t] = 1.0 / c
            log_c += np.log(c)
            min_c = min(min_c, c)
        total = log_c + m_sum
        ll[s] = total
        # a factor below TINY has lost precision (subnormal) and its inverse overflows:
        # recompute the sequence in log space, as for one that underflowed completely
        # (and, in a model with a zero transition, one whose factors multiply below TINY)
        if not kept(total, min_c, log_c, fragile):
            bad[s] = True
            for t in range(L):
                for k in range(K):
                    gamma[o + t, k] = 0.0
            for j in range(K):
                for k in range(K):
                    xi_seq[s, j, k] = 0.0
            continue
        bad[s] = False
        # backward: q[t] = b[t] * beta[t] / c[t] feeds both beta[t-1] and xi
        for j in range(K):
            for k in range(K):
                acc[j, k] = 0.0
        for k in range(K):
            beta[k] = 1.0
            gamma[o + L - 1, k] = alpha[L - 1, k]
        for t in range(L - 2, -1, -1):
            for k in range(K):
                q[k] = b[ob + t + 1, k] * beta[k] * inv_c[t + 1]
            for j in range(K):
                a = alpha[t, j]
                v = 0.0
                for k in range(K):
                    acc[j, k] += a * q[k]
                    v += q[k] * transmat[j, k]
                beta_prev[j] = v
            for k in range(K):
                beta[k] = beta_prev[k]
                gamma[o + t, k] = alpha[t, k] * beta[k]
        for j in range(K):
            for k in range(K):
                xi_seq[s, j, k] = transmat[j, k] * acc[j, k]


@numba.njit(**_JIT)
def shift_rows(lb, b, m):
    """``m[i] = max(lb[i])`` and ``b[i] = lb[i] - m[i]`` in one pass (NumPy then takes ``exp``)."""
    K = lb.shape[1]
    for i in range(lb.shape[0]):
        mx = lb[i, 0]
        for k in range(1, K):
            mx = max(mx, lb[i, k])
        m[i] = mx
        for k in range(K):
            b[i, k] = lb[i, k] - mx


@numba.njit(**_JIT)
def forward_scaled(startprob, transmat, logb, starts, lengths, lo, hi, ll):
    """Scaled forward pass only: ``ll[s]`` for sequences lo..hi-1 (NaN: not :func:`kept`,
    recompute it in log space)."""
    K = transmat.shape[0]
    trans_t = np.ascontiguousarray(transmat.T)  # row k: the transitions into state k
    alpha = np.empty(K)
    nxt = np.empty(K)
    b = np.empty(K)
    fragile = scaling_fragile(transmat)
    for s in range(lo, hi):
        o, L = starts[s], lengths[s]
        log_c = 0.0
        min_c = 1.0
        m_sum = 0.0
        for t in range(L):
            row = logb[o + t]
            mx = row[0]
            for k in range(1, K):
                mx = max(mx, row[k])
            m_sum += mx
            for k in range(K):
                b[k] = np.exp(row[k] - mx)
            if t == 0:
                for k in range(K):
                    nxt[k] = startprob[k] * b[k]
            else:
                for k in range(K):
                    v = 0.0
                    for j in range(K):
                        v += alpha[j] * trans_t[k, j]
                    nxt[k] = v * b[k]
            c = 0.0
            for k in range(K):
                c += nxt[k]
            for k in range(K):
                alpha[k] = nxt[k] / c
            log_c += np.log(c)
            min_c = min(min_c, c)
        # a subnormal factor has lost precision (or, with a zero transition, the factors
        # multiply below TINY): NaN asks the caller for log space
        total = log_c + m_sum
        ll[s] = total if kept(total, min_c, log_c, fragile) else np.nan


@numba.njit(**_JIT)
def sum_first_axis(values, out):
    """``out = values.sum(0)`` added in index order (a fixed, thread-count-free order)."""
    out[...] = 0.0
    flat_out = out.reshape(-1)
    for i in range(values.shape[0]):
        flat_in = values[i].reshape(-1)
        for k in range(flat_out.shape[0]):
            flat_out[k] += flat_in[k]


# ---------------------------------------------------------------- exact log space
@numba.njit(nogil=True, cache=True, error_model="numpy")  # no fastmath: exact log space
def _lse_row(v, K):
    mx = -np.inf
    for i in range(K):
        if v[i] > mx:
            mx = v[i]
    if mx == -np.inf:
        return -np.inf
    acc = 0.0
    for i in range(K):
        acc += np.exp(v[i] - mx)
    return mx + np.log(acc)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _shares_row(v, K):
    """``v[:K]`` (log weights) replaced by ``exp(v - max) / sum``, in place."""
    mx = -np.inf
    for i in range(K):
        if v[i] > mx:
            mx = v[i]
    acc = 0.0
    for i in range(K):
        v[i] = np.exp(v[i] - mx)
        acc += v[i]
    for i in range(K):
        v[i] = v[i] / acc


@numba.njit(nogil=True, cache=True, error_model="numpy")
def fb_log(log_s, log_a, logb, starts, lengths, seqs, gamma, ll, xi):
    """Exact log-space forward-backward of sequences ``seqs`` (stop 28: a model with a
    zero transition runs here): ``ll[q]`` for ``seqs[q]``, its gamma rows in ``gamma``
    (NaN where p(x) = 0), its expected transitions added to ``xi``; each step's posteriors
    normalised by their own sum. The arithmetic of
    ``forward_backward._forward_backward_log``, per sequence and compiled."""
    K = log_s.shape[0]
    v = np.empty(K)
    w = np.empty(K * K)
    for q in range(seqs.shape[0]):
        s = seqs[q]
        r0, T = starts[s], lengths[s]
        la = np.empty((T, K))
        lbt = np.empty((T, K))
        for j in range(K):
            la[0, j] = log_s[j] + logb[r0, j]
        for t in range(1, T):
            for j in range(K):
                for i in range(K):
                    v[i] = la[t - 1, i] + log_a[i, j]
                la[t, j] = _lse_row(v, K) + logb[r0 + t, j]
        total = _lse_row(la[T - 1], K)
        ll[q] = total
        for j in range(K):
            lbt[T - 1, j] = 0.0
        for t in range(T - 2, -1, -1):
            for i in range(K):
                for j in range(K):
                    v[j] = log_a[i, j] + logb[r0 + t + 1, j] + lbt[t + 1, j]
                lbt[t, i] = _lse_row(v, K)
        if not np.isfinite(total):  # p(x) = 0: posteriors undefined, no counts
            for t in range(T):
                for k in range(K):
                    gamma[r0 + t, k] = np.nan
            continue
        # each step's posteriors normalised by their own sum (log p(x) up to the rounding
        # that log-alpha and log-beta gathered on the way: ~1e-11 absolute per step at
        # |log p(x)| ~ 1e5, common to the step's terms, so it cancels): gamma's rows and
        # each step's xi sum to 1
        # (exp(v - max) / sum, not exp(v - logsumexp): at |log p(x)| ~ 1e6 the log-sum-exp
        # carries ~1e-10 of rounding, and rows summed to 1 only within that; stop 31)
        for t in range(T):
            for k in range(K):
                v[k] = la[t, k] + lbt[t, k]
            _shares_row(v, K)
            for k in range(K):
                gamma[r0 + t, k] = v[k]
            if t < T - 1:
                for i in range(K):
                    for j in range(K):
                        w[i * K + j] = la[t, i] + log_a[i, j] + logb[r0 + t + 1, j] + lbt[t + 1, j]
                _shares_row(w, K * K)
                for i in range(K):
                    for j in range(K):
                        xi[i, j] += w[i * K + j]


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
