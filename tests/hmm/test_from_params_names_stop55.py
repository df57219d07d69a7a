"""``from_params`` errors name the arguments the caller typed (stop 54's open item).

``GaussianHMM.from_params(startprob, transmat, means, covars)`` fills the constructor's
``*_init`` arguments, and its refusals named those (``means_init must be finite``), an
argument the caller never typed. A scalar ``startprob`` raised ``len() of unsized
object``, a nested one was read as one state, a scalar ``emissionprob`` raised a bare
``IndexError``, and a ``GMMHMM`` whose ``means`` had more mixture components than its
``weights`` was told that ``weights`` had the wrong shape.
"""

import re

import numpy as np
import pytest

from tying.hmm import GMMHMM, CategoricalHMM, GaussianHMM

SP, A, I2 = [0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], np.eye(2)
G = GaussianHMM.from_params
C = CategoricalHMM.from_params
M = GMMHMM.from_params
W, MU, CV = [[0.5, 0.5], [0.5, 0.5]], np.zeros((2, 2, 1)), np.ones((2, 2, 1))
E = [[0.5, 0.5], [0.5, 0.5]]

CASES = [
    (lambda: G([0.5, 0.6], A, [[0.0], [1.0]], [[1.0], [1.0]]), r"^startprob must sum to 1"),
    (lambda: G(SP, [[1.0, 0.2], [0, 1]], [[0.0], [1.0]], [[1.0], [1.0]]), r"^transmat must sum"),
    (
        lambda: G(SP, [[1, 0, 0], [0, 1, 0]], [[0.0], [1.0]], [[1.0], [1.0]]),
        r"^transmat must have shape \(2, 2\) = \(n_components, n_components\), got \(2, 3\) "
        r"\(from_params reads n_components from len\(startprob\) = 2\)",
    ),
    (lambda: G(SP, A, [[0.0], [1.0], [2.0]], [[1.0], [1.0]]), r"^means must have shape \(2, 1\)"),
    (lambda: G(SP, A, [[np.nan], [1.0]], [[1.0], [1.0]]), r"^means must be finite"),
    (lambda: G(SP, A, [[0.0], [1.0]], [[-1.0], [1.0]]), r"^covars\[0\]: variances must be pos"),
    (
        lambda: G(SP, A, [[0.0, 0], [1, 0]], [[[1, 2], [2, 1]], I2], covariance_type="full"),
        r"^covars\[0\] must be positive definite",
    ),
    (
        lambda: G(SP, A, [[0.0], [1.0]], [[1.0], [1.0]], ties={"means": [[0, 1]]}),
        r"^means: states 0 and 1 are tied",
    ),
    (lambda: G(["0.5", "0.5"], A, [[0.0], [1.0]], [[1.0], [1.0]]), r"^startprob must hold real"),
    (lambda: C(SP, A, [[0.5, 0.6], [0.5, 0.5]]), r"^emissionprob must sum to 1"),
    (lambda: C(SP, [[1.0, 0.1], [0, 1]], E), r"^transmat must sum to 1"),
    (lambda: C(SP, A, [[0.4, 0.6], [0.5, 0.5]], ties={"emissions": "all"}), r"^emissionprob: st"),
    (lambda: M(SP, A, [[0.5, 0.6], [0.5, 0.5]], MU, CV), r"^weights must sum to 1"),
    (lambda: M(SP, A, W, MU, -CV), r"^covars\[0, 0\]: variances must be positive"),
    (lambda: M(SP, A, W, np.full((2, 2, 1), np.inf), CV), r"^means must be finite"),
]


@pytest.mark.parametrize("call, match", CASES)
def test_a_from_params_refusal_names_the_argument_typed(call, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        call()
    assert not re.search(r"\b(startprob|transmat|means|covars|weights|emissionprob)_init\b",
                         str(info.value))  # fmt: skip


@pytest.mark.parametrize("startprob, shape", [(1.0, r"\(\)"), ([[0.5, 0.5]], r"\(1, 2\)"),
                                              ([], r"\(0,\)")])  # fmt: skip
@pytest.mark.parametrize("build", [
    lambda sp: G(sp, A, [[0.0], [1.0]], [[1.0], [1.0]]),
    lambda sp: C(sp, A, E),
    lambda sp: M(sp, A, W, MU, CV),
])  # fmt: skip
def test_a_startprob_that_is_no_flat_vector_is_refused_by_name(build, startprob, shape):
    # a scalar raised "len() of unsized object"; [[0.5, 0.5]] was read as one state
    with pytest.raises(ValueError, match=rf"^startprob must be a vector of one probability "
                       rf"per state, shape \(n_components,\), got shape {shape}"):  # fmt: skip
        build(startprob)


@pytest.mark.parametrize("call, match", [
    (lambda: C([1.0], [[1.0]], 0.5), r"^emissionprob must have 2 axes.*got shape \(\)"),
    (lambda: C([1.0], [[1.0]], [0.5, 0.5]), r"^emissionprob must have 2 axes.*got shape \(2,\)"),
    (lambda: G([1.0], [[1.0]], 0.0, [[1.0]]), r"^means must have 2 axes.*got shape \(\)"),
    (lambda: M(SP, A, [0.5, 0.5], MU, CV), r"^weights must have 2 axes.*got shape \(2,\)"),
    (lambda: M(SP, A, W, np.zeros((2, 2)), CV), r"^means must have 3 axes.*got shape \(2, 2\)"),
])  # fmt: skip
def test_a_value_with_the_wrong_number_of_axes_is_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):  # a bare IndexError before
        call()


def test_gmm_weights_and_means_with_different_mixture_sizes_name_both():
    # n_mix was read from means, and weights (the right size) was called the wrong shape
    with pytest.raises(ValueError, match=r"^weights has 2 mixture components per state "
                       r"\(shape \(2, 2\)\) but means has 3 \(shape \(2, 3, 1\)\)"):  # fmt: skip
        M(SP, A, W, np.zeros((2, 3, 1)), np.ones((2, 3, 1)))


def test_valid_params_still_give_the_model_they_describe():
    m = G(SP, A, [[0.0], [3.0]], [[1.0], [2.0]])
    x = np.array([[0.5]])
    want = np.logaddexp(
        np.log(0.5) - 0.5 * (np.log(2 * np.pi) + 0.25),
        np.log(0.5) - 0.5 * (np.log(2 * np.pi * 2.0) + 2.5**2 / 2.0),
    )
    assert m.score(x) == pytest.approx(want, rel=1e-12)
    c = C(SP, A, [[0.25, 0.75], [0.5, 0.5]])
    assert c.score([[1]]) == pytest.approx(np.log(0.5 * 0.75 + 0.5 * 0.5), rel=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: G([1.0], [[1.0]], [[0.0]], [[1.0]], n_components=1),
     r"^from_params reads n_components from len\(startprob\); drop n_components=1"),
    (lambda: G([1.0], [[1.0]], [[0.0]], [[1.0]], means_init=[[0.0]]),
     r"^from_params reads means_init from the argument means; drop means_init="),
    (lambda: C([1.0], [[1.0]], [[0.5, 0.5]], n_features=3),
     r"^from_params reads n_features from the columns of emissionprob; drop n_features=3"),
    (lambda: M([1.0], [[1.0]], [[1.0]], [[[0.0]]], [[[1.0]]], n_mix=1),
     r"^from_params reads n_mix from means.shape\[1\]; drop n_mix=1"),
])  # fmt: skip
def test_a_keyword_from_params_fills_itself_is_refused_by_name(call, match):
    # Python's "got multiple values for keyword argument 'means'" (renamed from means_init)
    # named neither the clash nor the fix; n_features=3 was called a clash with n_symbols=2
    with pytest.raises(TypeError, match=match):
        call()
