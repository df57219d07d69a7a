"""Stop 33, second round: the compiled paths on odd shapes, and the inputs around them.

The refusals failed on the code before their fix (a masked value was read as the number
under the mask; ``n_threads`` took any value through ``int()``; ``set_params`` took an
``n_jobs`` that ``fit`` refuses). The guards at the end pin what the review found to hold.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PairHMM, check_observations

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

MASKED = r"X is a masked array with a masked value at sequence 1, position 2 \(row 5 of X\)"


def _model():
    return GaussianHMM.from_params(
        [0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]], [[0.0, 0.0], [2.0, 1.0]], [[1.0, 1.0], [0.5, 2.0]]
    )


def _masked(X):
    Xm = np.ma.masked_array(X, mask=np.zeros(np.shape(X), bool))
    Xm[5] = np.ma.masked  # row 5: sequence 1, position 2 of lengths [3, 5]
    return Xm


# ------------------------------------------- a masked value is not a number
@pytest.mark.parametrize(
    "call", ["score", "score_samples", "score_sequences", "predict", "predict_proba", "decode"]
)
def test_a_masked_value_is_refused_not_read_as_the_value_under_it(call):
    # was: np.asarray dropped the mask; score -163.34 for data with a value marked missing,
    # the same as with the value itself, no error
    X = np.random.default_rng(0).normal(size=(8, 2))
    with pytest.raises(ValueError, match=MASKED + r".*drop the masked rows"):
        getattr(_model(), call)(_masked(X), [3, 5])


def test_a_fit_on_masked_values_is_refused_and_leaves_the_model_as_it_was():
    X = np.random.default_rng(1).normal(size=(8, 2))
    m = GaussianHMM(2, n_iter=3, random_state=0).fit(X, [3, 5])
    before = (m.means_.copy(), m.covars_.copy(), list(m.history_))
    with pytest.raises(ValueError, match=MASKED):
        m.fit(_masked(X), [3, 5])
    assert np.array_equal(m.means_, before[0]) and np.array_equal(m.covars_, before[1])
    assert list(m.history_) == before[2]


def test_masked_symbols_and_mixtures_are_refused_too():
    S = np.ma.masked_array(np.array([0, 1, 2, 1, 0, 2, 1, 0]), mask=[0, 0, 0, 0, 0, 1, 0, 0])
    with pytest.raises(ValueError, match=MASKED):
        CategoricalHMM(2, n_iter=2, random_state=0).fit(S, [3, 5])
    X = np.random.default_rng(2).normal(size=(8, 2))
    gmm = GMMHMM(2, n_mix=2, n_iter=2, random_state=0).fit(X, [3, 5])
    with pytest.raises(ValueError, match=MASKED):
        gmm.score(_masked(X), [3, 5])
    with pytest.raises(ValueError, match=MASKED):
        check_observations(_masked(X), np.array([3, 5]))


def test_a_masked_array_with_nothing_masked_is_plain_data():
    X = np.random.default_rng(3).normal(size=(8, 2))
    m = _model()
    assert m.score(np.ma.masked_array(X), [3, 5]) == m.score(X, [3, 5])
    assert m.score(np.ma.masked_array(X, mask=False), [3, 5]) == m.score(X, [3, 5])


# ------------------------------------------------ n_threads, n_jobs settings
@pytest.mark.parametrize("bad", [0, -1, 3.0, True, "2"])
def test_n_threads_that_is_no_positive_integer_is_refused(bad):
    # was: int(n_threads) took "2" as 2, 3.0 as 3, True as 1, and handed 0 and -1 to BLAS
    X = np.random.default_rng(4).normal(size=(40, 2))
    with pytest.raises(
        ValueError, match=rf"n_threads must be a positive number of BLAS .*got {bad!r}"
    ):
        GaussianHMM(2, n_iter=2, random_state=0, n_threads=bad).fit(X)
    m = _model()
    m.n_threads = bad
    with pytest.raises(ValueError, match="n_threads must be"):
        m.score(X)
    with pytest.raises(ValueError, match="n_threads must be"):
        GaussianHMM(2).set_params(n_threads=bad)
    with pytest.raises(ValueError, match="n_threads must be"):
        PairHMM("ACGT", n_threads=bad).fit([("ACG", "AG")])


@pytest.mark.parametrize("bad", [0, -2, 3.0, True])
def test_set_params_refuses_an_n_jobs_that_fit_refuses_and_changes_nothing(bad):
    # was: set_params(n_jobs=0) was accepted; only the next fit or score refused it
    m = GaussianHMM(2, n_jobs=2)
    with pytest.raises(
        ValueError, match=rf"n_jobs must be a positive number of threads .*got {bad!r}"
    ):
        m.set_params(n_jobs=bad, n_iter=7)
    assert m.n_jobs == 2 and m.n_iter is None


@pytest.mark.parametrize("good", [None, 1, 2, np.int64(3)])
def test_n_threads_none_or_a_positive_integer_still_fits(good):
    X = np.random.default_rng(5).normal(size=(40, 2))
    ref = GaussianHMM(2, n_iter=3, random_state=0).fit(X)
    m = GaussianHMM(2, n_iter=3, random_state=0, n_threads=good).fit(X)
    assert m.history_ == ref.history_


# --------------------------------------------- guards: compiled paths, odd shapes
def _plain_log_forward(logb, start, A):
    with np.errstate(divide="ignore"):
        la, lA = np.log(start) + logb[0], np.log(A)
    for t in range(1, len(logb)):
        la = logsumexp(la[:, None] + lA, axis=0) + logb[t]
    return logsumexp(la)


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_fits_are_the_same_bits_for_any_n_jobs_on_mixed_lengths(covariance_type):
    rng = np.random.default_rng(6)
    lengths = [1, 2, 1500, 1, 2, 300, 3, 3]
    X = (
        rng.normal(size=(sum(lengths), 2))
        + np.repeat(rng.normal(0, 3, (4, 2)), 453, 0)[: sum(lengths)]
    )
    fits = [
        GaussianHMM(3, covariance_type, n_iter=3, random_state=0, n_jobs=n).fit(X, lengths)
        for n in (1, 2, -1)
    ]
    for m in fits[1:]:
        assert m.history_ == fits[0].history_
        assert np.array_equal(m.means_, fits[0].means_)
        assert np.array_equal(m.covars_, fits[0].covars_)
        assert np.array_equal(m.predict_proba(X, lengths), fits[0].predict_proba(X, lengths))


def test_huge_offsets_score_as_the_centred_data_do():
    # hmmlearn's log fit fails here ('covars' must be symmetric, positive-definite): its
    # M-step expands sum (x - mu)^2; ours stays within 1e-14 of a plain log-space forward
    rng = np.random.default_rng(7)
    start, A = (
        np.array([0.5, 0.3, 0.2]),
        np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]),
    )
    means = np.array([[-2.0], [0.0], [3.0]])
    X = rng.normal(size=(400, 1)) + means[rng.integers(0, 3, 400)]
    shift = 1e8
    m = GaussianHMM.from_params(start, A, means + shift, np.ones((3, 1)))
    Xs = X + shift
    logb = norm.logpdf((Xs - shift) - (m.means_.T - shift))  # exact differences, (N, K)
    exact = sum(_plain_log_forward(b, start, A) for b in np.split(logb, [1, 3]))
    assert m.score(Xs, [1, 2, 397]) == pytest.approx(exact, rel=1e-13)
    f = GaussianHMM(3, init_params="", n_iter=1)
    f.startprob_, f.transmat_, f.means_, f.covars_ = start, A, means + shift, np.ones((3, 1))
    assert f.fit(Xs, [1, 2, 397]).history_[0] == pytest.approx(exact, rel=1e-13)
