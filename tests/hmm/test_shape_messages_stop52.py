"""Shape refusals write the expected shape readably (stop 52).

A wrong shape was refused as ``covars_ must have shape (3, 'D') for 'diag' covariances``:
a tuple of sizes and quoted letters that says neither what ``'D'`` is nor which axis is
which (and printed ``'D'`` where the model knew the feature count). Every shape refusal
of the estimators now writes ``(3, 2) = (n_components, n_features)``: the sizes, then
what each axis is, an unknown size by its name. The sweep below drives each estimator's
shape checks (assignments, ``from_params``, ``*_init`` arguments, the pair HMM's
tables) and holds every message to that form, so a new shape check that prints a bare
tuple fails here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PairHMM

pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

SP, A = [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]]
X = np.random.default_rng(0).normal(size=(20, 2))
_COVARS = {"diag": np.ones((2, 2)), "full": np.array([np.eye(2)] * 2), "tied": np.eye(2)}
_COVARS["spherical"] = np.ones(2)


def _gaussian(ct):
    return GaussianHMM.from_params(SP, A, np.zeros((2, 2)), _COVARS[ct], covariance_type=ct)


def _assign(model, name, value):
    def go():
        setattr(model, name, value)

    return go


def _cases():
    for ct, bad in [
        ("diag", np.ones(2)),
        ("diag", np.ones((3, 2))),
        ("full", np.ones((2, 2))),
        ("full", np.ones((3, 2, 2))),
        ("tied", np.ones(2)),
        ("tied", np.eye(3)),
        ("spherical", np.ones(3)),
        ("spherical", np.ones((2, 2, 2, 2, 2))),
    ]:
        yield f"covars_ {ct} {bad.shape}", _assign(_gaussian(ct), "covars_", bad)
        yield (
            f"from_params {ct} {bad.shape}",
            lambda ct=ct, bad=bad: GaussianHMM.from_params(
                SP, A, np.zeros((2, 2)), bad, covariance_type=ct
            ),
        )
    ties = {"means": [[0, 1]], "covars": [[0, 1]]}
    yield (
        "covars_init per group",
        lambda: GaussianHMM(3, "full", ties=ties, covars_init=np.ones((4, 2, 2))).fit(X),
    )
    yield "means_", _assign(_gaussian("diag"), "means_", np.zeros((3, 2)))
    yield "startprob_", _assign(_gaussian("diag"), "startprob_", [1.0])
    yield "transmat_", _assign(_gaussian("diag"), "transmat_", np.ones((2, 3)) / 3)
    yield "means_init", lambda: GaussianHMM(3, ties=ties, means_init=np.zeros((4, 2))).fit(X)
    yield "startprob_init", lambda: GaussianHMM(2, startprob_init=[1.0]).fit(X)
    yield "transmat_init", lambda: GaussianHMM(2, transmat_init=[[1.0]]).fit(X)
    cat = CategoricalHMM.from_params(SP, A, [[0.5, 0.5], [0.5, 0.5]])
    yield "emissionprob_", _assign(cat, "emissionprob_", np.ones((3, 2)) / 2)
    yield (
        "emissionprob_init",
        lambda: CategoricalHMM(
            3, ties={"emissions": [[0, 1]]}, emissionprob_init=np.ones((4, 2)) / 2
        ).fit([[0], [1], [1], [0], [1], [0], [1], [1]]),
    )
    gmm = GMMHMM.from_params(SP, A, [[0.5, 0.5]] * 2, np.zeros((2, 2, 3)), np.ones((2, 2, 3)))
    yield "weights_", _assign(gmm, "weights_", np.ones((3, 2)) / 2)
    yield "gmm means_", _assign(gmm, "means_", np.zeros((2, 2)))
    yield "gmm covars_", _assign(gmm, "covars_", np.ones((2, 2, 2)))
    yield "gmm covars_init", lambda: GMMHMM(2, 2, covars_init=np.ones((2, 2))).fit(X)
    yield "gmm weights_init", lambda: GMMHMM(2, 2, weights_init=np.ones((2, 3)) / 3).fit(X)
    yield "prior", lambda: GaussianHMM(2, means_prior=np.zeros((3, 2))).fit(X)
    pair = [("AC", "AG")]
    yield "match_probs", lambda: PairHMM("ACGT", match_probs=np.ones((3, 3)) / 9).fit(pair)
    yield (
        "insert_probs",
        lambda: PairHMM("ACGT", tied=False, insert_probs=np.ones(4) / 4).fit(pair),
    )


CASES = dict(_cases())


@pytest.mark.parametrize("case", list(CASES))
def test_a_shape_refusal_writes_the_expected_shape_readably(case):
    with pytest.raises(ValueError, match="shape") as info:
        CASES[case]()
    message = str(info.value)
    # no size written as a quoted letter, as in (3, 'D') or ('D', 'D')
    assert not re.search(r"\((?:[^()]*, )?'[A-Z]'", message), message
    # the expected shape says what its axes are: "(3, 2) = (n_components, n_features)"
    assert re.search(r"\([\d, a-z_'\[\]-]*\) = \([a-z_]", message), message


def test_a_known_feature_count_is_written_as_a_number():
    # before: "covars_ must have shape (2, 'D')" although means_ gave D = 2
    with pytest.raises(
        ValueError,
        match=r"covars_ must have shape \(2, 2\) = \(n_components, n_features\) for 'diag' "
        r"covariances, got \(3, 2\)",
    ):
        _gaussian("diag").covars_ = np.ones((3, 2))


def test_an_unknown_size_is_written_by_its_name():
    with pytest.raises(
        ValueError,
        match=r"means_ must have shape \(2, 2, n_features\) = \(n_components, n_mix, "
        r"n_features\), got \(2, 2\)",
    ):
        GMMHMM.from_params(
            SP, A, [[0.5, 0.5]] * 2, np.zeros((2, 2, 3)), np.ones((2, 2, 3))
        ).means_ = np.zeros((2, 2))


def test_one_per_state_or_one_per_group_names_both_forms():
    ties = {"means": [[0, 1]]}
    with pytest.raises(
        ValueError,
        match=r"means_init must have shape \(3, 2\) = \(n_components, n_features\) \(one per "
        r"state\) or \(2, 2\) = \(groups in ties\['means'\], n_features\) \(one per group\), "
        r"got \(4, 2\)",
    ):
        GaussianHMM(3, ties=ties, means_init=np.zeros((4, 2))).fit(X)
    # untied, the two forms are one: written once
    with pytest.raises(ValueError, match=r"\(one per state\), got \(3, 2\)$"):
        GaussianHMM(2, means_init=np.zeros((3, 2))).fit(X)


def test_a_start_value_kept_for_other_features_names_the_fix():
    m = GaussianHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(X)
    m.set_params(init_params="st", covars_prior=0.0, n_iter=2, tol=-np.inf)
    before = m.means_.copy()
    with pytest.raises(
        ValueError,
        match=r"means_ has 2 features but X has 3; fit starts from it .*init_params='st' "
        r"leaves it out\): assign m.means_ for 3 features, or let fit initialise it",
    ):
        m.fit(np.random.default_rng(1).normal(size=(20, 3)))
    np.testing.assert_array_equal(m.means_, before)  # the model is as it was
