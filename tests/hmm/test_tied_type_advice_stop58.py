"""Stop 58: per-state covariances that differ under covariance_type='tied' name the fix
that works (one matrix, or 'full'), not "untie them": the type ties them, and a model
built without ``ties`` has nothing to untie."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM

PER_STATE = np.array([np.eye(2) * v for v in (1.0, 2.0, 3.0)])  # (3, 2, 2), differing
FIX = r"\(covariance_type='tied' holds one covariance for every state: give one \(n_features"


def _X():
    rng = np.random.default_rng(1)
    return rng.normal(size=(90, 2)) + rng.integers(0, 3, 90)[:, None] * 3.0


def test_differing_tied_type_covariances_name_one_matrix_or_full_and_both_work():
    with pytest.raises(ValueError, match=FIX) as info:
        GaussianHMM(3, "tied", covars_init=PER_STATE, n_iter=1).fit(_X())
    assert "untie them" not in str(info.value)
    m = GaussianHMM(3, "tied", n_iter=2, tol=-np.inf, random_state=0).fit(_X())
    before = m.covars_.copy()
    with pytest.raises(ValueError, match=FIX):
        m.covars_ = PER_STATE
    assert np.array_equal(m.covars_, before)  # the refused write changed nothing
    # the advice, followed: one matrix for 'tied', or 'full' for differing covariances
    m.covars_ = np.eye(2) * 2.0
    assert np.array_equal(m.covars_, np.repeat(np.eye(2)[None] * 2.0, 3, axis=0))
    full = GaussianHMM(3, "full", covars_init=PER_STATE, n_iter=0, random_state=0).fit(_X())
    assert np.array_equal(full.covars_, PER_STATE)
    # a tie the user wrote keeps its advice
    with pytest.raises(ValueError, match=r"give tied states the same value or untie them"):
        GaussianHMM(3, "full", ties={"covars": [[0, 1]]}, covars_init=PER_STATE).fit(_X())


@pytest.mark.parametrize(
    "name, per_state, one, what",
    [
        ("covars_prior", PER_STATE, np.eye(2) * 2.0, r"\(n_features, n_features\) matrix"),
        ("covars_weight", np.array([1.0, 2.0, 3.0]), 3.0, r"number"),
    ],
)
def test_differing_tied_type_priors_name_one_prior_or_full_and_both_work(
    name, per_state, one, what
):
    with pytest.raises(
        ValueError,
        match=rf"same prior \(covariance_type='tied' holds one covariance: give one {what}\), or use",
    ):
        GaussianHMM(3, "tied", n_iter=1, **{name: per_state}).fit(_X())
    for covariance_type, prior in (("tied", one), ("full", per_state)):
        m = GaussianHMM(3, covariance_type, n_iter=2, tol=-np.inf, random_state=0, **{name: prior})
        assert np.isfinite(m.fit(_X()).score(_X()))
