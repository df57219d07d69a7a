"""Stop 60: ``tying run a1 a2`` (ids apart) and ``tying run PARAM-COUNTS`` name the fix.

``tying run a1 a2`` said only "tying: error: unrecognized arguments: a2" (the top-level
usage, no word of one id per run); ``tying run PARAM-COUNTS`` said "did you mean
'dp-sgd'?", advice that, followed, ran another experiment.
"""

from __future__ import annotations

import pytest

from tying.cli import EXIT_USAGE, _check_ids, _split_ids, main


def test_run_given_ids_apart_names_report_only_and_it_works(capsys):
    assert main(["run", "param-counts", "A2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "tying run: error: one experiment id per run, got 'param-counts A2'; " in err
    assert "tying report --only param-counts,A2" in err
    assert _check_ids(_split_ids(["param-counts,A2"]), "--only: ") == [
        "param-counts",
        "conv-is-tied-lc",
    ]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "a1", "a1"], "got 'a1 a1'; run it with tying run a1"),
        (["run", "a1", "nope"], "got 'a1 nope', and unknown experiment id 'nope'"),
        (["run", "a1", "--bogus"], "tying: error: unrecognized arguments: --bogus"),
        (["list", "extra"], "tying: error: unrecognized arguments: extra"),
    ],
)
def test_other_extra_arguments(capsys, argv, said):
    assert main(argv) == EXIT_USAGE
    assert said in capsys.readouterr().err


def test_run_id_in_upper_case_names_it(capsys):
    assert main(["run", "PARAM-COUNTS"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "ids are lower-case, without spaces; pass 'param-counts'" in err
    assert "dp-sgd" not in err
