"""Stop 59: from 1,000 to a million a number just off a power of ten kept its digits.

``format_number(9999.96)`` read ``10,000`` (and ``999999.6`` read ``1,000,000``, a
million exactly): the units rounded it onto the power of ten a bound is written as,
where below 1 and from a million on stop 58 already kept the digits that say it is not.
"""

from __future__ import annotations

import pytest

from tying.report.format import format_number


@pytest.mark.parametrize(
    ("value", "kw", "text"),
    [
        (9999.96, {}, "9,999.96"),  # was 10,000
        (99999.6, {}, "99,999.6"),  # was 100,000
        (999999.6, {}, "999,999.6"),  # was 1,000,000
        (-9999.96, {"sign": True}, "-9,999.96"),
        (10000.4, {}, "10,000.4"),  # was 10,000: just above reads as exact too
        (99.9996, {"percent": True}, "9,999.96%"),  # was 10,000%
    ],
)
def test_a_number_just_off_a_power_of_ten_keeps_its_digits(value, kw, text):
    assert format_number(value, **kw) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(12345.6, "12,346"), (5000.7, "5,001"), (999999.4, "999,999"), (10000.0, "10,000")],
)
def test_other_numbers_still_read_to_their_units(value, text):
    assert format_number(value) == text
