"""Stop 38: the terminal shows text verbatim; Ctrl-C and an unwritable page say so.

Every string from a claim, a table, a measured key, a key figure or an error went
through rich's markup parser: ``x[t+1] = W x[t]`` (claim B6) printed as ``x = W x``,
``acc[train]`` as ``acc``, and an error naming ``[/tmp/x]`` crashed ``tying run``
with ``MarkupError``. A Ctrl-C during ``tying report`` ended in a traceback, silent
about the earlier report it had removed; a file that appeared in ``--out`` during the
run crashed the page writing with a traceback.
"""

from __future__ import annotations

import os

import pytest

from tying.cli import main
from tying.experiments import REGISTRY, Result, Table, load_all

EXIT_FAIL, EXIT_INTERRUPTED = 1, 130  # documented in tying.cli
BRACKETED = ["w[i] = x[t+1]", "[b]bold[/b]", "[red]", "[/tmp/x]", "[link=x]y[/link]", "\\[z]"]


@pytest.mark.parametrize("text", BRACKETED)
def test_run_prints_every_text_verbatim(register, capsys, monkeypatch, text):
    monkeypatch.setenv("COLUMNS", "400")

    def fn(size, seed):
        return Result(
            passed=True,
            tables=[Table(f"table {text}", [{f"col {text}": f"cell {text}"}])],
            measured={f"key {text}": 1.0},
            key_figure=f"figure {text}",
        )

    register("stop38-text", fn, title=f"title {text}", claim=f"claim {text}")
    assert main(["run", "stop38-text"]) == 0
    out = capsys.readouterr().out
    for where in ("title", "claim", "table", "col", "cell", "key", "figure"):
        assert f"{where} {text}" in out, where


@pytest.mark.parametrize("text", BRACKETED)
def test_an_error_with_brackets_is_printed_not_a_crash(register, capsys, monkeypatch, text):
    monkeypatch.setenv("COLUMNS", "400")

    def fn(size, seed):
        raise ValueError(f"bad value {text}")

    register("stop38-raises", fn)
    assert main(["run", "stop38-raises"]) == EXIT_FAIL
    assert f"ValueError: bad value {text}" in capsys.readouterr().out


def test_report_prints_key_figures_verbatim(register, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    register("stop38-rep", lambda size, seed: Result(passed=False, key_figure="acc[train] = 0.9"))
    out_dir = tmp_path / "rep [1]"
    assert main(["report", "--size", "quick", "--only", "stop38-rep", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "acc[train] = 0.9" in out and "rep [1]" in out


def test_claim_b6_is_printed_with_its_subscripts(capsys, monkeypatch):
    # the real claim that lost its brackets (`x = W x + U u`); its experiment is swapped
    # for an instant one, since only the printing is under test
    import dataclasses

    monkeypatch.setenv("COLUMNS", "400")
    load_all()
    spec = REGISTRY["rnn-identifiability"]
    fast = dataclasses.replace(spec, fn=lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    monkeypatch.setitem(REGISTRY, "rnn-identifiability", fast)
    assert main(["run", "rnn-identifiability"]) == 0
    assert "Linear system x[t+1] = W x[t] + U u[t]:" in capsys.readouterr().out


def test_ctrl_c_during_a_report_says_what_is_left_and_exits_130(register, capsys, tmp_path):
    out = tmp_path / "rep"
    register("stop38-ok", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    assert main(["report", "--size", "quick", "--only", "stop38-ok", "--out", str(out)]) == 0
    assert (out / "index.html").is_file()

    def interrupted(size, seed):
        raise KeyboardInterrupt

    register("stop38-ctrl-c", interrupted)
    capsys.readouterr()
    argv = ["report", "--size", "quick", "--only", "stop38-ok,stop38-ctrl-c", "--out", str(out)]
    assert main(argv) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after 1 of 2 experiment(s): no report page was written" in err
    # (stop 47: a run builds aside, so the earlier report is kept whole, not removed)
    assert "the earlier report there (index.html, results.json) is left as it was" in err
    assert (out / "index.html").is_file()  # the earlier page, not a half-written new one
    # and the folder is still ours: the same command works again
    assert main(["report", "--size", "quick", "--only", "stop38-ok", "--out", str(out)]) == 0


def test_a_file_that_appears_during_the_run_is_kept_and_the_run_fails(register, capsys, tmp_path):
    out = tmp_path / "rep"

    def meanwhile(size, seed):  # the user saves a file into the folder while it runs
        (out / "notes.txt").write_text("mine")
        return Result(passed=True, measured={"x": 1.0})

    register("stop38-meanwhile", meanwhile)
    rc = main(["report", "--size", "quick", "--only", "stop38-meanwhile", "--out", str(out)])
    assert rc == EXIT_FAIL
    err = capsys.readouterr().err
    assert "the page could not be written" in err and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(out)) == [".tying-report.json", "figures", "notes.txt"]


def test_a_module_that_failed_to_import_is_named_by_the_report(register, capsys, tmp_path):
    # its claims registered nothing, so "1 of 1 claims passed" alone would look complete
    from tying.experiments import IMPORT_ERRORS

    register("stop38-ok2", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    out = tmp_path / "rep"
    broken = "Traceback ...\nImportError: cannot import name 'x' [from y]"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(IMPORT_ERRORS, "broken_mod", broken)
        assert main(["report", "--size", "quick", "--only", "stop38-ok2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "experiment module broken_mod failed to import: ImportError: cannot import " in printed
    assert "'x' [from y]" in printed
    page = (out / "index.html").read_text()
    assert '<a href="#import-errors">1 experiment module(s) failed to import</a>' in page


@pytest.mark.parametrize("code", [0, 1, "bye"])
def test_an_experiment_calling_sys_exit_is_an_error_not_the_end_of_the_report(
    register, capsys, tmp_path, code
):
    # sys.exit(0) inside an experiment ended `tying report` with exit 0 and no page
    import sys

    def exits(size, seed):
        sys.exit(code)

    register("stop38-fine", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    register("stop38-exits", exits)
    out = tmp_path / "rep"
    argv = ["report", "--size", "quick", "--only", "stop38-fine,stop38-exits", "--out", str(out)]
    assert main(argv) == 0
    assert "1 of 2 claims passed" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert 'data-id="stop38-exits" data-status="error"' in page and "SystemExit" in page
    assert main(["run", "stop38-exits"]) == EXIT_FAIL


def test_an_experiment_that_changes_directory_does_not_move_a_relative_out(
    register, capsys, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report").mkdir()
    (elsewhere / "report" / "index.html").write_text("the user's own page")

    def wanders(size, seed):
        os.chdir(elsewhere)
        return Result(passed=True, measured={"x": 1.0})

    register("stop38-cd", wanders)
    register("stop38-after", lambda size, seed: Result(passed=True, measured={"x": 1.0}))
    monkeypatch.chdir(tmp_path)
    argv = ["report", "--size", "quick", "--only", "stop38-cd,stop38-after", "--out", "report"]
    assert main(argv) == 0
    assert os.getcwd() == str(tmp_path)
    assert "<b>2</b> of 2 claims passed" in (tmp_path / "report" / "index.html").read_text()
    assert (elsewhere / "report" / "index.html").read_text() == "the user's own page"
