"""Stop 47: no number on the report reads as zero, or with digits that mean nothing.

About 80 key figures, table cells and figure titles of the experiments were written
with fixed decimals (``{x:.4f}``, ``{x:.2f}``, ``round(x, 4)``): an error of 1e-7 read
``0.0000``, so a claim's evidence read as exactly zero, and a delta_ of 3e-5 in a
table cell was stored as 0.0. They now go through one helper,
:func:`tying.report.format.format_number`; a guard scans the experiments' source for
any fixed-decimal format or ``round(x, ndigits)`` that would reach the report again.
"""

from __future__ import annotations

import ast
import math
import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.experiments
from tying.report.format import format_number, format_value

EXPERIMENTS = pathlib.Path(tying.experiments.__file__).parent
_FIXED = re.compile(r"\.\d+[fF%]$")  # .4f, .2F, .0%: a fixed number of decimals


def fixed_decimal_sites(folder: pathlib.Path) -> list[str]:
    """``file:line spec`` of every fixed-decimal f-string format and ``round(x, n)`` call."""
    sites = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
                spec = "".join(
                    v.value for v in node.format_spec.values if isinstance(v, ast.Constant)
                )
                if _FIXED.search(spec):
                    sites.append(f"{path.name}:{node.lineno} {{:{spec}}}")
            elif isinstance(node, ast.Call) and len(node.args) + len(node.keywords) >= 2:
                name = node.func.attr if isinstance(node.func, ast.Attribute) else None
                name = node.func.id if isinstance(node.func, ast.Name) else name
                if name in ("round", "around"):
                    sites.append(f"{path.name}:{node.lineno} {name}(x, ndigits)")
    return sites


def test_no_fixed_decimal_format_reaches_the_report():
    sites = fixed_decimal_sites(EXPERIMENTS)
    assert not sites, (
        "fixed decimals print a small value as 0.0000 (and round(x, 4) stores it as 0.0); "
        "write the number with tying.report.format.format_number, or put the float "
        "itself in the table (the page formats it): " + "; ".join(sites)
    )


def test_the_guard_finds_every_kind_it_names(tmp_path):
    (tmp_path / "exp.py").write_text(
        "import numpy as np\n"
        'a = f"{x:.4f} {y:+.2f} {z:,.0f} {w:.0%} {v:.1e} {u:g}"\n'
        "b = round(x, 3), np.round(y, 2), round(z)\n"
    )
    found = fixed_decimal_sites(tmp_path)
    assert [s.split(" ", 1)[1] for s in found] == [
        "{:.4f}",
        "{:+.2f}",
        "{:,.0f}",
        "{:.0%}",
        "round(x, ndigits)",
        "round(x, ndigits)",
    ]


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (1.234e-7, {}, "1.23e-07"),  # {:.4f} printed 0.0000
        (-4.0e-9, {"sign": True}, "-4e-09"),
        (3.0e-5, {"sign": True}, "+3e-05"),  # {:+.3f} printed +0.000
        (0.004, {"percent": True}, "0.4%"),  # {:.0%} printed 0%
        (0.87, {}, "0.87"),  # ordinary values keep their look
        (0.8734, {"digits": 4}, "0.8734"),
        (5.431024, {"digits": 6}, "5.43102"),
        (12.3456, {}, "12.3"),
        (7486.7, {}, "7,487"),
        (2545678901.5, {}, "2.55e+09"),
        (2.5e9, {}, "2,500,000,000"),  # an integer stays an integer
        (3, {}, "3"),
        (4.0, {}, "4"),
        (float("inf"), {}, "inf"),
        (float("-inf"), {}, "-inf"),
        (float("nan"), {}, "nan"),
        (0.0, {}, "0"),
    ],
)
def test_format_number(value, kwargs, text):
    assert format_number(value, **kwargs) == text


@pytest.mark.parametrize("value", [True, "0.5", [0.5], None])
def test_format_number_refuses_what_is_not_a_number(value):
    with pytest.raises(TypeError, match=r"format_number\(\) takes an int or float, got"):
        format_number(value)


def test_format_number_refuses_a_digit_count_below_one():
    with pytest.raises(ValueError, match=r"digits must be an int >= 1, got 0"):
        format_number(0.5, 0)


def test_format_value_keeps_its_look_through_the_shared_helper():
    assert [format_value(v) for v in (0.000012345, 3.14159, 7486.7, 12345678.9, 0.5)] == [
        "1.23e-05",
        "3.142",
        "7,487",
        "1.23e+07",
        "0.5",
    ]


@settings(derandomize=True, deadline=None, max_examples=300)
@given(
    value=st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: 0 < abs(v) < 1e300),
    digits=st.integers(1, 7),
    sign=st.booleans(),
)
def test_a_nonzero_number_reads_as_itself_to_its_digits(value, digits, sign):
    # brute-force reference: read the text back as a number; it must be the value to the
    # significant digits shown (never 0, never another magnitude) and keep its sign
    text = format_number(value, digits, sign=sign)
    assert text.startswith("+") == (sign and value > 0), text
    back = float(text.replace(",", ""))
    assert back != 0 and math.copysign(1, back) == math.copysign(1, value), text
    mag = abs(value)
    shown = 3 if mag < 1e-3 or mag >= 1e6 else digits
    allowed = 0.5 * 10 ** (1 - shown) * mag
    if 10 ** min(digits, 3) <= mag < 1e6:  # written to the units: 12,346
        allowed = max(allowed, 0.5)
    assert abs(back - value) <= allowed * (1 + 1e-9), text
