"""Stop 55: ``make report`` / ``make test`` with a ``.venv`` that exists but is broken.

- Its python gone (the interpreter it links to was removed or upgraded away):
  ``python3 -m venv .venv`` keeps the dangling link and exits 0, and the next line
  failed with ".venv/bin/python: No such file or directory". Now make says what is
  wrong and how to fix it, and runs nothing with another python.
- torch (or tying) no longer imports while the install stamp is there: ``make report``
  ran ``tying report`` into a ModuleNotFoundError traceback. Now it installs again, and
  stops if that does not help.

The checks run the real Makefile in a folder whose path holds a space (a fresh clone
can live in one), with a stand-in python that logs what it is asked to do.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# logs every call; "import torch" succeeds only once a pip install has run
_FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "$FAKE_LOG"
case "$*" in
  *"pip install"*) [ -n "$PIP_FIXES" ] && touch "$FAKE_OK"; exit 0 ;;
  *"import torch"*) [ -e "$FAKE_OK" ] || exit 1 ;;
esac
exit 0
"""
_FAKE_TYING = """#!/bin/sh
echo "tying $*" >> "$FAKE_LOG"
"""


def _clone(tmp_path: pathlib.Path) -> pathlib.Path:
    clone = tmp_path / "my clone"
    (clone / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", clone / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", clone / "pyproject.toml")
    return clone


def _make(clone: pathlib.Path, target: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "FAKE_LOG": str(clone / "log"), "FAKE_OK": str(clone / "ok"), **env}
    # PY=false: a rule that would build a new venv with the system python fails loudly
    return subprocess.run(
        ["make", "-s", target, "PY=false"],
        cwd=clone,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_venv(clone: pathlib.Path) -> None:
    for name, text in (("python", _FAKE_PYTHON), ("tying", _FAKE_TYING)):
        path = clone / ".venv" / "bin" / name
        path.write_text(text)
        path.chmod(0o755)
    os.utime(clone / "pyproject.toml", (1, 1))  # older than the stamp made next
    (clone / ".venv" / ".installed").touch()


def test_a_venv_whose_python_is_gone_is_named_not_used(tmp_path):
    clone = _clone(tmp_path)
    (clone / ".venv" / "bin" / "python3").symlink_to("/nonexistent/python3.11")
    (clone / ".venv" / "bin" / "python").symlink_to("python3")
    done = _make(clone, "report")
    assert done.returncode != 0
    assert (
        "make: .venv exists but .venv/bin/python does not run (its interpreter "
        "/nonexistent/python3.11 is missing): remove it with 'make clean'"
    ) in done.stderr
    assert not (clone / "log").exists() and not (clone / "report").exists()
    assert (clone / ".venv" / "bin" / "python3").is_symlink()  # nothing removed


def test_a_venv_that_lost_torch_is_installed_again_before_the_report(tmp_path):
    clone = _clone(tmp_path)
    _fake_venv(clone)
    done = _make(clone, "report", PIP_FIXES="1")
    assert done.returncode == 0, done.stderr
    assert "make: .venv does not import torch and tying; installing them again" in done.stderr
    calls = (clone / "log").read_text().splitlines()
    assert calls[0] == "python -c import torch, tying.cli"
    assert calls[1].startswith("python -m pip install -q torch==")
    assert calls[2:] == [
        "python -c import torch, tying.cli",
        "tying report --size report --jobs 2 --out report",
    ]


def test_a_reinstall_that_does_not_help_stops_make(tmp_path):
    clone = _clone(tmp_path)
    _fake_venv(clone)
    done = _make(clone, "test")
    assert done.returncode != 0
    calls = (clone / "log").read_text().splitlines()
    assert not any("pytest" in c for c in calls)  # the suite never ran half-installed
    assert calls[-1] == "python -c import torch, tying.cli"
