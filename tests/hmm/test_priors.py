"""MAP priors at fit: shapes checked by name, one prior per tie group (stop 33).

Each refusal here was a silent or nameless result before: a per-state prior that
differs within a tie group was ignored for every state but the group's first, and a
prior of the wrong shape failed at the first M-step with NumPy's words.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

K, D = 3, 2


def _data(seed=3, n=120):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))


def _fitted(**kwargs):
    X = _data()
    return GaussianHMM(K, n_iter=3, random_state=0, **kwargs).fit(X), X


# ------------------------------------------------ one prior per tie group
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (  # was: state 1's prior mean 50 moved its covariance but not its (tied) mean
            {"ties": {"means": [[0, 1]]}, "means_weight": 20.0,
             "means_prior": [[0.0, 0.0], [50.0, 50.0], [1.0, 1.0]]},
            r"means_prior: states 0 and 1 are tied \(ties\['means'\] group \[0, 1\]\)",
        ),
        (
            {"ties": {"means": [[1, 2]]}, "means_weight": [[1.0, 1.0], [1.0, 1.0], [4.0, 1.0]]},
            r"means_weight: states 1 and 2 are tied",
        ),
        (  # was: a transition prior of 50 on the tied row 1 changed nothing
            {"ties": {"transitions": [[0, 1]]},
             "transmat_prior": [[1.0, 1.0, 1.0], [50.0, 1.0, 1.0], [1.0, 1.0, 1.0]]},
            r"transmat_prior: states 0 and 1 are tied \(ties\['transitions'\] group \[0, 1\]\)",
        ),
        (
            {"ties": {"covars": "all"}, "covars_prior": [[0.1, 0.1], [0.1, 0.1], [0.1, 2.0]]},
            r"covars_prior: states 0 and 2 are tied \(ties\['covars'\] group \[0, 1, 2\]\)",
        ),
        (  # covariance_type="tied" is one covariance group: one weight
            {"covariance_type": "tied", "covars_weight": [3.0, 3.0, 5.0]},
            r"covars_weight: states 0 and 2 are tied",
        ),
    ],
    ids=["means_prior", "means_weight", "transmat_prior", "covars_prior", "tied_weight"],
)  # fmt: skip
def test_a_prior_that_differs_within_a_tie_group_is_refused(kwargs, match):
    X = _data()
    m = GaussianHMM(K, n_iter=3, random_state=0, **kwargs)
    with pytest.raises(ValueError, match=match + r".*give tied states the same prior"):
        m.fit(X)
    assert not hasattr(m, "ties_") and not hasattr(m, "means_")  # nothing was fitted


def test_a_categorical_emission_prior_that_differs_within_a_tie_group_is_refused():
    X = np.array([[0], [1], [2], [1], [0], [2], [2]])
    prior = [[1.0, 1.0, 1.0], [1.0, 3.0, 1.0]]
    m = CategoricalHMM(2, ties={"emissions": "all"}, emissionprob_prior=prior, random_state=0)
    with pytest.raises(ValueError, match=r"emissionprob_prior: states 0 and 1 are tied"):
        m.fit(X)


def test_a_refit_refused_for_its_prior_leaves_the_fitted_model_as_it_was():
    m, X = _fitted(ties={"means": [[0, 1]]})
    before = (m.means_, m.covars_, m.transmat_, list(m.history_))
    # tol and covars_prior given: a prior alone would switch them to hmmlearn's (refused)
    m.set_params(
        means_prior=[[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]], means_weight=1.0, tol=1e-4,
        covars_prior=0.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="means_prior: states 0 and 1 are tied"):
        m.fit(X)
    after = (m.means_, m.covars_, m.transmat_, list(m.history_))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_tied_states_with_equal_priors_fit_and_keep_their_tie():
    prior = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, -1.0]])  # equal rows for states 0, 1
    m, X = _fitted(ties={"means": [[0, 1]]}, means_prior=prior, means_weight=2.0)
    assert np.array_equal(m.means_[0], m.means_[1])
    # a prior given per tie group's states equals the same prior given as one row each
    m2, _ = _fitted(ties={"means": [[0, 1]]}, means_prior=prior, means_weight=[[2.0, 2.0]] * 3)
    assert np.array_equal(m.means_, m2.means_)


# ---------------------------------------------------- shapes, by name
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"startprob_prior": np.ones(K + 1)}, r"startprob_prior has shape \(4,\), which does "
         r"not broadcast to \(3,\) = \(n_components\)"),
        ({"transmat_prior": np.ones((K, K + 1))}, r"transmat_prior has shape \(3, 4\)"),
        ({"means_prior": np.zeros((K + 1, D)), "means_weight": 1.0},
         r"means_prior has shape \(4, 2\), which does not broadcast to \(3, 2\) "
         r"= \(n_components, n_features\)"),
        ({"means_weight": np.ones(K)}, r"means_weight has shape \(3,\)"),  # (K,) vs (K, D)
        ({"covariance_type": "full", "covars_prior": np.ones((K, D))},
         r"covars_prior has shape \(3, 2\), which does not broadcast to \(3, 2, 2\)"),
        ({"covariance_type": "full", "covars_weight": np.full((K, D), 3.0)},
         r"covars_weight has shape \(3, 2\), which does not broadcast to \(3,\)"),
        ({"covariance_type": "spherical", "covars_prior": np.ones(K)},
         r"covars_prior has shape \(3,\), which does not broadcast to \(3, 2\)"),
    ],
)  # fmt: skip
def test_a_prior_of_the_wrong_shape_is_refused_by_name(kwargs, match):
    # was: NumPy's "could not broadcast input array from shape (4,2) into shape (3,2)" at
    # the first M-step, naming no prior
    m = GaussianHMM(K, n_iter=3, random_state=0, **kwargs)
    with pytest.raises(ValueError, match=match + r".*give one number, or an array"):
        m.fit(_data())


def test_a_categorical_prior_of_the_wrong_shape_is_refused_by_name():
    m = CategoricalHMM(2, emissionprob_prior=np.ones(7), random_state=0)
    with pytest.raises(ValueError, match=r"emissionprob_prior has shape \(7,\), which does not "
                       r"broadcast to \(2, 3\) = \(n_components, n_symbols\)"):  # fmt: skip
        m.fit(np.array([[0], [1], [2], [1]]))


# ------------------------------------------- array priors, against hmmlearn
@pytest.mark.parametrize(
    "ctype, kwargs",
    [
        ("diag", {"startprob_prior": np.array([1.5, 2.0, 3.0])}),
        ("full", {"transmat_prior": np.random.default_rng(9).uniform(1, 3, (K, K))}),
        ("tied", {"means_prior": np.random.default_rng(9).normal(size=(K, D)),
                  "means_weight": 2.0}),
        ("spherical", {"covars_prior": np.random.default_rng(9).uniform(0.1, 1, (K, D))}),
        ("diag", {"means_prior": 0.5,
                  "means_weight": np.random.default_rng(9).uniform(0.5, 3, (K, D))}),
        ("full", {"covars_prior": np.stack([np.eye(D) * 0.3] * K), "covars_weight": 5.0}),
    ],
)  # fmt: skip
def test_array_priors_that_fit_their_shape_still_give_hmmlearns_fit(ctype, kwargs):
    hmm = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(2)
    start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K) * 2, size=K)
    means = rng.normal(scale=3.0, size=(K, D))
    B = rng.normal(size=(K, D, D))
    cov = {"spherical": np.ones(K), "diag": np.ones((K, D)), "tied": np.eye(D)}.get(
        ctype, B @ B.transpose(0, 2, 1) + np.eye(D)
    )
    X = _data()
    fitted = []
    for module in (hmm, __import__("tying.hmm", fromlist=["GaussianHMM"])):
        m = module.GaussianHMM(K, ctype, init_params="", n_iter=8, tol=-np.inf,
                               min_covar=1e-12, **kwargs)  # fmt: skip
        m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, cov
        fitted.append(m.fit(X))
    ref, got = fitted
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-10)
    for name in ("startprob_", "transmat_", "means_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-12)
