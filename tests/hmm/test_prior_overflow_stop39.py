"""Stop 39: priors too large for float64 are refused by name, not fitted to inf.

A prior is checked to be finite (stop 33), but the M-step adds it to expected counts
and normalises, or divides it by a count: ``covars_prior=1e308`` returned a fitted
model with an infinite variance and no error; ``transmat_prior=1e308`` (a row sum of
inf: every entry normalised to 0) stopped with "sequence 0 has probability 0",
blaming the data; a full covariance stopped with NumPy's LinAlgError. Each is now
refused after the EM loop, naming the parameter, where, and the priors that were set.

Each ``test_`` that is not marked as a guard failed on the code before its fix.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import CategoricalHMM, GaussianHMM

X = np.random.default_rng(0).normal(size=(40, 2))
SYMBOLS = np.random.default_rng(1).integers(0, 3, size=(40, 1))
QUIET = dict(n_iter=3, tol=-np.inf, random_state=0)
LEFT = r"fit: the M-step left "
WHY = r"priors this large overflow float64 .*give smaller priors"


def _state(m):
    return {k: np.array(v) for k, v in m._state_arrays().items()}


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_a_covariance_prior_past_float64_is_refused_not_fitted_to_inf(covariance_type):
    m = GaussianHMM(3, covariance_type=covariance_type, **QUIET).fit(X)
    before = _state(m)
    m.set_params(covars_prior=1e308)
    with pytest.raises(ValueError, match=LEFT + r"covars_ non-finite \(inf in state \d\); " + WHY):
        m.fit(X)
    for k, v in _state(m).items():  # the refused fit left the fitted model as it was
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize(
    ("make", "data", "public"),
    [
        (lambda: GaussianHMM(3, transmat_prior=1e308, **QUIET), X, "transmat_"),
        (lambda: GaussianHMM(3, startprob_prior=1e308, **QUIET), X, "startprob_"),
        (lambda: CategoricalHMM(3, emissionprob_prior=1e308, **QUIET), SYMBOLS, "emissionprob_"),
    ],
)
def test_a_prior_whose_row_sum_overflows_is_named_not_blamed_on_the_data(make, data, public):
    with pytest.raises(
        ValueError, match=LEFT + public + r" with a row summing to 0, not 1 \(state 0\)"
    ) as info:
        make().fit(data)
    assert "probability 0" not in str(info.value)
    assert "=1e+308" in str(info.value)


def test_a_means_prior_whose_product_overflows_is_named_with_both_priors():
    m = GaussianHMM(3, means_prior=1e200, means_weight=1e200, **QUIET)
    with pytest.raises(
        ValueError, match=LEFT + r"means_ non-finite .*means_prior=1e\+200, means_weight=1e\+200"
    ):
        m.fit(X)
    assert "means_" not in m.__dict__ and "_means" not in m.__dict__  # nothing fitted


def test_a_tie_group_is_named_by_its_states():
    m = GaussianHMM(3, ties={"transitions": [[1, 2]]}, transmat_prior=1e308, **QUIET)
    with pytest.raises(ValueError, match=LEFT + r"transmat_ with a row .* \(state 0\)"):
        m.fit(X)
    m = GaussianHMM(3, ties={"transitions": [[0, 2]]}, transmat_prior=1e308, **QUIET)
    with pytest.raises(ValueError, match=LEFT + r"transmat_ with a row .* \(tie group \[0, 2\]\)"):
        m.fit(X)


def test_guard_the_largest_safe_priors_fit_as_hmmlearn_does():
    """A transition prior of 1e300 swamps the counts without overflowing: both libraries
    give uniform rows, and no refusal."""
    sp, A = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    means, covars = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]]), np.ones((3, 2))
    ours = GaussianHMM(3, init_params="", transmat_prior=1e300, **QUIET)
    ref = hl.GaussianHMM(3, init_params="", transmat_prior=1e300, n_iter=3, tol=-np.inf)
    for model in (ours, ref):
        model.startprob_, model.transmat_, model.means_, model.covars_ = sp, A, means, covars
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hmmlearn's own convergence notes
            model.fit(X)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-12)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-10)


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    name=st.sampled_from(
        ["startprob_prior", "transmat_prior", "covars_prior", "means_weight", "covars_weight"]
    ),
    exponent=st.integers(250, 308),
    covariance_type=st.sampled_from(["diag", "full", "spherical", "tied"]),
)
def test_property_a_fit_is_valid_or_refused_by_name(name, exponent, covariance_type):
    """Whatever the prior's size: the fitted parameters are finite with rows that are
    distributions (checked here entry by entry), or the fit is refused naming one."""
    kw = {name: 10.0**exponent}
    if name == "means_weight":
        kw["means_prior"] = 1.0
    m = GaussianHMM(3, covariance_type=covariance_type, **QUIET, **kw)
    try:
        m.fit(X)
    except ValueError as err:
        assert str(err).startswith("fit: the M-step left ")
        assert f"{name}={10.0**exponent!r}" in str(err)
        return
    for value in (m.startprob_, m.transmat_, m.means_, m.covars_):
        assert np.isfinite(value).all()
    for rows in (m.startprob_[None], m.transmat_):
        np.testing.assert_allclose(rows.sum(1), 1.0, rtol=1e-12)
    assert np.isfinite(m.score(X))
