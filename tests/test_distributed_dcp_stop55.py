"""Stop 55: ``td.dcp_load`` of a plain ``dcp.save`` checkpoint into a model with a hand-made tie.

A hand-made tie (one ``nn.Parameter`` in two modules, as Hugging Face's
``tie_word_embeddings`` makes) is one tensor under two state-dict names. A checkpoint that
plain ``dcp.save({"model": get_model_state_dict(m)})`` wrote from an untied model stores
both names with their own values, and ``dcp.load`` filled the one shared tensor once per
name: the last name's value won, the other was dropped, with no error (the embedding became
the stored head, max difference 1.9 at stop 55). ``td.dcp_load`` now reads the two stored
values first and refuses when they differ; a plain checkpoint of a tied model (equal
values) still loads.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
import tying.distributed as td


class _LM(nn.Module):
    def __init__(self, tie: bool = True):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        if tie:
            self.head.weight = self.emb.weight  # a hand-made tie, as HF's

    def forward(self, i):  # (B,) -> (B, 5)
        return self.head(self.emb(i))


def _plain_save(model: nn.Module, folder) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=folder)


def test_dcp_load_refuses_two_stored_values_for_one_hand_tied_tensor(group, tmp_path):
    torch.manual_seed(0)
    untied = _LM(tie=False)
    _plain_save(untied, tmp_path / "plain")
    torch.manual_seed(1)
    m = _LM()
    before = m.emb.weight.detach().clone()
    with pytest.raises(
        tying.TieError,
        match=r"dcp_load: .* stores different values for names this model reads as one tensor "
        r"\(head\.weight vs emb\.weight \(max difference [0-9.]+\)\): it was saved from a model "
        r"without that tie",
    ):
        td.dcp_load(m, tmp_path / "plain")
    assert torch.equal(m.emb.weight, before)  # nothing was loaded
    assert m.head.weight is m.emb.weight
    # under td.ddp too, and into an untied model the checkpoint loads, each value its own
    with pytest.raises(tying.TieError, match=r"head\.weight vs emb\.weight"):
        td.dcp_load(td.ddp(_LM()), tmp_path / "plain")
    free = _LM(tie=False)
    td.dcp_load(free, tmp_path / "plain")
    assert torch.equal(free.emb.weight, untied.emb.weight)
    assert torch.equal(free.head.weight, untied.head.weight)


def test_a_plain_checkpoint_of_a_hand_tied_model_still_loads(group, tmp_path):
    torch.manual_seed(2)
    src = _LM()
    with torch.no_grad():
        src.emb.weight.add_(3.0)
    _plain_save(src, tmp_path / "tied")
    m = _LM()
    td.dcp_load(m, tmp_path / "tied")
    assert torch.equal(m.emb.weight, src.emb.weight)
    assert m.head.weight is m.emb.weight
    tying.verify(m)
