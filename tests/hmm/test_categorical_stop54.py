"""CategoricalHMM at stop 54: hmmlearn's "will be overwritten" warning is logged once per
fit (the alphabet-size check asked the start-value rule a second time and logged it
again), and the alphabet a fit starts from is still the one it keeps or infers."""

import numpy as np
import pytest

from tying.hmm import CategoricalHMM

_OVERWRITTEN = "'emissionprob_' attribute is set, it will be overwritten"


def _overwritten_logs(caplog) -> int:
    return sum(_OVERWRITTEN in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("init_params", ["ste", "e", ["emissions"]])
def test_the_overwrite_warning_is_logged_once_per_fit(caplog, init_params):
    m = CategoricalHMM(2, init_params=init_params, n_iter=1, tol=-np.inf, random_state=0)
    m.emissionprob_ = [[0.5, 0.5], [0.5, 0.5]]
    X = np.array([[0], [1], [1], [0], [1], [0]])
    with caplog.at_level("WARNING", logger="tying.hmm.base"):
        m.fit(X)
    assert _overwritten_logs(caplog) == 1  # hmmlearn logs it once too


def test_no_overwrite_warning_when_the_emissions_are_kept(caplog):
    m = CategoricalHMM(2, init_params="st", n_iter=1, tol=-np.inf, random_state=0)
    m.emissionprob_ = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
    with caplog.at_level("WARNING", logger="tying.hmm.base"):
        m.fit(np.array([[0], [1], [1], [0]]))
    assert _overwritten_logs(caplog) == 0


@pytest.mark.parametrize(
    ("init_params", "assign", "want"),
    [
        ("st", True, 4),  # kept: the assigned alphabet (wider than the data's)
        ("ste", True, 2),  # drawn afresh: the data's alphabet
        (None, True, 4),  # ours: an assigned value is the start value
        (None, False, 2),  # nothing assigned: the data's alphabet
    ],
)
def test_the_alphabet_a_fit_uses(init_params, assign, want):
    m = CategoricalHMM(2, init_params=init_params, n_iter=1, tol=-np.inf, random_state=0)
    if assign:
        m.emissionprob_ = np.full((2, 4), 0.25)
    m.fit(np.array([[0], [1], [1], [0], [1]]))
    assert m.n_symbols_ == want
    assert m.emissionprob_.shape == (2, want)
