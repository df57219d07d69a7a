"""The anti-diagonal kernels: padding never leaks, counts add up, log-sum-exp is exact and symmetric."""

from __future__ import annotations

import numpy as np

from tying.hmm.pair_dp import PairChunk, PairParams, _lse, forward, posterior_counts

S = 4


def _params(rng):
    p = rng.dirichlet(np.ones(S * S)).reshape(S, S)
    return PairParams.from_probs(
        delta=(0.08, 0.12),
        epsilon=(0.3, 0.5),
        tau=0.05,
        match=p,
        insert_x=rng.dirichlet(np.ones(S)),
        insert_y=rng.dirichlet(np.ones(S)),
    )


def _pairs(rng, k=9):
    return [
        (rng.integers(0, S, rng.integers(1, 15)), rng.integers(0, S, rng.integers(1, 15)))
        for _ in range(k)
    ]


def test_lse_is_logaddexp_and_bitwise_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(scale=50, size=1000), rng.normal(scale=50, size=1000)
    np.testing.assert_allclose(_lse(a, b), np.logaddexp(a, b), rtol=1e-15)
    assert np.array_equal(_lse(a, b), _lse(b, a))


def test_padding_in_a_chunk_does_not_change_any_pair():
    rng = np.random.default_rng(1)
    p, pairs = _params(rng), _pairs(rng)
    together = forward(p, PairChunk.pack(pairs))
    alone = np.array([forward(p, PairChunk.pack([pair]))[0] for pair in pairs])
    np.testing.assert_allclose(together, alone, rtol=1e-14)
    counts = posterior_counts(p, PairChunk.pack(pairs))
    np.testing.assert_allclose(counts.log_p, together, rtol=1e-14)


def test_expected_counts_add_up():
    rng = np.random.default_rng(2)
    p, pairs = _params(rng), _pairs(rng)
    c = posterior_counts(p, PairChunk.pack(pairs))
    symbols = sum(len(x) + len(y) for x, y in pairs)
    # every pair ends once; every symbol is emitted once (a match emits two)
    np.testing.assert_allclose(c.end.sum(), len(pairs), rtol=1e-12)
    np.testing.assert_allclose(2 * c.match.sum() + c.insert.sum(), symbols, rtol=1e-12)
    # one transition into every column: columns = matches + inserts
    np.testing.assert_allclose(c.trans.sum(), c.match.sum() + c.insert.sum(), rtol=1e-12)
    # no X <-> Y transitions in this model
    assert c.trans[1, 2] == 0.0 and c.trans[2, 1] == 0.0
    # symbol counts: x's symbols are emitted by match rows and insert-X only
    x_counts = np.bincount(np.concatenate([x for x, _ in pairs]), minlength=S)
    np.testing.assert_allclose(c.match.sum(1) + c.insert[0], x_counts, rtol=1e-10, atol=1e-12)
