"""Fixtures of the report tests: a git checkout holding a stand-in tying package."""

from __future__ import annotations

import subprocess

import pytest

from tying.report import environment


def _git(repo, *args):
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run([*cmd, *args], cwd=repo, check=True, capture_output=True, text=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git repository holding a package folder ``tying/report/environment.py``."""
    here = tmp_path / "tying" / "report"
    here.mkdir(parents=True)
    (here / "environment.py").write_text("# code\n")
    (tmp_path / "tying" / "core.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    monkeypatch.setattr(environment, "_HERE", str(here))
    head = _git(tmp_path, "rev-parse", "--short", "HEAD").stdout.strip()
    return tmp_path, head


@pytest.fixture
def git():
    """``git(repo, *args)``: run git in ``repo`` with a fixed identity, checked."""
    return _git
