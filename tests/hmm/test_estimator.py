"""scikit-learn's estimator protocol (``tying.hmm.estimator``): get_params, set_params,
clone, grid search and repr, against hmmlearn's GaussianHMM in the same grid search.

Stop 32, fourth round: the models had no ``get_params``, so ``sklearn.base.clone``,
``GridSearchCV`` and ``cross_val_score`` refused them; every test here failed before.
"""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import tying
from tying import TieError
from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PairHMM, StateTies

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

sklearn_base = pytest.importorskip("sklearn.base", reason="scikit-learn not installed")
model_selection = pytest.importorskip("sklearn.model_selection")

_X = np.random.default_rng(0).normal(size=(240, 2))


def _models():
    return [
        GaussianHMM(3, "full", ties={"means": [[0, 1]]}, n_iter=3, random_state=0),
        GaussianHMM(2, params="mc", init_params="", startprob_init=[0.5, 0.5], n_init=2),
        CategoricalHMM(2, n_features=3, emissionprob_init=np.full((2, 3), 1 / 3)),
        GMMHMM(2, n_mix=2, ties={"means": "all", "covars": "all"}, n_jobs=1),
        PairHMM("ACGT", tied=False, delta=(0.1, 0.2)),
    ]


# ------------------------------------------------------------------ get_params
@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_get_params_returns_every_constructor_argument_as_given(model):
    params = model.get_params()
    named = set()
    for klass in type(model).__mro__:
        if "__init__" in klass.__dict__ and klass is not object:
            named |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    assert set(params) == named  # the arguments **kwargs forwards to BaseHMM included
    for name, value in params.items():
        assert value is getattr(model, name)  # the very object, as clone checks
    assert model.get_params(deep=False) == params


def test_gaussian_params_include_every_hmmlearn_argument():
    hmm = pytest.importorskip("hmmlearn.hmm")
    ours, theirs = GaussianHMM().get_params(), hmm.GaussianHMM().get_params()
    assert set(theirs) <= set(ours)


# ---------------------------------------------------------------------- clone
@pytest.mark.parametrize(
    "ties",
    [
        {"means": [[0, 1]], "covars": "all"},
        [tying.share("means.*", like="means.0"), tying.free("means.2")],
        StateTies.resolve(
            {"covars": [[0, 1]]}, n_states=3, kinds=("transitions", "means", "covars")
        ),
    ],
    ids=["dict", "rules", "StateTies"],
)
def test_clone_keeps_the_declared_ties_and_drops_fitted_values(ties):
    m = GaussianHMM(3, ties=ties, n_iter=4, random_state=0).fit(_X, [200, 40])
    m.means_ = m.means_ + 0.5  # assigned since the fit: a start value, not a setting
    c = sklearn_base.clone(m)
    assert c.get_params().keys() == m.get_params().keys()
    for attr in ("ties_", "history_", "monitor_", "n_features_"):
        assert not hasattr(c, attr)
    with pytest.raises(tying.hmm.NotFittedError, match="not fitted yet"):
        c.score(_X)
    c.fit(_X, [200, 40])
    fresh = GaussianHMM(3, ties=ties, n_iter=4, random_state=0).fit(_X, [200, 40])
    for kind in ("means", "covars", "transitions"):
        assert c.ties_.groups(kind) == fresh.ties_.groups(kind)
    assert c.history_ == fresh.history_  # the clone fits as a fresh model, bit for bit
    np.testing.assert_array_equal(c.means_, fresh.means_)


def test_clone_of_every_model_builds_and_keeps_its_settings():
    for model in _models():
        c = sklearn_base.clone(model)
        assert type(c) is type(model) and repr(c) == repr(model)


# ------------------------------------------------------------------ set_params
@pytest.mark.parametrize(
    "bad, error, match",
    [
        ({"n_components": 0}, ValueError, "n_components must be a positive integer, got 0"),
        ({"covariance_type": "ful"}, ValueError, "covariance_type must be one of"),
        ({"n_iter": -1}, ValueError, "n_iter must be a non-negative integer"),
        ({"tol": float("nan")}, ValueError, "tol must be a number"),
        ({"params": "stmx"}, ValueError, r"unknown letter\(s\) \['x'\]"),
        ({"min_covar": -1.0}, ValueError, "min_covar must be a positive number"),
        # checked together: the first value is fine alone, the second is not
        ({"n_components": 2, "algorithm": "best"}, ValueError, "algorithm must be one of"),
        ({"n_components": 2}, TieError, r"state 2 does not exist \(n_components=2"),
        ({"n_compnents": 4}, ValueError, "Invalid parameter 'n_compnents' for estimator "),
        ({"ties__means": "all"}, ValueError, "ties is not an estimator with parameters"),
    ],
)
def test_set_params_refuses_what_fit_would_and_changes_nothing(bad, error, match):
    m = GaussianHMM(3, ties={"means": [[1, 2]]}, n_iter=3, random_state=0).fit(_X)
    before = pickle.dumps(m)
    with pytest.raises(error, match=match):
        m.set_params(**bad)
    assert pickle.dumps(m) == before
    assert m.n_components == 3


def test_set_params_sets_values_together_and_returns_self():
    m = GaussianHMM(3, ties={"means": [[1, 2]]})
    assert m.set_params(n_components=2, ties={"means": [[0, 1]]}) is m
    assert (m.n_components, m.ties) == (2, {"means": [[0, 1]]})
    assert m.set_params() is m


def test_set_params_on_a_fitted_model_is_an_assignment():
    # the stop-31 rules apply: a new setting takes effect at the next fit
    m = GaussianHMM(3, n_iter=3, random_state=0).fit(_X)
    bic = m.bic(_X)
    m.set_params(n_components=4)
    assert m.bic(_X) == bic
    assert m.fit(_X).transmat_.shape == (4, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"tau": 1.5}, "tau must lie strictly between 0 and 1"),
        ({"tied": "yes"}, "tied must be True or False"),
        ({"tied": True}, r"delta must be a probability, got \(0.1, 0.2\)"),
        ({"alphabet": "AAC"}, "repeats a symbol"),
        ({"n_iter": -2}, "n_iter must be a non-negative integer"),
        ({"delta": 0.45, "tau": 0.2}, r"2·delta \+ tau = 1.1 must be < 1"),
    ],
)
def test_pair_set_params_refuses_what_fit_would_and_changes_nothing(bad, match):
    pairs = PairHMM.from_params("ACGT").sample(5, random_state=0)[0]
    m = PairHMM("ACGT", tied=False, delta=(0.1, 0.2), n_iter=2).fit(pairs)
    before = pickle.dumps(m)
    with pytest.raises((ValueError, TypeError), match=match):
        m.set_params(**bad)
    assert pickle.dumps(m) == before


# ----------------------------------------------------------------- grid search
def _start(K, ctype):
    """Start values both libraries can take (one per number of states and type)."""
    A = np.full((K, K), 0.1 / (K - 1)) + np.eye(K) * (0.9 - 0.1 / (K - 1))
    means = np.linspace(-2, 2, K)[:, None] * np.array([1.0, 0.8])
    covars = {
        "spherical": np.ones(K),
        "diag": np.ones((K, 2)),
        "full": np.tile(np.eye(2), (K, 1, 1)),
        "tied": np.eye(2),
    }[ctype]
    return np.full(K, 1.0 / K), A, means, covars


def _grid_data():
    rng = np.random.default_rng(3)
    return np.concatenate(
        [rng.normal(-2, 1, (90, 2)), rng.normal(2, 0.7, (90, 2)), rng.normal(0, 1.5, (90, 2))]
    )


def test_grid_search_scores_and_picks_as_hmmlearn_from_the_same_start():
    hmm = pytest.importorskip("hmmlearn.hmm")

    class Anchor(hmm.GaussianHMM):  # hmmlearn from our start values
        def _init(self, X, lengths=None):
            super()._init(X, lengths)
            sp, A, mu, cv = _start(self.n_components, self.covariance_type)
            self.startprob_, self.transmat_, self.means_, self.covars_ = sp, A, mu, cv

    X, cv = _grid_data(), model_selection.KFold(3)
    types = ["spherical", "diag", "full", "tied"]
    settings = dict(n_iter=6, tol=-np.inf, init_params="", min_covar=1e-6)
    grid = []
    for K in (2, 3):
        for ctype in types:
            sp, A, mu, cov = _start(K, ctype)
            grid.append(
                {"n_components": [K], "covariance_type": [ctype], "startprob_init": [sp],
                 "transmat_init": [A], "means_init": [mu], "covars_init": [cov]}
            )  # fmt: skip
    ours = model_selection.GridSearchCV(GaussianHMM(**settings), grid, cv=cv, error_score="raise")
    theirs = model_selection.GridSearchCV(
        Anchor(**settings), {"n_components": [2, 3], "covariance_type": types}, cv=cv,
        error_score="raise",
    )  # fmt: skip
    ours.fit(X)
    theirs.fit(X)

    def folds(search):
        res = search.cv_results_
        return {
            (p["n_components"], p["covariance_type"]): [res[f"split{k}_test_score"][i] for k in range(3)]
            for i, p in enumerate(res["params"])
        }  # fmt: skip

    a, b = folds(ours), folds(theirs)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10)
    best = {k: ours.best_params_[k] for k in ("n_components", "covariance_type")}
    assert best == theirs.best_params_
    np.testing.assert_allclose(ours.best_score_, theirs.best_score_, rtol=1e-10)


def test_grid_search_over_a_tied_model_picks_the_hand_loop_model():
    X, cv = _grid_data(), model_selection.KFold(3)
    base = GaussianHMM(ties={"covars": "all"}, n_iter=5, random_state=1)
    grid = {"n_components": [2, 3, 4], "covariance_type": ["diag", "full"]}
    search = model_selection.GridSearchCV(base, grid, cv=cv, error_score="raise").fit(X)
    by_hand = {}
    for K in grid["n_components"]:
        for ctype in grid["covariance_type"]:
            scores = []
            for train, test in cv.split(X):
                m = GaussianHMM(K, ctype, ties={"covars": "all"}, n_iter=5, random_state=1)
                scores.append(m.fit(X[train]).score(X[test]))
            by_hand[(K, ctype)] = np.mean(scores)
    res = search.cv_results_
    for i, p in enumerate(res["params"]):
        assert res["mean_test_score"][i] == by_hand[(p["n_components"], p["covariance_type"])]
    best = max(by_hand, key=by_hand.get)
    assert (search.best_params_["n_components"], search.best_params_["covariance_type"]) == best
    assert search.best_estimator_.ties_.groups("covars") == [list(range(best[0]))]
    scores = model_selection.cross_val_score(base.set_params(n_components=3), X, cv=cv)
    np.testing.assert_array_equal(scores.mean(), by_hand[(3, "diag")])


def test_grid_search_over_a_pair_hmm():
    # 8 pairs (4 per fold): the search must equal the folds fitted by hand, at any size;
    # 16 pairs took 10-26 s for the same assertion (stop 52); tau=0.05 keeps the pairs
    # under 32 symbols (tau=0.01 drew pairs up to 224 x 190: 8-14 s, stop 55)
    pairs = PairHMM.from_params("ACGT", delta=0.1, tau=0.05).sample(8, random_state=0)[0]
    search = model_selection.GridSearchCV(
        PairHMM("ACGT", n_iter=3), {"tied": [True, False]}, cv=model_selection.KFold(2)
    ).fit(pairs)
    by_hand = [
        np.mean([PairHMM("ACGT", n_iter=3, tied=t).fit([pairs[i] for i in tr]).score(
            [pairs[i] for i in te]) for tr, te in model_selection.KFold(2).split(pairs)])
        for t in (True, False)
    ]  # fmt: skip
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], by_hand)


# ------------------------------------------------------------------------ repr
def test_repr_lists_the_arguments_that_differ_from_their_defaults():
    assert repr(GaussianHMM()) == "GaussianHMM()"
    assert (
        repr(GaussianHMM(3, "full", n_iter=20, ties={"covars": "all"}, n_init=2))
        == "GaussianHMM(n_components=3, covariance_type='full', n_iter=20, "
        "ties={'covars': 'all'}, n_init=2)"
    )
    assert repr(PairHMM("ACGT", tied=False)) == "PairHMM(alphabet='ACGT', tied=False)"
    assert "\n" not in repr(GaussianHMM(2, means_init=np.zeros((30, 30))))
