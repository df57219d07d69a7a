"""The documentation: every Python block in docs/*.md runs, and the site builds strictly.

Issue 16: the docs are rendered from the docstrings by mkdocs-material +
mkdocstrings; ``mkdocs build --strict`` turns any broken link, missing page or
unresolvable API reference into a failure here, so CI catches it.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)


def test_docs_pages_exist():
    names = {p.name for p in PAGES}
    for page in ("index.md", "core.md", "nn.md", "hmm.md", "fit.md", "chem.md", "train.md"):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = BLOCK.findall(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python block")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tying.experiments import load_all
    from tying.experiments.registry import REGISTRY

    # Load every experiment before the snapshot: a block that calls load_all() first
    # would otherwise leave the registry restored to empty with load_all() marked done,
    # and a later test (tying.report's doctest) would find no experiment at all.
    before = dict(load_all())
    for i, block in enumerate(blocks):
        module = types.ModuleType(f"docs_{page.stem}_{i}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        try:
            exec(compile(block, f"{page}:block{i}", "exec"), module.__dict__)
        except ImportError as err:  # an optional extra the page needs
            pytest.skip(f"{page.name} block {i}: {err}")
        finally:
            REGISTRY.clear()
            REGISTRY.update(before)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs (dev extra) missing")
def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
