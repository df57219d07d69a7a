"""The output folder: tying overwrites and removes only files it wrote (issue 14, A1)."""

from __future__ import annotations

import doctest
import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying.experiments.output as output_module
from tying.experiments.output import MANIFEST, OutputFolderError, claim_folder, record_files


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _ours(out, rels):
    claim_folder(out, ["demo"], fresh=True)
    for rel in rels:
        _write(out / rel, f"tying wrote {rel}")
    record_files(out, rels)


def test_users_figure_survives_and_the_folder_is_refused(tmp_path):
    thesis = _write(tmp_path / "figures" / "thesis.png", "my figure")
    with pytest.raises(
        OutputFolderError, match=r"figures/thesis.png, which was not written by tying"
    ):
        claim_folder(tmp_path, ["demo"], fresh=True)
    assert thesis.read_text() == "my figure"
    assert not (tmp_path / MANIFEST).exists()  # refused: nothing written either


def test_users_index_html_is_refused_not_overwritten(tmp_path):
    page = _write(tmp_path / "index.html", "<p>my page</p>")
    with pytest.raises(OutputFolderError, match=r"index.html, which was not written by tying"):
        claim_folder(tmp_path, ["demo"], fresh=True)
    assert page.read_text() == "<p>my page</p>"


def test_rerun_into_own_output_removes_only_its_stale_files(tmp_path):
    _ours(tmp_path, ["index.html", "results.json", "figures/demo--old.png"])
    claim_folder(tmp_path, ["demo"], fresh=True)
    assert not (tmp_path / "figures" / "demo--old.png").exists()  # stale figure of ours: gone
    assert not (tmp_path / "index.html").exists()
    assert (tmp_path / "figures").is_dir()


def test_a_file_changed_after_tying_wrote_it_is_the_users(tmp_path):
    _ours(tmp_path, ["index.html"])
    (tmp_path / "index.html").write_text("edited by hand")
    with pytest.raises(OutputFolderError, match="index.html, which was changed since tying wrote"):
        claim_folder(tmp_path, ["demo"], fresh=True)
    assert (tmp_path / "index.html").read_text() == "edited by hand"


def test_run_mode_keeps_earlier_figures(tmp_path):
    _ours(tmp_path, ["figures/other--a.png"])
    claim_folder(tmp_path, ["demo"], fresh=False)
    assert (tmp_path / "figures" / "other--a.png").exists()


def test_interrupted_run_figures_count_as_ours(tmp_path):
    claim_folder(tmp_path, ["demo"], fresh=True)
    _write(tmp_path / "figures" / "demo--half.png")  # the run died before record_files
    claim_folder(tmp_path, ["other"], fresh=True)
    assert not (tmp_path / "figures" / "demo--half.png").exists()


def test_count_of_foreign_files_is_given(tmp_path):
    for name in ("a.txt", "b.txt", "c.txt"):
        _write(tmp_path / name)
    with pytest.raises(
        OutputFolderError, match=r"a.txt, which was not written by tying \(and 2 more\)"
    ):
        claim_folder(tmp_path, [], fresh=True)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"files": {"../../etc/passwd": "0"}, "pending": []}),
        json.dumps({"files": {"/etc/passwd": "0"}, "pending": []}),
        json.dumps({"files": {}, "pending": ["../*"]}),
    ],
)
def test_a_manifest_tying_did_not_write_is_refused(tmp_path, content):
    _write(tmp_path / MANIFEST, content)
    with pytest.raises(OutputFolderError, match="is not a manifest written by tying"):
        claim_folder(tmp_path, [], fresh=True)
    assert (tmp_path / MANIFEST).read_text() == content


def test_a_symlink_is_never_followed_or_removed(tmp_path):
    target = _write(tmp_path.parent / f"{tmp_path.name}-target" / "keep.png", "keep")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(target.parent, out / "figures")
    with pytest.raises(OutputFolderError, match="figures, which is not a regular file"):
        claim_folder(out, [], fresh=True)
    assert target.read_text() == "keep"


def test_out_is_a_file(tmp_path):
    f = _write(tmp_path / "report.txt", "data")
    with pytest.raises(OutputFolderError, match=r"report.txt is a file, not a folder"):
        claim_folder(f, [], fresh=True)
    assert f.read_text() == "data"


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, where nothing can be created")
def test_folder_that_cannot_be_created(tmp_path):
    with pytest.raises(OutputFolderError, match="cannot write there"):
        claim_folder("/proc/self/no-such/report", [], fresh=True)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_read_only_folder(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputFolderError, match="cannot write there"):
            claim_folder(tmp_path, [], fresh=True)
    finally:
        tmp_path.chmod(0o755)


def test_record_files_refuses_paths_outside(tmp_path):
    claim_folder(tmp_path, [], fresh=True)
    with pytest.raises(OutputFolderError, match="not a file inside"):
        record_files(tmp_path, ["../x"])


def test_output_doctest():
    result = doctest.testmod(output_module)
    assert result.attempted > 0 and result.failed == 0


def test_library_runs_refuse_a_folder_with_a_users_figure(tmp_path):
    """run_experiment / run_many(out_dir=...) keep the CLI's promise too."""
    from tying.experiments.runner import run_experiment, run_many

    mine = _write(tmp_path / "figures" / "param-counts--counts.png", "my own figure")
    with pytest.raises(OutputFolderError, match="param-counts--counts.png, which was not written"):
        run_experiment("param-counts", out_dir=tmp_path)
    with pytest.raises(OutputFolderError, match="param-counts--counts.png, which was not written"):
        run_many(["param-counts"], out_dir=tmp_path)
    assert mine.read_text() == "my own figure"
    mine.unlink()
    assert run_experiment("param-counts", out_dir=tmp_path).passed
    assert run_many(["param-counts"], out_dir=tmp_path)[0].passed  # its own figure: fine


_NAMES = ["index.html", "results.json", "notes.txt", ".tying-report.json.tmp", "figures"]
_FIG_NAMES = ["demo--a.png", "demo--b.png", "thesis.png", "other--x.png"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ours=st.lists(
        st.sampled_from(["index.html", "results.json", "figures/demo--a.png"]), unique=True
    ),
    users=st.lists(
        st.one_of(
            st.sampled_from(_NAMES[:4]), st.sampled_from(_FIG_NAMES).map("figures/{}".format)
        ),
        unique=True,
        max_size=3,
    ),
    edit_one=st.booleans(),
    fresh=st.booleans(),
)
def test_no_file_tying_did_not_write_is_ever_changed(
    tmp_path_factory, ours, users, edit_one, fresh
):
    """Property: whatever the folder holds, claim_folder + writing leaves every file that
    tying did not write (or that was edited since) byte-identical, or refuses."""
    out = tmp_path_factory.mktemp("out")
    if ours:
        _ours(out, ours)
    foreign = {}
    for rel in users:
        if rel in ours or (rel == "figures" and any(o.startswith("figures/") for o in ours)):
            continue
        if rel == "figures" or any(u.startswith(rel + "/") for u in users):
            continue
        foreign[rel] = _write(out / rel, f"user's {rel}").read_bytes()
    if edit_one and ours:
        (out / ours[0]).write_text("edited by the user")
        foreign[ours[0]] = (out / ours[0]).read_bytes()
    # a run (not fresh) refuses to replace a figure that a report page of ours shows
    stale_page = (
        not fresh
        and "figures/demo--a.png" in ours
        and any(p in ours for p in ("index.html", "results.json"))
    )
    try:
        claim_folder(out, ["demo"], fresh=fresh)
    except OutputFolderError:
        assert foreign or stale_page, "refused a folder holding only tying's own files"
    else:
        assert not foreign, f"accepted a folder holding {sorted(foreign)}"
        assert not stale_page, "accepted a run that would leave a report page stale"
        for rel in ("index.html", "results.json", "figures/demo--a.png"):  # a run writes these
            _write(out / rel, "new output")
        record_files(out, ["index.html", "results.json", "figures/demo--a.png"])
    for rel, data in foreign.items():
        assert (out / rel).read_bytes() == data


def _old_report(out):
    """A report folder as tying wrote it before the manifest existed."""
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "param-counts--counts.png").write_bytes(b"\x89PNG old")
    (out / "index.html").write_text("<html><title>tying — experiment report</title></html>")
    results = {
        "passed": 1,
        "total": 1,
        "runtime_s": 1.0,
        "environment": {},
        "experiments": [{"id": "param-counts", "figures": ["figures/param-counts--counts.png"]}],
    }
    (out / "results.json").write_text(json.dumps(results))


def test_a_report_folder_from_before_the_manifest_is_adopted(tmp_path):
    """`make report` over last version's report/ works: that folder is recognisably ours."""
    out = tmp_path / "report"
    _old_report(out)
    claim_folder(out, ["param-counts"], fresh=True)
    assert not (out / "figures" / "param-counts--counts.png").exists()  # stale, ours, removed
    assert not (out / "index.html").exists() and (out / MANIFEST).exists()


@pytest.mark.parametrize("extra", ["notes.txt", "figures/thesis.png"])
def test_an_old_report_folder_holding_a_users_file_is_refused_whole(tmp_path, extra):
    out = tmp_path / "report"
    _old_report(out)
    (out / extra).write_text("mine")
    with pytest.raises(OutputFolderError, match="was not written by tying"):
        claim_folder(out, ["param-counts"], fresh=True)
    assert (out / extra).read_text() == "mine" and (out / "index.html").exists()


def test_an_index_html_without_tyings_title_is_not_adopted(tmp_path):
    out = tmp_path / "report"
    _old_report(out)
    (out / "index.html").write_text("<html><title>My thesis</title></html>")
    with pytest.raises(OutputFolderError):
        claim_folder(out, ["param-counts"], fresh=True)
    assert "My thesis" in (out / "index.html").read_text()


@pytest.mark.parametrize("page", ["index.html", "results.json"])
def test_a_run_into_a_report_refuses_to_replace_a_figure_the_page_shows(tmp_path, page):
    """Stop 31: `tying run ID --out report/` replaced figures/ID--*.png under a page that
    still showed the report's seed and numbers beside it; now refused, nothing changed."""
    _ours(tmp_path, [page, "figures/demo--a.png"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(
        OutputFolderError, match=r"holds a report .* that shows .*figures/demo--a.png; a run there"
    ):
        claim_folder(tmp_path, ["demo"], fresh=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    claim_folder(tmp_path, ["other"], fresh=False)  # a figure the page does not show: fine
    claim_folder(tmp_path, ["demo"], fresh=False, writes_page=True)  # write_report rewrites it
    claim_folder(tmp_path, ["demo"], fresh=True)  # a report: the old page goes first
