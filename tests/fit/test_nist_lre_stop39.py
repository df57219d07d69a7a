"""The log relative error of a certified value of 0 (stop 39).

``nist.lre`` divided by the certified value: where it is 0, an exact estimate scored
0/0 -> 0 digits and any other x/0 -> 0 digits, the worst score, so a perfect answer read
as a total failure. McCullough's StRD scoring takes the absolute error there,
``-log10(|estimate|)``. The reference is the number of digits built into the estimate.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.fit import nist


def test_a_certified_zero_scores_the_absolute_error():
    got = nist.lre([0.0, 1e-9, -1e-4, 2.0], [0.0, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(got, [15.0, 9.0, 4.0, 15.0])
    assert nist.lre(np.nan, 0.0) == 0.0  # NaN still scores 0


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    certified=st.one_of(st.just(0.0), st.floats(-1e6, 1e6).filter(lambda c: abs(c) > 1e-6)),
    digits=st.integers(1, 14),
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_property_lre_counts_the_digits_built_into_the_estimate(certified, digits, sign):
    error = sign * 10.0**-digits
    estimate = certified * (1 + error) if certified else error
    got = nist.lre(estimate, certified)
    assert abs(got - digits) < 1e-2 * max(1, digits - 12) + 0.05, (got, digits)
