"""A float's binary rounding and a narrower float's extra digits are not shown (stop 61)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tying.report.format import format_number, format_value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (sum([17.8] * 10), "178"),  # 178.00000000000003: the smirks-typing growth table
        (1178.0000000000002, "1,178"),  # which already printed as its whole number
        (-178.00000000000003, "-178"),
        (0.1 + 0.2 + 0.2, "0.5"),  # 0.5000000000000001
        (178.5, "178.5"),  # a measured fraction keeps its digits
        (0.99996, "0.99996"),
        (2e-20 + 1e-36, "2e-20"),
        (sys.float_info.max, "1.8e+308"),  # its 15 digits round up to inf: not shown so
        (-sys.float_info.max, "-1.8e+308"),
    ],
)
def test_a_floats_binary_rounding_is_not_a_digit(value, text):
    assert format_number(value) == text
    assert format_value(value) == format_number(value, 4)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (np.float32(0.1), "0.1"),  # printed 0.100000001
        (np.float32(1e-7), "1e-07"),  # printed 1.00000001e-07
        (np.float16(0.1), "0.1"),  # printed 0.09998
        (torch.tensor(0.1), "0.1"),
        (torch.tensor(0.1, dtype=torch.bfloat16), "0.1"),  # printed 0.1001
        (torch.tensor(0.1, dtype=torch.float16), "0.1"),
        (np.array(0.58, dtype=np.float32), "0.58"),
        (np.float32(0.099996), "0.099996"),  # the digits of its precision stay
        (np.float64(0.1), "0.1"),
        (np.float32("nan"), "nan"),
        (torch.tensor(float("-inf")), "-inf"),
    ],
)
def test_a_narrower_float_shows_the_digits_of_its_precision(value, text):
    assert format_number(value) == text
    assert format_value(value) == text
    assert format_value([value]) == f"[{text}]"


def test_a_narrower_float_as_a_percentage():
    assert format_number(np.float32(0.58), percent=True) == "58%"  # was 57.9999988%
    assert format_number(torch.tensor(0.25, dtype=torch.float16), percent=True) == "25%"


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 6))
def test_digits_past_the_fifteenth_never_change_the_text(value, digits):
    # reference: the value typed with 15 significant digits (a finite number stays one)
    typed = float(f"{value:.15g}")
    assume(math.isfinite(typed))
    assume(typed == value or typed == 0 or f"{abs(typed):.0e}"[:2] != "1e")  # not a power of ten
    assert format_number(value, digits) == format_number(typed, digits)


@settings(derandomize=True, deadline=None, max_examples=200)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_a_float32_reads_as_numpy_prints_it(value):
    # reference: NumPy's shortest decimal that is this float32 again
    x = np.float32(value)
    shortest = float(x) if float(x).is_integer() else float(str(x))  # a whole one: itself
    assert format_number(x) == format_number(shortest)
    assert format_number(torch.tensor(value, dtype=torch.float32)) == format_number(x)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (sum([0.1] * 10), "0.9999999999999999"),  # printed "1": a bound of 1 read as met
        (1 + 2**-52, "1.0000000000000002"),
        (math.nextafter(1e-6, 0), "9.999999999999997e-07"),  # printed "1e-06", the tolerance
        (0.1 + 0.2 - 0.2, "0.10000000000000003"),  # printed "0.1"
        (math.nextafter(1e4, 0), "9,999.999999999998"),  # printed "10,000"
        (math.nextafter(1e6, 0), "999,999.9999999999"),  # printed "1,000,000"
    ],
)
def test_binary_rounding_that_keeps_a_value_from_a_power_of_ten_is_shown(value, text):
    # stop 58/59: a value beside a power-of-ten tolerance or bound never reads as it; the
    # 15-digit rounding made each of these read as the power of ten (stop 61 review)
    assert format_number(value) == text
    assert format_number(value, 4) == text
