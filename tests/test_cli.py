"""The `tying` command: list, run, report; exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tying.cli import main
from tying.experiments import REGISTRY, Result, load_all
from tying.experiments.registry import experiment


@pytest.fixture
def temp_experiment():
    load_all()
    added = []

    def register(exp_id, fn):
        experiment(exp_id, title=exp_id, claim=f"{exp_id} claims.", seed_file="004")(fn)
        added.append(exp_id)

    yield register
    for exp_id in added:
        REGISTRY.pop(exp_id, None)


def test_list_shows_ids_titles_and_status(capsys, monkeypatch):
    from tying.experiments import REGISTRY, load_all

    load_all()
    monkeypatch.delitem(REGISTRY, "gan-clipping")  # as if that claim had no experiment yet
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "param-counts" in out and "ready" in out
    assert "not yet implemented" in out  # claims without an experiment are listed too


def test_run_prints_the_table_and_exits_0(capsys, tmp_path):
    assert main(["run", "param-counts", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "9,437,184" in out and "448" in out and "PASS" in out
    assert (tmp_path / "figures" / "param-counts--counts.png").is_file()


def test_run_failing_check_exits_1(capsys, temp_experiment):
    temp_experiment("cli-fails", lambda size, seed: Result(passed=False, key_figure="nope"))
    assert main(["run", "cli-fails"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_run_raising_experiment_exits_1_and_shows_the_error(capsys, temp_experiment):
    def boom(size, seed):
        raise ValueError("broken on purpose")

    temp_experiment("cli-raises", boom)
    assert main(["run", "cli-raises"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "broken on purpose" in out


def test_unknown_id_exits_2_naming_the_closest(capsys):
    assert main(["run", "bptt_sum"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment id 'bptt_sum'" in err and "did you mean 'bptt-sum'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "param-counts", "--size", "huge"],
        ["run", "param-counts", "--seed", "x"],
        ["frobnicate"],
        [],
        ["report", "--only", "no-such-id"],
        ["report", "--jobs", "0"],
    ],
)
def test_usage_errors_exit_2(argv, capsys, tmp_path):
    if argv[:1] == ["report"]:
        argv = [*argv, "--out", str(tmp_path)]
    assert main(argv) == 2


def test_report_writes_the_page_and_counts_passes(capsys, tmp_path, temp_experiment):
    temp_experiment("cli-report-fail", lambda size, seed: Result(passed=False))
    out_dir = tmp_path / "rep"
    code = main(
        [
            "report",
            "--size",
            "quick",
            "--only",
            "param-counts,cli-report-fail",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0  # the page was written, even though a claim failed
    out = capsys.readouterr().out
    assert "1 of 2 claims passed" in out
    results = json.loads((out_dir / "results.json").read_text())
    assert results["passed"] == 1 and results["total"] == 2
    assert [e["id"] for e in results["experiments"]] == ["param-counts", "cli-report-fail"]
    assert (out_dir / "index.html").is_file()


def test_report_clears_stale_figures(tmp_path):
    stale = tmp_path / "figures" / "old--gone.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    assert (
        main(["report", "--size", "quick", "--only", "param-counts", "--out", str(tmp_path)]) == 0
    )
    assert not stale.exists()
    assert (tmp_path / "figures" / "param-counts--counts.png").exists()


def test_python_dash_m_tying_works():
    proc = subprocess.run(
        [sys.executable, "-m", "tying", "run", "no-such"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "did you mean" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "tying", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "report" in proc.stdout
