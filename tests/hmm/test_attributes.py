"""Fitted attributes are assignable, validated on assignment, and respect ties.

A refused assignment leaves the model exactly as it was; a hypothesis
property checks that for arbitrary bad values of every attribute.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, NotFittedError

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")


def _model(ctype="diag", ties=None):
    cov = {
        "spherical": np.ones(3),
        "diag": np.ones((3, 2)),
        "full": np.repeat(np.eye(2)[None], 3, 0),
        "tied": np.eye(2),
    }[ctype]
    return GaussianHMM.from_params(
        np.full(3, 1 / 3),
        np.full((3, 3), 1 / 3),
        [[0.0, 0.0], [0.0, 0.0], [3.0, 1.0]],
        cov,
        covariance_type=ctype,
        ties=ties,
    )


X = np.random.default_rng(0).normal(size=(20, 2))


@pytest.mark.parametrize(
    "name, value, match",
    [
        (
            "startprob_",
            [2, 5],
            r"startprob_ must have shape \(3,\) = \(n_components,\), got \(2,\)",
        ),
        ("startprob_", [2, 5, -6], "startprob_ must hold finite non-negative probabilities"),
        ("startprob_", [0.5, 0.5, 0.5], r"startprob_ must sum to 1 .* sum to \[1.5\]"),
        ("transmat_", np.ones((3, 3)), r"transmat_ must sum to 1 .* row\(s\) \[0, 1, 2\]"),
        ("transmat_", np.eye(2), r"transmat_ must have shape \(3, 3\)"),
        (
            "means_",
            np.zeros((2, 2)),
            r"means_ must have shape \(3, n_features\) = \(n_components, n_features\)",
        ),
        ("means_", np.full((3, 2), np.nan), "means_ must be finite"),
        ("means_", np.zeros((3, 4)), "means_ has 4 features but covars_ has 2"),
        ("covars_", -np.ones((3, 2)), r"covars_\[0\]: variances must be positive"),
        (
            "covars_",
            np.ones((3, 3)),
            r"covars_ must have shape \(3, 2\) = \(n_components, n_features\) for 'diag'",
        ),
        (
            "covars_",
            np.array([[[1.0, 0.5], [0.5, 1.0]]] * 3),
            "a 'diag' covariance given as matrices must be diagonal",
        ),
    ],
)
def test_bad_assignment_is_refused_and_changes_nothing(name, value, match):
    m = _model()
    before = m.score(X)
    with pytest.raises(ValueError, match=match):
        setattr(m, name, value)
    assert m.score(X) == before


@pytest.mark.parametrize(
    "ctype, value, match",
    [
        (
            "full",
            np.array([[[1.0, 2.0], [2.0, 1.0]]] * 3),
            r"covars_\[0\] must be positive definite",
        ),
        ("full", np.array([[[1.0, 0.5], [0.0, 1.0]]] * 3), r"covars_\[0\] must be symmetric"),
        ("tied", np.array([[1.0, 2.0], [2.0, 1.0]]), "covars_ must be positive definite"),
        (
            "spherical",
            np.ones((3, 2)),
            r"covars_ must have shape \(3,\) = \(n_components,\) for 'spherical'",
        ),
        ("spherical", np.zeros(3), "variances must be positive"),
    ],
)
def test_covariances_are_checked_per_type(ctype, value, match):
    m = _model(ctype)
    before = m.covars_
    with pytest.raises(ValueError, match=match):
        m.covars_ = value
    assert np.array_equal(m.covars_, before)


def test_assigning_different_values_to_tied_states_names_them():
    m = _model(ties={"means": [[0, 1]], "transitions": [[1, 2]]})
    with pytest.raises(
        ValueError, match=r"means_: states 0 and 1 are tied \(ties\['means'\] group"
    ):
        m.means_ = [[0.0, 0.0], [1.0, 0.0], [3.0, 1.0]]
    A = np.full((3, 3), 1 / 3)
    A[2] = [0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match=r"transmat_: states 1 and 2 are tied"):
        m.transmat_ = A
    m.means_ = [[1.0, 1.0], [1.0, 1.0], [3.0, 1.0]]  # equal within the group: accepted
    assert m.group_params("means").tolist() == [[1.0, 1.0], [3.0, 1.0]]


def test_tied_covariance_accepts_hmmlearn_and_full_forms_alike():
    m = _model("tied")
    m.covars_ = 2 * np.eye(2)
    a = m.score(X)
    m.covars_ = np.repeat(2 * np.eye(2)[None], 3, 0)
    assert m.score(X) == a
    with pytest.raises(ValueError, match="covars_: states 0 and 1 are tied"):
        m.covars_ = np.stack([np.eye(2), 2 * np.eye(2), np.eye(2)])


def test_every_covariance_type_round_trips_its_own_getter():
    for ctype in ("spherical", "diag", "full", "tied"):
        m = _model(ctype)
        m.covars_ = 1.5 * m.covars_
        np.testing.assert_allclose(m.covars_[0], 1.5 * np.eye(2))


def test_attributes_set_one_by_one_make_a_usable_model_and_missing_ones_are_named():
    m = GaussianHMM(2, "full")
    m.startprob_ = [0.5, 0.5]
    m.transmat_ = [[0.9, 0.1], [0.1, 0.9]]
    with pytest.raises(NotFittedError, match=r"has no means_, covars_ yet; assign m.means_ = "):
        m.score(X)
    m.means_ = [[0.0, 0.0], [1.0, 1.0]]
    m.covars_ = np.repeat(np.eye(2)[None], 2, 0)
    ref = GaussianHMM.from_params(
        [0.5, 0.5],
        [[0.9, 0.1], [0.1, 0.9]],
        [[0.0, 0.0], [1.0, 1.0]],
        np.repeat(np.eye(2)[None], 2, 0),
        covariance_type="full",
    )
    assert m.score(X) == ref.score(X)


def test_assigned_attributes_are_the_start_values_of_fit():
    rng = np.random.default_rng(1)
    Xf = rng.normal(size=(200, 2))
    m = GaussianHMM(2, n_iter=1, random_state=0)
    m.means_ = [[-5.0, -5.0], [5.0, 5.0]]
    m.fit(Xf)
    ref = GaussianHMM(2, n_iter=1, random_state=0, means_init=[[-5.0, -5.0], [5.0, 5.0]]).fit(Xf)
    np.testing.assert_allclose(m.means_, ref.means_)


def test_categorical_emissionprob_is_validated_on_assignment():
    m = CategoricalHMM.from_params([0.5, 0.5], np.full((2, 2), 0.5), [[0.5, 0.5], [0.1, 0.9]])
    with pytest.raises(
        ValueError,
        match=r"emissionprob_ must have shape \(2, 2\) = \(n_components, n_symbols\), got \(2, 3\)",
    ):
        m.emissionprob_ = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"emissionprob_ must sum to 1 .* row\(s\) \[1\]"):
        m.emissionprob_ = [[0.5, 0.5], [0.5, 0.6]]
    tied = CategoricalHMM(2, ties={"emissions": "all"})
    with pytest.raises(ValueError, match="emissionprob_: states 0 and 1 are tied"):
        tied.emissionprob_ = [[0.5, 0.5], [0.1, 0.9]]


_bad = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(-2, 2), min_size=1, max_size=4),
    st.lists(st.lists(st.floats(-2, 2), min_size=1, max_size=3), min_size=1, max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["startprob_", "transmat_", "means_", "covars_"]), value=_bad)
def test_any_assignment_is_either_valid_or_refused_without_change(name, value):
    m = _model("full")
    before = {k: getattr(m, k) for k in ("startprob_", "transmat_", "means_", "covars_")}
    try:
        setattr(m, name, value)
    except (ValueError, TypeError):
        for k, v in before.items():
            assert np.array_equal(getattr(m, k), v)
        return
    # accepted: the model is still a valid one and scores finite numbers
    assert np.isfinite(m.score(np.zeros((3, m.n_features_))))


def _other_models():
    cat = CategoricalHMM.from_params([0.5, 0.5], np.full((2, 2), 0.5), [[0.5, 0.5], [0.1, 0.9]])
    gmm = GMMHMM.from_params(
        [0.5, 0.5],
        np.full((2, 2), 0.5),
        np.full((2, 2), 0.5),
        np.zeros((2, 2, 1)),
        np.ones((2, 2, 1)),
    )
    return {"cat": (cat, np.zeros((3, 1), dtype=int)), "gmm": (gmm, np.zeros((3, 1)))}


@settings(max_examples=150, deadline=None)
@given(
    which=st.sampled_from(
        [
            ("cat", "startprob_"),
            ("cat", "transmat_"),
            ("cat", "emissionprob_"),
            ("gmm", "weights_"),
            ("gmm", "means_"),
            ("gmm", "covars_"),
            ("gmm", "transmat_"),
        ]
    ),
    value=_bad,
)
def test_any_assignment_to_categorical_or_gmm_is_valid_or_refused(which, value):
    kind, name = which
    m, X = _other_models()[kind]
    before = m.score(X)
    try:
        setattr(m, name, value)
    except (ValueError, TypeError):
        assert m.score(X) == before
        return
    assert not np.isnan(m.score(X))  # accepted: a valid model (a symbol may get probability 0)
