"""numba kernel of the Viterbi recursion, one sequence at a time (stop 60).

:func:`tying.hmm.viterbi.viterbi` loops over time in Python, vectorised over the
sequences running at each step: for many sequences that is cheap per row, but one long
sequence pays the loop's ~40 us per step alone. Before stop 60 ``decode`` of one
sequence of 200,000 rows (K = 4, D = 2) took 8.0 s (hmmlearn's about 40 ms); 1e6 rows took
40 s. This kernel runs the same arithmetic in compiled code (for every batch of at least
:data:`tying.hmm.viterbi.COMPILED_MIN_ROWS` rows: 1, since it was faster at short
shapes too).

The arithmetic is the NumPy loop's, operation for operation, so the log-probabilities
and paths are identical bit for bit: ``delta[i] + log_a[i, j]`` for each predecessor
``i``, the first maximum (NumPy's ``argmax``: a NaN wins at its first place), the
emission added after. No fastmath: the result must not depend on the compiler's order.
"""

from __future__ import annotations

import numba
import numpy as np

from tying import _numba_cache


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _argmax(v):
    """NumPy's ``argmax`` of a 1-d float array: the first NaN, else the first maximum."""
    best = 0
    bv = v[0]
    if np.isnan(bv):
        return 0
    for i in range(1, v.shape[0]):
        x = v[i]
        if np.isnan(x):
            return i
        if x > bv:
            bv = x
            best = i
    return best


@numba.njit(cache=True, nogil=True, error_model="numpy")
def viterbi_sequences(log_s, log_a, lb, starts, lengths, seqs, log_prob, states):
    """Viterbi of the sequences ``seqs`` (indices into ``starts``/``lengths``).

    Args:
        log_s: ``(K,)`` log start probabilities.
        log_a: ``(K, K)`` log transition probabilities.
        lb: ``(n_samples, K)`` log emission densities, sequences' rows consecutive.
        starts, lengths: each sequence's first row and length.
        seqs: the sequences to decode.
        log_prob: ``(n_sequences,)`` output: each decoded sequence's best log-probability.
        states: ``(n_samples,)`` output: the decoded sequences' states, in their rows.
    """
    K = log_s.shape[0]
    cand = np.empty(K)
    delta = np.empty(K)
    new = np.empty(K)
    for q in seqs:
        r0 = starts[q]
        T = lengths[q]
        psi = np.empty((T, K), dtype=np.int32)
        for j in range(K):
            delta[j] = log_s[j] + lb[r0, j]
        for t in range(1, T):
            for j in range(K):
                for i in range(K):
                    cand[i] = delta[i] + log_a[i, j]
                b = _argmax(cand)
                psi[t, j] = b
                new[j] = cand[b] + lb[r0 + t, j]
            for j in range(K):
                delta[j] = new[j]
        cur = _argmax(delta)
        log_prob[q] = delta[cur]
        states[r0 + T - 1] = cur
        for t in range(T - 1, 0, -1):
            cur = psi[t, cur]
            states[r0 + t - 1] = cur


_numba_cache.guard(__name__)  # last: keys the cache on the sources these depend on
