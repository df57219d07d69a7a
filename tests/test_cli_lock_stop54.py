"""Stop 54: one run at a time per output folder; the header states the jobs that ran; a
pass with no measured value is no verdict.

- Two ``tying report --out DIR`` (or a report and a ``tying run --out DIR``) at the same
  time read and rewrote ``DIR/.tying-report.json`` in turn and could drop each other's
  entries; the next run then refused the orphaned file by name. A run now holds
  ``flock`` on ``DIR`` from its first check to its last write; a second one is refused
  at once (exit 2), and the folder is left exactly as it was.
- ``--jobs 8`` for one experiment ran it in this process, but the page said ``jobs 8``.
- ``Result(passed=True)`` with an empty ``measured`` was reported as a pass.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from matplotlib.figure import Figure

import tying.experiments.output as output_module
from tying.cli import main
from tying.experiments import Result
from tying.experiments.output import OutputFolderError
from tying.experiments.runner import run_experiment, run_many
from tying.report import write_report

OK = "stop54-lock-ok"

# A second process that holds the folder as a running report does, until told to stop.
# It loads output.py alone (stdlib only), so it starts in milliseconds.
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("out54", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
with mod.folder_lock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _ok(size, seed):
    return Result(passed=True, measured={"x": 1.0}, figures={"plot": Figure()})


def test_a_second_run_into_a_held_folder_is_refused_and_changes_nothing(register, tmp_path, capsys):
    register(OK, _ok)
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0
    capsys.readouterr()
    before = _files(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, output_module.__file__, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        for argv in (
            ["report", "--size", "quick", "--only", OK, "--out", str(out)],
            ["run", OK, "--out", str(out)],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"--out {out}: another `tying report` or `tying run --out` is writing" in err
            assert "Wait for it to finish, or choose another folder" in err
            assert _files(out) == before
        for call in (
            lambda: run_experiment(OK, out_dir=out),
            lambda: run_many([OK], out_dir=out),
        ):
            with pytest.raises(OutputFolderError, match="is writing there now"):
                call()
        assert _files(out) == before
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    # the holder is gone: its lock went with it
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0


def test_the_page_states_the_jobs_that_ran_not_those_asked(register, tmp_path, capsys):
    register(OK, _ok)
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", OK, "--jobs", "8", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    env = json.loads((out / "results.json").read_text())["environment"]
    assert env["jobs"] == 1  # one experiment runs in this process
    assert "1 job(s), of --jobs 8" in " ".join(said.split())
    assert "<td>1</td>" in (out / "index.html").read_text().split("jobs", 1)[1][:60]


def test_workers_used_matches_what_run_many_starts():
    from tying.experiments.runner import workers_used

    assert [workers_used(j, n) for j, n in [(1, 5), (3, 5), (8, 3), (8, 1), (8, 0)]] == [
        1,
        3,
        3,
        1,
        1,
    ]


def test_write_report_refuses_more_jobs_than_could_run(register, tmp_path):
    register(OK, _ok)
    rec = run_experiment(OK)
    with pytest.raises(ValueError, match=r"jobs=2 for 1 record\(s\).*workers_used"):
        write_report([rec], tmp_path / "rep", size="quick", seed=0, jobs=2, runtime_s=1.0)
    assert not (tmp_path / "rep" / "index.html").exists()


@pytest.mark.parametrize("measured", [{}, None], ids=["empty", "none"])
def test_a_pass_with_no_measured_value_is_an_error_naming_it(register, measured):
    register(OK, lambda size, seed: Result(passed=True, measured=measured))
    rec = run_experiment(OK)
    assert rec.status == "error" and not rec.passed
    if measured == {}:
        assert f"experiment {OK!r} reported a pass with no measured value" in rec.error


def test_a_fail_with_no_measured_value_stays_a_fail(register):
    register(OK, lambda size, seed: Result(passed=False))
    assert run_experiment(OK).status == "fail"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_page_whose_figure_is_missing_or_no_png_is_refused(register, tmp_path, damage):
    register(OK, _ok)
    out = tmp_path / "rep"
    rec = run_experiment(OK, out_dir=out)
    (fig,) = rec.figures
    if damage == "missing":
        (out / fig).unlink()
    else:
        (out / fig).write_bytes(b"<html>not a png</html>")
    why = "cannot be read" if damage == "missing" else "was changed since tying wrote it"
    with pytest.raises(OutputFolderError, match=why):
        write_report([rec], out, size="quick", seed=0, jobs=1, runtime_s=1.0)
    assert not (out / "index.html").exists()
