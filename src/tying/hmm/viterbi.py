"""Batched Viterbi decoding: the most probable state path of every sequence.

Max-product in log space (no scaling needed: sums of logs never underflow),
looping over time and vectorised over sequences and states, on the same
longest-first padded layout as the forward-backward pass.

Example:
    >>> import numpy as np
    >>> from tying.hmm.sequences import SequenceBatch, check_recursion_inputs
    >>> A = np.array([[0.9, 0.1], [0.1, 0.9]])
    >>> logB = np.log([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8]])
    >>> log_p, path = viterbi(np.array([0.5, 0.5]), A, logB, SequenceBatch.from_lengths([2, 2]))
    >>> path.tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

import numpy as np

from tying.hmm import compiled
from tying.hmm.sequences import (
    SequenceBatch,
    check_recursion_inputs,
    refuse_undefined_emissions,
)

__all__ = ["viterbi"]

#: a batch whose longest sequence has at least this many rows is decoded by the compiled
#: kernel (:mod:`tying.hmm._numba_viterbi`, the same arithmetic): the NumPy loop's ~40 us
#: a step is per step of the longest sequence, which a long one pays alone. Every batch
#: since the review of stop 60: the kernel was 2.4-9x faster than the NumPy loop at short
#: shapes too (150 x 400, K=8: 12.8 vs 30.6 ms; 20 x 200, K=4: 0.38 vs 3.4 ms), with its bits
COMPILED_MIN_ROWS = 1


def viterbi(
    startprob: np.ndarray,
    transmat: np.ndarray,
    log_emission: np.ndarray,
    batch: SequenceBatch,
) -> tuple[np.ndarray, np.ndarray]:
    """Most probable state path of every sequence.

    Args:
        startprob: ``(K,)`` initial state distribution.
        transmat: ``(K, K)`` transition matrix.
        log_emission: ``(n_samples, K)`` log p(x_t | state) for every row of ``X``.
        batch: the layout of the sequences in ``X``.

    Returns:
        ``(log_prob, states)``: the log-probability of each best path
        ``(n_sequences,)`` in the caller's order, and the states ``(n_samples,)``
        aligned with the rows of ``X``.

    Raises:
        ValueError: for arrays whose shapes do not fit each other or ``batch``
            (:func:`~tying.hmm.sequences.check_recursion_inputs`).

    Example:
        >>> from tying.hmm.sequences import SequenceBatch, check_recursion_inputs
        >>> lp, s = viterbi(np.array([1.0, 0.0]), np.eye(2), np.zeros((3, 2)),
        ...                 SequenceBatch.from_lengths([3]))
        >>> float(lp[0]), s.tolist()
        (0.0, [0, 0, 0])
    """
    check_recursion_inputs("viterbi", startprob, transmat, log_emission, batch)
    if batch.t_max >= COMPILED_MIN_ROWS and compiled.available():
        log_prob, states = _viterbi_compiled(startprob, transmat, log_emission, batch)
        refuse_undefined_emissions("viterbi", log_emission, batch, log_prob)
        return log_prob, states
    n_active = batch.n_active
    lb = batch.pad(log_emission)  # (T, B, K)
    T, B, K = lb.shape
    with np.errstate(divide="ignore"):
        log_a, log_s = np.log(transmat), np.log(startprob)
    psi = np.zeros((T, B, K), dtype=np.int32)  # best predecessor of each state
    delta = log_s + lb[0]  # (B, K)
    final = np.empty((B, K))
    lengths = batch.sorted_lengths
    ends_at = np.searchsorted(-lengths, -np.arange(1, T + 1), side="left")  # = n_active[t+1]
    for t in range(1, T):
        n, n_prev = n_active[t], n_active[t - 1]
        final[n:n_prev] = delta[n:n_prev]  # sequences whose last step is t-1
        cand = delta[:n, :, None] + log_a  # (n, K_from, K_to)
        best = cand.argmax(axis=1)  # (n, K)
        psi[t, :n] = best
        delta = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0] + lb[t, :n]
    final[: n_active[T - 1]] = delta
    log_prob = final.max(axis=1)
    states = np.zeros((T, B), dtype=np.int64)
    cur = final.argmax(axis=1)  # (B,), valid at each slot's last step
    for t in range(T - 1, -1, -1):
        n = n_active[t]
        n_next = ends_at[t]  # slots still running at t+1 (their state at t+1 is known)
        if t + 1 < T:
            prev = psi[t + 1, np.arange(n_next), states[t + 1, :n_next]]
            states[t, :n_next] = prev
        states[t, n_next:n] = cur[n_next:n]  # slots whose last step is t
    log_prob = batch.per_sequence(log_prob)
    refuse_undefined_emissions("viterbi", log_emission, batch, log_prob)
    return log_prob, batch.unpad(states)


def _viterbi_compiled(startprob, transmat, log_emission, batch):
    """:func:`viterbi`'s results from the compiled kernel, one sequence at a time."""
    from tying.hmm import _numba_viterbi

    with np.errstate(divide="ignore"):
        log_a, log_s = np.log(transmat), np.log(startprob)
    # float32 inputs: where one of the three is float64 NumPy's loop promotes each term
    # to float64 as it adds it, and the kernel reads them converted once (exact): the
    # same sums. All three float32 (only by calling this function directly: the models
    # hold float64) the loop sums in float32 and the kernel in float64 (stop 60 review:
    # -10.84856415 vs -10.84856431); longdouble emissions are read as float64
    log_a = np.ascontiguousarray(log_a, dtype=np.float64)
    log_s = np.ascontiguousarray(log_s, dtype=np.float64)
    lb = np.ascontiguousarray(log_emission, dtype=np.float64)
    log_prob = np.empty(batch.n_sequences)
    states = np.zeros(batch.n_samples, dtype=np.int64)
    seqs = np.arange(batch.n_sequences, dtype=np.int64)
    _numba_viterbi.viterbi_sequences(
        log_s, log_a, lb, batch.starts, batch.lengths, seqs, log_prob, states
    )
    return log_prob, states
