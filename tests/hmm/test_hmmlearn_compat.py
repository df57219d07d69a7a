"""A hmmlearn script runs with only its import changed and gives hmmlearn's numbers.

Each test runs the *same* function once with ``hmmlearn.hmm`` and once with
``tying.hmm`` as the module, the way a user would switch: set parameters by
attribute, then score / score_samples / decode / fit / aic / bic.
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.hmm as ours

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

hmm = pytest.importorskip(
    "hmmlearn.hmm", reason="hmmlearn not installed: pip install 'tying[bench]'"
)

K, D = 3, 2
TYPES = ["spherical", "diag", "full", "tied"]


def _params(ctype, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    means = rng.normal(scale=3.0, size=(K, D))
    if ctype == "spherical":
        cov = rng.uniform(0.5, 2.0, size=K)
    elif ctype == "diag":
        cov = rng.uniform(0.5, 2.0, size=(K, D))
    else:
        B = rng.normal(size=(K, D, D))
        cov = B @ B.transpose(0, 2, 1) + np.eye(D)
        if ctype == "tied":
            cov = cov[0]
    return start, A, means, cov


def _data(seed=1, lengths=(60, 25, 1, 40)):
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    centres = rng.normal(scale=3.0, size=(K, D))
    X = centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))
    return X, list(lengths)


def _script(module, ctype, X, lengths, **kwargs):
    """What a hmmlearn user writes: set parameters, then use the model."""
    start, A, means, cov = _params(ctype)
    m = module.GaussianHMM(n_components=K, covariance_type=ctype, **kwargs)
    m.startprob_ = start
    m.transmat_ = A
    m.means_ = means
    m.covars_ = cov
    ll, post = m.score_samples(X, lengths)
    return {
        "score": m.score(X, lengths),
        "score_samples": ll,
        "posteriors": post,
        "viterbi": m.decode(X, lengths, algorithm="viterbi"),
        "map": m.decode(X, lengths, algorithm="map")[1],
        "predict": m.predict(X, lengths),
        "aic": m.aic(X, lengths),
        "bic": m.bic(X, lengths),
        "covars": m.covars_,
        "stationary": m.get_stationary_distribution(),
    }


@pytest.mark.parametrize("ctype", TYPES)
def test_set_parameters_then_score_posteriors_viterbi_aic_bic_match_hmmlearn(ctype):
    X, lengths = _data()
    a = _script(hmm, ctype, X, lengths)
    b = _script(ours, ctype, X, lengths)
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-10)
    np.testing.assert_allclose(b["score_samples"], a["score_samples"], rtol=1e-10)
    np.testing.assert_allclose(b["posteriors"], a["posteriors"], atol=1e-10)
    np.testing.assert_allclose(b["viterbi"][0], a["viterbi"][0], rtol=1e-10)
    assert np.array_equal(b["viterbi"][1], a["viterbi"][1])
    assert np.array_equal(b["map"], a["map"])
    assert np.array_equal(b["predict"], a["predict"])
    np.testing.assert_allclose(b["aic"], a["aic"], rtol=1e-6)
    np.testing.assert_allclose(b["bic"], a["bic"], rtol=1e-6)
    np.testing.assert_allclose(b["covars"], a["covars"], rtol=1e-12)
    np.testing.assert_allclose(b["stationary"], a["stationary"], rtol=1e-9)


def _fit_data(ctype, seed, lengths=(80, 30, 60)):
    """Data drawn near the start means, so no state is left empty (hmmlearn divides 0/0 there)."""
    _, _, means, _ = _params(ctype, seed=2)
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    return means[rng.integers(0, K, n)] + rng.normal(size=(n, D)), list(lengths)


def _covars(m, ctype):
    # hmmlearn's covars_ getter is broken for a fitted spherical model (it returns K·D
    # matrices); its stored per-state variances are what to compare there
    if ctype == "spherical" and m.__module__.startswith("hmmlearn"):
        return m._covars_[:, 0]
    return m.covars_[:, 0, 0] if ctype == "spherical" else m.covars_


def _fit_script(module, ctype, X, lengths, **kwargs):
    start, A, means, cov = _params(ctype, seed=2)
    m = module.GaussianHMM(K, ctype, init_params="", **kwargs)
    m.startprob_, m.transmat_, m.means_, m.covars_ = start, A, means, cov
    m.fit(X, lengths)
    return m


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize(
    "priors",
    [
        {},  # hmmlearn's defaults: covars_prior=1e-2, n_iter=10, tol=1e-2
        {
            "n_iter": 15,
            "tol": -np.inf,
            "startprob_prior": 2.0,
            "transmat_prior": 1.5,
            "means_prior": 0.5,
            "means_weight": 3.0,
            "covars_prior": 0.3,
            "covars_weight": 4.0,
            # hmmlearn adds covars_prior to every entry of a full covariance, which can
            # leave an eigenvalue below our default min_covar floor (hmmlearn has no floor)
            "min_covar": 1e-9,
        },
    ],
    ids=["defaults", "map-priors"],
)
def test_fit_from_identical_start_matches_hmmlearn_parameters_and_history(ctype, priors):
    X, lengths = _fit_data(ctype, 3)
    a = _fit_script(hmm, ctype, X, lengths, **priors)
    b = _fit_script(ours, ctype, X, lengths, **priors)
    np.testing.assert_allclose(b.monitor_.history, list(a.monitor_.history), rtol=1e-10)
    assert b.monitor_.iter == a.monitor_.iter
    for name in ("startprob_", "transmat_", "means_"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(_covars(b, ctype), _covars(a, ctype), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(b.score(X, lengths), a.score(X, lengths), rtol=1e-10)
    np.testing.assert_allclose(b.aic(X, lengths), a.aic(X, lengths), rtol=1e-6)


def test_params_letters_keep_the_others_fixed_like_hmmlearn():
    X, lengths = _fit_data("diag", 4)
    a = _fit_script(hmm, "diag", X, lengths, params="mc", n_iter=5)
    b = _fit_script(ours, "diag", X, lengths, params="mc", n_iter=5)
    start, A, *_ = _params("diag", seed=2)
    assert np.array_equal(b.startprob_, start) and np.array_equal(b.transmat_, A)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-8)


def _path_log_prob(m, X, lengths, path):
    with np.errstate(divide="ignore"):
        logA, logs, logE = np.log(m.transmat_), np.log(m.startprob_), np.log(m.emissionprob_)
    total, i = 0.0, 0
    for n in lengths:
        s, x = path[i : i + n], X[i : i + n, 0]
        total += logs[s[0]] + logA[s[:-1], s[1:]].sum() + logE[s, x].sum()
        i += n
    return total


def test_categorical_script_matches_hmmlearn():
    rng = np.random.default_rng(5)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    E = rng.dirichlet(np.ones(4), size=K)
    X = rng.integers(0, 4, size=(150, 1))
    lengths = [100, 50]
    out = {}
    for name, module in (("ref", hmm), ("ours", ours)):
        m = module.CategoricalHMM(K, n_features=4, init_params="", n_iter=12, tol=-np.inf)
        m.startprob_, m.transmat_, m.emissionprob_ = start, A, E
        scored = (m.score(X, lengths), m.score_samples(X, lengths)[1], m.predict(X, lengths))
        m.fit(X, lengths)
        out[name] = (scored, m, m.aic(X, lengths), m.bic(X, lengths))
    (s_ref, ref, aic_ref, bic_ref), (s_ours, got, aic_ours, bic_ours) = out["ref"], out["ours"]
    np.testing.assert_allclose(s_ours[0], s_ref[0], rtol=1e-10)
    np.testing.assert_allclose(s_ours[1], s_ref[1], atol=1e-10)
    # symbols repeat, so equally probable paths exist (A01·A10·A00 = A00·A01·A10); which one
    # wins is decided by the last bit of log(), so compare the paths' probabilities
    before = ours.CategoricalHMM.from_params(start, A, E)
    assert _path_log_prob(before, X, lengths, s_ours[2]) == pytest.approx(
        _path_log_prob(before, X, lengths, s_ref[2]), rel=1e-12
    )
    np.testing.assert_allclose(got.monitor_.history, list(ref.monitor_.history), rtol=1e-10)
    np.testing.assert_allclose(got.emissionprob_, ref.emissionprob_, rtol=1e-8)
    np.testing.assert_allclose(got.transmat_, ref.transmat_, rtol=1e-8)
    np.testing.assert_allclose([aic_ours, bic_ours], [aic_ref, bic_ref], rtol=1e-6)


def test_categorical_emission_prior_matches_hmmlearn():
    rng = np.random.default_rng(6)
    start, A = np.array([0.5, 0.5]), np.array([[0.7, 0.3], [0.4, 0.6]])
    E = rng.dirichlet(np.ones(5), size=2)
    X = rng.integers(0, 5, size=(80, 1))
    fitted = []
    for module in (hmm, ours):
        m = module.CategoricalHMM(2, emissionprob_prior=1.7, init_params="", n_iter=6)
        m.startprob_, m.transmat_, m.emissionprob_ = start, A, E
        fitted.append(m.fit(X).emissionprob_)
    np.testing.assert_allclose(fitted[1], fitted[0], rtol=1e-8)
