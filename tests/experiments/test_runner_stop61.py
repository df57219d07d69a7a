"""A timed-out record states the timeout that was given (stop 61).

``f"{timeout:g}"`` printed ``--timeout 1234567`` as ``timed out after 1.23457e+06 s``:
1,234,570 s, a number nobody typed, on the page and in the advice.
"""

from __future__ import annotations

import pytest

from tying.experiments.registry import Result
from tying.experiments.runner import _timed_out_record


@pytest.mark.parametrize(
    ("timeout", "said"),
    [(1234567.0, "1,234,567"), (1.5, "1.5"), (600.0, "600"), (0.1 + 0.2, "0.3"), (1e-10, "1e-10")],
)
def test_the_timeout_as_given(temp_experiment, timeout, said):
    temp_experiment("stop61-slow", lambda size, seed: Result(passed=True, measured={"x": 1}))
    rec = _timed_out_record("stop61-slow", "quick", 0, timeout)
    assert rec.key_figure == f"timed out after {said} s"
    assert rec.error.startswith(f"timed out after {said} s (the per-experiment timeout)")
