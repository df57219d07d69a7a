"""Reading a parameter still held for the old ``n_components`` (found by the stateful
machine of ``test_stateful_stop49.py``).

After ``set_params(n_components=K1)`` on a fitted model, assigning one parameter for K1
states re-resolves ``ties_`` for K1; the other parameters are recorded as held for the
old size, and ``score`` refuses them by name. Reading them did not: the getters spread
the old per-group rows through the new ties, so ``m.transmat_`` raised a bare
``IndexError`` (more states) or silently returned some old states' rows (fewer: a
``(2, 3)`` "transition matrix" of a 2-state model, the first 2 of 3 means). Sequence:
``build(ct="tied", K=2) -> fit -> change_n_components(4)`` (reading ``transmat_``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, NotFittedError

rng0 = np.random.default_rng(0)
X = rng0.normal(size=(30, 2))
STALE = r"n_components is {K1}, but {name} still hold\(s\) the values for {K0} states"


@pytest.mark.parametrize(("K0", "K1"), [(2, 4), (3, 2)])
def test_a_parameter_held_for_the_old_size_is_refused_on_read(K0, K1):
    m = GaussianHMM(K0, "diag", n_iter=2, tol=-np.inf, random_state=0).fit(X)
    means = m.means_.copy()
    m.set_params(n_components=K1)
    m.startprob_ = np.full(K1, 1.0 / K1)
    for name in ("transmat_", "means_", "covars_"):
        with pytest.raises(NotFittedError, match=STALE.format(K1=K1, K0=K0, name=name)):
            getattr(m, name)
    assert not hasattr(m, "means_")  # as for a parameter not set yet
    m.set_params(n_components=K0)  # set back: the old values read (and score) again
    m.startprob_ = np.full(K0, 1.0 / K0)
    np.testing.assert_array_equal(m.means_, means)


def test_size_set_back_reads_and_scores_the_held_values_as_hmmlearn():
    """The size set back to the fitted one: the held values were refused "for 2 states"
    with n_components 2 (a refusal naming no real problem, and no way out but to assign
    every parameter again)."""
    m = GaussianHMM(2, "full", n_iter=2, tol=-np.inf, random_state=0).fit(X)
    held = {a: np.array(getattr(m, a)) for a in ("transmat_", "means_", "covars_")}
    m.set_params(n_components=4)
    m.startprob_ = np.full(4, 0.25)
    m.set_params(n_components=2)
    m.startprob_ = [0.3, 0.7]
    t = hl.GaussianHMM(2, "full", init_params="")
    t.startprob_, t.transmat_ = [0.3, 0.7], held["transmat_"]
    t.means_, t.covars_ = held["means_"], held["covars_"]
    np.testing.assert_allclose(m.score(X, [10, 20]), t.score(X, [10, 20]), rtol=1e-10)
    for a, v in held.items():
        np.testing.assert_array_equal(getattr(m, a), v)


def test_size_set_back_under_other_ties_stays_refused_and_says_why():
    m = GaussianHMM(3, "diag", n_iter=2, tol=-np.inf, random_state=0)
    m.set_params(ties={"means": [[0, 1]]}).fit(X)
    m.set_params(n_components=2)
    m.startprob_ = [0.5, 0.5]
    m.set_params(n_components=3, ties={"means": [[1, 2]]})
    m.startprob_ = np.full(3, 1 / 3)
    np.testing.assert_array_equal(m.transmat_.shape, (3, 3))  # transitions untied: same rows
    with pytest.raises(
        ValueError,
        match=r"means_ still hold\(s\) the values for 3 states "
        r"\(under other tie groups than ties=\{'means': \[\[1, 2\]\]\} gives\)",
    ):
        m.score(X)


def test_categorical_and_gmm_stale_reads_are_refused():
    Xc = rng0.integers(0, 3, (30, 1))
    c = CategoricalHMM(3, n_iter=2, tol=-np.inf, random_state=0).fit(Xc)
    c.set_params(n_components=2)
    c.transmat_ = np.full((2, 2), 0.5)
    with pytest.raises(NotFittedError, match=STALE.format(K1=2, K0=3, name="emissionprob_")):
        c.emissionprob_  # noqa: B018 - the read is the test
    g = GMMHMM(3, 2, n_iter=2, tol=-np.inf, random_state=0).fit(X)
    g.set_params(n_components=2)
    g.startprob_ = [0.5, 0.5]
    for name in ("weights_", "means_", "covars_"):
        with pytest.raises(NotFittedError, match=STALE.format(K1=2, K0=3, name=name)):
            getattr(g, name)


def test_a_fitted_array_read_before_the_size_change_cannot_write_back():
    m = GaussianHMM(3, "diag", n_iter=2, tol=-np.inf, random_state=0).fit(X)
    mu = m.means_
    m.set_params(n_components=2)
    m.startprob_ = [0.5, 0.5]
    with pytest.raises(NotFittedError, match="means_ still hold"):
        mu[0] = 1.0
    m.means_ = np.zeros((2, 2))  # assigned for the new size: readable again
    np.testing.assert_array_equal(m.means_, np.zeros((2, 2)))


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    ct=st.sampled_from(["spherical", "diag", "full", "tied"]),
    K0=st.integers(1, 4),
    K1=st.integers(1, 4),
    first=st.sampled_from(["startprob_", "transmat_", "means_"]),
)
def test_property_every_read_after_a_size_change_is_the_new_value_or_refused(ct, K0, K1, first):
    """Whatever the old and new sizes and the parameter assigned first, every parameter
    read is either one assigned for K1 states (equal to what was assigned) or refused by
    name; never rows of the old model read through the new ties."""
    m = GaussianHMM(K0, ct, n_iter=1, tol=-np.inf, random_state=0).fit(X)
    m.set_params(n_components=K1)
    rng = np.random.default_rng(K0 * 10 + K1)
    value = {
        "startprob_": rng.dirichlet(np.ones(K1)),
        "transmat_": rng.dirichlet(np.ones(K1), size=K1),
        "means_": rng.normal(size=(K1, 2)),
    }[first]
    setattr(m, first, value)
    np.testing.assert_array_equal(getattr(m, first), value)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        if name == first:
            continue
        if K1 == K0:  # the same size: nothing is stale, the fitted values read as they are
            assert len(getattr(m, name)) == K1
            continue
        with pytest.raises(NotFittedError, match=STALE.format(K1=K1, K0=K0, name=name)):
            getattr(m, name)
