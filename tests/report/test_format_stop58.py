"""Stop 58: a number near a power of ten keeps its digits; a dict reads through the formatter.

``format_number(0.099996)`` printed ``0.1`` and ``format_number(9.99996e-4)`` printed
``0.001``: a gap of 0.099996 read as the 0.1 its check asked for, beside FAIL, and an
error just under a 1e-3 tolerance as the tolerance itself. (Below 1,000 a whole number
was already kept apart, stop 52.) A dict in measured or a table cell printed its
``repr``: ``{'a': 0.30000000000000004}``.
"""

from __future__ import annotations

import math

import pytest

from tying.report.format import format_number, format_value


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (0.099996, {}, "0.099996"),
        (-0.0099996, {}, "-0.0099996"),
        (9.99996e-4, {}, "0.000999996"),
        (9.99999e-7, {"sign": True}, "+9.99999e-07"),
        (0.1, {}, "0.1"),  # an exact power of ten still reads as one
        (1e-6, {}, "1e-06"),
        (0.87345, {}, "0.873"),  # others keep their look
        (1.234e-7, {}, "1.23e-07"),
    ],
)
def test_a_value_next_to_a_power_of_ten_keeps_the_digits_that_say_it_is_not(value, kwargs, text):
    assert format_number(value, **kwargs) == text


def test_below_one_only_a_power_of_ten_reads_as_one():
    for exponent in range(-12, 0):
        for off in (1e-9, 1e-7, 1e-5, 4e-4):
            for value in (10.0**exponent * (1 - off), 10.0**exponent * (1 + off)):
                text = format_number(value)
                back = abs(float(text))
                assert back != float(f"1e{round(math.log10(back))}"), (value, text)
                assert len(text.lstrip("-0.").split("e")[0]) <= 12, (value, text)  # no noise


def test_a_dict_reads_through_the_formatter():
    assert format_value({"tied": 0.1 + 0.2, "n": 1234567, "ok": True, "x": [float("nan")]}) == (
        "{tied: 0.3, n: 1,234,567, ok: yes, x: [nan]}"
    )
