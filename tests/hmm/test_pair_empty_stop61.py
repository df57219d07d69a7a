"""PairHMM given no pairs: scoring answers with empty results, fitting is refused by name.

``score_pairs([])`` raised "no pairs given" where an empty array answers the question
(as NumPy's reductions and ``sample(0)`` do), so a caller scoring a filtered list that
came out empty had to special-case it; ``fit([])`` said the same three words without
the fix.
"""

import numpy as np
import pytest

from tying.hmm import NotFittedError, PairHMM


@pytest.mark.parametrize("empty", [[], (), np.empty((0, 2), dtype=str)])
def test_scoring_no_pairs_gives_empty_results(empty):
    hmm = PairHMM.from_params("ACGT")
    scores = hmm.score_pairs(empty)
    assert scores.shape == (0,) and scores.dtype == np.float64
    assert hmm.score(empty) == 0.0
    log_p, paths = hmm.viterbi(empty)
    assert log_p.shape == (0,) and paths == []


def test_scoring_no_pairs_still_needs_a_fitted_model():
    with pytest.raises(NotFittedError):
        PairHMM(n_symbols=3).score_pairs([])


def test_fit_on_no_pairs_is_refused_with_the_fix_and_changes_nothing():
    hmm = PairHMM.from_params("ACGT", delta=0.1)
    before = (hmm.delta_, hmm.tau_, hmm.match_probs_.copy())
    with pytest.raises(ValueError, match=r"fit got no pairs: .* pass a non-empty list of"):
        hmm.fit([])
    assert (hmm.delta_, hmm.tau_) == before[:2]
    np.testing.assert_array_equal(hmm.match_probs_, before[2])
    # the advice, followed, fits
    assert PairHMM("ACGT", n_iter=2, tol=-np.inf).fit([("ACGT", "AGT")]).n_iter_ == 2
