"""Stop 59: a report written inside another report's folder is refused up front.

``tying report --out ro`` then ``tying report --out ro/sub`` (or ``tying run ID --out
ro/sub``) was accepted; the next ``tying report --out ro`` was then refused ("holds
ro/sub, the folder of another report") until ``ro/sub`` was moved out. The nested
report is now refused before anything is written, naming the report around it.
"""

from __future__ import annotations

import pytest

from tying.experiments.output import (
    MANIFEST,
    OutputFolderError,
    claim_folder,
    discard_build,
    record_files,
    start_build,
)


def _report(out, exp_id="x"):
    claim_folder(out, [exp_id], fresh=True)
    (out / "index.html").write_text("<html>page</html>")
    (out / "figures" / f"{exp_id}--a.png").write_bytes(b"png")
    record_files(out, ["index.html", f"figures/{exp_id}--a.png"])


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("fresh", [True, False])  # tying report / tying run
@pytest.mark.parametrize("below", ["sub", "sub/deeper", "mine"])
def test_a_report_inside_another_reports_folder_is_refused_before_writing(tmp_path, fresh, below):
    ro = tmp_path / "ro"
    _report(ro)
    (ro / "mine").mkdir()  # an empty folder of the user's inside the report
    record_files(ro, [])
    before = _tree(tmp_path)
    with pytest.raises(OutputFolderError) as info:
        claim_folder(ro / below, ["x"], fresh=fresh)
    msg = str(info.value)
    assert f"--out {ro / below} is inside {ro}, the folder of another report" in msg
    assert f"its manifest {ro / MANIFEST}" in msg and f"outside {ro} with --out" in msg
    assert _tree(tmp_path) == before  # nothing written, nothing removed
    claim_folder(tmp_path / "elsewhere", ["x"], fresh=fresh)  # the advice, followed
    (ro / "mine").rmdir()
    claim_folder(ro, ["x"], fresh=True)  # and the outer report is not blocked


def test_a_relative_out_names_the_report_around_it_relatively(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "ro")
    with pytest.raises(OutputFolderError, match=r"--out ro/sub is inside ro, the folder"):
        claim_folder("ro/sub", ["x"], fresh=True)


def test_through_a_symbolic_link_it_is_still_inside(tmp_path):
    ro = tmp_path / "ro"
    _report(ro)
    (ro / "deep").mkdir()
    record_files(ro, [])
    (tmp_path / "link").symlink_to(ro / "deep")
    with pytest.raises(OutputFolderError, match=r"is inside .*ro, the folder of another"):
        claim_folder(tmp_path / "link", ["x"], fresh=True)


def test_legitimate_neighbours_and_the_reports_own_build_are_accepted(tmp_path):
    ro = tmp_path / "ro"
    _report(ro)
    claim_folder(tmp_path / "ro2", ["x"], fresh=True)  # a sibling, its name a prefix
    claim_folder(ro, ["y"], fresh=False)  # a run of another experiment into the report
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    (tmp_path / "plain" / MANIFEST).write_text("not json")  # a look-alike: no report
    claim_folder(tmp_path / "plain" / "sub", ["x"], fresh=True)
    build = start_build(ro, ["x"])  # the report's own build folder lies inside it
    assert build.parent == ro and (build / MANIFEST).is_file()
    discard_build(build)
    assert not build.exists()


@pytest.mark.parametrize("command", ["run param-counts", "report --only param-counts"])
def test_the_cli_refuses_it_without_creating_the_folder(tmp_path, capsys, command):
    from tying.cli import main

    ro = tmp_path / "ro"
    _report(ro)
    before = _tree(tmp_path)
    code = main([*command.split(), "--size", "quick", "--out", str(ro / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and f"is inside {ro}, the folder of another report" in " ".join(err.split())
    assert _tree(tmp_path) == before  # ro/sub was not even created


def test_the_build_is_its_reports_own_where_folders_cannot_be_locked(tmp_path, monkeypatch):
    import tying.experiments.output as output

    ro = tmp_path / "ro"
    _report(ro)
    monkeypatch.setattr(output, "fcntl", None)  # Windows, or a file system without flock
    build = start_build(ro, ["x"])
    assert build.parent == ro
    discard_build(build)
    with pytest.raises(OutputFolderError, match="is inside"):  # a user's folder still is not
        claim_folder(ro / "sub", ["x"], fresh=True)
