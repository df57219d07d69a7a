"""A page write that fails before its files move leaves the manifest as it was: a page
the user edits afterwards is still refused, never overwritten (stop 56 review)."""

from __future__ import annotations

import errno
import os

import pytest

from tying.experiments.runner import RunRecord
from tying.report import OutputFolderError, claim_folder, write_report


def _record() -> RunRecord:
    return RunRecord("param-counts", "t", "c.", "003", "quick", 0, "pass", measured={"x": 1.0})


def test_a_failed_write_then_a_users_edit_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    claim_folder(out, ["param-counts"], fresh=True)
    write_report([_record()], out, size="quick", seed=0, jobs=1, runtime_s=1.0)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError, match="No space left"):
            write_report([_record()], out, size="quick", seed=0, jobs=1, runtime_s=2.0)
    (out / "index.html").write_text("<html>the user's own notes</html>")
    # before: the page stayed listed as pending, and this call overwrote the user's page
    with pytest.raises(OutputFolderError, match=r"index\.html, which was changed since tying"):
        write_report([_record()], out, size="quick", seed=0, jobs=1, runtime_s=3.0)
    assert (out / "index.html").read_text() == "<html>the user's own notes</html>"
