"""Stop 47: a failed or interrupted ``tying report`` leaves the earlier report whole.

The report folder was claimed fresh at the start: the earlier report's page and
figures were removed before any experiment ran, so a Ctrl-C, an exception or a
``kill -9`` in a run of minutes left no report at all. The new report is now built in
``--out/.tying-build-XXXXXXXX/`` and moved in only when whole. A ``kill -9`` while a
page file was written left ``.index.html.XXXXXXXX.tmp`` (or a build folder), and the
next run refused the whole folder; those names are tying's own and are cleaned up.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from tying.cli import main
from tying.experiments import Result
from tying.experiments.output import OutputFolderError, claim_folder

OK, EXIT_FAIL, EXIT_INTERRUPTED = "stop47-ok", 1, 130


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".tying-report.json"
    }


def _report(out: pathlib.Path, ids: str = OK) -> int:
    return main(["report", "--size", "quick", "--only", ids, "--out", str(out)])


@pytest.fixture
def earlier(register, tmp_path):
    """A report folder holding an earlier report of ours (page and a figure)."""
    from matplotlib.figure import Figure

    register(
        OK, lambda size, seed: Result(passed=True, measured={"x": 1.0}, figures={"plot": Figure()})
    )
    out = tmp_path / "rep"
    assert _report(out) == 0
    before = _snapshot(out)
    assert {"index.html", "results.json", f"figures/{OK}--plot.png"} <= set(before)
    return out, before


def test_ctrl_c_during_the_experiments_leaves_the_earlier_report(register, earlier, capsys):
    out, before = earlier

    def interrupted(size, seed):
        raise KeyboardInterrupt

    register("stop47-ctrl-c", interrupted)
    capsys.readouterr()
    assert _report(out, f"{OK},stop47-ctrl-c") == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after 1 of 2 experiment(s): no report page was written" in err
    assert "the earlier report there (index.html, results.json) is left as it was" in err
    assert _snapshot(out) == before  # the earlier report, byte for byte
    assert sorted(os.listdir(out)) == [
        ".tying-report.json",
        "figures",
        "index.html",
        "results.json",
    ]
    assert _report(out) == 0  # and the folder is still ours


@pytest.mark.parametrize("error", [RuntimeError("a bug"), OSError(28, "No space left on device")])
def test_a_page_that_fails_to_render_leaves_the_earlier_report(earlier, monkeypatch, error):
    import tying.report

    out, before = earlier

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(tying.report, "render_page", broken)
    if isinstance(error, OSError):
        assert _report(out) == EXIT_FAIL
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            _report(out)
    assert _snapshot(out) == before
    assert not [p for p in os.listdir(out) if p.startswith(".tying-build-")]  # no litter
    monkeypatch.undo()
    assert _report(out) == 0


def test_a_ctrl_c_while_the_new_report_moves_in_is_held_until_it_is_whole(
    earlier, monkeypatch, capsys
):
    import signal

    import tying.experiments.output as output

    out, before = earlier
    real_replace = os.replace
    moved = []

    def replace_then_ctrl_c(src, dst):  # Ctrl-C lands after the first file moved in
        real_replace(src, dst)
        if ".tying-build-" in str(src) and ".tying-build-" not in str(dst):
            moved.append(dst)
            if len(moved) == 1:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(output.os, "replace", replace_then_ctrl_c)
    capsys.readouterr()
    assert _report(out) == EXIT_INTERRUPTED
    assert "the new report was written in" in capsys.readouterr().err
    monkeypatch.undo()
    assert len(moved) == 3  # figure, results.json, index.html: all moved in after the Ctrl-C
    assert set(_snapshot(out)) == set(before)  # a whole report, not a half-moved one
    assert not [p for p in os.listdir(out) if p.startswith(".tying-build-")]
    claim_folder(out, [OK], fresh=False, writes_page=True)  # every file is ours, unchanged


@pytest.mark.parametrize(
    "leftover",
    [".index.html.k3j9x_2a.tmp", ".results.json.abcdefgh.tmp", ".tying-report.json.0a1b2c3d.tmp"],
)
def test_a_temp_file_a_killed_run_left_is_cleaned_not_refused(earlier, leftover, capsys):
    out, before = earlier
    (out / leftover).write_bytes(b"<!DOCTYPE html>half a pa")  # as kill -9 mid-write leaves it
    assert _report(out) == 0, capsys.readouterr().err
    assert not (out / leftover).exists()
    assert set(_snapshot(out)) == set(before)


def test_a_build_folder_a_killed_run_left_is_cleaned(earlier, capsys):
    from tying.experiments.output import _release, start_build

    out, before = earlier
    build = start_build(out, [OK])  # as a run killed mid-way leaves it ...
    _release(build)  # ... whose lock on its build folder died with it (stop 51)
    (build / "figures" / f"{OK}--plot.png").write_bytes(b"png")
    assert _report(out) == 0, capsys.readouterr().err
    assert not build.exists()
    assert sorted(os.listdir(out)) == [
        ".tying-report.json",
        "figures",
        "index.html",
        "results.json",
    ]


@pytest.mark.parametrize(
    "name",
    [
        ".index.html.tmp",  # not tying's temporary name: 8 random characters are missing
        ".index.html.k3j9x_2a.tmp.bak",
        "index.html.k3j9x_2a.tmp",
        ".notes.k3j9x_2a.tmp",
        ".tying-build-k3j9x_2a/thesis.docx",  # a user's file inside a build folder
    ],
)
def test_a_user_file_that_only_looks_like_a_temp_file_is_still_refused(earlier, name):
    out, before = earlier
    (out / name).parent.mkdir(exist_ok=True)
    (out / name).write_text("mine")
    assert _report(out) == 2
    assert (out / name).read_text() == "mine"
    with pytest.raises(OutputFolderError, match="was not written by tying"):
        claim_folder(out, [OK], fresh=True)
    assert (out / name).read_text() == "mine"
    assert {k: v for k, v in _snapshot(out).items() if k != name} == before
