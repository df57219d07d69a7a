"""CategoricalHMM: matches hmmlearn, pools tied symbol counts, validates symbols."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM


def _model(rng, K=3, M=4):
    return (
        rng.dirichlet(np.ones(K)),
        rng.dirichlet(np.ones(K) * 2, size=K),
        rng.dirichlet(np.ones(M), size=K),
    )


def test_matches_hmmlearn():
    hmm = pytest.importorskip(
        "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
    )
    rng = np.random.default_rng(0)
    start, A, E = _model(rng)
    X = rng.integers(0, 4, size=(90, 1))
    lengths = [50, 30, 10]
    ref = hmm.CategoricalHMM(3, init_params="", n_iter=8, tol=-np.inf)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, A, E
    ours = CategoricalHMM.from_params(start, A, E)
    np.testing.assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
    ref.fit(X, lengths)
    fit = CategoricalHMM(
        3, startprob_init=start, transmat_init=A, emissionprob_init=E, n_iter=8, tol=-np.inf
    ).fit(X, lengths)
    np.testing.assert_allclose(fit.emissionprob_, ref.emissionprob_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(fit.history_, ref.monitor_.history, rtol=1e-9)


def test_tied_emissions_pool_counts_and_em_is_monotone():
    rng = np.random.default_rng(1)
    start, A, E = _model(rng, K=4, M=5)
    E[1] = E[2]
    truth = CategoricalHMM.from_params(start, A, E)
    X, _ = truth.sample(600, random_state=2)
    m = CategoricalHMM(
        4, n_symbols=5, ties={"emissions": [[1, 2]]}, n_iter=30, tol=-np.inf, random_state=0
    )
    m.fit(X)
    assert np.array_equal(m.emissionprob_[1], m.emissionprob_[2])
    assert np.allclose(m.emissionprob_.sum(1), 1.0)
    h = np.array(m.history_)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))
    c = m.n_parameters()
    assert (c.logical, c.physical) == (4 + 16 + 20, 4 + 16 + 15)


def test_symbols_out_of_range_are_named():
    m = CategoricalHMM.from_params([1.0], [[1.0]], [[0.5, 0.5]])
    with pytest.raises(
        ValueError,
        match=r"X\[4\] = 2 \(sequence 1, position 1\) is not a symbol of this model \(0..1\)",
    ):
        m.score([[0], [1], [0], [1], [2]], [3, 2])
    with pytest.raises(ValueError, match=r"X holds symbols .* got 0.5"):
        m.score([[0.5]])


def test_an_impossible_symbol_scores_minus_infinity_without_warnings():
    m = CategoricalHMM.from_params(
        [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]
    )
    ll = m.score_sequences([[0], [2], [1], [0], [1]], [3, 2])
    assert ll[0] == -np.inf and np.isclose(ll[1], 2 * np.log(0.5))
    gamma = m.predict_proba([[0], [2], [1], [0], [1]], [3, 2])
    assert np.isnan(gamma[:3]).all() and np.allclose(gamma[3:].sum(1), 1.0)
    with pytest.raises(
        ValueError, match=r"sequence 0 has probability 0 under the parameters of EM iteration 0"
    ):
        CategoricalHMM(2, emissionprob_init=m.emissionprob_, n_iter=2).fit(
            [[0], [2], [1], [0], [1]], [3, 2]
        )
