"""A state no observation reaches, fitted with MAP priors (stop 53).

With a covariance prior (``covars_weight`` above 1, or above ``n_features`` for full
covariances) the MAP M-step of a state with no posterior mass is well defined: the
prior's mode. hmmlearn computes it; before stop 53 ours kept the state's old
covariance (its mean did move to the prior), so the log-likelihood history left
hmmlearn's from the second iteration on (-161.6294 against -161.6346 for the spherical
model below), in the NumPy M-step and both compiled ones. A state without a prior to
count still keeps its covariance (``docs/hmm.md``: hmmlearn divides by a clamp there).
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM

K, D = 3, 2
START = np.array([0.4, 0.4, 0.2])
A = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.3, 0.3, 0.4]])
MEANS = np.array([[-1.0, 0.0], [1.0, 0.0], [30.0, 30.0]])  # state 2: ~e-900 of the mass
PRIORS = dict(
    startprob_prior=2.0, transmat_prior=2.0, means_prior=3.0, means_weight=2.0,
    covars_prior=0.5, covars_weight=3.0, min_covar=1e-12,
)  # fmt: skip
X = np.random.default_rng(1).normal(size=(60, D))


def _start_covars(ct):
    return {
        "spherical": np.ones(K),
        "diag": np.ones((K, D)),
        "full": np.stack([np.eye(D)] * K),
        "tied": np.eye(D),
    }[ct]


def _fit(module, ct, n_iter, means=MEANS, **kwargs):
    m = module.GaussianHMM(K, ct, init_params="", n_iter=n_iter, tol=-np.inf, **kwargs)
    m.startprob_, m.transmat_, m.means_, m.covars_ = START, A, means, _start_covars(ct)
    return m.fit(X)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full", "tied"])
def test_an_empty_state_takes_the_prior_mode_as_hmmlearn_does(ct):
    hl = pytest.importorskip("hmmlearn.hmm")
    ref = _fit(hl, ct, 3, **PRIORS)
    got = _fit(__import__("tying.hmm", fromlist=["GaussianHMM"]), ct, 3, **PRIORS)
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-10)
    ref_cov = ref._covars_[:, 0] if ct == "spherical" else ref.covars_  # its getter: K·D
    got_cov = got.covars_[:, 0, 0] if ct == "spherical" else got.covars_
    np.testing.assert_allclose(got_cov, ref_cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_an_empty_state_in_a_tied_model_takes_the_prior_mode(ct):
    # a tie takes the NumPy M-step; the empty state's MAP update, by hand: its mean
    # becomes means_prior, so its covariance is covars_prior / (covars_weight - 1)
    # (diagonal types) or covars_prior * I / (covars_weight - D) (full)
    means = np.array([[0.0, 0.0], [0.0, 0.0], [30.0, 30.0]])
    m = _fit(__import__("tying.hmm", fromlist=["x"]), ct, 1, means, ties={"means": [[0, 1]]},
             **PRIORS | {"covars_prior": 0.5 if ct != "full" else 0.5 * np.eye(D)})  # fmt: skip
    np.testing.assert_allclose(m.means_[2], [3.0, 3.0], rtol=1e-12)
    mode = 0.5 / (3.0 - (D if ct == "full" else 1))
    np.testing.assert_allclose(m.covars_[2], mode * np.eye(D), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_an_empty_state_without_a_covariance_prior_keeps_its_covariance(ct):
    m = _fit(__import__("tying.hmm", fromlist=["x"]), ct, 2, means_weight=2.0, means_prior=3.0)
    np.testing.assert_array_equal(m.covars_[2], np.eye(D))
    assert np.all(np.isfinite(m.covars_)) and np.isfinite(m.monitor_.history[-1])


def test_lengths_empty_is_refused_with_its_cause_and_fix():
    m = GaussianHMM(2)
    with pytest.raises(ValueError, match=r"lengths is empty \(no sequences\) but X has 60 rows; "
                       r"lengths must partition X .* lengths=\[60\] or lengths=None"):  # fmt: skip
        m.fit(X, lengths=[])
    with pytest.raises(ValueError, match=r"lengths is empty \(no sequences\) and X has no rows"):
        m.fit(X[:0], lengths=np.array([], dtype=int))
    assert not hasattr(m, "monitor_")  # the refused fit left the model unfitted
