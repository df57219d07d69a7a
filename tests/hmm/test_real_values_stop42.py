"""Start values, assigned attributes and priors hold real numbers, or are refused (stop 42).

Every array-valued argument of the HMM estimators went through
``np.asarray(value, dtype=np.float64)``, which parses text (``means_init=[["0"], ["1"]]``
fitted from means 0 and 1) and drops the imaginary part of a complex value with only a
``ComplexWarning`` (``means_init=[[1j], [1]]`` fitted from 0 and 1), while text in ``X``
was refused. They are now refused by name and entry (``TypeError``), and a refused call
changes nothing. The tables below enumerate every ``*_init`` argument, prior and fitted
parameter of every public model, and every probability of ``PairHMM`` (which parsed
``delta="0.1"`` too); a guard fails when a new one is not in them.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.hmm as th
from tying.hmm import GMMHMM, BaseHMM, CategoricalHMM, GaussianHMM

RNG = np.random.default_rng(0)
X_REAL = RNG.normal(size=(40, 2))
X_SYMBOLS = RNG.integers(0, 3, (40, 1))
START, A = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])

# class -> (data, constructor keywords, {argument: a valid value}); every ``*_init``
# argument and every prior the class uses in its M-step
VALID = {
    GaussianHMM: (
        X_REAL,
        {"n_components": 2, "covariance_type": "diag"},
        {
            "startprob_init": START,
            "transmat_init": A,
            "means_init": np.array([[0.0, 0.5], [1.0, 1.5]]),
            "covars_init": np.array([[1.0, 2.0], [0.5, 1.5]]),
            "startprob_prior": np.array([2.0, 1.0]),
            "transmat_prior": np.full((2, 2), 1.5),
            "means_prior": np.array([[0.1, 0.2], [0.3, 0.4]]),
            "means_weight": np.array([0.5, 1.0]),
            "covars_prior": np.array([[0.1, 0.2], [0.3, 0.4]]),
            "covars_weight": np.array([2.0, 3.0]),
        },
    ),
    CategoricalHMM: (
        X_SYMBOLS,
        {"n_components": 2},
        {
            "startprob_init": START,
            "transmat_init": A,
            "emissionprob_init": np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]),
            "startprob_prior": np.array([2.0, 1.0]),
            "transmat_prior": np.full((2, 2), 1.5),
            "emissionprob_prior": np.array([1.0, 2.0, 3.0]),
        },
    ),
    GMMHMM: (
        X_REAL,
        {"n_components": 2, "n_mix": 2},
        {
            "startprob_init": START,
            "transmat_init": A,
            "weights_init": np.array([[0.5, 0.5], [0.3, 0.7]]),
            "means_init": RNG.normal(size=(2, 2, 2)),
            "covars_init": np.full((2, 2, 2), 1.5),
            "startprob_prior": np.array([2.0, 1.0]),
            "transmat_prior": np.full((2, 2), 1.5),
        },
    ),
}
# GMMHMM takes its emission priors at hmmlearn's neutral values only (any other value is
# refused as unsupported): they never reach the arithmetic
NEUTRAL_ONLY = {
    GMMHMM: {"weights_prior", "means_prior", "means_weight", "covars_prior", "covars_weight"}
}
ATTRIBUTES = {
    GaussianHMM: ("startprob_", "transmat_", "means_", "covars_"),
    CategoricalHMM: ("startprob_", "transmat_", "emissionprob_"),
    GMMHMM: ("startprob_", "transmat_", "weights_", "means_", "covars_"),
}


def _public_models():
    return [
        getattr(th, n)
        for n in th.__all__
        if isinstance(getattr(th, n), type)
        and issubclass(getattr(th, n), BaseHMM)
        and getattr(th, n) is not BaseHMM
    ]


def test_every_start_value_prior_and_attribute_of_every_model_is_swept():
    """A new public model, ``*_init`` argument or prior must be added to the tables."""
    models = _public_models()
    assert set(models) <= set(VALID) and set(models) <= set(ATTRIBUTES), models
    for cls in models:
        names = {
            n
            for n in cls().get_params()
            if n.endswith(("_init", "_prior", "_weight")) and n != "n_init"  # a count
        } - NEUTRAL_ONLY.get(cls, set())
        assert names == set(VALID[cls][2]), (cls.__name__, sorted(names ^ set(VALID[cls][2])))
        fitted = {n for n in dir(cls) if isinstance(getattr(cls, n, None), property)}
        assert set(ATTRIBUTES[cls]) <= fitted


def _text(value):
    return np.asarray(value).astype(str)


def _complex(value):
    out = np.asarray(value).astype(complex)
    out.flat[-1] += 1j  # only the last entry has an imaginary part
    return out


def _model(cls, **extra):
    X, kw, valid = VALID[cls]
    return cls(**kw, n_iter=2, tol=-np.inf, random_state=0, **extra), X


@pytest.mark.parametrize("kind", ["text", "complex"])
@pytest.mark.parametrize(
    ("cls", "name"), [(cls, name) for cls in VALID for name in VALID[cls][2]], ids=str
)
def test_a_start_value_or_prior_that_is_not_real_is_refused_and_changes_nothing(cls, name, kind):
    good = VALID[cls][2][name]
    m, X = _model(cls, **{name: good})
    m.fit(X)
    before = {a: np.array(getattr(m, a)) for a in ATTRIBUTES[cls]}
    bad = _text(good) if kind == "text" else _complex(good)
    last = tuple(int(i) for i in np.unravel_index(bad.size - 1, bad.shape))
    where = r"\(0,\)|\(0, 0\)|\(0, 0, 0\)" if kind == "text" else re.escape(str(last))
    with pytest.raises(
        TypeError,
        match=rf"{name} must hold real numbers, got .* at index ({where}); "
        + ("give numbers" if kind == "text" else r"take \.real"),
    ):
        m.set_params(**{name: bad})  # priors are checked here already
        m.fit(X)
    for a, v in before.items():  # the refused fit left the fitted model as it was
        np.testing.assert_array_equal(getattr(m, a), v)


@pytest.mark.parametrize("kind", ["text", "complex"])
@pytest.mark.parametrize(
    ("cls", "attr"), [(cls, a) for cls in ATTRIBUTES for a in ATTRIBUTES[cls]], ids=str
)
def test_an_assigned_attribute_that_is_not_real_is_refused_and_changes_nothing(cls, attr, kind):
    m, X = _model(cls)
    m.fit(X)
    before = np.array(getattr(m, attr))
    score = m.score(X)
    bad = _text(before) if kind == "text" else _complex(before)
    with pytest.raises(TypeError, match=rf"{attr} must hold real numbers, got "):
        setattr(m, attr, bad)
    np.testing.assert_array_equal(getattr(m, attr), before)
    assert m.score(X) == score


def test_from_params_refuses_text_and_complex_by_argument():
    with pytest.raises(TypeError, match=r"startprob must hold real numbers.*'0\.6'"):
        GaussianHMM.from_params(["0.6", "0.4"], A, [[0.0], [1.0]], [[1.0], [1.0]])
    with pytest.raises(TypeError, match=r"emissionprob must hold real numbers.*\(1, 1\)"):
        CategoricalHMM.from_params(START, A, np.array([[0.5, 0.5], [0.5, 0.5 + 1j]]))
    with pytest.raises(TypeError, match=r"means must hold real numbers.*\(0, 0, 0\)"):
        GMMHMM.from_params(START, A, [[1.0], [1.0]], [[[1j]], [[0]]], [[[1.0]], [[1.0]]])


def test_the_reported_case_text_means_were_a_fitted_model():
    """Before: the text was parsed and the fit ran from means 0 and 1, with no error;
    a complex mean lost its imaginary part with only a warning."""
    with pytest.raises(TypeError, match=r"means_init must hold real numbers, got text"):
        GaussianHMM(2, means_init=[["0"], ["1"]], n_iter=2, tol=-np.inf).fit(X_REAL[:, :1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old ComplexWarning must not be the only sign
        with pytest.raises(TypeError, match=r"means_init .* complex values .* 1j"):
            GaussianHMM(2, means_init=[[1j], [1]], n_iter=2, tol=-np.inf).fit(X_REAL[:, :1])


def test_guard_real_dtypes_and_object_arrays_of_numbers_fit_as_float64():
    base = _model(GaussianHMM, means_init=VALID[GaussianHMM][2]["means_init"])[0].fit(X_REAL)
    means = VALID[GaussianHMM][2]["means_init"]
    for variant in (means.tolist(), means.astype(np.float32), means.astype(object)):
        m = _model(GaussianHMM, means_init=variant)[0].fit(X_REAL)
        if np.asarray(variant).dtype == np.float32:  # float32 rounds the start values
            np.testing.assert_allclose(m.means_, base.means_, rtol=1e-6)
        else:
            np.testing.assert_array_equal(m.means_, base.means_)
    prior = _model(CategoricalHMM, emissionprob_prior=[1, 2, 3])[0].fit(X_SYMBOLS)
    want = _model(CategoricalHMM, emissionprob_prior=[1.0, 2.0, 3.0])[0].fit(X_SYMBOLS)
    np.testing.assert_array_equal(prior.emissionprob_, want.emissionprob_)


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    case=st.sampled_from([(cls, name) for cls in VALID for name in VALID[cls][2]]),
    form=st.sampled_from(["list", "object", "int-valued", "text", "bytes", "complex", "0j"]),
)
def test_property_a_value_is_read_as_its_real_numbers_or_refused(case, form):
    """Any start value or prior of any model, in any container: real numbers fit exactly
    as their float64 array does; text, bytes and complex values (even 0j) are refused by
    name, never parsed or truncated."""
    cls, name = case
    good = np.asarray(VALID[cls][2][name], dtype=np.float64)
    if form == "int-valued":  # integers where the value allows them (priors, not probs)
        good = np.ceil(good) if name.endswith(("_prior", "_weight")) else good
    variant = {
        "list": good.tolist(),
        "object": good.astype(object),
        "int-valued": good.astype(int) if np.all(good == np.round(good)) else good,
        "text": good.astype(str),
        "bytes": good.astype(bytes),
        "complex": good + 1j,
        "0j": good.astype(complex),
    }[form]
    m, X = _model(cls, **{name: variant})
    if form in ("text", "bytes", "complex", "0j"):
        with pytest.raises(TypeError, match=rf"{name} must hold real numbers"):
            m.fit(X)
        assert not hasattr(m, "ties_")  # a refused first fit leaves the model unfitted
        return
    want = _model(cls, **{name: good})[0].fit(X)
    m.fit(X)
    for a in ATTRIBUTES[cls]:
        np.testing.assert_array_equal(getattr(m, a), getattr(want, a))


# PairHMM: each probability argument and its fitted attribute (``delta`` -> ``delta_``)
PAIR_VALID = {
    "delta": 0.1,
    "epsilon": 0.2,
    "tau": 0.05,
    "match_probs": np.array([[0.4, 0.1], [0.1, 0.4]]),
    "insert_probs": np.array([0.5, 0.5]),
}


def test_every_probability_of_the_pair_hmm_is_swept():
    names = {
        n for n in th.PairHMM().get_params() if hasattr(th.PairHMM, n + "_") and n != "n_symbols"
    }
    assert names == set(PAIR_VALID), sorted(names ^ set(PAIR_VALID))


@pytest.mark.parametrize("kind", ["text", "complex"])
@pytest.mark.parametrize("name", sorted(PAIR_VALID))
def test_a_pair_hmm_probability_that_is_not_real_is_refused_and_changes_nothing(name, kind):
    good = PAIR_VALID[name]
    bad = _text(good) if kind == "text" else _complex(good)
    with pytest.raises(TypeError, match=rf"{name} must hold real numbers, got "):
        th.PairHMM.from_params("AB", **{name: bad})
    m = th.PairHMM.from_params("AB", **{name: good})
    before = np.array(getattr(m, name + "_"))
    score = m.score([("AB", "AB")])
    with pytest.raises(TypeError, match=rf"{name}_ must hold real numbers, got "):
        setattr(m, name + "_", bad)
    np.testing.assert_array_equal(getattr(m, name + "_"), before)
    assert m.score([("AB", "AB")]) == score
