"""Review of stop 59 (be731bf), interop: what the fix missed.

- T5/BART ``trainable_token_indices`` after ``resize_token_embeddings``: HF seats the one new
  ``shared`` module in the encoder and decoder, and ``_token_ties`` walked modules with
  duplicates removed, so the shared table was refused again as a hand-made tie.
- ``add_adapter`` / ``load_adapter`` did not run the checks ``get_peft_model`` runs before
  peft: a token adapter on a tied head with a bias (BERT MLM) was refused after peft ran with
  a wrong cause, and one on a head trained apart under ``tie_word_embeddings=True`` was
  accepted (a tiny Llama: logits 4.7 off, no error).
- ``prune(..., name=...)`` advice: ``'head.weight.bias'``, ``'.weight'``.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune as torch_prune

import tying
from tying import TieError
from tying.interop.pruning import prune

peft = pytest.importorskip("peft", reason="the interop extra: pip install 'tying[interop]'")
transformers = pytest.importorskip("transformers", reason="the interop extra")

from tests.interop.models import bert_mlm_with_head_bias, t5_tiny  # noqa: E402
from tying.interop import lora  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

X = torch.tensor([[3, 5, 7, 44, 3, 11]])
Y = torch.tensor([[0, 5, 3, 8, 5]])


def _t5_resized():
    model = t5_tiny()
    model.resize_token_embeddings(48, mean_resizing=False)
    return model


def _logits(model):
    with torch.no_grad():
        return model(input_ids=X, decoder_input_ids=Y).logits


def test_t5_token_indices_after_resize_token_embeddings_match_plain_torch():
    model = _t5_resized()
    assert model.encoder.embed_tokens is model.shared  # one module, three seats
    config = peft.LoraConfig(r=2, target_modules=["q"], trainable_token_indices=[3, 44])
    pm = lora.get_peft_model(model, config)  # refused as a hand-made tie before
    ((_, delta),) = [(n, p) for n, p in pm.named_parameters() if "trainable_tokens" in n]
    with torch.no_grad():
        delta.add_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(0)))
    want = _t5_resized()
    with torch.no_grad():
        want.shared.weight[[3, 44]] = delta
    assert torch.equal(_logits(pm), _logits(want)) and tying.verify(pm) > 0
    merged = lora.merge_and_unload(pm)
    assert (_logits(merged) - _logits(want)).abs().max().item() < 1e-5


_bert_mlm = bert_mlm_with_head_bias  # tests/interop/models.py


def test_add_adapter_with_token_indices_on_a_head_with_a_bias_names_the_bias_before_peft():
    pm = lora.get_peft_model(_bert_mlm(), peft.LoraConfig(r=2, target_modules=["query"]))
    tree = [(p, type(m)) for p, m in pm.named_modules()]
    config = peft.LoraConfig(r=2, target_modules=["query"], trainable_token_indices=[3, 5])
    with pytest.raises(TieError, match=r"add_adapter\('t'\): .*without the head's bias"):
        pm.add_adapter("t", config)
    assert [(p, type(m)) for p, m in pm.named_modules()] == tree and "t" not in pm.peft_config


def test_add_adapter_with_token_indices_on_a_head_trained_apart_is_refused():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=40, tie_word_embeddings=True,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 0.5)  # apart
    pm = lora.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    config = peft.LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices=[3, 5])
    # plain: accepted, and the fresh adapter's logits were 4.7 off the model's
    with pytest.raises(TieError, match=r"add_adapter\('t'\): .*lm_head.weight is not"):
        pm.add_adapter("t", config)
    assert "t" not in pm.peft_config


def _tied():
    torch.manual_seed(0)
    m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10)})
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


@pytest.mark.parametrize(
    ("model", "path", "name", "slot"),
    [
        (_tied, "head.weight", "bias", "head.weight"),
        (_tied, "head.bias", "weight", "head.bias"),
        (lambda: torch.nn.Linear(4, 4), "", "weight", "weight"),
    ],
)
def test_the_name_keyword_advice_is_a_slot_that_prunes(model, path, name, slot):
    m = model()
    with pytest.raises(TypeError, match=rf"prune\(model, '{slot}', method"):
        prune(m, path, torch_prune.l1_unstructured, name=name, amount=0.5)
    prune(m, slot, torch_prune.l1_unstructured, amount=0.5)  # the advice, followed
    assert torch_prune.is_pruned(m)


def test_torchs_positional_name_is_told_the_slot_path():
    with pytest.raises(TypeError, match=r"got str 'weight'.*prune\(model, 'head\.weight'"):
        prune(_tied(), "head", "weight", amount=0.5)


def test_trainable_tokens_config_on_t5s_resized_shared_table_matches_plain_torch():
    # plain peft: delta 0 to plain torch; tying refused "the module at 'shared' is also
    # seated at 'encoder.embed_tokens', 'decoder.embed_tokens' ... Target every seat"
    pm = lora.get_peft_model(
        _t5_resized(), peft.TrainableTokensConfig(token_indices=[3, 44], target_modules=["shared"])
    )
    ((_, delta),) = [(n, p) for n, p in pm.named_parameters() if "trainable_tokens" in n]
    with torch.no_grad():
        delta.add_(1.0)
    want = _t5_resized()
    with torch.no_grad():
        want.shared.weight[[3, 44]] = delta
    assert torch.equal(_logits(pm), _logits(want)) and tying.verify(pm) > 0
