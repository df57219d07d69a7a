"""An item write after n_features changed since the fit names the change (it was refused
with a bare shape message that did not say why the shape was wrong)."""

import numpy as np
import pytest

from tying.hmm import CategoricalHMM


def _fitted():
    X = np.random.default_rng(0).integers(0, 3, size=(60, 1))
    return CategoricalHMM(2, n_iter=3, tol=-np.inf, random_state=0).fit(X, [30, 30]), X


@pytest.mark.parametrize("name", ["n_features", "n_symbols"])
def test_an_item_write_after_the_alphabet_changed_names_the_change(name):
    m, X = _fitted()
    before = m.emissionprob_
    m.set_params(**{name: 5})
    with pytest.raises(ValueError, match=r"n_symbols/n_features is 5, but the model holds 3"):
        m.emissionprob_[0, 0] = 0.5
    np.testing.assert_array_equal(m.emissionprob_, before)  # nothing changed
    m.set_params(**{name: None})  # the advice: the size back, and the write goes through
    m.set_params(**{name: 3})
    e = m.emissionprob_
    e[0] = [0.5, 0.25, 0.25]
    m.emissionprob_ = e
    np.testing.assert_array_equal(m.emissionprob_[0], [0.5, 0.25, 0.25])


def test_no_note_when_the_size_did_not_change():
    m, _ = _fitted()
    m.set_params(n_features=3)  # fixed, and what the model holds
    with pytest.raises(
        ValueError, match=r"must have shape \(2, 3\) = \(n_components, n_symbols\), got \(2, 4\)$"
    ):
        m.emissionprob_ = np.full((2, 4), 0.25)
