"""Tiny real Hugging Face models (built from configs, no downloads) and their plans."""

from __future__ import annotations

import os

import pytest
import torch

import tying

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip(
    "transformers", reason="the interop extra (transformers) is not installed"
)


def gpt2(tie_word_embeddings: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=3, n_embd=32, n_head=2, vocab_size=97, n_positions=32,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie_word_embeddings,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg).eval()


GPT2_PLAN = tying.Plan(
    [
        tying.share("transformer.h.*", like="transformer.h.0"),
        tying.share("lm_head.weight", like="transformer.wte.weight"),
    ]
)


def bert(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=2, intermediate_size=64,
        vocab_size=90, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.BertModel(cfg).eval()


# ALBERT-style: one encoder layer's weights serve all four, the norms stay per layer.
BERT_PLAN = tying.Plan(
    [
        tying.share("encoder.layer.*", like="encoder.layer.0"),
        tying.free("encoder.layer.*.output.LayerNorm"),
    ]
)


def t5(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        num_layers=2, num_decoder_layers=2, d_model=32, d_kv=8, d_ff=64, num_heads=4,
        vocab_size=80, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(cfg).eval()


# K/V of each decoder self-attention read the encoder's same-index K/V.
T5_PLAN = tying.Plan(
    [
        tying.share(
            "decoder.block.*.layer.0.SelfAttention.k",
            like="encoder.block.*.layer.0.SelfAttention.k",
        ),
        tying.share(
            "decoder.block.*.layer.0.SelfAttention.v",
            like="encoder.block.*.layer.0.SelfAttention.v",
        ),
    ]
)


def llama(tie_word_embeddings: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=70, max_position_embeddings=32,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=tie_word_embeddings,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


# Llama-style: the MLP of every layer shared; the output head is the embedding.
LLAMA_PLAN = tying.Plan(
    [
        tying.share("model.layers.*.mlp", like="model.layers.0.mlp"),
        tying.share("lm_head.weight", like="model.embed_tokens.weight"),
    ]
)


def ids(vocab: int, batch: int = 2, seq: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, seq), generator=g)


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=x, decoder_input_ids=x).logits
        out = model(input_ids=x)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state
