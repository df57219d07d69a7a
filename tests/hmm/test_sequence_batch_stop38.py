"""``SequenceBatch`` built directly from lengths that are not integers (stop 38).

``SequenceBatch(lengths)`` cast its lengths to int64, so ``SequenceBatch([2.7, 3])``
became a batch of lengths ``[2, 3]``: the public recursions then scored the first two
rows as one sequence, with no error. Lengths of a dtype other than a signed integer are
now checked by entry, as ``check_lengths`` checks them (integral floats and unsigned
integers are read as the same integers; anything else is refused).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import SequenceBatch, forward_log_likelihood

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")

START, A = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.2, 0.8]])


@pytest.mark.parametrize(
    "lengths, kind, match",
    [
        ([2.7, 3], TypeError, r"SequenceBatch: lengths must be integers, got float64 values"),
        ([np.nan], TypeError, r"SequenceBatch: lengths must be integers"),
        ([True, True], TypeError, r"SequenceBatch: lengths must be integers, got bool"),
        ([], ValueError, r"SequenceBatch: lengths is empty \(no sequences\)"),
        ([np.inf], ValueError, r"SequenceBatch: lengths\[0\] = inf is not a sequence length"),
        ([2.0, -1.0], ValueError, r"SequenceBatch: lengths\[1\] = -1: every sequence needs"),
    ],
)
def test_lengths_that_are_no_integers_are_refused_by_entry(lengths, kind, match):
    with pytest.raises(kind, match=match + r".*SequenceBatch\.from_lengths"):
        SequenceBatch(lengths)


def _hmmlearn_scores(X, lengths):
    h = hmmlearn_hmm.GaussianHMM(2, implementation="scaling")
    h.startprob_, h.transmat_ = START, A
    h.means_, h.covars_ = np.array([[0.0], [1.5]]), np.array([[1.0], [0.5]])
    bounds = np.cumsum([0, *lengths])
    return np.array([h.score(X[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


def _log_b(X):
    means, var = np.array([0.0, 1.5]), np.array([1.0, 0.5])
    return -0.5 * (np.log(2 * np.pi * var) + (X - means) ** 2 / var)  # (N, K)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.uint64, np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_a_batch_of_any_integer_dtype_scores_as_hmmlearn(lengths, dtype, seed):
    """Lengths in any numeric dtype that holds them exactly: the batch reads the same
    integers, and each sequence's log-likelihood is hmmlearn's for that sequence; the
    same lengths plus a fraction are refused."""
    X = np.random.default_rng(seed).normal(size=(sum(lengths), 1))
    batch = SequenceBatch(np.array(lengths, dtype=dtype))
    assert batch.lengths.dtype == np.int64 and batch.lengths.tolist() == lengths
    got = forward_log_likelihood(START, A, _log_b(X), batch)
    np.testing.assert_allclose(got, _hmmlearn_scores(X, lengths), rtol=1e-12, atol=1e-12)
    if np.dtype(dtype).kind == "f":
        with pytest.raises(TypeError, match="lengths must be integers"):
            SequenceBatch(np.array(lengths, dtype=dtype) + np.array(0.5, dtype=dtype))
