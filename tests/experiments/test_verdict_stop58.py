"""Stop 58: ``tying.experiments.verdict.nan_texts``, the NaN written as text (see test_runner_stop58)."""

from __future__ import annotations

import doctest

import pytest

import tying.experiments.verdict as verdict_module
from tying.experiments.verdict import nan_texts


def test_verdict_doctest():
    result = doctest.testmod(verdict_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("measured", "keys"),
    [
        ({"a": "nan", "b": "0.5"}, ["a"]),
        ({"a": ["x", {"y": "(nan)"}]}, ["a"]),
        ({"a": "+nan", "b": "nan%", "c": "n=nan;"}, ["a", "b", "c"]),
        ({"a": "NaN", "b": "banana", "c": "nanometre", "d": "x.nan", "e": "inf"}, []),
        ({"a": float("nan")}, []),  # a number is the runner's own NaN check, not this one
    ],
)
def test_nan_texts_finds_the_word_only(measured, keys):
    assert nan_texts(measured) == keys
