"""hmmlearn's GMMHMM types that ours lacks are refused with advice that holds them.

Stop 59: covariance_type="tied" (hmmlearn: one full covariance shared by the components
of each state) was refused with "tie covariances across states with ties={'covars':
...}", which ties across states, another model: followed, the fit ran with no error.
"""

import numpy as np
import pytest

from tying.hmm import GMMHMM

RNG = np.random.default_rng(0)
X = np.concatenate([RNG.normal(-2, 1, (40, 2)), RNG.normal(2, 0.5, (40, 2))])


@pytest.mark.parametrize(
    ("ct", "use", "shape"), [("tied", "full", (2, 2, 2, 2)), ("spherical", "diag", (2, 2, 2))]
)
def test_missing_gmm_types_name_the_type_that_holds_them(ct, use, shape):
    m = GMMHMM(2, 2, covariance_type=ct, n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(ValueError, match=rf"got '{ct}'; hmmlearn's '{ct}' .* use '{use}'") as err:
        m.fit(X)
    if ct == "tied":  # the old advice, now said to be another model
        assert "ties covariances across states, not across the components" in str(err.value)
    assert not hasattr(m, "monitor_")
    m.set_params(covariance_type=use).fit(X)  # the advice, followed
    assert m.covars_.shape == shape


def test_a_misspelt_type_is_named_without_tie_advice():
    with pytest.raises(ValueError, match=r"for GMMHMM, got 'dag'$"):
        GMMHMM(2, 2, covariance_type="dag").fit(X)
