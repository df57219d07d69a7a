"""Messages of torch and torchao calls that reach a tied slot (stop 54).

- torchao's ``quantize_`` walks the modules in order and swaps each weight; it
  reaches a Plan-tied head after it quantized the modules before it, and there is no
  earlier hook to refuse from. The refusal must say the model may be partly quantized
  and name the route that decides every tie first.
- a tied module whose class has its own ``__repr__`` (transformers' GPT-2 ``Conv1D``)
  printed no tie, so torch's errors that print the module (``prune.remove``) named none.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import tying

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_torchao_quantize_reaching_a_tied_head_says_the_model_is_partly_quantized():
    quantization = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {
            "embed": nn.Embedding(10, 16),
            "mid": nn.Linear(16, 16),
            "head": nn.Linear(16, 10, bias=False),
        }
    )
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    with pytest.raises(
        tying.TieError,
        match=r"reached head\.weight.*PARTLY QUANTIZED.*tying\.interop\.quantization\.quantize_",
    ):
        quantization.quantize_(m, quantization.Int8WeightOnlyConfig())
    # what the message says: the module before the head was changed, the head was not
    assert type(m["mid"].weight).__module__.startswith("torchao.")
    assert m["head"].weight is m["embed"].weight


def test_a_tied_module_with_its_own_repr_prints_its_ties():
    class Own(nn.Linear):
        def __repr__(self):
            return f"Own({self.in_features}->{self.out_features})"

    m = nn.Sequential(Own(3, 3), Own(3, 3))
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    text = repr(m[1])
    assert text.startswith("Own(3->3) [tied: weight <- 0.weight via Same()")
    assert repr(m[0]) == "Own(3->3)"  # the source is not a tied class: its own repr only


def test_prune_remove_on_a_tied_gpt2_conv1d_names_the_tie():
    transformers = pytest.importorskip("transformers")
    from torch.nn.utils import prune

    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    g = transformers.GPT2LMHeadModel(cfg)
    tying.Plan([tying.share("transformer.h.*", like="transformer.h.0")]).apply(g)
    with pytest.raises(
        ValueError, match=r"tied: weight <- transformer\.h\.0\.attn\.c_attn\.weight"
    ):
        prune.remove(g.transformer.h[1].attn.c_attn, "weight")
