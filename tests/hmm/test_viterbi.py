"""Batched Viterbi equals brute-force enumeration and hmmlearn's decoder."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM, SequenceBatch, viterbi

from .helpers import brute_force_viterbi, diag_log_density, random_params, split


def test_equals_brute_force_on_ragged_batch():
    rng = np.random.default_rng(0)
    start, A, means, var, X, lengths = random_params(rng, 3, 2, lengths=(6, 1, 4, 6))
    log_b = diag_log_density(X, means, var)
    log_p, states = viterbi(start, A, log_b, SequenceBatch.from_lengths(list(lengths)))
    for s, (lb, st) in enumerate(zip(split(log_b, lengths), split(states, lengths))):
        best, path = brute_force_viterbi(start, A, lb)
        np.testing.assert_allclose(log_p[s], best, rtol=1e-12)
        assert np.array_equal(st, path)


def test_matches_hmmlearn_decode():
    hmm = pytest.importorskip(
        "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
    )
    rng = np.random.default_rng(1)
    start, A, means, var, X, lengths = random_params(rng, 4, 2, lengths=(80, 20, 55))
    ref = hmm.GaussianHMM(4, covariance_type="diag", init_params="")
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, A, means, var
    ours = GaussianHMM.from_params(start, A, means, var)
    lp_ref, st_ref = ref.decode(X, lengths)
    lp, st = ours.decode(X, lengths)
    np.testing.assert_allclose(lp, lp_ref, rtol=1e-10)
    assert np.array_equal(st, st_ref)
    assert np.array_equal(ours.predict(X, lengths), st)
