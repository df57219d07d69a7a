"""``lengths`` given as an object array (stop 38).

An object array of integers (a pandas object column, a list mixing Python and NumPy
ints turned into an array) was refused, while hmmlearn fits with it. It is taken now,
with the same model as plain ints; an object array holding anything but integers is
refused by entry.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GaussianHMM
from tying.hmm.sequences import check_lengths

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")


def test_an_object_array_of_ints_fits_as_hmmlearn_fits_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    lengths = np.array([10, np.int32(12), 8], dtype=object)

    def fit(cls, lens, **kw):
        m = cls(2, n_iter=3, init_params="", tol=-np.inf, **kw)
        m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.8, 0.2], [0.3, 0.7]])
        m.means_, m.covars_ = np.array([[0.0, 0.0], [1.0, 1.0]]), np.ones((2, 2))
        return m.fit(X, lens)

    ours, plain = fit(GaussianHMM, lengths), fit(GaussianHMM, [10, 12, 8])
    theirs = fit(hmmlearn_hmm.GaussianHMM, lengths, implementation="scaling")
    assert np.array_equal(ours.means_, plain.means_)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10)
    assert ours.score(X, lengths) == plain.score(X, [10, 12, 8])


@pytest.mark.parametrize(
    "entries, kind, match",
    [
        ([3, 4.0], TypeError, r"lengths\[1\] = 4\.0 \(float\) in an object array"),
        ([True, 6], TypeError, r"lengths\[0\] = True \(bool\)"),
        (["3", 4], TypeError, r"lengths\[0\] = '3' \(str\)"),
        ([2**70, 7], ValueError, r"lengths\[0\] = 1180591620717411303424 is not a sequence length"),
    ],
)
def test_an_object_array_of_other_things_is_refused_by_entry(entries, kind, match):
    with pytest.raises(kind, match=match):
        check_lengths(np.array(entries, dtype=object), 7)


@settings(derandomize=True, deadline=None, max_examples=50)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_property_object_ints_are_read_as_the_same_ints(lengths, rnd):
    mixed = [rnd.choice([int, np.int64, np.int32, np.uint16])(v) for v in lengths]
    got = check_lengths(np.array(mixed, dtype=object), sum(lengths))
    assert got.dtype == np.int64 and got.tolist() == lengths
