"""covariance_type set to 'tied' after a fit under another type, then covars_ assigned (stop 57).

The ties held from the fit kept one covariance group per state, so the tied (D, D)
covariance just assigned was refused on read as "'full' covariances ... assign covars_
for 'tied'" (what the caller had done), and fit crashed with a bare IndexError.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from tying.hmm import GaussianHMM

X = np.random.default_rng(0).normal(size=(40, 2))
S = np.array([[2.0, 0.5], [0.5, 1.0]])


@pytest.fixture
def switched():
    m = GaussianHMM(2, "diag", n_iter=2, tol=-np.inf, random_state=0).fit(X)
    m.set_params(covariance_type="tied")
    return m


def test_a_tied_covariance_assigned_after_the_switch_scores_and_fits(switched):
    m = switched
    m.covars_ = S
    assert m.ties_.groups("covars") == [[0, 1]]
    # one step of one state: log p(x) = log startprob_k + log N(x; mean_k, S), summed over k
    x = X[:1]
    dens = [multivariate_normal(mu, S).logpdf(x[0]) for mu in m.means_]
    assert m.score(x) == pytest.approx(np.logaddexp.reduce(np.log(m.startprob_) + dens), rel=1e-12)
    assert m.fit(X).covars_.shape == (2, 2, 2)
    np.testing.assert_array_equal(m.covars_[0], m.covars_[1])


def test_the_diag_values_left_over_are_refused_by_name(switched):
    m = switched
    m.means_ = m.means_ + 1.0  # re-resolves the ties: covars_ is held under the old ones
    with pytest.raises(ValueError, match=r"covars_ still hold\(s\) the values for 2 states "
                       r"\(under other tie groups than ties=None with covariance_type='tied' "
                       r"gives\) \(n_components, ties or covariance_type changed"):  # fmt: skip
        m.score(X)
    m.covars_ = S
    assert np.isfinite(m.score(X))
