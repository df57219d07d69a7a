"""Scoring criteria check ``X`` before they read it (stop 52).

``bic`` took ``len(np.asarray(X))`` before ``score`` had checked ``X``, so a list of
sequences of different lengths (the common mistake of passing ``[seq1, seq2]``) met
NumPy's "inhomogeneous shape" error, naming no fix, where ``score`` and ``aic`` refuse
it by name with the fix (concatenate, give ``lengths``).
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM


def _gaussian():
    return GaussianHMM.from_params(
        [0.6, 0.4], [[0.9, 0.1], [0.3, 0.7]], [[0.0], [2.0]], [[1.0], [0.5]]
    )


@pytest.mark.parametrize("criterion", ["score", "aic", "bic"])
def test_a_ragged_list_of_sequences_is_refused_by_name(criterion):
    seqs = [np.zeros((3, 1)), np.ones((2, 1))]
    with pytest.raises(ValueError, match=r"X is a list of 2 sequences of different lengths; .*"
                       r"np\.concatenate\(seqs\), lengths="):  # fmt: skip
        getattr(_gaussian(), criterion)(seqs)


def test_bic_and_aic_by_hand():
    # p = 1 start + 2 transitions + 2 means + 2 variances; n = 5 rows
    m, X = _gaussian(), np.array([[0.1], [1.9], [2.2], [-0.3], [0.4]])
    log_l = m.score(X, [2, 3])
    assert m.aic(X, [2, 3]) == pytest.approx(-2 * log_l + 2 * 7, rel=1e-15)
    assert m.bic(X, [2, 3]) == pytest.approx(-2 * log_l + 7 * np.log(5), rel=1e-15)
    c = CategoricalHMM.from_params([1.0, 0.0], [[0.5, 0.5], [0.5, 0.5]], [[0.2, 0.8], [0.6, 0.4]])
    symbols = np.array([0, 1, 1, 0])  # one symbol per row, given 1-d: n = 4 rows
    # p = 1 start + 2 transitions + 2 emissions
    assert c.bic(symbols) == pytest.approx(-2 * c.score(symbols) + 5 * np.log(4), rel=1e-15)
