"""predict and eval_uncertainty take a boolean x, as the fit did (stop 39).

The fit reads a boolean x as 0/1 (an indicator: treated or not); predicting the fitted
model at such an x raised "x must be real numbers, got bool". The anchor is the
ordinary least-squares line through the two groups and its delta-method band.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit


def line(x, a, b):
    return a * x + b


def _result(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.random(n) < 0.5
    x[:2] = [False, True]  # both groups present
    y = 1.5 * x + 0.5 + rng.normal(0, 0.1, n)
    res = tying.fit.GlobalFit(
        line, [(x, y, 0.1)], shared=["a", "b"], init={"a": 0.0, "b": 0.0}
    ).run()
    return res, x, y


def test_predict_reads_a_boolean_x_as_zero_and_one():
    res, _, _ = _result(0, 30)
    np.testing.assert_array_equal(
        res.predict(0, np.array([False, True])), res.predict(0, np.array([0.0, 1.0]))
    )
    np.testing.assert_array_equal(
        res.eval_uncertainty(0, [True, False], sigma=2),
        res.eval_uncertainty(0, [1.0, 0.0], sigma=2),
    )


@settings(derandomize=True, deadline=None, max_examples=8)
@given(seed=st.integers(0, 10_000), n=st.integers(8, 40))
def test_property_boolean_x_predictions_match_least_squares(seed, n):
    res, x, y = _result(seed, n)
    design = np.c_[x.astype(float), np.ones(n)] / 0.1
    coef = np.linalg.lstsq(design, y / 0.1, rcond=None)[0]
    cov = np.linalg.inv(design.T @ design) * res.redchi
    new = np.array([True, False])
    rows = np.c_[new.astype(float), np.ones(2)]
    values, stderr = res.predict(0, new, stderr=True)
    np.testing.assert_allclose(values, rows @ coef, rtol=1e-9)
    np.testing.assert_allclose(
        stderr, np.sqrt(np.einsum("ij,jk,ik->i", rows, cov, rows)), rtol=1e-6
    )
