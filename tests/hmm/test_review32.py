"""Stop 32's numeric review against hmmlearn on shapes the other tests do not use.

Each test is a wrong result or a wrongful refusal the review found, and failed on the
code before its fix (the guards at the end pin what must keep working).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)  # hmmlearn-style fits log convergence warnings
    yield
    logging.disable(logging.NOTSET)


SP = np.array([0.5, 0.5])
A = np.array([[0.9, 0.1], [0.2, 0.8]])


def _hmmlearn_spherical_one_feature_fit(module, X, lengths):
    m = module.GaussianHMM(2, "spherical", init_params="", n_iter=5, tol=1e-300)
    m.startprob_, m.transmat_ = SP, A
    m.means_ = np.array([[0.0], [1.0]])
    m.covars_ = np.array([1.0, 2.0])  # spherical: one variance per state
    m.fit(X, lengths)
    return m


# ---------------------------------- spherical with one feature, started from covars_
def test_spherical_one_feature_fit_from_assigned_variances_matches_hmmlearn():
    # was: ValueError "covars_ holds 'diag' covariances (shape (2, 1)) but
    # covariance_type is 'spherical'": with one feature the two types are the same model
    hmm = pytest.importorskip("hmmlearn.hmm")
    import tying.hmm as ours

    X = np.random.default_rng(0).normal(size=(60, 1))
    lengths = [1, 39, 2, 18]
    ref = _hmmlearn_spherical_one_feature_fit(hmm, X, lengths)
    got = _hmmlearn_spherical_one_feature_fit(ours, X, lengths)
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    np.testing.assert_allclose(got.covars_.ravel(), ref.covars_.ravel(), rtol=1e-10)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-10)


def test_spherical_one_feature_fit_from_variances_assigned_before_means():
    X = np.random.default_rng(1).normal(size=(80, 1))
    m = GaussianHMM(2, "spherical", init_params="", n_iter=3)
    m.covars_ = [1.0, 2.0]
    m.means_ = [[0.0], [1.0]]
    m.startprob_, m.transmat_ = SP, A
    m.fit(X)
    assert m.covars_.shape == (2, 1, 1) and np.isfinite(m.monitor_.history).all()


def test_spherical_several_features_still_refuses_diag_variances_at_fit():
    m = GaussianHMM(2, "diag", init_params="", n_iter=2)
    m.startprob_, m.transmat_ = SP, A
    m.means_ = [[0.0, 0.0], [1.0, 1.0]]
    m.covars_ = [[1.0, 2.0], [1.0, 3.0]]
    m.covariance_type = "spherical"
    with pytest.raises(ValueError, match=r"covars_ holds 'diag' covariances"):
        m.fit(np.zeros((10, 2)))


# ---------------------------------------------- predict on a sequence of probability 0
def _categorical():
    # symbol 2 was never seen in training: probability 0 in every state
    return CategoricalHMM.from_params(SP, A, [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])


@pytest.mark.parametrize("algorithm", ["viterbi", "map"])
def test_predict_refuses_a_sequence_with_a_symbol_no_state_emits(algorithm):
    # was: [0, 0, 0, 0, 0] (hmmlearn: a path too), with nothing to say that every path
    # of sequence 1 has probability 0
    m = _categorical()
    m.algorithm = algorithm
    X = np.array([[0], [1], [2], [0], [1]])
    with pytest.raises(
        ValueError,
        match=r"predict: sequence 1 \(rows 2\.\.4\) has probability 0 .*position 0 "
        r"\(x = 2\) has probability 0 in every state.*emissionprob_prior > 1",
    ):
        m.predict(X, [2, 3])
    assert m.decode(X, [2, 3], algorithm="viterbi")[0] == -np.inf  # decode still flags it


def test_predict_refuses_a_sequence_no_transition_path_can_emit():
    m = CategoricalHMM.from_params([1.0, 0.0], np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match=r"sequence 0 .*no state path allowed by startprob_"):
        m.predict([[0], [1]])


def test_predict_keeps_the_states_of_possible_sequences():
    m = _categorical()
    assert m.predict([[0], [1], [1]]).tolist() == m.decode([[0], [1], [1]])[1].tolist()
    g = GMMHMM.from_params(SP, A, [[1.0], [1.0]], [[[-2.0]], [[2.0]]], np.ones((2, 1, 1)))
    assert g.predict([[-2.0], [2.0]]).tolist() == [0, 1]


def _long_chain_with_a_zero():
    rng = np.random.default_rng(0)
    m = GaussianHMM(3, "diag", init_params="")
    m.startprob_ = np.array([0.5, 0.5, 0.0])
    m.transmat_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]])
    m.means_ = np.array([[0.0], [1.0], [2.0]])
    m.covars_ = np.array([[1.0], [1.0], [1.0]])
    return m, rng.normal(size=(20_000, 1)) * 1.5 + 1


def test_log_space_posteriors_of_a_long_sequence_sum_to_one_per_step():
    # a zero transition sends a long sequence to log space, where |log p(x)| ~ 2 T:
    # exp(v - logsumexp(v)) carried the log-sum-exp's rounding into every row (rows
    # summed to 1 within 1.5e-11 at T = 1e5, 3.6e-12 at the 2e4 used here since stop 51,
    # a fifth of the time); exp(v - max) / sum sums to 1 within ulps (stop 31)
    m, X = _long_chain_with_a_zero()
    gamma = m.predict_proba(X)
    assert np.abs(gamma.sum(1) - 1).max() <= 1e-14
    from tying.hmm.forward_backward import _forward_backward_log

    lb = m._log_emission(X)[:, None, :]  # (T, 1, K): the NumPy twin of the compiled one
    _, g, xi = _forward_backward_log(m.startprob_, m.transmat_, lb, np.array([1] * len(X)))
    assert np.abs(g[:, 0].sum(1) - 1).max() <= 1e-14
    np.testing.assert_allclose(xi.sum(), len(X) - 1, rtol=1e-13)
    np.testing.assert_allclose(g[:, 0], gamma, rtol=0, atol=1e-9)
