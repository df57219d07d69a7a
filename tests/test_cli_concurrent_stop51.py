"""Stop 51: a second run into a folder where a report is being written deletes nothing of it.

``tying report --out DIR`` builds its report in ``DIR/.tying-build-XXXXXXXX/``. A second
``tying report`` (or ``tying run``) into ``DIR`` started meanwhile took that live build
folder for one a killed run had left, and removed its manifest and figures: the first
run then died with a bare ``OutputFolderError`` traceback (``record_files``: "not a file
inside ... to record") and left figures no manifest listed. A live build is now locked
(``flock``) by the process writing it; the second run is refused with exit code 2 and
changes nothing. A folder that changes under a running report is an exit 1 with a
message, never a traceback.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from matplotlib.figure import Figure

import tying.experiments.output as output_module
from tying.cli import main
from tying.experiments import Result
from tying.experiments.output import OutputFolderError, claim_folder, start_build

OK = "stop51-ok"

# A second process that starts a report build and keeps it open until told to stop. It
# loads output.py alone (stdlib only), so the process starts in milliseconds.
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("out51", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
build = mod.start_build(sys.argv[2], ["stop51-ok"])
(build / "figures" / "stop51-ok--plot.png").write_bytes(b"png of the running report")
mod.record_files(build, ["figures/stop51-ok--plot.png"])
print(build, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def running_report(tmp_path):
    """``(out, build, stop)``: another process is writing a report into ``out`` now."""
    out = tmp_path / "rep"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, output_module.__file__, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    build = pathlib.Path(proc.stdout.readline().strip())
    assert build.parent == out and build.is_dir()

    def stop():
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()

    yield out, build, stop
    if proc.poll() is None:
        stop()


def _files(folder: pathlib.Path, manifest: bool = True) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (manifest or p.name != ".tying-report.json")
    }


def test_a_report_into_a_folder_another_report_is_building_in_is_refused(
    register, running_report, capsys
):
    out, build, stop = running_report
    register(
        OK, lambda size, seed: Result(passed=True, measured={"x": 1.0}, figures={"plot": Figure()})
    )
    before = _files(out)
    assert f"{build.name}/figures/{OK}--plot.png" in before

    rc = main(["report", "--size", "quick", "--only", OK, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"another `tying report` is writing a report there now (its build folder {build}" in err
    assert _files(out) == before  # the running report's files are all there
    for call in (
        lambda: claim_folder(out, [OK], fresh=True),
        lambda: claim_folder(out, [OK], fresh=False),
        lambda: start_build(out, [OK]),
    ):
        with pytest.raises(OutputFolderError, match="Wait for it to finish, or choose another"):
            call()
    assert _files(out) == before

    rc = main(["run", OK, "--out", str(out)])
    assert rc == 2 and "is writing a report there now" in capsys.readouterr().err
    assert _files(out) == before

    stop()  # the other process ends without finishing: its build folder is a leftover now
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0
    assert not build.exists()
    assert sorted(os.listdir(out)) == [
        ".tying-report.json",
        "figures",
        "index.html",
        "results.json",
    ]


def test_a_build_of_this_process_is_live_until_discarded(tmp_path):
    out = tmp_path / "rep"
    build = start_build(out, [OK])
    with pytest.raises(OutputFolderError, match=f"its build folder {build} is in use"):
        claim_folder(out, [OK], fresh=True)
    output_module.discard_build(build)
    assert not build.exists()
    claim_folder(out, [OK], fresh=True)  # nothing live in it now


def test_a_folder_that_changes_under_a_running_report_is_exit_1_not_a_traceback(
    register, monkeypatch, tmp_path, capsys
):
    register(
        OK, lambda size, seed: Result(passed=True, measured={"x": 1.0}, figures={"plot": Figure()})
    )
    out = tmp_path / "rep"
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 0
    before = _files(out, manifest=False)

    def vanished(out_dir, paths):  # what a figure removed during the run makes record_files say
        raise OutputFolderError(f"{out_dir}/figures/{OK}--plot.png: not a file inside to record")

    monkeypatch.setattr("tying.experiments.runner.record_files", vanished)
    capsys.readouterr()
    assert main(["report", "--size", "quick", "--only", OK, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the experiments ran, but the page could not be written" in err
    assert "the earlier report there is left as it was" in err
    assert _files(out, manifest=False) == before
    assert not [n for n in os.listdir(out) if n.startswith(".tying-build-")]

    assert main(["run", OK, "--out", str(tmp_path / "run")]) == 1
    assert f"tying run: error: {OK} ran, but its figures could not be recorded" in (
        capsys.readouterr().err
    )
