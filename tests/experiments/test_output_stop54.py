"""Stop 54: ``--out`` a symbolic link to a folder that does not exist is named as one.

``mkdir`` on such a link fails with "File exists", and the refusal read "cannot write
there (File exists)" for a path where nothing exists.
"""

from __future__ import annotations

import os

import pytest

from tying.experiments.output import OutputFolderError, claim_folder


def test_a_link_to_nothing_is_refused_naming_its_target(tmp_path):
    link, target = tmp_path / "out", tmp_path / "gone"
    os.symlink(target, link)
    with pytest.raises(OutputFolderError, match=rf"is a symbolic link to {target}, which does"):
        claim_folder(link, ["param-counts"], fresh=True)
    assert os.listdir(tmp_path) == ["out"] and link.is_symlink()  # nothing made or removed


def test_a_link_to_a_folder_is_that_folder(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "out")
    claim_folder(tmp_path / "out", ["param-counts"], fresh=True)
    assert (tmp_path / "real" / ".tying-report.json").is_file()
