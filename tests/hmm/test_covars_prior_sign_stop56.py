"""A negative covariance prior is refused by name (stop 56).

``covars_prior`` is a scale: of each variance's inverse-gamma prior (spherical, diag) or
of the inverse-Wishart prior (full, tied). A negative one has no mode where a state has
little data: the M-step's ``(covars_prior + Σγ(x-μ)²) / count`` falls below 0. hmmlearn
stored that negative variance; ours floored it at ``min_covar`` (1e-3, a number no prior
gives) and returned the model with no error. A positive semidefinite full prior with
negative off-diagonal entries is a valid scale and fits as hmmlearn does.
"""

import warnings

import numpy as np
import pytest

from tying.hmm import GaussianHMM

_rng = np.random.default_rng(0)
# state 1 sees three points near 6: its update (prior + ~0.03) / ~3 goes negative
X = np.concatenate(
    [_rng.normal(0, 1, (50, 2)), _rng.normal(6, 0.1, (3, 2)), _rng.normal(0, 1, (50, 2))]
)
COVARS = {
    "spherical": [1.0, 1.0],
    "diag": [[1.0, 1.0], [1.0, 1.0]],
    "full": [np.eye(2), np.eye(2)],
    "tied": np.eye(2),
}


def _start(m, ct):
    m.startprob_ = [0.5, 0.5]
    m.transmat_ = [[0.9, 0.1], [0.5, 0.5]]
    m.means_ = [[0.0, 0.0], [6.0, 6.0]]
    m.covars_ = COVARS[ct]
    return m


@pytest.mark.parametrize(
    "ct, prior, named",
    [
        ("spherical", -0.5, r">= 0 for 'spherical'.*got -0.5 for state 0, feature 0"),
        (
            "diag",
            [[0.1, 0.1], [0.1, -0.5]],
            r">= 0 for 'diag'.*got -0.5 for state 1, feature 1",
        ),
        ("full", -0.5, r"positive semidefinite for 'full'.*state 0's has eigenvalue -1"),
        ("full", [[1.0, 2.0], [2.0, 1.0]], r"positive semidefinite for 'full'.*eigenvalue -1"),
        ("tied", -200.0, r"positive semidefinite for 'tied'.*eigenvalue -400"),
    ],
)
def test_a_negative_covariance_prior_is_refused_and_the_model_is_unchanged(ct, prior, named):
    m = _start(GaussianHMM(2, ct, n_iter=1, tol=-np.inf, init_params="", covars_prior=prior), ct)
    before = m.covars_.copy()
    with pytest.raises(ValueError, match=r"covars_prior must be " + named):
        m.fit(X)
    assert np.array_equal(m.covars_, before)


def test_a_semidefinite_prior_with_negative_entries_fits_as_hmmlearn():
    hl = pytest.importorskip("hmmlearn.hmm")
    prior = np.array([[0.5, -0.4], [-0.4, 0.5]])  # eigenvalues 0.1 and 0.9
    kw = dict(n_iter=1, tol=-np.inf, init_params="", covars_prior=prior, min_covar=1e-12)
    ours = _start(GaussianHMM(2, "full", **kw), "full").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn's own notes on its fit
        ref = _start(hl.GaussianHMM(2, "full", **kw), "full").fit(X)
    np.testing.assert_allclose(ours.covars_, ref.covars_, rtol=1e-12, atol=1e-14)
