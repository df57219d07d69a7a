"""docs/interop.md shows one runnable example per tool (tests/test_docs.py runs every block)."""

from __future__ import annotations

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_one_example_per_tool():
    text = DOC.read_text()
    for tool in ("tying.hf.save_pretrained", "resize_token_embeddings", "get_peft_model",
                 "quantize_dynamic", "torch_prune"):  # fmt: skip
        assert any(tool in b for b in BLOCKS), f"docs/interop.md has no runnable example of {tool}"
    assert "| operation |" in text
