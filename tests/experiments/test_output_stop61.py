"""One path where output.py takes a list of paths is refused, not read as letters (stop 61)."""

from __future__ import annotations

import json
import pathlib

import pytest

from tying.experiments.output import (
    MANIFEST,
    claim_folder,
    expect_files,
    record_files,
    remove_unlisted_figures,
)


def _folder(tmp_path):
    out = tmp_path / "out"
    claim_folder(out, ["x"], fresh=True)
    (out / "index.html").write_text("<html>old</html>")
    (out / "figures" / "x--kept.png").write_bytes(b"PNG")
    record_files(out, ["index.html"])
    return out


def test_expect_files_refuses_one_path_and_leaves_the_manifest(tmp_path):
    out = _folder(tmp_path)
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(
        TypeError, match=r"expect_files\(\): .*got 'index.html' \(str\); pass \[path\]"
    ):
        expect_files(out, "index.html")  # listed i, n, d, ... as pending
    assert (out / MANIFEST).read_bytes() == before
    expect_files(out, ["index.html"])  # the advice, followed
    assert "index.html" in json.loads((out / MANIFEST).read_text())["pending"]


def test_keep_as_one_path_does_not_remove_that_figure(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(
        TypeError, match=r"keep: .*got 'figures/x--kept.png' \(str\); pass \[path\]"
    ):
        remove_unlisted_figures(out, "x", keep="figures/x--kept.png")  # removed it
    assert (out / "figures" / "x--kept.png").is_file()
    assert remove_unlisted_figures(out, "x", keep=["figures/x--kept.png"]) == []
    assert (out / "figures" / "x--kept.png").is_file()


def test_record_files_names_the_fix_for_one_path(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(TypeError, match=r"record_files\(\): .*pass \[path\] for one"):
        record_files(out, "index.html")  # said 'out/i: not a file inside ... to record'


def test_path_objects_are_the_paths_they_name(tmp_path):
    out = _folder(tmp_path)
    record_files(out, [pathlib.Path("figures/x--kept.png")])
    assert "figures/x--kept.png" in json.loads((out / MANIFEST).read_text())["files"]
    expect_files(out, [pathlib.PurePosixPath("index.html")])
    assert "index.html" in json.loads((out / MANIFEST).read_text())["pending"]


@pytest.mark.parametrize("paths", [[1], [None], [b"index.html"]])
def test_a_non_path_among_them_is_named(tmp_path, paths):
    out = _folder(tmp_path)
    with pytest.raises(TypeError, match=r"expected paths \(str\) relative to the folder, got"):
        expect_files(out, paths)


def test_exp_id_must_be_a_str(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(TypeError, match=r"exp_id must be an experiment id \(str\), got 3 \(int\)"):
        remove_unlisted_figures(out, 3)
