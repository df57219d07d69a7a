"""X that NumPy reads as one 0-d object is named, with a fix that works when followed.

A SciPy sparse matrix (``np.asarray`` wraps it as a single object), a string, None or a
dict were refused as "got the scalar <...>; give [[<...>]] for one observation", advice
that fails again when followed; hmmlearn users pass sparse matrices to scikit-learn
estimators and are told ``X.toarray()`` there.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM, check_observations

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(40, 2))
_SYMBOLS = _RNG.integers(0, 3, size=(30, 1))


@pytest.fixture(scope="module")
def fitted():
    return {
        "gaussian": (GaussianHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(_X), _X),
        "gmm": (GMMHMM(2, n_mix=2, n_iter=2, tol=-np.inf, random_state=0).fit(_X), _X),
        "categorical": (
            CategoricalHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(_SYMBOLS),
            _SYMBOLS,
        ),
    }


@pytest.mark.parametrize("kind", ["gaussian", "gmm", "categorical"])
@pytest.mark.parametrize("sparse", [sp.csr_matrix, sp.csr_array, sp.coo_matrix])
def test_sparse_x_names_toarray_and_the_advice_works(fitted, kind, sparse):
    model, X = fitted[kind]
    S = sparse(X)
    for call in (model.score, model.predict, model.score_samples):
        with pytest.raises(ValueError, match=r"got a SciPy sparse \w+ of shape .*X\.toarray\(\)"):
            call(S)
    assert model.score(S.toarray()) == model.score(X)


def test_sparse_x_in_fit_and_check_observations():
    S = sp.csr_matrix(_X)
    model = GaussianHMM(2, n_iter=2, tol=-np.inf, random_state=0)
    with pytest.raises(ValueError, match=r"SciPy sparse csr_matrix .*pass X\.toarray\(\)"):
        model.fit(S)
    assert not hasattr(model, "means_")  # refused before anything was set
    model.fit(S.toarray())
    with pytest.raises(ValueError, match=r"SciPy sparse csr_matrix .*pass X\.toarray\(\)"):
        check_observations(S)
    np.testing.assert_array_equal(check_observations(S.toarray()), _X)


@pytest.mark.parametrize(
    "value, shown",
    [(None, r"None \(a NoneType\)"), ({"a": 1}, r"\{'a': 1\} \(a dict\)"), ("ACGT", "'ACGT'")],
)
def test_non_numbers_are_not_told_to_nest_themselves(fitted, value, shown):
    model, _ = fitted["gaussian"]
    with pytest.raises(ValueError, match=rf"got {shown}.*pass an array of numbers") as info:
        model.score(value)
    assert "[[" not in str(info.value)


def test_a_string_names_the_coding_and_the_coding_works(fitted):
    model, _ = fitted["categorical"]
    with pytest.raises(ValueError, match=r"np\.unique\(list\(X\), return_inverse=True\)"):
        model.score("ACA")
    _, codes = np.unique(list("ACA"), return_inverse=True)
    assert np.isfinite(model.score(codes))


def test_a_number_keeps_its_nesting_advice(fitted):
    model, _ = fitted["gaussian"]
    with pytest.raises(ValueError, match=r"got the scalar 0\.5; give \[\[0\.5\]\]"):
        model.score(0.5)


def _sparse_start_calls():
    S = sp.csr_matrix(np.zeros((2, 2)))
    E = sp.csr_matrix(np.eye(2))
    model = GaussianHMM(2, n_iter=2, tol=-np.inf, random_state=0).fit(_X)
    return [
        ("means_", lambda: setattr(model, "means_", S), lambda: setattr(model, "means_", S.toarray())),
        ("transmat_", lambda: setattr(model, "transmat_", E), lambda: setattr(model, "transmat_", E.toarray())),
        ("means_init", lambda: GaussianHMM(2, means_init=S, n_iter=1).fit(_X), lambda: GaussianHMM(2, means_init=S.toarray(), n_iter=1, tol=-np.inf).fit(_X)),
        ("transmat", lambda: CategoricalHMM.from_params(startprob=[1, 0], transmat=E, emissionprob=E.toarray()), lambda: CategoricalHMM.from_params(startprob=[1, 0], transmat=E.toarray(), emissionprob=E.toarray())),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(4))
def test_sparse_parameters_are_named_and_the_conversion_works(index):
    name, refused, fixed = _sparse_start_calls()[index]
    # NumPy's "setting an array element with a sequence" named neither
    with pytest.raises(TypeError, match=rf"{name} must be a dense array .* SciPy sparse "
                                        r"csr_matrix of shape \(2, 2\); convert it first"):  # fmt: skip
        refused()
    fixed()
