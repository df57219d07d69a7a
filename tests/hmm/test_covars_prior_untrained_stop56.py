"""A covars_prior is inert when the covariances are not trained: its sign is not refused."""

import numpy as np
import pytest

from tying.hmm import GaussianHMM

RNG = np.random.default_rng(0)
X = np.concatenate([RNG.normal(0, 1, (60, 2)), RNG.normal(5, 1, (60, 2))])


@pytest.mark.parametrize(("ct", "prior"), [("diag", -0.01), ("full", -0.01 * np.eye(2))])
def test_negative_covars_prior_with_covars_fixed_fits_as_without_it(ct, prior):
    kw = dict(
        covariance_type=ct, params="stm", init_params="stmc", n_iter=5, tol=-np.inf, random_state=0
    )
    ref = GaussianHMM(2, **kw).fit(X)
    got = GaussianHMM(2, covars_prior=prior, **kw).fit(X)  # hmmlearn takes it too
    np.testing.assert_array_equal(got.means_, ref.means_)
    np.testing.assert_array_equal(got.covars_, ref.covars_)
    with pytest.raises(ValueError, match="covars_prior must be"):  # trained: refused
        GaussianHMM(2, covars_prior=prior, **{**kw, "params": "stmc"}).fit(X)


def test_a_vector_prior_for_full_names_the_row_reading_and_its_fix_works():
    kw = dict(covariance_type="full", n_iter=5, tol=-np.inf, random_state=0)
    with pytest.raises(ValueError, match=r"read as every row.*give np\.diag\(v\)"):
        GaussianHMM(2, covars_prior=np.array([1.0, 0.01]), **kw).fit(X)
    m = GaussianHMM(2, covars_prior=np.diag([1.0, 0.01]), **kw).fit(X)  # the advice, followed
    assert np.all(np.linalg.eigvalsh(m.covars_) > 0)
