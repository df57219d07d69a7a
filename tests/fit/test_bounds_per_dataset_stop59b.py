"""Bounds given one pair per data set: the refusal names the reading and a pair that works.

With two data sets ``bounds={'b': [(0, 2), (2, 4)]}`` was read as lower (0, 2), upper
(2, 4) and refused as "the lower bound must be one number ... got shape (2,)" (stop 59b).
"""

import numpy as np
import pytest

from tying.fit import GlobalFit

X = np.linspace(0, 1, 12)
DATA = [(X, 2 * X + 1 + 0.01 * np.sin(9 * X)), (X, 2 * X + 3 + 0.01 * np.cos(9 * X))]


def _line(x, a=1.0, b=0.5):
    return a * x + b


def _run(bounds):
    return GlobalFit(_line, DATA, shared=["a"], local=["b"], bounds=bounds).run()


def test_a_pair_per_data_set_names_the_reading_and_the_envelope_fits():
    with pytest.raises(
        ValueError,
        match=r"\[\(0, 2\), \(2, 4\)\] is read as \(lower, upper\), not as a pair per data set.*"
        r"bounds=\{'b': \(0.0, 4.0\)\}$",
    ):
        _run({"b": [(0, 2), (2, 4)]})
    result = _run({"b": (0.0, 4.0)})  # the advice, as written
    assert result.success and result.values["b"] == pytest.approx([1.0, 3.0], abs=0.01)


def test_three_pairs_and_a_dict_get_the_envelope_and_a_bad_pair_none():
    with pytest.raises(
        ValueError,
        match=r"not supported\); the one pair that holds them all is bounds=\{'b': \(None, 4.0\)\}",
    ):
        _run({"b": [(None, 2), (2, 4), (1, 3)]})
    with pytest.raises(ValueError, match=r"holds them all is bounds=\{'b': \(0.0, 4.0\)\}"):
        _run({"b": {"dataset 0": (0, 2), "dataset 1": (2, 4)}})
    with pytest.raises(ValueError, match=r"per-data-set bounds are not supported$"):
        _run({"b": [(0, 2), (4, 2)]})  # an inverted pair: no envelope to advise
