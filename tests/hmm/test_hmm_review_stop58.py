"""Review of stop 58 (tying.hmm): the advice of the new refusals, followed literally.

- An item write refused for a coupling rule names a write to make instead; for a 1-d
  ``startprob_`` / tied ``insert_probs_`` that write (``m.startprob_[0] = row``) was
  refused by NumPy, for a GMMHMM ``m.covars_[0] = matrix`` overwrote every component of
  state 0 without an error, a write into row 1 was told to write row 0, and a shape
  refusal (``set_params(n_components=3)`` since the read) got the note too, whose
  whole-row write meets the same refusal. A spherical variance written on one diagonal
  entry (a coupling rule too) got no note.
- CategoricalHMM's symbol advice for a model made by ``from_params`` (n_symbols and
  emissionprob_init set) named two ways that are both refused, and for an assigned
  emissionprob_ under the default init_params it said "init_params leaves it out".
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PairHMM

NOTE = "so nothing changed"


def _two_state(**kw):
    return GaussianHMM.from_params(
        [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[0.0], [1.0]], [[1.0], [1.0]], **kw
    )


def test_a_1d_distribution_names_a_write_of_all_its_entries_which_works():
    m = _two_state()
    with pytest.raises(ValueError, match=re.escape("all of them m.startprob_[:] = values")) as e:
        m.startprob_[0] = 0.7
    assert "m.startprob_[0] = row" not in str(e.value)
    m.startprob_[:] = [0.7, 0.3]  # the advice
    np.testing.assert_array_equal(m.startprob_, [0.7, 0.3])
    p = PairHMM.from_params("AC")  # tied: insert_probs_ is (S,)
    with pytest.raises(ValueError, match=re.escape("m.insert_probs_[:] = values")):
        p.insert_probs_[0] = 0.9
    p.insert_probs_[:] = [0.9, 0.1]
    np.testing.assert_array_equal(p.insert_probs_, [0.9, 0.1])


def test_the_row_and_matrix_named_are_the_ones_written():
    m = _two_state()
    with pytest.raises(ValueError, match=re.escape("a whole row m.transmat_[1] = row")):
        m.transmat_[1, 0] = 0.7
    g = GMMHMM.from_params(
        [0.5, 0.5],
        np.full((2, 2), 0.5),
        np.full((2, 2), 0.5),
        np.zeros((2, 2, 2)),
        np.broadcast_to(np.eye(2), (2, 2, 2, 2)).copy(),
        covariance_type="full",
    )
    with pytest.raises(ValueError, match=re.escape("a whole matrix m.covars_[0, 1] = matrix")):
        g.covars_[0, 1, 0, 1] = 0.1
    g.covars_[0, 1] = [[1.0, 0.1], [0.1, 1.0]]  # the advice: component 1 alone
    np.testing.assert_array_equal(g.covars_[0, 0], np.eye(2))  # m.covars_[0] overwrote it
    np.testing.assert_array_equal(g.covars_[0, 1], [[1.0, 0.1], [0.1, 1.0]])


def test_a_shape_refusal_gets_no_write_advice_that_meets_it_again():
    m = _two_state()
    m.set_params(n_components=3)
    with pytest.raises(ValueError, match=r"must have shape \(3, 3\)") as e:
        m.transmat_[0, 0] = 0.7
    assert NOTE not in str(e.value)


def test_a_spherical_variance_written_on_one_diagonal_entry_names_the_matrix_write():
    s = GaussianHMM.from_params([1.0], [[1.0]], [[0.0, 0.0]], [1.0], covariance_type="spherical")
    with pytest.raises(ValueError, match=re.escape("a whole matrix m.covars_[0] = matrix")):
        s.covars_[0, 1, 1] = 4.0
    s.covars_[0] = 4 * np.eye(2)
    np.testing.assert_array_equal(s.covars_[0], 4 * np.eye(2))


X5 = np.array([[4], [1], [3], [0], [2], [4], [1], [0]])
E5 = np.array([[0.1, 0.2, 0.3, 0.2, 0.2], [0.3, 0.1, 0.1, 0.2, 0.3]])


def _from_params():
    e3 = [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]
    return CategoricalHMM.from_params(
        [0.5, 0.5], [[0.7, 0.3], [0.4, 0.6]], e3, n_iter=2, tol=-np.inf
    )


def test_from_params_symbol_advice_names_ways_that_work():
    m = _from_params()
    with pytest.raises(ValueError, match=r"fit again with n_symbols=5, emissionprob_init=None"):
        m.score(X5)
    with pytest.raises(ValueError, match=r"set_params\(n_symbols=5\), then assign an emis"):
        m.score(X5)
    m.set_params(n_symbols=5)  # the advice, followed
    m.emissionprob_ = E5
    want = CategoricalHMM.from_params([0.5, 0.5], [[0.7, 0.3], [0.4, 0.6]], E5).score(X5)
    assert m.score(X5) == pytest.approx(want, rel=1e-12)
    m = _from_params()
    m.set_params(n_symbols=5, emissionprob_init=None).fit(X5)  # the other way
    assert m.emissionprob_.shape == (2, 5)


def test_an_assigned_emissionprob_under_default_init_params_is_named_as_such():
    m = CategoricalHMM(2, n_iter=2, tol=-np.inf, random_state=0)
    m.emissionprob_ = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"held \(an assigned emissionprob_ .*columns$") as e:
        m.fit(X5)
    assert "init_params leaves it out" not in str(e.value)
    m.emissionprob_ = E5  # the advice
    assert m.fit(X5).n_symbols_ == 5
