"""Every ```python block of docs/interop.md runs (self-contained, seconds each)."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_interop_doc_example_runs(i, monkeypatch, capsys):
    pytest.importorskip("transformers", reason="the interop extra is not installed")
    pytest.importorskip("peft", reason="the interop extra is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = types.ModuleType(f"interop_doc_{i}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(BLOCKS[i], str(DOC), "exec"), module.__dict__)


def test_the_doc_has_one_example_per_tool():
    text = DOC.read_text()
    for tool in ("tying.hf.save_pretrained", "resize_token_embeddings", "get_peft_model",
                 "quantize_dynamic", "torch_prune"):  # fmt: skip
        assert any(tool in b for b in BLOCKS), f"docs/interop.md has no runnable example of {tool}"
    assert "| operation |" in text
