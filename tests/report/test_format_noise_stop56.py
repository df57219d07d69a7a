"""format_number does not print binary rounding noise as digits (stop 56: the report's ctc
row read "greedy ≠ beam on 57.99999999999999%", 0.58 * 100 in float64)."""

import pytest

from tying.report.format import format_number


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (0.58, {"digits": 2, "percent": True}, "58%"),
        (0.29, {"percent": True}, "29%"),
        (0.1 + 0.2, {}, "0.3"),
        (0.99996, {}, "0.99996"),  # a real digit near a whole number is still shown
        (1 - 1e-9, {}, "0.999999999"),
    ],
)
def test_rounding_noise_is_not_printed_as_digits(value, kwargs, text):
    assert format_number(value, **kwargs) == text
