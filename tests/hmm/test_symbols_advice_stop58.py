"""Symbols past a CategoricalHMM's alphabet: the refusal's advice works when followed.

Before stop 58 every such refusal said "raise n_symbols or recode X". For a fitted model
(which scores with the emissionprob_ it holds) raising n_symbols changed nothing: score
refused the same X again with the same advice. The advice now names what fixes the size.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM

X3 = np.array([[0], [1], [2], [1], [0], [2], [2], [1]])
X5 = np.array([[4], [1], [3], [0], [2], [4], [1], [0]])


def _fitted() -> CategoricalHMM:
    return CategoricalHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(X3)


def test_a_fitted_model_names_a_refit_not_raising_n_symbols():
    m = _fitted()
    with pytest.raises(ValueError, match=r"fit again with n_symbols=5") as err:
        m.score(X5)
    assert "raise n_symbols" not in str(err.value)
    m.set_params(n_symbols=5)  # the old advice: the held table still has 3 symbols
    with pytest.raises(ValueError, match=r"X\[0\] = 4 .* \(0..2\), as a fitted model scores"):
        m.score(X5)
    m.fit(X5)  # the new advice, followed
    assert m.emissionprob_.shape == (2, 5)
    assert np.isfinite(m.score(X5))


def test_a_fit_names_what_fixed_the_alphabet_and_its_advice_works():
    m = CategoricalHMM(2, n_features=3, n_iter=2, tol=-np.inf, random_state=0)
    # hmmlearn's name as given: raising n_symbols beside n_features=3 is refused
    with pytest.raises(ValueError, match=r"n_features=3 was given; raise it to n_features=5"):
        m.fit(X5)
    assert m.set_params(n_features=5).fit(X5).n_symbols_ == 5

    m = CategoricalHMM(2, n_iter=2, tol=-np.inf, emissionprob_init=np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"give an emissionprob_init with 5 columns"):
        m.fit(X5)
    assert m.set_params(emissionprob_init=np.full((2, 5), 0.2)).fit(X5).n_symbols_ == 5

    m = CategoricalHMM(2, n_iter=2, tol=-np.inf, init_params="st", random_state=0)
    m.emissionprob_ = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"starts from the emissionprob_ held .* assign an emi"):
        m.fit(X5)
    m.emissionprob_ = np.full((2, 5), 0.2)
    assert m.fit(X5).n_symbols_ == 5


def test_a_negative_symbol_is_told_to_recode():
    with pytest.raises(ValueError, match=r"X\[1\] = -1 .*: recode X$"):
        _fitted().score([[0], [-1]])


def test_a_model_built_with_hmmlearns_n_features_is_told_that_name():
    m = CategoricalHMM(2, n_features=3, n_iter=2, tol=-np.inf, random_state=0).fit(X3)
    with pytest.raises(ValueError, match=r"fit again with n_features=5 "):
        m.score(X5)
    m.set_params(n_features=5).fit(X5)  # the advice, followed (n_symbols=5 is refused)
    assert m.emissionprob_.shape == (2, 5)
