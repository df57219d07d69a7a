"""A number that is not whole never reads as a whole number (stop 52).

``format_number(0.99996)`` printed ``1``: a correlation, a fraction of equivariant
outputs or a pass rate of 0.99996 read as exactly 1 in a key figure, and 99.996% as
``100%``. Below 1,000 the formatter now shows more digits where rounding would make
a whole number.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.report.format import format_number


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (0.99996, {}, "0.99996"),
        (1.00004, {}, "1.00004"),
        (-0.99999, {}, "-0.99999"),
        (0.99996, {"percent": True}, "99.996%"),
        (12.96, {}, "12.96"),
        (0.99996, {"sign": True}, "+0.99996"),
        (1.0, {}, "1"),  # a whole number still reads as one
        (0.87, {}, "0.87"),  # and other values keep their look
    ],
)
def test_a_value_next_to_a_whole_number_keeps_the_digits_that_say_it_is_not(value, kwargs, text):
    assert format_number(value, **kwargs) == text


@settings(derandomize=True, deadline=None, max_examples=400)
@given(
    value=st.floats(min_value=-999.0, max_value=999.0, allow_nan=False).filter(
        # past 15 significant digits a float's digits are binary rounding (stop 61)
        lambda v: not float(f"{v:.15g}").is_integer() and abs(v) >= 1e-3
    ),
    digits=st.integers(1, 6),
)
def test_below_a_thousand_only_a_whole_number_reads_as_one(value, digits):
    text = format_number(value, digits)
    assert not float(text.replace(",", "")).is_integer(), (value, digits, text)
