"""Stop 58: a tying.save file carries the header entry "format": "pt", which transformers'
and accelerate's readers require (accelerate's load_checkpoint_in_model refused every tying
file: "does not contain the valid metadata"); a user's own "format" entry is kept."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import tying


def _tied() -> nn.ModuleDict:
    m = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def test_a_saved_file_says_format_pt_and_a_users_own_format_is_kept(tmp_path):
    m = _tied()
    tying.save(m, tmp_path / "a.safetensors")
    tying.save(m, tmp_path / "b.safetensors", metadata={"format": "np"})
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "np"
    fresh = _tied()
    tying.load(fresh, tmp_path / "a.safetensors")  # the hash covers the entry
    assert torch.equal(fresh.emb.weight, m.emb.weight)


def test_accelerate_reads_a_tying_file_into_the_tied_model(tmp_path):
    accelerate_utils = pytest.importorskip("accelerate.utils")
    torch.manual_seed(0)
    m = _tied()
    path = tmp_path / "m.safetensors"
    tying.save(m, path)
    fresh = _tied()
    accelerate_utils.load_checkpoint_in_model(fresh, str(path))
    assert torch.equal(fresh.emb.weight, m.emb.weight)
    assert fresh.head.weight is fresh.emb.weight or torch.equal(fresh.head.weight, m.emb.weight)
    assert tying.verify(fresh) == 1
