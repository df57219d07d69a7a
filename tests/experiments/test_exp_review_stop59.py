"""Review of stop 59 (a2233d7): refusals and advice that fail legitimate use.

- ``--out ../other`` typed inside a report's folder (or ``R/sub/../../other``) was
  refused as "inside" that report: ``Path.absolute`` keeps ``..``, so ``R`` was among the
  parents of ``R/../other``. The advice, "choose a folder outside .", was what was typed.
- ``tying run a,nope`` was told ``tying report --only a,nope`` (refused: unknown id),
  ``tying run a,`` was told ``--only a,`` (refused: empty id), and ``tying run "a, b"``
  ``--only a, b`` (two shell arguments: "unrecognized arguments").
- ``run_experiment(["param-counts"])`` said "unhashable type: 'list'"; ``run_many(b"x")``
  advised ``[b'x']``, itself an unknown id.
"""

from __future__ import annotations

import pathlib

import pytest

import tying
from tying.cli import _check_ids, _split_ids, _UsageError
from tying.experiments.output import (
    OutputFolderError,
    claim_folder,
    discard_build,
    install_build,
    record_files,
    start_build,
)
from tying.experiments.runner import run_experiment, run_many

DOCS = pathlib.Path(tying.__file__).resolve().parents[2] / "docs" / "report.md"


def _report(out, exp_id="x"):
    claim_folder(out, [exp_id], fresh=True)
    (out / "index.html").write_text("<html>page</html>")
    (out / "figures" / f"{exp_id}--a.png").write_bytes(b"png")
    record_files(out, ["index.html", f"figures/{exp_id}--a.png"])


def test_dot_dot_out_of_a_report_folder_is_outside_it(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    _report(ro)
    monkeypatch.chdir(ro)  # looking at the report, then writing the next one beside it
    claim_folder("../other", ["x"], fresh=True)
    assert (tmp_path / "other" / ".tying-report.json").is_file()
    claim_folder(ro / "sub" / ".." / ".." / "other2", ["x"], fresh=True)
    assert (tmp_path / "other2").is_dir()
    with pytest.raises(OutputFolderError, match=r"--out \.\./ro/sub is inside \., the folder"):
        claim_folder("../ro/sub", ["x"], fresh=True)  # still inside, as typed with ..
    with pytest.raises(OutputFolderError, match=r"is inside"):
        claim_folder(ro / "a" / ".." / "b", ["x"], fresh=True)
    monkeypatch.chdir(tmp_path)
    claim_folder("ro", ["x"], fresh=True)  # the outer report is not blocked


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_build_functions_given_a_report_folder_or_an_empty_path_leave_it(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    _report(ro)
    monkeypatch.chdir(ro)  # discard_build(os.environ.get("BUILD", "")): the current folder
    before = _tree(tmp_path)
    for call in (
        lambda: discard_build(""),  # removed index.html, the figure and the manifest
        lambda: discard_build(ro),
        lambda: install_build("", tmp_path / "elsewhere"),  # moved the report away
    ):
        with pytest.raises(OutputFolderError, match=r"is not a build folder of start_build"):
            call()
        assert _tree(tmp_path) == before
    monkeypatch.chdir(tmp_path)
    build = start_build(ro, ["x"])
    with pytest.raises(OutputFolderError, match=r"an empty or blank folder name"):
        install_build(build, "")  # installed the report into the current folder
    discard_build(build)  # the advice: the folder start_build returned
    assert _tree(tmp_path) == before


def _advice(given: str) -> str:
    with pytest.raises(_UsageError) as info:
        _check_ids([given])
    return str(info.value)


def test_tying_run_with_commas_gives_advice_that_works_when_followed(monkeypatch):
    import tying.cli

    # the registry of two experiments, as tying's own says an unknown id (load_all
    # imports every experiment module: seconds)
    def get(exp_id):
        if exp_id not in ("param-counts", "conv-is-tied-lc"):
            raise KeyError(f"unknown experiment id {exp_id!r}; did you mean 'param-counts'?")

    monkeypatch.setattr(tying.cli, "load_all", lambda: None)
    monkeypatch.setattr(tying.cli, "get", get)
    msg = _advice("param-counts,nope")  # a typo in one of them: named first
    assert "unknown experiment id 'nope'; did you mean" in msg and "--only" not in msg
    msg = _advice("param-counts,")  # one id and a stray comma
    assert msg.endswith("run it with tying run param-counts")
    assert _check_ids(["param-counts"]) == ["param-counts"]
    msg = _advice("param-counts, A2")  # as typed after a comma and a space
    assert "tying report --only param-counts,A2 " in msg
    only = msg.split("--only ")[1].split(" ")[0]
    assert _check_ids(_split_ids([only]), "--only: ") == [
        "param-counts",
        "conv-is-tied-lc",
    ]
    assert _advice(",,").startswith("no experiment id in ',,'")


def test_run_experiment_given_a_list_names_run_many():
    with pytest.raises(
        TypeError, match=r"takes one experiment id .* run_many\(\['param-counts'\]\)"
    ):
        run_experiment(["param-counts"], size="quick")
    with pytest.raises(TypeError, match=r"pass \['param-counts'\] \(or run_experiment"):
        run_many(b"param-counts", size="quick")


def test_the_exit_code_table_keeps_its_tying_list_row():
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| `tying list` |"))
    assert lines[at - 1].startswith("| `tying report` |")  # a row of the table, not prose
