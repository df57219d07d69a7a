"""A bool in ``lengths`` is refused everywhere lengths are read (stop 40).

``np.asarray([True, 6])`` is ``[1, 6]``: the bool became a sequence of length 1 and
fit/score/predict ran on sequences the caller never meant, with no error.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import CategoricalHMM, GaussianHMM
from tying.hmm.sequences import SequenceBatch, check_lengths

X = np.random.default_rng(0).normal(size=(7, 2))


def _fitted():
    return GaussianHMM(n_components=2, n_iter=2, tol=-np.inf, random_state=0).fit(X, [3, 4])


@pytest.mark.parametrize("lengths", [[True, 6], (6, np.True_), [np.bool_(False), 3, 4]])
@pytest.mark.parametrize(
    "call",
    ["fit", "score", "score_samples", "predict", "predict_proba", "decode"],
)
def test_a_bool_in_lengths_is_refused_by_every_method(lengths, call):
    if call == "fit":
        model = GaussianHMM(n_components=2, n_iter=2, tol=-np.inf, random_state=0)
    else:
        model = _fitted()
    before = None if call == "fit" else model.means_.copy()
    with pytest.raises(TypeError, match=r"lengths\[\d\] = .*is a bool, not a sequence length"):
        getattr(model, call)(X, lengths)
    if before is not None:
        assert np.array_equal(model.means_, before)


def test_categorical_and_sequence_batch_refuse_bools_too():
    symbols = np.array([[0], [1], [0], [1], [1], [0], [0]])
    with pytest.raises(TypeError, match=r"lengths\[0\] = True is a bool"):
        CategoricalHMM(n_components=2, n_iter=2, tol=-np.inf, random_state=0).fit(
            symbols, [True, 6]
        )
    with pytest.raises(TypeError, match=r"SequenceBatch: lengths\[1\] = False is a bool"):
        SequenceBatch([3, False])
    with pytest.raises(TypeError, match=r"lengths\[0\] = True is a bool"):
        SequenceBatch.from_lengths([True, 2])


def test_a_whole_bool_array_stays_refused_and_ints_stay_taken():
    with pytest.raises(TypeError, match="lengths must be integers"):
        check_lengths(np.array([True, True]), 2)
    assert check_lengths([np.int32(3), 4], 7).tolist() == [3, 4]
    assert check_lengths((3, 4), 7).tolist() == [3, 4]


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=5),
    st.integers(0, 5),
    st.booleans(),
    st.booleans(),
)
def test_property_bool_anywhere_is_refused_and_the_int_twin_scores(lens, where, flag, numpy_bool):
    """A bool at any position is refused; the same list with ints scores as hmmlearn would."""
    model = _fitted()
    n = sum(lens)
    Xs = np.random.default_rng(n).normal(size=(n + int(flag), 2))
    ints = list(lens)
    ints.insert(min(where, len(ints)), int(flag))
    if int(flag) == 0:
        ints.remove(0)  # a length of 0 is its own refusal; keep the int twin valid
    bools = list(lens)
    bools.insert(min(where, len(bools)), np.bool_(flag) if numpy_bool else flag)
    with pytest.raises(TypeError, match="is a bool, not a sequence length"):
        model.score(Xs, bools)
    # the int list gives the sum of per-sequence scores (the brute-force reference)
    starts = np.cumsum([0, *ints])[:-1]
    per_seq = sum(model.score(Xs[s : s + k]) for s, k in zip(starts, ints, strict=True))
    assert model.score(Xs, ints) == pytest.approx(per_seq, rel=1e-12)
