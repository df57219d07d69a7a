"""Batched forward-backward: log-likelihoods, state posteriors and expected transitions.

Two implementations give the same results (to 1e-12 relative):

- **compiled** (numba, :mod:`tying.hmm.compiled`): one sequence at a time in
  compiled code, the sequences spread over ``n_jobs`` threads, each writing
  only its own rows; the per-sequence transition counts are summed in
  sequence order, so results do not depend on the thread count. Used
  whenever numba imports.
- **NumPy** (the fallback, and the reference the compiled kernels are tested
  against): the recursions loop over time and are vectorised over sequences
  and states. Sequences of different lengths share one padded, longest-first
  layout (:class:`~tying.hmm.sequences.SequenceBatch`), so at each step the
  running sequences are a prefix of the batch. Its cost is per-step
  interpreter overhead (about 28 us a step for 200 sequences of 8 states),
  which the compiled kernels remove (``docs/hmm-performance.md``).

Both run the **scaled** recursion (Rabiner): each step's emission
probabilities are divided by their largest value and each forward vector is
normalised to sum to one, so nothing underflows however long the sequence is;
the log-likelihood is the sum of the logs of those factors. A step can only
fail when every state the chain can reach emits less than ``exp(-745)`` times
the best state, which needs an observation thousands of standard deviations
out. Those sequences alone are recomputed in **log space** (exact
log-sum-exp), so the result is right either way.

Example:
    >>> import numpy as np
    >>> from tying.hmm.sequences import SequenceBatch, check_recursion_inputs
    >>> A = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> logB = np.log([[0.5, 0.1], [0.5, 0.1], [0.1, 0.7]])     # 3 steps, 2 states
    >>> post = forward_backward(np.array([0.5, 0.5]), A, logB, SequenceBatch.from_lengths([3]))
    >>> round(float(post.log_likelihood[0]), 6), post.gamma.shape
    (-3.791134, (3, 2))
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp

from tying.hmm import arenas, compiled, vector_exp, windows
from tying.hmm.lane_layout import (  # noqa: F401  (re-exported: fb.<name> as before)
    _PLANS,
    _PLANS_KEPT,
    _PLANS_LOCK,
    LaneLayout,
    _deal_rows,
    _frozen_copy,
    _read_only_view,
    _unit_plans,
    _windows,
)
from tying.hmm.sequences import (
    SequenceBatch,
    check_recursion_inputs,
    refuse_undefined_emissions,
)

__all__ = [
    "GaussianStats",
    "LaneLayout",
    "Posteriors",
    "forward_backward",
    "forward_backward_stats",
    "forward_log_likelihood",
]

#: Smallest scaling factor trusted: below it a factor is subnormal (it has lost
#: precision) and its inverse overflows, so the sequence is recomputed in log space.
TINY = 1e-290

#: Smallest transition probability for which the scaled recursions are exact as they
#: stand. Scaling keeps alpha normalised, so a state whose mass ``alpha_k * b_k`` falls
#: below float64's range is dropped (0), not kept tiny. When every transition is at
#: least ``a_min``, a dropped state is refilled from the others at the next step and the
#: paths lost are at most ``1e-308 / a_min`` of the total (they continue as well as the
#: kept ones, up to ``a_min``): nothing measurable. With a zero (an absorbing state, a
#: left-right chain) a dropped state can stay empty while the data come to favour it,
#: and the scaled likelihood silently followed the paths left (stop 28 review: -5613.24
#: for an absorbing model whose log-likelihood is -1950.05; 105 of 200 random models
#: with zeros were wrong). Such models keep the scaled recursion only for sequences whose
#: scaling factors multiply to at least ``TINY`` (:data:`LOG_TINY`); the others run in
#: exact log space. A column of zeros (a state no state enters: only the start can put
#: mass there) does not count: ``beta_t(k) = sum_l A[k, l] b_l beta_{t+1}(l)`` is then
#: at most ``beta_t(j) / a_min`` for any states k and j, which is all the bound above uses
#: (stop 30).
EXACT_SCALING_MIN_TRANSITION = 1e-250

#: Smallest log of the product of a sequence's scaling factors for which the scaled
#: recursion is trusted in a model with a (near-)zero transition. The factors are at most
#: 1 (emissions are shifted by their row maximum, transitions are stochastic). A value
#: dropped by underflow at step s is below 2**-1074 of the normalised alpha (or beta) it
#: belongs to; from there on it is carried by transitions and shifted emissions, whose
#: norms are at most 1, while the kept mass shrinks by the later factors. So each such
#: drop changes the likelihood, and any posterior, by at most 2**-1074 / prod(c)
#: relative, and a sequence of T steps and K states has at most T * (K + K**2) of them:
#: with ``prod(c) >= TINY`` that is below T * K**2 * 5e-34 (5e-22 for T * K**2 = 1e12).
#: A smaller product, which is what the wrong answers above had (-5613.24 scaled against
#: a shift sum near -1950: a product near e**-3660), sends the sequence to log space.
LOG_TINY = float(np.log(TINY))


def scaling_is_exact(transmat: np.ndarray) -> bool:
    """Whether the scaled recursions are exact for ``transmat`` whatever the data (see
    :data:`EXACT_SCALING_MIN_TRANSITION`); otherwise a sequence keeps its scaled result
    only when its scaling factors multiply to at least ``TINY`` (:data:`LOG_TINY`).

    Only the columns of states that some state enters count: a state no state enters
    (a column of zeros) is exact too.

    Example:
        >>> scaling_is_exact(np.array([[0.9, 0.1], [0.2, 0.8]]))
        True
        >>> scaling_is_exact(np.array([[1.0, 0.0], [0.2, 0.8]]))   # state 0 absorbs
        False
        >>> scaling_is_exact(np.array([[0.0, 1.0], [0.0, 1.0]]))   # no state enters 0
        True
    """
    A = np.asarray(transmat, dtype=np.float64)
    if not np.isfinite(A).all():
        return False
    entered = A.max(axis=0) > 0.0  # a column of zeros: a state only the start reaches
    return bool(entered.any() and A[:, entered].min() > EXACT_SCALING_MIN_TRANSITION)


@dataclasses.dataclass
class Posteriors:
    """What the E-step hands the M-step.

    Attributes:
        log_likelihood: ``(n_sequences,)`` log p(x) per sequence, caller's order.
        gamma: ``(n_samples, K)`` state posteriors per row of ``X``.
        xi_sum: ``(K, K)`` expected transition counts summed over all sequences.
        start: ``(K,)`` posteriors at time 0 summed over sequences.
        n_log_space: how many sequences needed the log-space fallback.
        stats: emission sufficient statistics when the E-step computed them
            itself (:func:`forward_backward_stats`; ``gamma`` is None then).
    """

    log_likelihood: np.ndarray
    gamma: np.ndarray
    xi_sum: np.ndarray
    start: np.ndarray
    n_log_space: int = 0
    stats: object = None


def forward_log_likelihood(
    startprob: np.ndarray,
    transmat: np.ndarray,
    log_emission: np.ndarray,
    batch: SequenceBatch,
    *,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Log-likelihood of every sequence (forward pass only).

    Args:
        startprob: ``(K,)`` initial state distribution.
        transmat: ``(K, K)`` row-stochastic transition matrix.
        log_emission: ``(n_samples, K)`` log p(x_t | state) for every row of ``X``.
        batch: the layout of the sequences in ``X``.
        n_jobs: threads to spread sequences over (compiled kernels only); None
            uses :func:`tying.hmm.compiled.set_n_jobs`'s default (1). The
            result does not depend on it.

    Returns:
        ``(n_sequences,)`` log-likelihoods in the caller's sequence order.

    Raises:
        ValueError: for an ``n_jobs`` that is not a positive integer or -1, or arrays
            whose shapes do not fit each other or ``batch``
            (:func:`~tying.hmm.sequences.check_recursion_inputs`).

    Example:
        >>> from tying.hmm.sequences import SequenceBatch, check_recursion_inputs
        >>> ll = forward_log_likelihood(np.ones(1), np.ones((1, 1)), np.zeros((4, 1)),
        ...                             SequenceBatch.from_lengths([3, 1]))
        >>> ll.tolist()
        [0.0, 0.0]
    """
    check_recursion_inputs("forward_log_likelihood", startprob, transmat, log_emission, batch)
    n_jobs = compiled.resolve_n_jobs(n_jobs)
    kernels = compiled._kernels()
    start, A, logb = _as_f64(startprob, transmat, log_emission)
    if kernels is None:
        ll = _forward_log_likelihood_numpy(start, A, logb, batch)
    else:
        ll = np.empty(batch.n_sequences)
        compiled._run_chunks(
            lambda lo, hi: kernels.forward_scaled(
                start, A, logb, batch.starts, batch.lengths, lo, hi, ll
            ),
            batch.n_sequences,
            n_jobs,
        )
        # NaN: the kernel did not keep the scaled result (kernels.kept: a failed factor,
        # or in a model with a zero transition a factor product below TINY)
        bad = np.flatnonzero(~np.isfinite(ll))
        if bad.size:
            ll[bad] = _log_space_subset(start, A, logb, batch, bad, posteriors=False)
    refuse_undefined_emissions("forward_log_likelihood", log_emission, batch, ll)
    return ll


def _forward_log_likelihood_numpy(startprob, transmat, log_emission, batch):
    """The NumPy forward pass (padded, vectorised over sequences): the reference path."""
    lb = batch.pad(log_emission)  # (T, B, K)
    alpha, c, m = _forward_scaled(startprob, transmat, lb, batch.n_active)
    bad, ll = _scaling_failed(c, m, transmat)
    if bad.size:
        sub_lb, sub_active = _subset(lb, batch, bad)
        la = _forward_log(startprob, transmat, sub_lb, sub_active)
        last = batch.sorted_lengths[bad] - 1
        ll[bad] = logsumexp(la[last, np.arange(len(bad))], axis=1)
    return batch.per_sequence(ll)


def forward_backward(
    startprob: np.ndarray,
    transmat: np.ndarray,
    log_emission: np.ndarray,
    batch: SequenceBatch,
    *,
    n_jobs: int | None = None,
) -> Posteriors:
    """Forward-backward over a batch of sequences: the E-step of Baum-Welch.

    Args:
        startprob: ``(K,)`` initial state distribution.
        transmat: ``(K, K)`` row-stochastic transition matrix.
        log_emission: ``(n_samples, K)`` log p(x_t | state) for every row of ``X``.
        batch: the layout of the sequences in ``X``.
        n_jobs: threads to spread sequences over (compiled kernels only); None
            uses :func:`tying.hmm.compiled.set_n_jobs`'s default (1). Results
            are bit-identical for every value.

    Returns:
        A :class:`Posteriors`.

    Raises:
        ValueError: for an ``n_jobs`` that is not a positive integer or -1, or arrays
            whose shapes do not fit each other or ``batch``
            (:func:`~tying.hmm.sequences.check_recursion_inputs`).

    Example:
        >>> from tying.hmm.sequences import SequenceBatch, check_recursion_inputs
        >>> A = np.array([[0.5, 0.5], [0.5, 0.5]])
        >>> post = forward_backward(np.array([1.0, 0.0]), A, np.zeros((2, 2)),
        ...                         SequenceBatch.from_lengths([2]))
        >>> post.gamma.tolist(), post.xi_sum.tolist()
        ([[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 0.0]])
    """
    check_recursion_inputs("forward_backward", startprob, transmat, log_emission, batch)
    n_jobs = compiled.resolve_n_jobs(n_jobs)
    kernels = compiled._kernels()
    if kernels is None:
        post = _forward_backward_numpy(startprob, transmat, log_emission, batch)
        refuse_undefined_emissions("forward_backward", log_emission, batch, post.log_likelihood)
        return post
    start, A, logb = _as_f64(startprob, transmat, log_emission)
    n_seq, K = batch.n_sequences, A.shape[0]
    gamma = np.empty((batch.n_samples, K))
    ll = np.empty(n_seq)
    xi_seq = np.empty((n_seq, K, K))  # per sequence, reduced below in sequence order
    bad = np.zeros(n_seq, dtype=np.bool_)
    starts, lengths = batch.starts, batch.lengths

    def work(lo, hi):  # sequences lo..hi-1 are rows r0..r1-1 of X
        r0, r1 = starts[lo], starts[hi - 1] + lengths[hi - 1]
        b, m = _shifted_exp(logb[r0:r1], kernels)
        # bad: the kernel did not keep the scaled result (kernels.kept), gamma and xi zeroed
        kernels.fb_scaled(start, A, b, m, r0, starts, lengths, lo, hi, gamma, ll, xi_seq, bad)

    compiled._run_chunks(work, n_seq, n_jobs)
    xi_sum = np.empty((K, K))
    kernels.sum_first_axis(xi_seq, xi_sum)
    bad = np.flatnonzero(bad)
    if bad.size:
        ll[bad], xi_bad = _log_space_subset(start, A, logb, batch, bad, posteriors=True, out=gamma)
        xi_sum = xi_sum + xi_bad
    refuse_undefined_emissions("forward_backward", log_emission, batch, ll)
    first = np.empty(K)
    kernels.sum_first_axis(gamma[batch.starts], first)
    return Posteriors(
        log_likelihood=ll, gamma=gamma, xi_sum=xi_sum, start=first, n_log_space=int(bad.size)
    )


def _shifted_exp(lb, kernels):
    """``(exp(lb - m), m)`` with ``m`` the row maxima: emission probabilities / their max.

    The maxima and the shift are one compiled pass; the ``exp`` has NumPy's bits,
    vectorised (NumPy's SIMD loop, or :mod:`tying.hmm.vector_exp` where NumPy's is
    scalar), which beats a compiled scalar ``exp``; both release the GIL, so chunks
    on different threads overlap. A row with no finite entry gives NaN, which the
    kernel reports as a failed (log-space) sequence.
    """
    b = np.empty_like(lb)
    m = np.empty(lb.shape[0])
    kernels.shift_rows(lb, b, m)
    vector_exp.exp_in_place(b)  # NaN from -inf - -inf: flagged by the kernel
    return b, m


def _as_f64(startprob, transmat, log_emission):
    """C-contiguous float64 copies only where needed (the kernels index rows directly)."""
    return (
        np.ascontiguousarray(startprob, dtype=np.float64),
        np.ascontiguousarray(transmat, dtype=np.float64),
        np.ascontiguousarray(log_emission, dtype=np.float64),
    )


def _log_space_subset(start, A, logb, batch, seqs, *, posteriors, out=None):
    """Exact log-space recursion for sequences ``seqs`` (caller's order) that scaling failed.

    Returns their log-likelihoods, and with ``posteriors`` also their summed
    expected transitions while writing their gamma rows into ``out``.
    """
    kernels = compiled._kernels()
    if kernels is not None:  # compiled, per sequence, on the rows where they are
        K = A.shape[0]
        with np.errstate(divide="ignore"):
            log_s, log_a = np.log(start), np.log(A)
        ll = np.empty(len(seqs))
        xi = np.zeros((K, K))
        gamma = out if posteriors else np.empty((batch.n_samples, K))
        idx = np.ascontiguousarray(seqs, dtype=np.int64)
        kernels.fb_log(log_s, log_a, logb, batch.starts, batch.lengths, idx, gamma, ll, xi)
        return (ll, xi) if posteriors else ll
    sub = SequenceBatch(batch.lengths[seqs])
    rows = np.concatenate(
        [np.arange(batch.starts[s], batch.starts[s] + batch.lengths[s]) for s in seqs]
    )
    lb = sub.pad(logb[rows])
    if not posteriors:
        la = _forward_log(start, A, lb, sub.n_active)
        last = sub.sorted_lengths - 1
        return sub.per_sequence(logsumexp(la[last, np.arange(len(seqs))], axis=1))
    ll, g, xi = _forward_backward_log(start, A, lb, sub.n_active)
    out[rows] = sub.unpad(g)
    return sub.per_sequence(ll), xi


def _forward_backward_numpy(startprob, transmat, log_emission, batch):
    """The NumPy forward-backward (padded, vectorised over sequences): the reference path."""
    n_active = batch.n_active
    lb = batch.pad(log_emission)  # (T, B, K)
    alpha, c, m, b = _forward_scaled(startprob, transmat, lb, n_active, keep_b=True)
    T, B, K = lb.shape
    bad, ll = _scaling_failed(c, m, transmat)
    if bad.size:  # keep their junk out of the sums; recomputed in log space below
        alpha[:, bad] = 0.0
        c[:, bad] = 1.0
    # backward, storing q[t] = b[t] * beta[t] / c[t], which is what both the
    # recursion and the transition counts need
    beta = np.zeros((T, B, K))
    q = np.zeros((T, B, K))
    beta[T - 1, : n_active[T - 1]] = 1.0
    At = np.ascontiguousarray(transmat.T)
    inv_c = 1.0 / c  # (T, B); multiplying beats dividing inside the loop
    # an underflowing ("bad") sequence may overflow here; its values are discarded below
    # and recomputed in log space, so the overflow is not the caller's business
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T - 2, -1, -1):
            n1, n0 = n_active[t + 1], n_active[t]
            qt = q[t + 1, :n1]
            np.multiply(b[t + 1, :n1], beta[t + 1, :n1], out=qt)
            qt *= inv_c[t + 1, :n1, None]
            np.matmul(qt, At, out=beta[t, :n1])
            beta[t, n1:n0] = 1.0  # sequences whose last step is t
    if bad.size:
        beta[:, bad] = 0.0
        q[:, bad] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        gamma_pad = alpha * beta  # (T, B, K)
        xi_sum = transmat * (alpha[:-1].reshape(-1, K).T @ q[1:].reshape(-1, K))  # (K, K)
    if bad.size:
        sub_lb, sub_active = _subset(lb, batch, bad)
        ll_bad, g_bad, xi_bad = _forward_backward_log(startprob, transmat, sub_lb, sub_active)
        ll[bad] = ll_bad
        gamma_pad[: g_bad.shape[0], bad] = g_bad  # the subset is as long as its longest
        xi_sum = xi_sum + xi_bad
    gamma = batch.unpad(gamma_pad)
    return Posteriors(
        log_likelihood=batch.per_sequence(ll),
        gamma=gamma,
        xi_sum=xi_sum,
        start=gamma_pad[0].sum(0),
        n_log_space=int(bad.size),
    )


# ------------------------------------------------------------------ kernels
def _forward_scaled(startprob, transmat, lb, n_active, keep_b=False):
    """Scaled forward pass; returns alpha (T,B,K), factors c (T,B), shifts m (T,B)."""
    T, B, K = lb.shape
    m = lb[..., 0].copy()  # (T, B) max over states; 0 on padding, which is all-zero
    for k in range(1, K):  # K strided maxima beat one reduction over a length-K axis
        np.maximum(m, lb[..., k], out=m)
    with np.errstate(invalid="ignore"):  # a step no state can emit gives NaN: handled by caller
        b = lb - m[:, :, None]
    np.exp(b, out=b)  # (T, B, K), emission probabilities / their max
    alpha = np.zeros((T, B, K))
    c = np.ones((T, B))
    tmp = np.empty((B, K))
    ones = np.ones(K)  # row sums as a mat-vec: several times faster than .sum(1) at this size
    with np.errstate(divide="ignore", invalid="ignore"):
        np.multiply(startprob, b[0], out=alpha[0])
        np.matmul(alpha[0], ones, out=c[0])
        alpha[0] /= c[0][:, None]
        for t in range(1, T):
            n = n_active[t]
            a = tmp[:n]
            np.matmul(alpha[t - 1, :n], transmat, out=a)  # (n, K)
            a *= b[t, :n]
            ct = c[t, :n]
            np.matmul(a, ones, out=ct)
            np.divide(a, ct[:, None], out=alpha[t, :n])
    return (alpha, c, m, b) if keep_b else (alpha, c, m)


def _scaling_failed(c, m, transmat):
    """The padded slots whose scaled pass cannot be trusted, and every slot's ``ll``.

    A failed slot has a non-finite ``ll``, a subnormal factor (its inverse overflows), or,
    in a model that is not :func:`scaling_is_exact`, factors whose product is below
    ``TINY`` (:data:`LOG_TINY`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_c = np.log(c).sum(0)  # (B,)
        ll = log_c + m.sum(0)
        bad = ~np.isfinite(ll) | (c < TINY).any(0)
        if not scaling_is_exact(transmat):
            bad |= ~(log_c >= LOG_TINY)
    return np.flatnonzero(bad), ll


def _subset(lb, batch, slots):
    """The padded emissions and running counts of a subset of batch slots."""
    lengths = batch.sorted_lengths[slots]  # still longest first
    T = int(lengths[0])
    sub = lb[:T, slots]
    n_active = np.searchsorted(-lengths, -np.arange(T), side="left")
    return sub, n_active


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """``log(sum(exp(x), axis))`` with the max shift; -inf where every term is -inf.

    scipy's ``logsumexp`` costs about 0.45 ms a call in checks and dispatch, which was
    80 % of the log-space E-step (two calls per time step); this is its arithmetic."""
    m = x.max(axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0.0  # an all -inf slice: exp(-inf) = 0, log(0) = -inf below
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m).sum(axis=axis)) + np.squeeze(m, axis=axis)


def _forward_log(startprob, transmat, lb, n_active):
    T, B, K = lb.shape
    with np.errstate(divide="ignore"):
        log_a, log_s = np.log(transmat), np.log(startprob)
    la = np.full((T, B, K), -np.inf)
    la[0] = log_s + lb[0]
    for t in range(1, T):
        n = n_active[t]
        la[t, :n] = _lse(la[t - 1, :n, :, None] + log_a, axis=1) + lb[t, :n]
    return la


def _shares(log_w: np.ndarray, axis: int) -> np.ndarray:
    """``exp(log_w)`` divided by its sum along ``axis``: ``exp(w - max) / sum``, not
    ``exp(w - logsumexp(w))``. At |log p(x)| ~ 1e6 the log-sum-exp itself carries ~1e-10
    of rounding, and the rows summed to 1 only within that (stop 31, a 1e5-step sequence);
    the division makes each row sum to 1 within a few ulps."""
    e = np.exp(log_w - np.max(log_w, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _forward_backward_log(startprob, transmat, lb, n_active):
    """Exact log-space forward-backward for the few sequences scaling cannot handle."""
    T, B, K = lb.shape
    with np.errstate(divide="ignore"):
        log_a = np.log(transmat)
    la = _forward_log(startprob, transmat, lb, n_active)
    lbeta = np.full((T, B, K), -np.inf)
    lengths = np.array([int(np.sum(n_active > i)) for i in range(B)])
    lbeta[lengths - 1, np.arange(B)] = 0.0
    xi = np.zeros((K, K))
    ll = logsumexp(la[lengths - 1, np.arange(B)], axis=1)  # (B,)
    ok = np.isfinite(ll)  # sequences with p(x) = 0 contribute no counts
    for t in range(T - 2, -1, -1):
        n1 = n_active[t + 1]
        nxt = lb[t + 1, :n1] + lbeta[t + 1, :n1]  # (n1, K)
        lbeta[t, :n1] = _lse(log_a + nxt[:, None, :], axis=2)
        keep = np.flatnonzero(ok[:n1])
        log_xi = la[t, keep, :, None] + log_a + nxt[keep, None, :]
        flat = log_xi.reshape(len(keep), K * K)
        xi += _shares(flat, axis=1).reshape(log_xi.shape).sum(0)  # step t's own sum (below)
    # each step's posteriors normalised by their own sum (log p(x) up to the rounding that
    # log-alpha and log-beta gathered on the way: ~1e-11 absolute per step at |log p(x)|
    # ~ 1e5, common to the step's terms, so it cancels): gamma's rows and each step's xi
    # sum to 1
    log_g = la + lbeta
    with np.errstate(invalid="ignore"):  # p(x) = 0: posteriors are undefined (NaN)
        gamma = _shares(log_g, axis=2)
    gamma[np.arange(T)[:, None] >= lengths] = 0.0  # padding, as before
    gamma[:, ~ok] = np.nan
    return ll, gamma, np.nan_to_num(xi)


# ------------------------------------------------- fused E-step with statistics
@dataclasses.dataclass
class GaussianStats:
    """Per-state sufficient statistics of a Gaussian E-step (data centred on ``center``).

    Attributes:
        n: ``(K,)`` sum of the posteriors.
        sx: ``(K, D)`` sum of gamma * (x - center).
        sxx: ``(K, D)`` sum of gamma * (x - center)^2 (diagonal), or ``(K, D, D)``
            sum of gamma * (x - center)(x - center)^T (full).
    """

    n: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray


def forward_backward_stats(
    startprob: np.ndarray,
    transmat: np.ndarray,
    X: np.ndarray,
    center: np.ndarray,
    batch: SequenceBatch,
    layout: LaneLayout,
    density,
    log_emission,
    *,
    full: bool,
    n_jobs: int | None = None,
) -> Posteriors:
    """Forward-backward fused with the Gaussian sufficient statistics (compiled only).

    One pass per work unit of sequences (``layout``): ``density(unit, b, m)``
    writes the unit's shifted log-densities in lane layout, NumPy takes their
    ``exp`` (SIMD), and one compiled kernel runs the scaled forward-backward
    over the unit's sequences at once (vectorised across them) and adds each
    posterior straight into the unit's sums; no ``(n_samples, K)`` posterior
    array is written. Units run on ``n_jobs`` threads and their sums are added
    in unit order: bit-identical results for every thread count. Sequences
    whose scaling fails are recomputed exactly in log space from
    ``log_emission(X_rows)``, as in :func:`forward_backward`.

    Args:
        startprob, transmat: as in :func:`forward_backward`.
        X: ``(n_samples, D)`` observations (for the log-space fallback).
        center: ``(D,)`` the statistics are of ``X - center`` (as in ``layout``).
        batch: the layout of the sequences in ``X``.
        layout: :class:`LaneLayout` of ``X``, ``center`` and ``batch``.
        density: ``density(unit, b, m)`` fills ``m[t, s] = max_k log p`` and
            ``b[t, k, s] = log p - m[t, s]`` for the unit's lanes (padding 0).
        log_emission: ``log_emission(rows_of_X) -> (n, K)`` log-densities, for
            the log-space fallback.
        full: full ``(D, D)`` second moments (else diagonal ``(D,)``).
        n_jobs: threads (None: the module default); results do not depend on it.

    Returns:
        :class:`Posteriors` with ``gamma=None`` and ``stats``, a :class:`GaussianStats`.

    Raises:
        RuntimeError: when the compiled kernels are unavailable (use
            :func:`forward_backward` and the NumPy statistics then).
        ValueError: for a bad ``n_jobs``, or a ``layout`` made for another ``X``,
            ``center`` or other sequence lengths (its statistics would be silently wrong).

    Example:
        >>> from tying.hmm import compiled
        >>> X = np.array([[0.0], [1.0], [5.0]])
        >>> def density(unit, b, m):  # one state, N(0, 1), on the unit's rows in lanes
        ...     m[:] = -0.5 * unit["XL"][:, 0, :] ** 2 - 0.5 * np.log(2 * np.pi)
        ...     b[:] = 0.0
        >>> logp = lambda x: -0.5 * x**2 - 0.5 * np.log(2 * np.pi)
        >>> batch = SequenceBatch.from_lengths([2, 1])
        >>> if compiled.available():
        ...     lay = LaneLayout(X, np.zeros(1), batch)
        ...     post = forward_backward_stats(np.ones(1), np.ones((1, 1)), X, np.zeros(1),
        ...         batch, lay, density, logp, full=False)
        ...     print(post.stats.n.tolist(), post.stats.sx.tolist(), post.stats.sxx.tolist())
        ... else:
        ...     print("[3.0] [[6.0]] [[26.0]]")
        [3.0] [[6.0]] [[26.0]]
    """
    n_jobs = compiled.resolve_n_jobs(n_jobs)
    kernels = compiled._kernels()
    if kernels is None:
        raise RuntimeError(
            "forward_backward_stats needs the compiled kernels (numba); use forward_backward "
            "and compute the statistics from its gamma instead"
        )
    start = np.ascontiguousarray(startprob, dtype=np.float64)
    A = np.ascontiguousarray(transmat, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    center = np.ascontiguousarray(center, dtype=np.float64)
    if not np.array_equal(center, layout.center) or not np.array_equal(
        batch.lengths, layout.lengths
    ):
        raise ValueError(
            f"layout was made for center {layout.center} and {len(layout.lengths)} sequences "
            f"of lengths {layout.lengths[:5]}..., got center {center} and "
            f"{batch.n_sequences} sequences of lengths {batch.lengths[:5]}...; build the "
            f"LaneLayout from the same X, center and batch"
        )
    if X is not layout.X and not np.array_equal(X, layout.X):  # a model passes layout.X
        raise ValueError(
            f"layout was made for another X (shape {layout.X.shape}), got X of shape "
            f"{X.shape} with other values: its lanes hold copies of the X it was made for, so "
            f"the statistics would be of that data; build the LaneLayout from the same X, "
            f"center and batch"
        )
    layout.fill(n_jobs)  # a layout made with fill=False copies its lanes on first use
    n_seq, K, D = batch.n_sequences, A.shape[0], X.shape[1]
    U = len(layout.units)
    ll = np.empty(n_seq)
    bad = np.zeros(n_seq, dtype=np.bool_)
    ll_u = [None] * U
    bad_u = [None] * U
    # each unit's sums on cache lines of their own: added to at every step, they shared a
    # line with the next unit's on another core (see _numba_em.private_scratch)
    sums = arenas.carve(
        [{"xi": (K, K), "first": (K,), "n": (K,), "sx": (D, K), "sxx": (D, D if full else 1, K)}]
        * U
    )

    layout.prepare(K)  # here, not in the threads: one allocation for every unit

    def work(u):
        unit = layout.units[u]
        b, alpha = layout.scratch(u, K)
        m = unit["m"]
        density(unit, b, m)
        vector_exp.exp_in_place(b)  # NaN rows: flagged by the kernel
        if unit["kind"] == "rows":  # windows in the lanes, else one sequence at a time;
            # writes ll, bad of its own (the compiled EM loop calls the same kernel)
            from tying.hmm._numba_windows import rows_windows_fb_stats

            args = (start, A, b, m, unit["XcL"], unit["r0"], batch.starts, batch.lengths,
                    unit["lo"], unit["hi"], full, alpha, unit["inv_c"], ll, bad,
                    *sums[u].values())  # fmt: skip
            # a unit with a windows layout (diag: from MIN_ROWS_DIAG rows) runs windows
            # from there, as the compiled loop does; the others from MIN_ROWS
            rows_windows_fb_stats(
                *args, windows.MIN_ROWS_DIAG if "win" in unit else windows.MIN_ROWS
            )
            return
        ll_u[u], bad_u[u] = np.empty(len(unit["seqs"])), np.empty(len(unit["seqs"]), np.bool_)
        kernels.lanes_fb_stats(
            start, A, b, m, unit["n_act"], unit["lens"], unit["XcL"], full, alpha, unit["ic"],
            ll_u[u], bad_u[u], *sums[u].values(),
        )  # fmt: skip

    # a model with a zero transition: each kernel checks each sequence's factors itself
    # (kernels.kept, LOG_TINY), reports those it did not keep as bad (they add nothing to
    # the sums: recomputed in log space below) and runs no windows
    compiled._run_units(work, U, n_jobs, layout.cost)
    xi_u, first_u, n_u, sx_u, sxx_u = (np.stack([d[k] for d in sums]) for k in sums[0])
    for u, unit in enumerate(layout.units):
        if unit["kind"] == "lanes":
            ll[unit["seqs"]] = ll_u[u]
            bad[unit["seqs"]] = bad_u[u]
    xi_sum, first, n = xi_u.sum(0), first_u.sum(0), n_u.sum(0)
    sx = np.ascontiguousarray(sx_u.sum(0).T)  # (K, D)
    sxx_t = sxx_u.sum(0)  # (D, D|1, K)
    if full:
        sxx = np.ascontiguousarray(np.moveaxis(sxx_t, 2, 0))  # (K, D, D), lower triangle
        iu = np.triu_indices(D, 1)
        sxx[:, iu[0], iu[1]] = sxx[:, iu[1], iu[0]]
    else:
        sxx = np.ascontiguousarray(sxx_t[:, 0, :].T)  # (K, D)
    seqs = np.flatnonzero(bad)
    if seqs.size:
        rows = np.concatenate(
            [np.arange(batch.starts[s], batch.starts[s] + batch.lengths[s]) for s in seqs]
        )
        sub = SequenceBatch(batch.lengths[seqs])
        lb = np.ascontiguousarray(log_emission(X[rows]), dtype=np.float64)
        ll_bad, xi_bad = _log_space_subset(
            start, A, lb, sub, np.arange(len(seqs)), posteriors=True, out=(g := np.empty_like(lb))
        )
        ll[seqs] = ll_bad
        xi_sum = xi_sum + xi_bad
        first = first + g[sub.starts].sum(0)
        n_g, sx_g, sxx_g = _moments(g, X[rows] - center, full)
        n, sx, sxx = n + n_g, sx + sx_g, sxx + sxx_g
    return Posteriors(
        log_likelihood=ll,
        gamma=None,
        xi_sum=xi_sum,
        start=first,
        n_log_space=int(seqs.size),
        stats=GaussianStats(n=n, sx=sx, sxx=sxx),
    )


def _moments(gamma, xc, full):
    """``(n, sx, sxx)``: the posterior-weighted counts, sums and (full or diagonal) second
    moments of the centred rows ``xc``."""
    sxx = np.einsum("nk,nd,ne->kde", gamma, xc, xc) if full else gamma.T @ xc**2
    return gamma.sum(0), gamma.T @ xc, sxx
