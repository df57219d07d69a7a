"""Stop 58: a report folder inside ``--out`` is named as another report's folder.

After ``tying report --out ro/sub``, ``tying report --out ro`` was refused with "ro holds
ro/sub/.tying-report.json, which was not written by tying": tying wrote it (the manifest
of the nested report). The refusal stays (a report never removes another one's files);
the message now says what is there, and its advice works when followed.
"""

from __future__ import annotations

import shutil

import pytest

from tying.experiments.output import MANIFEST, OutputFolderError, claim_folder, record_files


def _report(out, exp_id="x"):
    claim_folder(out, [exp_id], fresh=True)
    (out / "index.html").write_text("<html>page</html>")
    (out / "figures" / f"{exp_id}--a.png").write_bytes(b"png")
    record_files(out, ["index.html", f"figures/{exp_id}--a.png"])


def _nested(tmp_path, ro, sub):
    """``ro``'s report holding ``sub``'s: written apart, then moved in by hand (a report
    written straight into another report's folder is refused since stop 59)."""
    _report(ro)
    _report(tmp_path / "apart")
    shutil.move(tmp_path / "apart", sub)


def test_a_nested_report_is_named_as_one_and_moving_it_out_works(tmp_path):
    ro, sub = tmp_path / "ro", tmp_path / "ro" / "sub"
    _nested(tmp_path, ro, sub)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputFolderError) as info:
        claim_folder(ro, ["x"], fresh=True)
    msg = str(info.value)
    assert "not written by tying" not in msg
    assert f"holds {sub}, the folder of another report (its manifest {sub / MANIFEST}" in msg
    assert f"or move {sub} out of {ro}" in msg and "(and" not in msg
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    shutil.move(sub, tmp_path / "sub")  # the advice, followed
    claim_folder(ro, ["x"], fresh=True)
    claim_folder(tmp_path / "sub", ["x"], fresh=True)  # the moved report is still ours


def test_a_nested_report_beside_a_users_file_counts_the_file(tmp_path):
    ro, sub = tmp_path / "ro", tmp_path / "ro" / "sub"
    _nested(tmp_path, ro, sub)
    (ro / "notes.txt").write_text("mine")
    with pytest.raises(
        OutputFolderError, match=r"another report .* \(and 1 more that tying did not write for"
    ):
        claim_folder(ro, ["x"], fresh=True)
    assert (ro / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("text", ["not json", '{"files": 3}'])
def test_a_look_alike_manifest_below_is_still_a_file_tying_did_not_write(tmp_path, text):
    ro = tmp_path / "ro"
    _report(ro)
    (ro / "sub").mkdir()
    (ro / "sub" / MANIFEST).write_text(text)
    with pytest.raises(OutputFolderError, match=r"sub/\.tying-report\.json, which was not written"):
        claim_folder(ro, ["x"], fresh=True)


def test_a_folder_inside_a_report_names_the_report_whose_files_it_holds(tmp_path):
    ro = tmp_path / "ro"
    _report(ro)
    with pytest.raises(OutputFolderError) as info:
        claim_folder(ro / "figures", ["x"], fresh=True)
    msg = str(info.value)
    assert "not written by tying" not in msg and "move those files away" not in msg
    assert f"x--a.png, a file of the report in {ro} (its manifest {ro / MANIFEST}" in msg
    assert (ro / "figures" / "x--a.png").read_bytes() == b"png"
    claim_folder(tmp_path / "elsewhere", ["x"], fresh=True)  # the advice, followed
    claim_folder(ro, ["x"], fresh=True)  # and the report above is still whole and ours


def test_a_users_file_inside_a_report_is_still_the_users(tmp_path):
    ro = tmp_path / "ro"
    _report(ro)
    (ro / "mine").mkdir()
    (ro / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"notes\.txt, which was not written by tying"):
        claim_folder(ro / "mine", ["x"], fresh=True)
