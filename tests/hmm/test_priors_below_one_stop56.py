"""Dirichlet priors below 1 (``startprob_prior``, ``transmat_prior``): what the M-step does.

With a prior below 1 the MAP count ``prior - 1 + count`` can be negative. As hmmlearn
does, it is clipped at 0: that entry becomes an exact zero and stays one (a zero
transition is kept by every later M-step). Where every entry of a row clips, the
posterior has no mode (its density is unbounded at the simplex's corners); hmmlearn
then stores a row of zeros (its model is no longer valid and refuses to score), ours
keeps the row's previous values, as for a row no transition leaves (``docs/hmm.md``,
Priors).
"""

import warnings

import numpy as np
import pytest

from tying.hmm import CategoricalHMM

# state 1 is nearly never visited: every count of its row is below 1 - 0.2
X = np.array([[0]] * 6 + [[1]] + [[0]] * 5)
KW = dict(tol=-np.inf, init_params="", transmat_prior=0.2, startprob_prior=0.5)


def _start(m):
    m.startprob_ = [0.9, 0.1]
    m.transmat_ = [[0.9, 0.1], [0.5, 0.5]]
    m.emissionprob_ = [[0.9, 0.1], [0.5, 0.5]]
    return m


def test_clipped_entries_match_hmmlearn_and_a_fully_clipped_row_keeps_its_values():
    hl = pytest.importorskip("hmmlearn.hmm")
    ours = _start(CategoricalHMM(2, n_features=2, n_iter=1, **KW)).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn's own notes on its fit
        ref = _start(hl.CategoricalHMM(2, n_features=2, n_iter=1, **KW)).fit(X)
    np.testing.assert_allclose(ours.startprob_, ref.startprob_, atol=1e-15)
    np.testing.assert_allclose(ours.transmat_[0], ref.transmat_[0], atol=1e-15)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, atol=1e-15)
    assert ours.startprob_[1] == 0.0 and ours.transmat_[0, 1] == 0.0  # clipped: exact zeros
    assert ref.transmat_[1].sum() == 0.0  # hmmlearn: no distribution left
    assert ours.transmat_[1].tolist() == [0.5, 0.5]  # ours: the row it had
    more = _start(CategoricalHMM(2, n_features=2, n_iter=4, **KW)).fit(X)
    assert more.startprob_[1] == 0.0 and more.transmat_[0, 1] == 0.0  # zeros stay zeros
    np.testing.assert_allclose(more.transmat_.sum(1), 1.0, atol=1e-15)
