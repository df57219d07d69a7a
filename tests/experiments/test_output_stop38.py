"""Stop 38: an ``--out`` path the file system cannot take is a usage error, not a traceback.

``claim_folder`` asked ``Path.exists()``, which raises ``OSError`` for a name longer
than the file system allows (``ENAMETOOLONG``): ``tying report``/``tying run`` ended in
a traceback (exit 1) instead of the folder check's own message (exit 2).
"""

from __future__ import annotations

import os

import pytest

from tying.cli import main
from tying.experiments.output import OutputFolderError, claim_folder


def _too_long(tmp_path):
    return tmp_path / ("a" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))


def test_a_name_too_long_is_refused_by_the_folder_check(tmp_path):
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputFolderError, match=r"cannot use that path \(File name too long\)"):
        claim_folder(_too_long(tmp_path), ["param-counts"], fresh=True)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("command", [["run", "param-counts"], ["report", "--size", "quick"]])
def test_the_cli_exits_2_naming_the_path(tmp_path, capsys, command):
    assert main([*command, "--out", str(_too_long(tmp_path))]) == 2
    assert "cannot use that path (File name too long)" in capsys.readouterr().err
