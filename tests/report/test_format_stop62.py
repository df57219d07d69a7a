"""Numbers of other widths and kinds on the page (stop 62)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.experiments.values import jsonable, plain
from tying.report.format import format_number, format_value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (sum([0.1] * 10), "99.99999999999999%"),  # read "100%" beside "0.9999999999999999"
        (1e308, "1e+310%"),  # read "inf%"
        (-1.7976931348623157e308, "-1.8e+310%"),
        (1e-320, "1e-318%"),  # a subnormal's product read "9.9999e-319%"
        (0.58, "58%"),  # the product's binary rounding is still no digit
        (0.004, "0.4%"),
    ],
)
def test_a_percentage_is_the_decimal_it_reads_as_times_100(value, text):
    assert format_number(value, percent=True) == text


def test_a_percentage_beside_its_own_fraction_does_not_round_to_a_power_of_ten():
    x = sum([0.1] * 10)
    assert format_number(x) == "0.9999999999999999"
    assert format_number(x, percent=True, sign=True) == "+99.99999999999999%"


def test_a_longdouble_is_a_number():
    # format_number refused it: "takes an int or float, got np.longdouble('1.0')"
    assert format_number(np.longdouble(1)) == "1"
    assert format_number(np.longdouble("0.1")) == "0.1"
    assert format_value(np.longdouble("0.1")) == "0.1"  # was 0.10000000000000000555


@pytest.mark.parametrize(
    "value",
    [np.complex64(0.1 + 0.2j), torch.tensor(0.1 + 0.2j, dtype=torch.complex64)],
)
def test_a_complex64_shows_its_own_digits(value):
    # its float32 parts printed as 0.10000000149011612+0.20000000298023224j
    assert format_value(value) == "(0.1+0.2j)"
    assert plain(value) == 0.1 + 0.2j
    assert jsonable({"z": value}) == {"z": "(0.1+0.2j)"}


def test_complex_arrays_and_non_finite_parts():
    z = np.array([0.1 - 0.2j, complex(np.inf, 1.5)], dtype=np.complex64)
    assert plain(z) == [0.1 - 0.2j, complex(np.inf, 1.5)]
    assert format_value(complex(1e-7, -np.inf)) == "(1e-07-infj)"
    assert format_value(0.1 + 0.2 + 0j) == "(0.3+0j)"  # the complex128's binary noise too


def test_a_decimal_or_fraction_is_a_number():
    import decimal
    import fractions

    # refused with "pass the number (format words and lists yourself)": it was one
    assert format_number(decimal.Decimal("0.1")) == "0.1"
    assert format_number(fractions.Fraction(1, 3)) == "0.333"
    assert format_number(decimal.Decimal("0.25"), percent=True) == "25%"
    assert format_number(decimal.Decimal("NaN")) == "nan"


def test_a_percentage_does_not_depend_on_the_callers_decimal_context():
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 3  # read "12.3%" beside "0.123457"
        ctx.traps[decimal.Inexact] = True
        assert format_number(0.12345678, 6, percent=True) == "12.3457%"
        assert format_number(1e308, percent=True) == "1e+310%"
        assert format_number(sum([0.1] * 10), percent=True) == "99.99999999999999%"
