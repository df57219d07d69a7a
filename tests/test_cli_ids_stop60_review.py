"""Stop 60 review: the advice for ids given apart carries the options, and ``--only a, b``.

``tying run a1 b1 --seed 3`` was told ``tying report --only a1,b1``, which, followed,
ran seed 0 at ``--size report`` (``run`` defaults to ``quick``) and ``--out`` dropped;
``tying report --only a1, b1`` (ids apart, the slip stop 59 named) said only
"unrecognized arguments: b1".
"""

from __future__ import annotations

import shlex

import pytest

import tying.cli
from tying.cli import EXIT_USAGE, main


def _followed(monkeypatch, advice: str) -> dict:
    """The options ``tying <advice>`` parses to, the command not run."""
    got = {}
    for name in ("_cmd_run", "_cmd_report"):
        monkeypatch.setattr(tying.cli, name, lambda args, console: got.update(vars(args)) or 0)
    assert main(shlex.split(advice)) == 0
    return got


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "param-counts", "A2", "--seed", "3", "--out", "my dir"],
        ["run", "param-counts,A2", "--seed", "3", "--out", "my dir"],
    ],
)
def test_run_ids_apart_or_with_commas_advice_keeps_size_seed_out(capsys, monkeypatch, argv):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    advice = err.split("run several with tying ")[1].split(" (or")[0]
    assert advice == "report --only param-counts,A2 --size quick --seed 3 --out 'my dir'"
    got = _followed(monkeypatch, advice)
    assert (got["size"], got["seed"], str(got["out"])) == ("quick", 3, "my dir")
    assert got["only"] == ["param-counts,A2"]


def test_run_one_id_twice_advice_keeps_size(capsys, monkeypatch):
    assert main(["run", "a1", "a1", "--size", "report"]) == EXIT_USAGE
    advice = capsys.readouterr().err.split("run it with tying ")[1].strip()
    assert advice == "run a1 --size report"
    assert _followed(monkeypatch, advice)["size"] == "report"


@pytest.mark.parametrize(
    "argv", [["report", "--only", "a1,", "b1"], ["report", "--only", "a1", "b1"]]
)
def test_report_only_ids_apart_names_the_fix(capsys, monkeypatch, argv):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "tying report: error: unrecognized arguments: b1; --only takes one argument" in err
    advice = err.split("give ")[1].strip()
    assert advice == "--only a1,b1"
    assert _followed(monkeypatch, f"report {advice}")["only"] == ["a1,b1"]


def test_report_only_unknown_id_apart_names_the_closest(capsys):
    assert main(["report", "--only", "a1", "nope"]) == EXIT_USAGE
    assert "--only: unknown experiment id 'nope'; did you mean" in capsys.readouterr().err


def test_report_other_extra_arguments_unchanged(capsys):
    assert main(["report", "--only", "a1", "--bogus"]) == EXIT_USAGE
    assert "tying: error: unrecognized arguments: --bogus" in capsys.readouterr().err
