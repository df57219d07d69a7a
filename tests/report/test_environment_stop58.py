"""Stop 58: the page's "git commit" names the code that produced its numbers, or says why not.

It printed HEAD alone: a report run with uncommitted changes to tying named a commit
whose code did not produce its numbers, and a tying installed into a virtual
environment inside another project's repository named that project's commit.
"""

from __future__ import annotations

import shutil

import pytest

from tying.report import environment

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def test_a_clean_checkout_names_its_commit(checkout):
    _, head = checkout
    assert environment._git_commit() == head


@pytest.mark.parametrize("change", ["edit", "new module"])
def test_uncommitted_changes_to_the_package_are_said(checkout, change):
    repo, head = checkout
    if change == "edit":
        (repo / "tying" / "core.py").write_text("x = 2\n")
    else:
        (repo / "tying" / "verdict.py").write_text("y = 1\n")
    assert environment._git_commit() == f"{head} + uncommitted changes to tying"


def test_changes_outside_the_package_are_not_its_changes(checkout):
    repo, head = checkout
    (repo / "notes.md").write_text("outside the package\n")
    assert environment._git_commit() == head


def test_a_package_the_repository_does_not_track_names_no_commit(tmp_path, monkeypatch, git):
    # project/.venv/.../tying/report: inside the project's repository, not one of its files
    (tmp_path / "README").write_text("a project\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "README")
    git(tmp_path, "commit", "-q", "-m", "project")
    here = tmp_path / ".venv" / "tying" / "report"
    here.mkdir(parents=True)
    (here / "environment.py").write_text("# installed copy\n")
    monkeypatch.setattr(environment, "_HERE", str(here))
    assert environment._git_commit().startswith("unknown (tying does not run from a git")
