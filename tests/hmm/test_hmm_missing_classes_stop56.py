"""hmmlearn classes tying.hmm lacks are refused naming what to use instead (stop 56).

``from tying.hmm import MultinomialHMM`` (a hmmlearn < 0.2.8 script for symbols) said
only "cannot import name"; it now names ``CategoricalHMM(n, n_symbols=M)``.
"""

import importlib

import pytest

import tying.hmm


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("MultinomialHMM", r"use CategoricalHMM\(n_components, n_symbols=M\)"),
        ("PoissonHMM", r"no Poisson emissions"),
        ("VariationalGaussianHMM", r"GaussianHMM with priors"),
        ("VariationalCategoricalHMM", r"CategoricalHMM with emissionprob_prior"),
    ],
)
def test_from_import_names_our_equivalent(name, ours):
    with pytest.raises(ImportError, match=rf"tying\.hmm has no {name}: .*{ours}"):
        exec(f"from tying.hmm import {name}", {})


def test_other_names_stay_attribute_errors():
    with pytest.raises(AttributeError, match=r"module 'tying.hmm' has no attribute 'Nope'"):
        tying.hmm.Nope  # noqa: B018
    assert not hasattr(tying.hmm, "Nope")
    assert importlib.import_module("tying.hmm").CategoricalHMM is tying.hmm.CategoricalHMM
    assert set(tying.hmm.__all__).isdisjoint(tying.hmm._HMMLEARN_ONLY)
