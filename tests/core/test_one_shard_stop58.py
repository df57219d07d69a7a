"""Stop 58 (docs audit): tying.load of one shard of a sharded transformers checkpoint names
the folder to give, whichever shard it is. Shards without the tied embedding got the
hand-tie advice free('lm_head.weight'); followed, the folder itself was then refused."""

from __future__ import annotations

import os

import pytest
import torch

import tying

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_every_shard_alone_names_the_folder_and_the_folder_loads(tmp_path):
    saved = _gpt2()
    saved.save_pretrained(tmp_path, max_shard_size="10KB")
    shards = sorted(p for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2
    model = _gpt2()
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for shard in shards:
        with pytest.raises(tying.TieError, match=r"part of a sharded checkpoint.*give the folder"):
            tying.load(model, shard, verify_hash=False)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    tying.load(model, tmp_path, verify_hash=False)  # the advice, followed
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(ids).logits, saved(ids).logits)
    assert model.lm_head.weight is model.transformer.wte.weight
