"""Stop 59: a sigma of the wrong shape is refused with the fix that works.

"sigma has shape (10, 1), expected (10,) or ()" named no fix for a column of one sigma
per point, or for one sigma in a list of one (scipy's curve_fit refuses both too).
"""

from __future__ import annotations

import numpy as np
import pytest

import tying.fit

X = np.linspace(0.0, 1.0, 10)
Y = 2 * X + 1 + 0.01 * np.cos(5 * X)


def _fit(sigma):
    return tying.fit.GlobalFit(
        lambda x, a, b: a * x + b, [(X, Y, sigma)], shared=["a", "b"], init={"a": 1.0, "b": 0.0}
    )


@pytest.mark.parametrize(
    ("sigma", "match", "fixed"),
    [
        ([[0.01]] * 10, r"shape \(10, 1\), expected \(10,\) or \(\); .*: np\.ravel\(sigma\)", np.ravel),
        ((0.01,), r"shape \(1,\), .*is a number: float\(np\.ravel\(sigma\)\[0\]\)",
         lambda s: float(np.ravel(s)[0])),
        (np.full(9, 0.01), r"shape \(9,\), .*give one sigma per point of y \(10\) or one number", None),
    ],
)  # fmt: skip
def test_a_sigma_of_the_wrong_shape_names_the_fix(sigma, match, fixed):
    with pytest.raises(ValueError, match=r"dataset 'dataset 0' \(index 0\): sigma has " + match):
        _fit(sigma).run()
    if fixed is not None:  # the advice, followed, fits as one sigma of 0.01 per point
        ref = _fit(0.01).run()
        assert _fit(fixed(sigma)).run().chi2 == pytest.approx(ref.chi2, rel=1e-12)
