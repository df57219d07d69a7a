"""Review of stop 60: the default-covars_prior note when other priors are passed, and
PairHMM's n_iter as a 0-d integer array (sibling routes of the stop-60 changes)."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm.pair import PairHMM

# the 1e-150-scale tied fit of the stop-60 prior note, shared with its first test
from .test_numerical_extremes_stop60 import SCALE, _tiny_scale_fit


@pytest.mark.parametrize("prior", [{"means_prior": 0.0}, {"startprob_prior": 1.0}])
def test_default_covars_prior_named_when_other_priors_are_passed(prior):
    # hmmlearn users pass startprob_prior / means_prior=0 routinely; the refusal blamed
    # those ("give smaller priors": impossible below 0) and hid covars_prior=1e-2
    m, X = _tiny_scale_fit(**prior)
    with pytest.raises(
        ValueError,
        match=r"not positive definite .*covars_prior was not passed, but hmmlearn's "
        r"default covars_prior=0\.01 is in force .*pass covars_prior=0.*or the priors "
        r"passed \(" + next(iter(prior)),
    ):
        m.fit(X, [90, 90])
    m, X = _tiny_scale_fit(**prior, covars_prior=0)  # the advice, followed
    m.fit(X, [90, 90])
    assert np.all(np.linalg.eigvalsh(m.covars_[0] / SCALE**2) > 0.1)


def test_pair_hmm_takes_a_zero_d_n_iter():
    pairs = [("GATTACA", "GATACA"), ("ACGTTG", "ACGTG")]
    a = PairHMM("ACGT", n_iter=np.array(3), tol=-np.inf).fit(pairs)
    b = PairHMM("ACGT", n_iter=3, tol=-np.inf).fit(pairs)
    assert a.n_iter_ == 3
    np.testing.assert_array_equal(a.history_, b.history_)
    with pytest.raises(ValueError, match=r"n_iter must be a non-negative integer .*array\(2\.\)"):
        PairHMM("ACGT", n_iter=np.array(2.0)).fit(pairs)
