"""Stop 58: a tying.save file carries no "format": "pt" header entry, on purpose.

With the entry (tried this stop), accelerate's load_checkpoint_in_model read a tying file
into a model *without* the plan with no error, strict=True too, and the slot the file
stores once kept its random initialisation (1.68 off); without it accelerate refuses the
file, loudly. This test keeps it that way."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import tying


def _model(tied: bool) -> nn.ModuleDict:
    m = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    if tied:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def test_accelerate_refuses_a_tying_file_rather_than_leave_an_untied_slot_random(tmp_path):
    accelerate_utils = pytest.importorskip("accelerate.utils")
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    tying.save(_model(tied=True), path)
    with safe_open(str(path), "pt") as f:
        assert "format" not in f.metadata()
    untied = _model(tied=False)
    before = untied.head.weight.detach().clone()
    with pytest.raises(Exception, match="metadata"):
        accelerate_utils.load_checkpoint_in_model(untied, str(path), strict=True)
    assert torch.equal(untied.head.weight, before)
