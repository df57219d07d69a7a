"""Stop 60: one long sequence is decoded by the compiled Viterbi kernel, bit for bit the
NumPy loop's answer (which paid ~40 us a step: 8 s for 200,000 rows, hmmlearn 0.17 s)."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest

from tying.hmm import GaussianHMM, compiled
from tying.hmm.sequences import SequenceBatch

pytest.importorskip("numba")
hmm = pytest.importorskip("hmmlearn.hmm")
V = importlib.import_module("tying.hmm.viterbi")  # the module, not the function
pytestmark = pytest.mark.skipif(
    not compiled.available(), reason="the compiled kernels are off (TYING_DISABLE_NUMBA)"
)


def _both(monkeypatch, start, A, lb, lengths):
    monkeypatch.setattr(V, "COMPILED_MIN_ROWS", 10**9)
    numpy_path = V.viterbi(start, A, lb, SequenceBatch.from_lengths(lengths))
    monkeypatch.setattr(V, "COMPILED_MIN_ROWS", 1)
    kernel = V.viterbi(start, A, lb, SequenceBatch.from_lengths(lengths))
    return numpy_path, kernel


def test_kernel_equals_the_numpy_loop_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(0)
    for trial in range(100):
        K = int(rng.integers(1, 7))
        lengths = [int(n) for n in rng.integers(1, 25, rng.integers(1, 5))]
        start, A = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), K)
        if trial % 3 == 0:  # structural zeros, each row keeping one entry
            A[rng.random((K, K)) < 0.4] = 0
            start[rng.random(K) < 0.4] = 0
            A[np.arange(K), rng.integers(0, K, K)] += 0.5
            start[0] += 0.5
            A, start = A / A.sum(1, keepdims=True), start / start.sum()
        if trial % 7 == 0:  # exactly equal paths: the tie-break must be the loop's
            A, start = np.full((K, K), 1 / K), np.full(K, 1 / K)
        lb = rng.normal(size=(sum(lengths), K)) * 3
        if trial % 4 == 0:
            lb = np.round(lb)
        if trial % 5 == 0:
            lb[rng.random(lb.shape) < 0.3] = -np.inf
        if trial % 11 == 0:
            lb = lb.astype(np.float32)
        (p0, s0), (p1, s1) = _both(monkeypatch, start, A, lb, lengths)
        assert p0.dtype == p1.dtype and s0.dtype == s1.dtype
        np.testing.assert_array_equal(p0, p1)
        np.testing.assert_array_equal(s0, s1)


def test_long_sequence_decodes_fast_and_equals_hmmlearn():
    rng = np.random.default_rng(1)
    K, D, T = 4, 2, 60_000
    mu = rng.normal(size=(K, D)) * 3
    X = mu[rng.integers(0, K, T)] + rng.normal(size=(T, D))
    X[rng.choice(T, 20, replace=False)] += 700  # far rows: every density underflows there
    models = [GaussianHMM(K, "diag"), hmm.GaussianHMM(K, "diag", implementation="log")]
    for m in models:
        m.startprob_ = np.full(K, 1 / K)
        m.transmat_ = np.full((K, K), 0.4 / K) + 0.6 * np.eye(K)
        m.means_, m.covars_ = mu + 0.2, np.ones((K, D))
    ours, ref = models
    ours.decode(X[:2000])  # the kernel compiled (or loaded from numba's cache)
    t0 = time.perf_counter()
    lp, path = ours.decode(X)
    took = time.perf_counter() - t0
    lp_ref, path_ref = ref.decode(X)
    assert abs(lp - lp_ref) <= 1e-10 * abs(lp_ref)
    np.testing.assert_array_equal(path, path_ref)
    assert took < 1.0, f"decode of {T} rows took {took:.2f} s (the NumPy loop: ~2.5 s)"
