"""Review of stop 58 (7865b9c): siblings the fix missed.

- ``format_number`` still rounded a value just under a power of ten up to it from a
  million on (9.99996e6 printed ``1e+07``): the defect stop 58 fixed below 1.
- ``verdict.nan_texts`` missed ``NAN``, which Python's upper-case formats write
  (``f"{x:.2E}"``, ``:F``, ``:G`` of a NaN): a PASS stood beside it.
- the page's provenance ran a plain ``git status``, which refreshes and rewrites
  ``.git/index`` under ``index.lock``: a report run beside the user's ``git commit``
  could make that commit fail.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tying.experiments.verdict import nan_texts
from tying.report import environment
from tying.report.format import format_number


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9.99996e6 + 0.5, "9.99996e+06"),
        (-9.99996e6 - 0.5, "-9.99996e+06"),
        (9.9996e9 + 0.5, "9.9996e+09"),
        (1.5e7 + 0.5, "1.5e+07"),  # others keep their look
        (1e7 + 0.5, "1.00000005e+07"),  # just above: not the power either
    ],
)
def test_from_a_million_on_only_a_power_of_ten_reads_as_one(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("spec", [".2E", ".3F", "G", "E"])
def test_an_upper_case_nan_is_a_nan_written_as_text(spec):
    text = f"[{float('nan'):{spec}}, 0.31]"
    assert nan_texts({"interval": text, "note": "NaN handling, Nan"}) == ["interval"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_the_commit_is_read_without_rewriting_the_users_git_index(checkout):
    tmp_path, head = checkout
    index = tmp_path / ".git" / "index"
    # a file whose stat no longer matches the index: a plain `git status` refreshes it
    later = index.stat().st_mtime + 10
    os.utime(tmp_path / "tying" / "core.py", (later, later))
    before = (index.stat().st_mtime_ns, index.read_bytes())
    assert environment._git_commit() == head
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before
