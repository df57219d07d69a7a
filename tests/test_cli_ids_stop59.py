"""Stop 59: ``tying run a,b`` names ``tying report --only a,b``.

It said "unknown experiment id 'param-counts,A2'; did you mean 'param-counts'?": the
advice, followed, ran one of the two experiments.
"""

from __future__ import annotations

import pytest

from tying.cli import _check_ids, _split_ids, _UsageError


def test_tying_run_given_ids_with_commas_names_report_only_and_it_works():
    with pytest.raises(
        _UsageError, match=r"one experiment id per run, got 'param-counts,A2'; "
    ) as info:
        _check_ids(["param-counts,A2"])
    assert "did you mean" not in str(info.value)  # it was: did you mean 'param-counts'?
    assert "tying report --only param-counts,A2" in str(info.value)
    # the advice, followed: --only reads the same text as the two ids
    only = _split_ids(["param-counts,A2"])
    assert _check_ids(only, "--only: ") == ["param-counts", "conv-is-tied-lc"]
    with pytest.raises(_UsageError, match=r"--only: unknown experiment id 'nope'"):
        _check_ids(["nope"], "--only: ")  # other unknown ids keep their closest-id advice
