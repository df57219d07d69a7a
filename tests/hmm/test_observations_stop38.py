"""Long-double ``X`` past float64's range (stop 38).

The models compute in float64. A ``np.longdouble`` value past float64's range (1e400)
was cast to inf with NumPy's overflow RuntimeWarning (so under ``-W error``, as in this
suite, a RuntimeWarning came out instead of a ValueError), and the refusal that followed
named inf, not the value given. It is refused by value before the cast now; long-double
values within range score as their float64 values do (hmmlearn's numbers).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import CategoricalHMM, GaussianHMM

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")

PARAMS = ([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.0], [2.0]], [[1.0], [1.0]])


def test_a_long_double_past_float64_is_refused_by_value():
    m = GaussianHMM.from_params(*PARAMS)
    X = np.array([[1.0], [2.0], [-3 * np.longdouble(10) ** 500]], dtype=np.longdouble)
    with pytest.raises(ValueError, match=r"X holds -2\.99+\d*e\+500 at sequence 1, position 1"):
        m.score(X, [1, 2])
    with pytest.raises(ValueError, match=r"past float64's range"):
        GaussianHMM(2, n_iter=1).fit(X)


def test_a_categorical_long_double_past_int64_is_refused_as_no_symbol():
    c = CategoricalHMM.from_params([0.5, 0.5], [[0.8, 0.2], [0.3, 0.7]], [[0.5, 0.5], [0.1, 0.9]])
    X = np.array([[1], [np.longdouble(10) ** 400]], dtype=np.longdouble)
    with pytest.raises(ValueError, match=r"X holds symbols .* got 1e\+400 at sequence 0"):
        c.score(X)


def _hmmlearn_score(X):
    h = hmmlearn_hmm.GaussianHMM(2, implementation="log")  # scaling underflows at 1e100
    h.startprob_, h.transmat_ = np.array(PARAMS[0]), np.array(PARAMS[1])
    h.means_, h.covars_ = np.array(PARAMS[2]), np.array(PARAMS[3])
    return h.score(X)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    mantissas=st.lists(st.floats(-9.0, 9.0), min_size=1, max_size=5),
    exponent=st.sampled_from([0, 1, 100, 150, 300, 308, 309, 400, 4000]),
    where=st.integers(0, 4),
)
def test_property_long_double_X_is_its_float64_value_or_refused(mantissas, exponent, where):
    """One entry scaled by 10**exponent in long double: refused by value past float64's
    range (or, as for float64 X, when its square overflows); otherwise scored exactly as
    the same X in float64, which is hmmlearn's score."""
    X = np.array(mantissas, dtype=np.longdouble)[:, None]
    i = where % len(X)
    X[i] = (X[i] + np.longdouble(1.0)) * np.longdouble(10) ** exponent
    m = GaussianHMM.from_params(*PARAMS)
    if abs(X[i, 0]) > np.finfo(np.float64).max:
        with pytest.raises(ValueError, match=rf"X holds \S+ at sequence 0, position {i} "):
            m.score(X)
        return
    X64 = X.astype(np.float64)
    if abs(X64[i, 0]) > 1e154:  # float64 X is refused there too (its square overflows)
        with pytest.raises(ValueError, match=r"overflow float64 when squared"):
            m.score(X)
        return
    assert m.score(X) == m.score(X64)
    np.testing.assert_allclose(m.score(X), _hmmlearn_score(X64), rtol=1e-12)
