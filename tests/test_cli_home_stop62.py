"""``--out=~/report`` is the home folder's report, as the shell reads ``--out ~/report``
(stop 62): the shell expands ``~`` only in a word of its own, so ``--out=~/report`` wrote
the report into a folder named ``~`` in the current one and printed ``~/report/...``."""

from __future__ import annotations

import pathlib

import pytest

import tying.cli as cli
from tying.experiments.output import out_path, record_files
from tying.experiments.runner import RunRecord


def _fake_run(exp_id, *, size, seed, out_dir):
    """What run_experiment does for a passing experiment with one figure, without running one."""
    rel = f"figures/{exp_id}--counts.png"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / rel).write_bytes(b"PNG")
    record_files(out_dir, [rel])
    return RunRecord(
        id=exp_id, title="t", claim="c", chapter="003", size=size, seed=seed, status="pass",
        measured={"n": 1}, figures=[rel],
    )  # fmt: skip


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_out_path_reads_a_leading_tilde_as_home(home):
    assert out_path("~/rep") == home / "rep"
    assert out_path(b"~/rep") == home / "rep"
    assert out_path("~") == home
    assert out_path("a/~/rep") == pathlib.Path("a/~/rep")  # only a leading one
    assert out_path("./~/rep") == pathlib.Path("~/rep")  # the shell's own way to name "~"
    assert out_path("~nosuchuser62/rep") == pathlib.Path("~nosuchuser62/rep")  # no such user


def test_run_out_equals_tilde_writes_into_home(home, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_experiment", _fake_run)
    assert cli.main(["run", "param-counts", "--out=~/r"]) == cli.EXIT_PASS
    assert (home / "r" / "figures" / "param-counts--counts.png").is_file()
    assert not (home.parent / "~").exists()  # was a folder named "~" here
    assert str(home / "r" / "figures") in capsys.readouterr().out.replace("\n", "")
