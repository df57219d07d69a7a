"""Review of stop 61: scoring no pairs is an empty result only for an empty collection;
an empty string or a spent iterator (a zip already read by fit) scored 0.0 silently."""

import numpy as np
import pytest

from tying.hmm import PairHMM


def _model_and_pairs():
    m = PairHMM.from_params("ACGT", tau=0.1)
    pairs, _ = m.sample(3, random_state=0)
    return m, pairs


@pytest.mark.parametrize("method", ["score", "score_pairs", "viterbi"])
@pytest.mark.parametrize("empty", ["", b""])
def test_empty_string_is_not_no_pairs(method, empty):
    m, _ = _model_and_pairs()
    with pytest.raises(ValueError, match="not a list of"):
        getattr(m, method)(empty)


@pytest.mark.parametrize("method", ["score", "score_pairs", "viterbi"])
def test_spent_iterator_is_refused_and_the_advice_works(method):
    m, pairs = _model_and_pairs()
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    z = zip(xs, ys)
    m.score(z)  # reads it
    with pytest.raises(ValueError, match="already consumed"):
        getattr(m, method)(z)
    kept = list(zip(xs, ys))  # the advice
    assert m.score(kept) == m.score(kept) == pytest.approx(float(m.score_pairs(pairs).sum()))


def test_empty_collections_still_score_as_no_pairs():
    m, pairs = _model_and_pairs()
    assert m.score([]) == 0.0
    assert m.score_pairs(()).shape == (0,)
    assert m.score_pairs(np.empty((0, 2))).shape == (0,)
    assert m.score(iter(pairs)) == pytest.approx(m.score(pairs))  # a fresh iterator reads
