"""A prior is checked by the parameters fit trains, whatever form ``params`` takes.

Stop 59: the covars_prior sign check read ``params`` as hmmlearn letters
(``"c" in params``), so ``params=["means", "covars"]``, the names the docs recommend,
skipped it and a negative covars_prior was floored at ``min_covar`` with no error
(0.001 where hmmlearn's M-step gives -0.397). And a prior that differs within a tie
group was refused even where its parameter is not trained, so never read.
"""

import numpy as np
import pytest

from tying.hmm import GaussianHMM

RNG = np.random.default_rng(0)
X = np.concatenate([RNG.normal(0, 1, (40, 1)), [[4.0]]])
X2 = np.concatenate([RNG.normal(0, 1, (30, 2)), RNG.normal(4, 1, (30, 2))])
SP, TM = np.array([0.5, 0.5]), np.full((2, 2), 0.5)


def _two_states(params, prior):
    m = GaussianHMM(
        2, "diag", covars_prior=prior, init_params="", params=params, n_iter=1, tol=-np.inf
    )
    m.startprob_, m.transmat_ = SP, TM
    m.means_, m.covars_ = np.array([[0.0], [4.0]]), np.array([[1.0], [0.5]])
    return m


@pytest.mark.parametrize(
    "params", [["means", "covars"], ("covars",), ["startprob", "transmat", "means", "covars"]]
)
def test_negative_covars_prior_refused_with_params_as_names(params):
    m = _two_states(params, -0.5)  # state 1 has one row: its update is a negative variance
    with pytest.raises(ValueError, match=r"covars_prior must be >= 0 for 'diag'.*state 0"):
        m.fit(X)  # was accepted: covars_ [0.607, 0.001], hmmlearn's M-step [0.607, -0.397]
    np.testing.assert_array_equal(m.covars_[:, 0, 0], [1.0, 0.5])  # unchanged
    assert not hasattr(m, "monitor_")


def test_negative_full_covars_prior_refused_with_params_as_names():
    kw = dict(covariance_type="full", covars_prior=-0.5 * np.eye(2), random_state=0, n_iter=2)
    with pytest.raises(ValueError, match="covars_prior must be positive semidefinite for 'full'"):
        GaussianHMM(2, params=["means", "covars"], **kw).fit(X2)


def test_params_as_names_fit_as_the_letters_do():
    # legitimate variants: the same non-negative prior, letters or names, same bits
    a = _two_states("mc", 0.3).fit(X)
    b = _two_states(["means", "covars"], 0.3).fit(X)
    np.testing.assert_array_equal(a.covars_, b.covars_)
    np.testing.assert_array_equal(a.means_, b.means_)
    c = _two_states(["means"], -0.5).fit(X)  # covariances fixed: the prior is inert
    np.testing.assert_array_equal(c.covars_[:, 0, 0], [1.0, 0.5])


def _tied_rows(params, **prior):
    m = GaussianHMM(
        3,
        "diag",
        ties={"transitions": [[0, 1]]},
        init_params="",
        params=params,
        n_iter=3,
        tol=-np.inf,
        **prior,
    )
    m.startprob_ = np.full(3, 1 / 3)
    m.transmat_ = np.array([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.2, 0.7]])
    m.means_ = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    m.covars_ = np.ones((3, 2))
    return m


@pytest.mark.parametrize("params", ["smc", ["startprob", "means", "covars"]])
def test_prior_differing_in_a_tie_group_is_inert_where_not_trained(params):
    differ = np.array([[1.0, 1, 1], [5, 5, 5], [1, 1, 1]])  # rows 0, 1 tied, priors differ
    got = _tied_rows(params, transmat_prior=differ).fit(X2)  # was refused: never read
    ref = _tied_rows(params, transmat_prior=1.0).fit(X2)
    np.testing.assert_array_equal(got.means_, ref.means_)
    np.testing.assert_array_equal(got.transmat_, ref.transmat_)
    with pytest.raises(ValueError, match=r"transmat_prior: states 0 and 1 are tied"):
        _tied_rows("stmc", transmat_prior=differ).fit(X2)  # trained: one prior a group


def test_tied_means_prior_still_refused_where_covariances_read_it():
    mu = np.array([[0.0, 0.0], [0.0, 0.0], [4.0, 4.0]])
    prior = dict(means_prior=np.array([[0.0, 0], [1, 1], [4, 4]]), means_weight=1.0)
    for params, refused in [("stc", True), ("st", False)]:
        m = GaussianHMM(
            3,
            ties={"means": [[0, 1]]},
            init_params="",
            params=params,
            n_iter=2,
            tol=-np.inf,
            **prior,
        )
        m.startprob_, m.transmat_ = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
        m.means_, m.covars_ = mu, np.ones((3, 2))
        if refused:  # the covariance update reads the group's one means prior
            with pytest.raises(ValueError, match="means_prior: states 0 and 1 are tied"):
                m.fit(X2)
        else:
            m.fit(X2)
            np.testing.assert_array_equal(m.means_, mu)
