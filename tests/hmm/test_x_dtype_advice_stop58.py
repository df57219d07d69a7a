"""X of a dtype that is not numeric: the refusal names a conversion that works.

hmmlearn reads an object array of numbers (a pandas object column) as floats; we refuse
it, and before stop 58 said only "X must be numeric, got dtype object", with no fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import CategoricalHMM, GaussianHMM


def test_object_and_text_x_name_a_conversion_that_works():
    m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0, 0.0]], [[1.0, 2.0]])
    want = m.score([[0.5, -1.0], [0.25, 2.0]])
    for X in (
        np.array([[0.5, -1], [0.25, 2]], dtype=object),
        np.array([["0.5", "-1"], ["0.25", "2"]]),
    ):
        with pytest.raises(ValueError, match=r"got dtype .*np\.asarray\(X, dtype=float\)"):
            m.score(X)
        assert m.score(np.asarray(X, dtype=float)) == want  # the advice, followed
    c = CategoricalHMM.from_params([1.0], [[1.0]], [[0.25, 0.75]])
    X = np.array([[1], [0]], dtype=object)
    with pytest.raises(ValueError, match=r"dtype=float"):
        c.score(X)
    assert c.score(np.asarray(X, dtype=float)) == pytest.approx(np.log(0.25 * 0.75))


def test_complex_x_names_its_real_part():
    m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
    X = np.array([[0.5 + 0j], [1.0 + 0j]])
    with pytest.raises(ValueError, match=r"complex128; .* pass X\.real$"):
        m.score(X)
    assert m.score(X.real) == m.score([[0.5], [1.0]])
