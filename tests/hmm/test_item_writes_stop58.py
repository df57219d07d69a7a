"""An item write refused for a rule that ties entries together says how to make it.

``m.transmat_[0, 0] = 0.7`` is checked as an assignment of the whole ``transmat_``: row 0
then sums to 1.2 and is refused, with the setter's advice "normalise it", which cannot be
followed (the write was refused, nothing changed). Before stop 58 that was all it said;
it now names the write as partial and the two ways that work: a whole row (or a state's
whole matrix) at once, or a corrected copy assigned whole.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM, PairHMM

NOTE = r"checked as an assignment of the whole {0}, so nothing changed"


def _full():
    return GaussianHMM.from_params(
        [0.5, 0.5],
        [[0.5, 0.5], [0.5, 0.5]],
        [[0.0, 0.0], [1.0, 1.0]],
        [np.eye(2), 2 * np.eye(2)],
        covariance_type="full",
    )


def test_a_row_entry_write_names_the_whole_row_write_which_works():
    m = _full()
    with pytest.raises(ValueError, match=r"sum to \[1.2\].*" + NOTE.format("transmat_")):
        m.transmat_[0, 0] = 0.7
    np.testing.assert_array_equal(m.transmat_, [[0.5, 0.5], [0.5, 0.5]])
    m.transmat_[0] = [0.7, 0.3]  # the advice
    np.testing.assert_array_equal(m.transmat_[0], [0.7, 0.3])


def test_one_half_of_a_symmetric_covariance_names_the_copy_which_works():
    m = _full()
    with pytest.raises(ValueError, match=r"(?s)must be symmetric.*" + NOTE.format("covars_")):
        m.covars_[0, 0, 1] = 0.5
    v = m.covars_.copy()  # the advice
    v[0, 0, 1] = v[0, 1, 0] = 0.5
    m.covars_ = v
    np.testing.assert_array_equal(m.covars_[0], [[1.0, 0.5], [0.5, 1.0]])


def test_pair_tables_get_the_note_and_a_value_wrong_by_itself_does_not():
    p = PairHMM.from_params("AC", tied=False)
    with pytest.raises(ValueError, match=NOTE.format("insert_probs_")):
        p.insert_probs_[0, 0] = 0.9
    p.insert_probs_[0] = [0.9, 0.1]
    np.testing.assert_array_equal(p.insert_probs_[0], [0.9, 0.1])
    m = _full()
    d = GaussianHMM.from_params([1.0], [[1.0]], [[0.0, 0.0]], [[1.0, 2.0]])
    for write in (
        lambda: m.means_.__setitem__((0, 0), np.nan),  # wrong whatever else is written
        lambda: m.transmat_.__setitem__((0, 0), -0.5),
        lambda: d.covars_.__setitem__((0, 0, 1), 0.5),  # 'diag' has no off-diagonal
    ):
        with pytest.raises(ValueError) as err:
            write()
        assert "so nothing changed" not in str(err.value)
