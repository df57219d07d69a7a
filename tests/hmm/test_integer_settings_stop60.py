"""Stop 60 (second pass): the 0-d integer arrays hmmlearn reads as ``n_iter`` and
``n_features`` (sibling routes of ``tying.hmm.integer_args``'s states and counts)."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM


def test_zero_d_n_iter_runs_that_many_iterations():
    X = np.random.default_rng(0).normal(size=(60, 2))
    a = GaussianHMM(2, n_iter=np.array(3), tol=-np.inf, random_state=0).fit(X)
    b = GaussianHMM(2, n_iter=3, tol=-np.inf, random_state=0).fit(X)
    assert a.monitor_.iter == 3 and isinstance(a.n_iter_, int)
    np.testing.assert_array_equal(a.means_, b.means_)


def test_zero_d_n_features_is_the_alphabet_size():
    X = np.array([[0], [1], [3], [1]])
    m = CategoricalHMM(2, n_features=np.array(4), n_iter=2, tol=-np.inf, random_state=0).fit(X)
    assert m.emissionprob_.shape == (2, 4)


@pytest.mark.parametrize("bad", [np.array(2.0), np.array([3]), np.array(True), np.array(-1)])
def test_other_arrays_are_still_refused_by_name(bad):
    X = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match=r"n_iter must be a non-negative integer .*got array"):
        GaussianHMM(2, n_iter=bad).fit(X)
    with pytest.raises(ValueError, match=r"n_features must be a positive integer or None"):
        CategoricalHMM(2, n_features=bad).fit(np.array([[0], [1]]))
