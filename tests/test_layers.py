"""DESIGN.md's layers, checked on the source: imports go down only.

``tying.core`` imports no package of ``tying`` above it; the domain packages
(nn, hmm, fit, chem, train) import core, never each other. Lazy imports inside
functions count too: a layer that is crossed only at run time is still crossed.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tying"
DOMAINS = ("nn", "hmm", "fit", "chem", "train")


def _tying_imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tying" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", ["core", *DOMAINS])
def test_imports_go_down_only(package):
    allowed = {"core"} if package == "core" else {"core", package}
    for path in sorted((SRC / package).rglob("*.py")):
        above = _tying_imports(path) - allowed
        assert not above, (
            f"{path.relative_to(SRC)} imports tying.{sorted(above)} (DESIGN.md layers)"
        )
