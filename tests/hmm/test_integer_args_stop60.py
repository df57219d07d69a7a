"""Counts and states given as 0-d integer arrays read as hmmlearn reads them (stop 60).

``sample(3, currstate=np.array(1))`` was refused with "currstate must be a state 0..1,
got array(1)", a state it is; hmmlearn takes it (``__index__``). So were
``sample(np.array(3))`` and ``PairHMM.sample(np.array(2))``. Floats and bools stay
refused, now saying that an integer is wanted.
"""

import numpy as np
import pytest

from tying.hmm import GaussianHMM, PairHMM
from tying.hmm.integer_args import as_integer


def _model():
    return GaussianHMM.from_params(
        [1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [[0.0], [5.0]], [[1.0], [1.0]]
    )


def test_zero_d_integer_arrays_are_states_and_counts_as_in_hmmlearn():
    m = _model()
    X, Z = m.sample(np.array(3), random_state=0, currstate=np.array(1))
    X2, Z2 = m.sample(3, random_state=0, currstate=1)
    assert Z.tolist() == Z2.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(X, X2)
    _, Z3 = m.sample(3, random_state=0, currstate=np.asarray(Z2[-1], dtype=np.uint8))
    assert Z3.tolist() == [1, 0, 1]


def test_pair_sample_takes_a_zero_d_count():
    m = PairHMM.from_params("ACGT")
    pairs, _ = m.sample(np.array(2), random_state=0)
    assert pairs == m.sample(2, random_state=0)[0]


@pytest.mark.parametrize("bad", [1.0, True, np.array([1]), np.array(1.0), "1"])
def test_non_integer_currstate_is_refused_naming_its_type(bad):
    with pytest.raises(ValueError, match=r"currstate must be a state 0..1 \(an integer\), got"):
        _model().sample(3, currstate=bad)


@pytest.mark.parametrize("bad", [2, -1, np.array(2)])
def test_currstate_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"currstate must be a state 0..1, got"):
        _model().sample(3, currstate=bad)


@pytest.mark.parametrize("bad", [0, 2.0, True, np.array([3])])
def test_bad_n_samples_is_refused(bad):
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        _model().sample(bad)


def test_as_integer():
    assert as_integer(np.array(3, dtype=np.int16)) == 3
    assert as_integer(np.uint64(5)) == 5
    for v in (None, True, np.bool_(True), np.array(True), 2.5, np.float64(2.0), [1]):
        assert as_integer(v) is None
