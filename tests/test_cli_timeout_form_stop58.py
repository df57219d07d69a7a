"""``--timeout .5`` and ``--timeout 5.`` are seconds as a person types them (stop 58).

The pattern took ``0.5`` but refused ``.5`` (and ``5.``) as "not a number of seconds",
though Python, the shell's ``sleep`` and ``timeout`` all read them.
"""

from __future__ import annotations

import argparse
import re

import pytest

from tying.cli import _timeout


@pytest.mark.parametrize(
    ("text", "seconds"), [(".5", 0.5), ("5.", 5.0), ("0.5", 0.5), ("600", 600.0)]
)
def test_a_timeout_written_with_a_bare_decimal_point_is_taken(text, seconds):
    assert _timeout(text) == seconds


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (".", "(digits 0-9 only), got '.'"),
        ("..5", "(digits 0-9 only), got '..5'"),
        ("1e3", "(digits 0-9 only), got '1e3'"),
        (".0", "expected a number of seconds > 0, got .0"),
        ("0.", "expected a number of seconds > 0, got 0."),
    ],
)
def test_what_is_no_positive_number_of_seconds_stays_refused(text, said):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(said)):
        _timeout(text)
