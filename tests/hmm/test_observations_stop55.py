"""A scalar ``X`` is refused as what it is, not as an array with no rows.

``GaussianHMM(1).fit(2.0)`` and ``m.score(1)`` read the scalar as 0 rows and said "X has
no rows; give at least one observation" (with ``lengths=[1]``: "lengths sum to 1 but X
has 0 rows"), which names neither the cause nor the fix. A masked array of lengths lost its
mask in ``np.asarray``: a masked length was read as the number under it, with no error.
"""

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, SequenceBatch

CAT = CategoricalHMM.from_params([1.0], [[1.0]], [[0.5, 0.5]])
GAUSS = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])


@pytest.mark.parametrize("call, value", [
    (lambda: CAT.score(1), "1"),
    (lambda: CAT.predict(np.int64(1), [1]), "1"),
    (lambda: GAUSS.score(0.5), "0.5"),
    (lambda: GAUSS.predict_proba(np.float32(0.5)), "0.5"),
    (lambda: GaussianHMM(1).fit(2.0), "2.0"),
    (lambda: GMMHMM(1, 1).fit(np.array(3.0)), "3.0"),
])  # fmt: skip
def test_a_scalar_x_is_refused_as_a_scalar(call, value):
    with pytest.raises(ValueError, match=rf"^X must be an array of observations, one row per "
                       rf"time step, got the scalar {value}; give \[\[{value}\]\]"):  # fmt: skip
        call()


def test_the_same_value_as_one_row_is_scored():
    assert GAUSS.score([[0.5]]) == pytest.approx(-0.5 * (np.log(2 * np.pi) + 0.25), rel=1e-12)
    assert CAT.score([1]) == pytest.approx(np.log(0.5), rel=1e-12)


# ------------------------------------------- masked lengths (np.asarray drops the mask)
MASKED = np.ma.array([5, 5], mask=[False, True])


@pytest.mark.parametrize("call, who", [
    (lambda: GAUSS.score(np.zeros((10, 1)), MASKED), ""),
    (lambda: GaussianHMM(1, n_iter=1, tol=-np.inf).fit(np.zeros((10, 1)), MASKED), ""),
    (lambda: CAT.predict(np.zeros(10, dtype=int), MASKED), ""),
    (lambda: SequenceBatch.from_lengths(MASKED), "SequenceBatch: "),
])  # fmt: skip
def test_a_masked_length_is_refused_by_index(call, who):
    # it was read as the 5 under the mask: X scored as two sequences of 5, no error
    with pytest.raises(ValueError, match=rf"^{who}lengths\[1\] is masked; a masked length has "
                       r"no value"):  # fmt: skip
        call()


def test_masked_lengths_with_nothing_masked_are_read_as_their_values():
    X = np.random.default_rng(0).normal(size=(10, 1))
    plain = np.ma.array([4, 6], mask=[False, False])
    assert GAUSS.score(X, plain) == GAUSS.score(X, [4, 6])
