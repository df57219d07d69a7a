"""Every public HMM of ``tying.hmm``, every covariance type, against its hmmlearn twin.

One table (``MODELS``) builds each model and its hmmlearn twin on the same parameters;
``test_every_public_model_and_covariance_type_is_swept`` fails when a new public model
class or covariance type is not in it. Every entry is then checked on inputs the older
tests do not use (a single-step sequence, length-1 sequences mixed with long ones,
``lengths`` as list / tuple / NumPy array, strided and F-ordered X, float32 and int32
observations, structural zeros in ``startprob_``/``transmat_``) for ``score``,
``score_samples`` (log-likelihood and posteriors), ``predict_proba``, ``decode``
(Viterbi log-probability and path, MAP path), ``aic``/``bic``, ``sample`` shapes, one
EM fit from the same start, and bit-identical results for every ``n_jobs``. The tolerance
is 1e-10 relative; the differences that ``docs/hmm.md`` documents are named where they
are left out.
"""

from __future__ import annotations

import itertools
import sys
import warnings

import numpy as np
import pytest
from hmmlearn import hmm as hl
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.hmm as th
from tying.hmm import GMMHMM, BaseHMM, CategoricalHMM, GaussianHMM

K, D, M, S = 3, 2, 2, 4  # states, features, mixture components, symbols
RTOL = 1e-10


def _chain(rng, zeros: bool):
    if zeros:  # structural zeros: a state no sequence starts in, forbidden moves
        return np.array([0.0, 0.4, 0.6]), np.array(
            [[0.5, 0.5, 0.0], [0.0, 0.3, 0.7], [0.2, 0.0, 0.8]]
        )
    return rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)


def _spd(rng, *lead):
    L = rng.normal(size=(*lead, D, D))
    return L @ np.swapaxes(L, -1, -2) + np.eye(D)


def _gaussian(ct):
    def build(rng, zeros=False, implementation="log"):
        start, A = _chain(rng, zeros)
        means = rng.normal(size=(K, D)) * 2
        covars = {
            "spherical": lambda: rng.uniform(0.5, 2, K),
            "diag": lambda: rng.uniform(0.5, 2, (K, D)),
            "full": lambda: _spd(rng, K),
            "tied": lambda: _spd(rng),
        }[ct]()
        ours = GaussianHMM.from_params(start, A, means, covars, covariance_type=ct)
        twin = hl.GaussianHMM(K, ct, init_params="", implementation=implementation)
        twin.startprob_, twin.transmat_, twin.means_, twin.covars_ = start, A, means, covars
        twin.n_features = D
        return ours, twin, lambda n: rng.normal(size=(n, D)) * 2

    return build


def _categorical(rng, zeros=False, implementation="log"):
    start, A = _chain(rng, zeros)
    B = rng.dirichlet(np.ones(S), size=K)
    ours = CategoricalHMM.from_params(start, A, B)
    twin = hl.CategoricalHMM(K, init_params="", implementation=implementation)
    twin.startprob_, twin.transmat_, twin.emissionprob_ = start, A, B
    twin.n_features = S
    return ours, twin, lambda n: rng.integers(0, S, (n, 1))


def _gmm(ct):
    def build(rng, zeros=False, implementation="log"):
        start, A = _chain(rng, zeros)
        w = rng.dirichlet(np.ones(M), size=K)
        means = rng.normal(size=(K, M, D)) * 2
        covars = rng.uniform(0.5, 2, (K, M, D)) if ct == "diag" else _spd(rng, K, M)
        ours = GMMHMM.from_params(start, A, w, means, covars, covariance_type=ct)
        twin = hl.GMMHMM(K, M, covariance_type=ct, init_params="", implementation=implementation)
        twin.startprob_, twin.transmat_, twin.weights_ = start, A, w
        twin.means_, twin.covars_, twin.n_features = means, covars, D
        return ours, twin, lambda n: rng.normal(size=(n, D)) * 2

    return build


# "<public class>-<covariance type>" (or the class alone) -> builder(rng, zeros, impl)
MODELS = {
    **{f"GaussianHMM-{ct}": _gaussian(ct) for ct in ("spherical", "diag", "full", "tied")},
    "CategoricalHMM": _categorical,
    **{f"GMMHMM-{ct}": _gmm(ct) for ct in ("diag", "full")},
}


def _covariance_types(cls) -> tuple:
    """The covariance types a class accepts (its module's table), or () if it has none."""
    return tuple(getattr(sys.modules[cls.__module__], "_COVARIANCE_TYPES", ()))


def test_every_public_model_and_covariance_type_is_swept():
    """A new public HMM class, or a new covariance type, must be added to MODELS."""
    public = [
        getattr(th, n)
        for n in th.__all__
        if isinstance(getattr(th, n), type)
        and issubclass(getattr(th, n), BaseHMM)
        and getattr(th, n) is not BaseHMM
    ]
    wanted = set()
    for cls in public:
        types = _covariance_types(cls)
        wanted |= {f"{cls.__name__}-{ct}" for ct in types} if types else {cls.__name__}
    assert wanted <= set(MODELS), sorted(wanted - set(MODELS))
    assert {"GaussianHMM-tied", "CategoricalHMM", "GMMHMM-full"} <= wanted  # the guard reads


def _cases(draw, categorical: bool):
    X = draw(12)
    cases = {
        "one step": (X[:1], None),
        "ones mixed with long, list": (X, [1, 5, 1, 4, 1]),
        "ones mixed with long, ndarray": (X, np.array([1, 5, 1, 4, 1])),
        "tuple": (X, (6, 1, 5)),
        "strided X": (draw(24)[::2], [3, 1, 8]),
        "F-ordered X": (X.T.copy().T, [12]),
    }
    if categorical:
        cases["int32 X"] = (X.astype(np.int32), [4, 8])
        cases["1-d X"] = (X[:, 0], [7, 5])
    else:
        cases["float32 X"] = (X.astype(np.float32), [4, 1, 7])
    return cases


def _close(got, want, what):
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs hmmlearn {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-300, err_msg=what)


def _compare(ours, twin, X, L, label):
    Xt = X.reshape(-1, 1) if X.ndim == 1 else X  # hmmlearn takes symbols as a column only
    _close(ours.score(X, L), twin.score(Xt, L), f"{label} score")
    (ll, post), (ll_t, post_t) = ours.score_samples(X, L), twin.score_samples(Xt, L)
    _close(ll, ll_t, f"{label} score_samples log-likelihood")
    np.testing.assert_allclose(post, post_t, rtol=0, atol=1e-12, err_msg=f"{label} posteriors")
    np.testing.assert_allclose(ours.predict_proba(X, L), post_t, rtol=0, atol=1e-12)
    (lp, path), (lp_t, path_t) = ours.decode(X, L), twin.decode(Xt, L, algorithm="viterbi")
    _close(lp, lp_t, f"{label} Viterbi log-probability")
    np.testing.assert_array_equal(path, path_t, err_msg=f"{label} Viterbi path")
    np.testing.assert_array_equal(ours.predict(X, L), path_t)
    # MAP: the paths agree; the returned number differs by design (docs/hmm.md: we
    # return the sum of log max-posteriors, hmmlearn the sum of the posteriors)
    np.testing.assert_array_equal(
        ours.decode(X, L, algorithm="map")[1],
        twin.decode(Xt, L, algorithm="map")[1],
        err_msg=f"{label} MAP path",
    )


@pytest.mark.parametrize(
    ("zeros", "implementation"),
    [(False, "log"), (True, "scaling")],
    ids=["dense-log", "structural-zeros-scaling"],
)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_posteriors_and_paths_equal_hmmlearns_on_every_input_layout(
    name, zeros, implementation
):
    ours, twin, draw = MODELS[name](np.random.default_rng(7), zeros, implementation)
    for label, (X, L) in _cases(draw, name == "CategoricalHMM").items():
        _compare(ours, twin, X, L, f"{name} {label}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_aic_bic_and_sample_shapes_equal_hmmlearns(name):
    ours, twin, draw = MODELS[name](np.random.default_rng(8))
    X = draw(15)
    for L in (None, [1, 9, 5]):
        if name.startswith("GMMHMM"):
            # documented (docs/hmm.md): hmmlearn counts n_mix - 1 weights in all, we
            # count them per state, K (n_mix - 1): the scores differ by that count only
            extra = (K - 1) * (M - 1)
            _close(ours.aic(X, L) - 2 * extra, twin.aic(X, L), f"{name} aic")
            _close(ours.bic(X, L) - extra * np.log(len(X)), twin.bic(X, L), f"{name} bic")
        else:
            _close(ours.aic(X, L), twin.aic(X, L), f"{name} aic")
            _close(ours.bic(X, L), twin.bic(X, L), f"{name} bic")
    for n in (1, 6, np.int64(3)):
        (Xs, Zs), (Xt, Zt) = ours.sample(n, random_state=0), twin.sample(int(n), random_state=0)
        assert Xs.shape == Xt.shape and Zs.shape == Zt.shape, name
        assert Xs.dtype.kind == Xt.dtype.kind and Zs.dtype.kind == Zt.dtype.kind, name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_n_jobs_gives_the_same_bits(name):
    ours, _, draw = MODELS[name](np.random.default_rng(9))
    X, L = draw(40), np.array([1, 17, 1, 20, 1])
    results = []
    for n_jobs in (1, 2, -1, np.int64(2), None):
        ours.n_jobs = n_jobs
        ll, post = ours.score_samples(X, L)
        results.append((ll, post, ours.score_sequences(X, L), ours.decode(X, L)[1]))
    for got in results[1:]:
        assert got[0] == results[0][0], name
        for a, b in zip(got[1:], results[0][1:]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def _fit_twins(name, rng, lengths):
    """Our model and hmmlearn's, built unfitted from the same start values."""
    ours0, twin, draw = MODELS[name](rng)
    X = draw(int(np.sum(lengths)))
    kw = dict(init_params="", n_iter=3, tol=-np.inf)
    cls = type(ours0)
    start = {a: getattr(twin, a) for a in ("startprob_", "transmat_")}
    if cls is GaussianHMM:
        emis = {"means_init": twin.means_, "covars_init": twin._covars_}
        ours = cls(K, twin.covariance_type, **kw, **emis)
        params = "stmc"
    elif cls is CategoricalHMM:
        ours = cls(K, n_features=S, emissionprob_init=twin.emissionprob_, **kw)
        params = "ste"
    else:
        # documented (docs/hmm.md): hmmlearn re-estimates a GMMHMM covariance around
        # the previous means, we around the new ones, so covariances stay out of EM
        params = "stwm"
        ours = cls(
            K,
            M,
            covariance_type=twin.covariance_type,
            weights_init=twin.weights_,
            means_init=twin.means_,
            covars_init=twin.covars_,
            params=params,
            **kw,
        )
    ours.set_params(startprob_init=start["startprob_"], transmat_init=start["transmat_"])
    twin.set_params(params=params, n_iter=3, tol=-np.inf)
    return ours, twin, X


@pytest.mark.parametrize("name", sorted(MODELS))
def test_em_from_the_same_start_equals_hmmlearn_with_length_one_sequences(name):
    lengths = [1, 20, 1, 30, 1, 7]
    ours, twin, X = _fit_twins(name, np.random.default_rng(10), lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn's own chatter on tiny data
        twin.fit(X, lengths)
    ours.fit(X, np.array(lengths))
    np.testing.assert_allclose(ours.monitor_.history, list(twin.monitor_.history), rtol=1e-12)
    names = ["startprob_", "transmat_"] + {
        GaussianHMM: ["means_"],
        CategoricalHMM: ["emissionprob_"],
        GMMHMM: ["weights_", "means_"],
    }[type(ours)]
    if type(ours) is GaussianHMM and twin.covariance_type != "spherical":
        names.append("covars_")  # hmmlearn's fitted spherical covars_ reads (K*D, D, D)
    for attr in names:
        np.testing.assert_allclose(getattr(ours, attr), getattr(twin, attr), rtol=1e-9, atol=1e-12)


def _brute_force(start, A, log_b):
    """log p(x) of one sequence by enumerating every state path."""
    T = len(log_b)
    with np.errstate(divide="ignore"):
        ls, lA = np.log(start), np.log(A)
    terms = [
        ls[p[0]]
        + log_b[0, p[0]]
        + sum(lA[a, b] + log_b[t, b] for t, (a, b) in enumerate(zip(p, p[1:]), 1))
        for p in itertools.product(range(len(start)), repeat=T)
    ]
    return np.logaddexp.reduce(terms)


@settings(derandomize=True, deadline=None, max_examples=14)
@given(
    name=st.sampled_from(sorted(MODELS)),
    lengths=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    zeros=st.booleans(),
    layout=st.sampled_from(["C", "F", "strided"]),
)
def test_property_every_model_scores_as_hmmlearn_and_as_every_state_path(
    name, lengths, seed, zeros, layout
):
    """Any model of the table, any lengths with ones, any memory layout: hmmlearn's
    numbers, and per sequence the sum over every state path (brute force)."""
    ours, twin, draw = MODELS[name](np.random.default_rng(seed), zeros)
    n = int(sum(lengths))
    X = {"C": draw(n), "F": np.asfortranarray(draw(n)), "strided": draw(2 * n)[::2]}[layout]
    _compare(ours, twin, X, lengths, f"{name} {lengths} {layout}")
    per_seq = ours.score_sequences(X, lengths)
    log_b = ours.emission_log_prob(X)
    _close(log_b, twin._compute_log_likelihood(np.asarray(X)), f"{name} log-densities")
    r0 = 0
    for s, T in enumerate(lengths):
        want = _brute_force(ours.startprob_, ours.transmat_, log_b[r0 : r0 + T])
        _close(per_seq[s], want, f"{name} sequence {s} vs brute force")
        r0 += T
