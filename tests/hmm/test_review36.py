"""Stop 36: writes into fitted attributes, and set_params switching defaults.

Each ``test_`` that is not marked as a guard failed on the code before its fix.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PairHMM

X = np.random.default_rng(0).normal(size=(120, 2))
SYMBOLS = np.random.default_rng(1).integers(0, 3, size=(120, 1))
QUIET = dict(tol=-np.inf, random_state=0)


def _gaussian(ct, **kw):
    return GaussianHMM(3, covariance_type=ct, n_iter=3, **QUIET, **kw).fit(X)


def _cases():
    """(name, model factory, attribute, index, value written there)."""
    out = []
    for ct in ("spherical", "diag", "full", "tied"):
        out += [
            (f"{ct}-means", lambda ct=ct: _gaussian(ct), "means_", 0, [5.0, -5.0]),
            (f"{ct}-start", lambda ct=ct: _gaussian(ct), "startprob_", slice(None), [1, 0, 0]),
            (f"{ct}-transmat", lambda ct=ct: _gaussian(ct), "transmat_", 1, [0.2, 0.3, 0.5]),
        ]
    out += [
        ("diag-covars", lambda: _gaussian("diag"), "covars_", 2, np.diag([3.0, 4.0])),
        ("full-covars", lambda: _gaussian("full"), "covars_", 0, [[2.0, 0.5], [0.5, 1.0]]),
        (
            "categorical",
            lambda: CategoricalHMM(2, n_iter=3, **QUIET).fit(SYMBOLS),
            "emissionprob_",
            0,
            [0.5, 0.5, 0.0],
        ),
        ("gmm-weights", lambda: _gmm(), "weights_", 0, [0.3, 0.7]),
        ("gmm-means", lambda: _gmm(), "means_", (1, 0), [9.0, 9.0]),
        ("gmm-covars", lambda: _gmm(), "covars_", (0, 1), [2.0, 2.0]),
        ("pair-delta", lambda: PairHMM.from_params("AC", tied=False), "delta_", 1, 0.1),
        (
            "pair-insert",
            lambda: PairHMM.from_params("AC", tied=False),
            "insert_probs_",
            0,
            [0.3, 0.7],
        ),
    ]
    return out


def _gmm():
    return GMMHMM(2, n_mix=2, n_iter=3, **QUIET).fit(X)


@pytest.mark.parametrize("name, make, attr, index, value", _cases(), ids=[c[0] for c in _cases()])
def test_an_item_write_into_a_fitted_attribute_changes_the_model(name, make, attr, index, value):
    # the getters returned copies: m.means_[0] = 5.0 was lost with no error (hmmlearn's
    # model changes)
    m, whole = make(), make()
    expected = np.array(getattr(whole, attr))
    expected[index] = value
    setattr(whole, attr, expected)  # the documented way: assign the whole array
    getattr(m, attr)[index] = value
    assert np.array_equal(getattr(m, attr), expected)
    if isinstance(m, PairHMM):
        pairs = [("ACCA", "ACA"), ("C", "AC")]
        assert np.array_equal(m.score_pairs(pairs), whole.score_pairs(pairs))
    else:
        data = SYMBOLS if isinstance(m, CategoricalHMM) else X
        assert m.score(data) == whole.score(data)


def test_writes_match_hmmlearn_after_the_same_in_place_edits():
    hmm = pytest.importorskip("hmmlearn.hmm")
    ours = GaussianHMM(3, covariance_type="diag", n_iter=3, **QUIET).fit(X)
    ref = hmm.GaussianHMM(3, covariance_type="diag", init_params="")
    ref.n_features = 2
    # copies: ours.means_ handed over itself would be ours, writes and all
    ref.startprob_, ref.transmat_ = np.array(ours.startprob_), np.array(ours.transmat_)
    ref.means_ = np.array(ours.means_)
    ref.covars_ = np.diagonal(ours.covars_, axis1=1, axis2=2)
    for m in (ours, ref):
        m.means_[0] = 5.0
        m.means_[1, 1] += 1.0
        m.transmat_[1, :] = [0.2, 0.3, 0.5]
        m.startprob_[:] = [0.5, 0.25, 0.25]
    ours.covars_ *= 2  # hmmlearn's own covars_ *= 2 fails for "diag": (K, D, D) assigned
    ref.covars_ = ref._covars_ * 2
    assert ours.score(X) == pytest.approx(ref.score(X), rel=1e-12)
    assert np.array_equal(ours.means_, ref.means_)


def test_a_write_to_a_tied_state_holds_for_its_group():
    m = GaussianHMM(4, ties={"means": [[0, 1]]}, n_iter=3, **QUIET).fit(X)
    m.means_[1, 0] = 7.0  # states 0 and 1 store one mean
    assert m.means_[0, 0] == m.means_[1, 0] == 7.0
    assert m.group_params("means").shape == (3, 2)
    cov = GaussianHMM(3, covariance_type="tied", n_iter=3, **QUIET).fit(X)
    cov.covars_[2] = np.eye(2) * 3.0  # one covariance for every state
    assert np.array_equal(cov.covars_, np.broadcast_to(np.eye(2) * 3.0, (3, 2, 2)))


def test_a_write_giving_tied_states_different_values_is_refused_by_name():
    m = GaussianHMM(4, ties={"means": [[0, 1]]}, n_iter=3, **QUIET).fit(X)
    before = m.means_
    with pytest.raises(ValueError, match=r"states 0 and 1 are tied \(ties\['means'\] group"):
        m.means_[0:2] = [[1.0, 1.0], [2.0, 2.0]]
    assert np.array_equal(m.means_, before)


def test_a_refused_write_leaves_the_model_and_the_array_as_they_were():
    m = _gaussian("diag")
    A = m.transmat_
    score = m.score(X)
    with pytest.raises(ValueError, match=r"transmat_ must sum to 1 .* row\(s\) \[0\]"):
        A[0, 0] = 0.99
    assert np.array_equal(A, m.transmat_) and m.score(X) == score
    with pytest.raises(ValueError, match="means_ must be finite"):
        m.means_[0] = np.nan
    assert m.score(X) == score


def test_an_array_read_before_a_fit_is_refused():
    m = _gaussian("diag")
    old = m.means_
    m.fit(X[::-1])
    fitted = m.means_
    assert not np.array_equal(old, fitted)
    with pytest.raises(ValueError, match="means_: this array was read before the model changed"):
        old[0] = 1.0
    assert np.array_equal(m.means_, fitted)


def test_in_place_operators_write_through():
    m = _gaussian("diag")
    means = m.means_
    means += 1.0  # x += 1 on the array held
    assert np.array_equal(m.means_, means)
    np.multiply(means, 2.0, out=means)
    assert np.array_equal(m.means_, means)
    np.add.at(means, [2], 1.0)
    means[1].fill(0.0)
    assert np.array_equal(m.means_, means) and np.array_equal(m.means_[1], [0.0, 0.0])
    with pytest.raises(ValueError, match="read-only"):  # never a silent loss
        np.copyto(m.means_, 0.0)


def test_guard_copies_are_plain_and_independent():
    m = _gaussian("full")
    before = m.means_.copy()
    for c in (
        m.means_.copy(),
        np.array(m.means_),
        m.means_[[0, 1]],
        m.means_ + 0.0,
        pickle.loads(pickle.dumps(m.means_)),
        copy.deepcopy(m.means_),
    ):
        assert type(c) is np.ndarray
        c[0] = 99.0
    assert np.array_equal(m.means_, before)
    assert repr(m.means_).startswith("array(")
    m.covars_ *= 2  # assigns: the model's storage is its own, writeable
    assert m._covars.flags.writeable and not np.shares_memory(m._covars, m.covars_)


def test_set_params_that_switches_defaults_of_a_fitted_model_is_refused():
    m = GaussianHMM(3, n_iter=5, **QUIET).fit(X)
    with pytest.raises(ValueError, match=r"covars_prior 0.0 -> 0.01.*nothing was set"):
        m.set_params(init_params="")
    assert m.init_params is None
    m.set_params(init_params="", covars_prior=0.0)  # kept explicitly: continues
    fresh = GaussianHMM(3, n_iter=5, **QUIET).fit(X)
    with pytest.raises(ValueError, match=r"n_iter 100 -> 10, tol 0.0001 -> 0.01"):
        GaussianHMM(3, random_state=0).fit(X).set_params(init_params="")
    assert fresh.history_ == GaussianHMM(3, n_iter=5, **QUIET).fit(X).history_


def test_guard_set_params_init_params_on_an_unfitted_model_is_hmmlearn_style():
    m = GaussianHMM(3).set_params(init_params="")
    assert m._resolved("n_iter") == 10
