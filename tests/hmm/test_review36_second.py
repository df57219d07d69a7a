"""Stop 36, second round: warm starts, ``params`` subsets, clones, pickles, GMMHMM and
long-sequence posteriors, against hmmlearn and exact answers.

Each ``test_`` that is not marked as a guard failed on the code before its fix.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM

STICKY = dict(
    startprob=[0.6, 0.4],
    transmat=[[0.95, 0.05], [0.1, 0.9]],
    means=[[0.0, 0.0], [3.0, 1.0]],
    covars=[[1.0, 1.0], [2.0, 0.5]],
)


def _sticky():
    p = STICKY
    return GaussianHMM.from_params(p["startprob"], p["transmat"], p["means"], p["covars"])


@pytest.mark.parametrize("lengths", [None, [150_000, 50_000]])
def test_posteriors_of_a_long_sequence_sum_to_one_per_row(lengths):
    # the scaled backward pass carries ~(T - t) ulps of rounding common to row t's terms:
    # rows summed to 1 - 5.9e-13 at 2e5 rows (1 - 2.9e-12 at 1e6), and every posterior
    # was off by as much; hmmlearn divides each row by its sum
    m = _sticky()
    X, _ = m.sample(200_000, random_state=0)
    post = m.predict_proba(X, lengths)
    assert np.abs(post.sum(axis=1) - 1.0).max() <= 4.5e-16
    _, same = m.score_samples(X, lengths)
    assert np.array_equal(post, same)


def test_posteriors_of_a_long_sequence_equal_hmmlearns_scaling():
    hmm = pytest.importorskip(
        "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
    )
    m = _sticky()
    X, _ = m.sample(200_000, random_state=0)
    ref = hmm.GaussianHMM(2, "diag", init_params="", implementation="scaling")
    ref.startprob_ = np.array(STICKY["startprob"])
    ref.transmat_ = np.array(STICKY["transmat"])
    ref.means_ = np.array(STICKY["means"])
    ref.covars_ = np.array(STICKY["covars"])
    assert np.abs(m.predict_proba(X) - ref.predict_proba(X)).max() < 1e-14
    assert m.score(X) == pytest.approx(ref.score(X), rel=1e-12)


def test_guard_a_sequence_of_probability_zero_still_has_nan_posteriors():
    m = GaussianHMM.from_params(
        [1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [[0.0], [1.0]], [[1.0], [1.0]]
    )
    cat = CategoricalHMM.from_params([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])
    ll, post = cat.score_samples([[0], [1], [0]], [1, 2])
    assert ll == -np.inf
    assert np.isnan(post[1:]).all() and post[0].tolist() == [1.0, 0.0]
    assert np.allclose(m.predict_proba([[0.0], [0.5]]).sum(axis=1), 1.0)


def test_guard_a_pickled_tied_model_scores_and_continues_like_the_original():
    X = np.random.default_rng(1).normal(size=(400, 2))
    kw = dict(ties={"transitions": [[0, 1]], "means": [[1, 2]]}, tol=-np.inf, random_state=0)
    m = GaussianHMM(3, n_iter=5, **kw).fit(X, [180, 220])
    again = pickle.loads(pickle.dumps(m))
    assert again.score(X, [180, 220]) == m.score(X, [180, 220])
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        setattr(again, name, getattr(again, name))  # go on from the fitted values
    again.fit(X, [180, 220])
    once = GaussianHMM(3, n_iter=10, **kw).fit(X, [180, 220])
    assert np.array_equal(again.means_, once.means_)
    assert np.array_equal(again.transmat_, once.transmat_)
