"""Batched forward-backward equals a plain per-sequence reference, hmmlearn, and never underflows."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM, SequenceBatch, forward_backward, forward_log_likelihood

from .helpers import diag_log_density, random_params, reference_forward_backward, split


def _batch_vs_reference(start, A, log_b, lengths):
    post = forward_backward(start, A, log_b, SequenceBatch.from_lengths(lengths))
    xi = np.zeros_like(A)
    for s, lb in enumerate(split(log_b, lengths)):
        ll, gamma, xi_s = reference_forward_backward(start, A, lb)
        np.testing.assert_allclose(post.log_likelihood[s], ll, rtol=1e-12)
        rows = slice(sum(lengths[:s]), sum(lengths[: s + 1]))
        np.testing.assert_allclose(post.gamma[rows], gamma, rtol=1e-9, atol=1e-12)
        xi += xi_s
    np.testing.assert_allclose(post.xi_sum, xi, rtol=1e-9, atol=1e-12)
    return post


def test_matches_per_sequence_reference_with_ragged_lengths():
    rng = np.random.default_rng(0)
    start, A, means, var, X, lengths = random_params(rng, 4, 3, lengths=(30, 1, 12, 30, 5))
    post = _batch_vs_reference(start, A, diag_log_density(X, means, var), list(lengths))
    assert post.n_log_space == 0
    ll = forward_log_likelihood(start, A, diag_log_density(X, means, var), SequenceBatch(lengths))
    np.testing.assert_allclose(ll, post.log_likelihood, rtol=1e-13)


def test_zero_transitions_and_start_probabilities_stay_exact():
    rng = np.random.default_rng(1)
    start = np.array([1.0, 0.0, 0.0])
    A = np.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])  # left-right
    log_b = rng.normal(size=(20, 3))
    post = _batch_vs_reference(start, A, log_b, [12, 8])
    assert post.xi_sum[1, 0] == 0.0 and post.xi_sum[2, 1] == 0.0


def test_log_space_fallback_when_scaling_underflows():
    # state 1 emits far better at step 2 but cannot be reached: scaling's factor is 0
    start = np.array([1.0, 0.0])
    A = np.array([[1.0, 0.0], [0.5, 0.5]])
    log_b = np.array([[0.0, 0.0], [-2000.0, 0.0], [-1.0, -3.0], [0.0, 0.0], [0.0, 0.0]])
    post = _batch_vs_reference(start, A, log_b, [3, 2])
    assert post.n_log_space == 1
    np.testing.assert_allclose(post.log_likelihood[0], -2001.0, rtol=1e-12)
    ll = forward_log_likelihood(start, A, log_b, SequenceBatch.from_lengths([3, 2]))
    np.testing.assert_allclose(ll, post.log_likelihood, rtol=1e-12)


def test_a_sequence_of_1e5_steps_does_not_underflow():
    rng = np.random.default_rng(2)
    model = GaussianHMM.from_params(
        [0.5, 0.5], [[0.95, 0.05], [0.1, 0.9]], [[-1.0], [1.0]], [[1.0], [0.5]]
    )
    blocks = np.repeat(rng.choice([-1.0, 1.0], size=1000), 100)  # regimes of 100 steps
    X = (blocks + rng.normal(size=100_000)).reshape(-1, 1)
    ll = model.score_sequences(X)
    assert np.isfinite(ll[0]) and ll[0] < -1e5  # p(x) itself is exp(-1.3e5): far below 1e-308
    # and equal to the exact log-space recursion (checked on the first 5,000 steps)
    log_b = diag_log_density(X[:5_000], model.means_, np.diagonal(model.covars_, axis1=1, axis2=2))
    ref, _, _ = reference_forward_backward(model.startprob_, model.transmat_, log_b)
    np.testing.assert_allclose(model.score_sequences(X[:5_000])[0], ref, rtol=1e-12)
    gamma = model.predict_proba(X)
    assert np.all(np.isfinite(gamma)) and np.allclose(gamma.sum(1), 1.0)


def test_matches_hmmlearn_on_the_same_parameters():
    hmm = pytest.importorskip(
        "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
    )
    rng = np.random.default_rng(3)
    start, A, means, var, X, lengths = random_params(rng, 5, 3, lengths=(60, 3, 41, 17))
    for ctype, cov in [("diag", var), ("full", np.array([np.diag(v) + 0.2 for v in var]))]:
        ref = hmm.GaussianHMM(5, covariance_type=ctype, init_params="")
        ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, A, means, cov
        ours = GaussianHMM.from_params(start, A, means, cov, covariance_type=ctype)
        ll_ref = [ref.score(x) for x in split(X, lengths)]
        np.testing.assert_allclose(ours.score_sequences(X, lengths), ll_ref, rtol=1e-6)
        np.testing.assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
        np.testing.assert_allclose(
            ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), rtol=1e-6, atol=1e-9
        )


def test_lane_layout_names_a_bad_covariance_type_and_sizes_units_by_k():
    """The layout's units follow the model it is for (K, covariance type): 40 x 60 rows
    of 32 states are split where the same rows of 8 are not; an unknown covariance type
    is refused by name before anything is planned."""
    from tying.hmm import compiled
    from tying.hmm.forward_backward import LaneLayout
    from tying.hmm.sequences import SequenceBatch

    if not compiled.available():
        pytest.skip("compiled kernels unavailable")
    X = np.random.default_rng(0).normal(size=(2400, 4))
    batch = SequenceBatch.from_lengths([60] * 40)
    small = LaneLayout(X, np.zeros(4), batch, K=8, fill=False)
    big = LaneLayout(X, np.zeros(4), batch, K=32, fill=False)
    assert small.edges.tolist() == [0, 40] and big.edges.tolist() == [0, 16, 40]
    with pytest.raises(ValueError, match=r"covariance_type must be one of .*got 'ful'"):
        LaneLayout(X, np.zeros(4), batch, K=8, covariance_type="ful")
