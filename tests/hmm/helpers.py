"""Reference implementations and random models for the HMM tests."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp


def random_params(rng, K, D, *, lengths=(40, 7, 1, 25)):
    """Random start/transition/means/variances and data drawn near the means."""
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    means = rng.normal(scale=2.0, size=(K, D))
    var = rng.uniform(0.5, 2.0, size=(K, D))
    lengths = np.asarray(lengths)
    X = rng.normal(size=(lengths.sum(), D)) * 1.5 + means[rng.integers(0, K, lengths.sum())]
    return start, A, means, var, X, lengths


def diag_log_density(X, means, var):
    """log N(x; mu_k, diag(var_k)) computed the slow, direct way: (N, K)."""
    diff = X[:, None, :] - means[None]
    return -0.5 * (np.log(2 * np.pi * var)[None] + diff**2 / var[None]).sum(-1)


def reference_forward_backward(start, A, log_b):
    """Plain per-sequence log-space forward-backward: (log p, gamma, xi_sum)."""
    T, K = log_b.shape
    la = np.empty((T, K))
    lb = np.zeros((T, K))
    with np.errstate(divide="ignore"):
        logA, logs = np.log(A), np.log(start)
    la[0] = logs + log_b[0]
    for t in range(1, T):
        la[t] = logsumexp(la[t - 1][:, None] + logA, axis=0) + log_b[t]
    for t in range(T - 2, -1, -1):
        lb[t] = logsumexp(logA + (log_b[t + 1] + lb[t + 1])[None], axis=1)
    ll = logsumexp(la[-1])
    gamma = np.exp(la + lb - ll)
    xi = np.zeros((K, K))
    for t in range(T - 1):
        xi += np.exp(la[t][:, None] + logA + (log_b[t + 1] + lb[t + 1])[None] - ll)
    return ll, gamma, xi


def brute_force_viterbi(start, A, log_b):
    """Best path by enumerating all K^T paths (tiny T only)."""
    T, K = log_b.shape
    with np.errstate(divide="ignore"):
        logA, logs = np.log(A), np.log(start)
    best, arg = -np.inf, None
    for path in itertools.product(range(K), repeat=T):
        s = logs[path[0]] + log_b[0, path[0]]
        for t in range(1, T):
            s += logA[path[t - 1], path[t]] + log_b[t, path[t]]
        if s > best:
            best, arg = s, path
    return best, np.array(arg)


def split(X, lengths):
    return np.split(X, np.cumsum(lengths)[:-1])


def rows_per_unit(monkeypatch, rows: int) -> None:
    """Cut the fused E-step's units as if every row cost the same, ``rows`` a unit:
    ``total // rows`` rounded down to a power of two, 1 to 4 units (several units on
    the small data of a test, whatever its K, D and covariance type)."""
    from tying.hmm import compiled

    monkeypatch.setattr(compiled, "SPLIT_ROWS", 2 * rows)
    monkeypatch.setattr(compiled, "FOUR_ROWS", 4 * rows)
    monkeypatch.setattr(compiled, "MIN_GAIN", 0.0)  # split even where it gains nothing
    monkeypatch.setattr(compiled, "MAX_COST", float("inf"))  # or costs one thread much
    monkeypatch.setattr(compiled, "row_cost", lambda K, D, covariance_type="diag": 1.0)
