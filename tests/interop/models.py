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
import tying.hf  # noqa: E402  (needs transformers)


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


def t5_tiny():
    """A one-layer ``T5ForConditionalGeneration`` (d_model 16, vocab 40): HF's own tie, one
    ``shared`` table read by the encoder, the decoder and the head."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        num_layers=1, num_decoder_layers=1, d_model=16, d_kv=8, d_ff=32, num_heads=2,
        vocab_size=40, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(cfg).eval()


def bert_mlm_with_head_bias():
    """A tiny ``BertForMaskedLM`` whose tied head has a non-zero (trained-looking) bias."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
        vocab_size=40, max_position_embeddings=16,
    )  # fmt: skip
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.decoder.bias.normal_()
    return model


def ids(vocab: int, batch: int = 2, seq: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, seq), generator=g)


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=x, decoder_input_ids=x).logits
        out = model(input_ids=x)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


# -- more architectures (the adversarial review of stop 24) -------------------------------
# Each builder takes tie_word_embeddings (None where the model has no such tie). "hf" mode:
# HF's own tie adopted with tying.hf.hf_ties_plan; "plan" mode: the config untied and the
# same ties made by a Plan. Both modes also share the layer stack ALBERT-style.

T = transformers


def _opt(tied):
    return T.OPTForCausalLM(T.OPTConfig(
        num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=2, vocab_size=91,
        max_position_embeddings=32, word_embed_proj_dim=32, pad_token_id=1, tie_word_embeddings=tied))  # fmt: skip


def _neox(tied):
    return T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        vocab_size=83, max_position_embeddings=32, tie_word_embeddings=tied))  # fmt: skip


def _mistral(tied):
    return T.MistralForCausalLM(T.MistralConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=77, max_position_embeddings=32, pad_token_id=0,
        tie_word_embeddings=tied))  # fmt: skip


def _qwen2(tied):
    return T.Qwen2ForCausalLM(T.Qwen2Config(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=79, max_position_embeddings=32, pad_token_id=0,
        tie_word_embeddings=tied))  # fmt: skip


def _gemma(tied):  # the embedding is scaled by sqrt(hidden) in the forward
    return T.GemmaForCausalLM(T.GemmaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=81, max_position_embeddings=32,
        pad_token_id=0, tie_word_embeddings=tied))  # fmt: skip


def _bart(tied):  # encoder, decoder and head share model.shared
    return T.BartForConditionalGeneration(T.BartConfig(
        encoder_layers=2, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=89,
        max_position_embeddings=32, pad_token_id=1, tie_word_embeddings=tied))  # fmt: skip


def _mbart(tied):
    return T.MBartForConditionalGeneration(T.MBartConfig(
        encoder_layers=2, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=87,
        max_position_embeddings=32, pad_token_id=1, tie_word_embeddings=tied))  # fmt: skip


def _whisper(tied):
    return T.WhisperForConditionalGeneration(T.WhisperConfig(
        encoder_layers=1, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=93, num_mel_bins=8,
        max_source_positions=16, max_target_positions=32, pad_token_id=0, bos_token_id=1,
        eos_token_id=1, decoder_start_token_id=1, tie_word_embeddings=tied))  # fmt: skip


def _vit(
    tied,
):  # transformers 5 renames its weights on save (vit.layers.0.mlp.fc1 -> ...intermediate.dense)
    return T.ViTForImageClassification(T.ViTConfig(
        num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        image_size=16, patch_size=4, num_labels=5))  # fmt: skip


def _distilbert(tied):
    return T.DistilBertForMaskedLM(T.DistilBertConfig(
        n_layers=3, dim=32, hidden_dim=64, n_heads=2, vocab_size=85, max_position_embeddings=32,
        tie_word_embeddings=tied))  # fmt: skip


def _xlmr(tied):  # HF also ties lm_head.decoder.bias <- lm_head.bias
    return T.XLMRobertaForMaskedLM(T.XLMRobertaConfig(
        num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        vocab_size=95, max_position_embeddings=40, pad_token_id=1, tie_word_embeddings=tied))  # fmt: skip


#: name -> (builder, layer stack path); the builders of architectures without an
#: embedding tie ignore ``tied``.
MORE = {
    "opt": (_opt, "model.decoder.layers"),
    "gpt-neox": (_neox, "gpt_neox.layers"),
    "mistral": (_mistral, "model.layers"),
    "qwen2": (_qwen2, "model.layers"),
    "gemma": (_gemma, "model.layers"),
    "bart": (_bart, "model.decoder.layers"),
    "mbart": (_mbart, "model.encoder.layers"),
    "whisper": (_whisper, "model.decoder.layers"),
    "vit": (_vit, "vit.layers"),
    "distilbert": (_distilbert, "distilbert.transformer.layer"),
    "xlm-roberta": (_xlmr, "roberta.encoder.layer"),
}
TEXT = [n for n in MORE if n != "vit"]


def more(name: str, mode: str = "plan", seed: int = 0):
    """A tiny ``name`` model tied in ``mode`` ("hf" or "plan"), and the plan applied to it."""
    build, stack = MORE[name]
    torch.manual_seed(seed)
    rules = []
    if name != "vit":
        hf_tied = build(True)
        rules = list(tying.hf.hf_ties_plan(hf_tied).rules)
        if mode == "hf":
            model = hf_tied
        else:
            torch.manual_seed(seed)
            model = build(False)
    else:
        model = build(None)
    plan = tying.Plan([*rules, tying.share(f"{stack}.*", like=f"{stack}.0")])
    plan.apply(model.eval())
    return model, plan


def more_inputs(model, seed: int = 1, max_id: int | None = None) -> dict:
    """Inputs for ``model``'s forward (token ids below ``max_id`` when given)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if cfg.model_type == "vit":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}
    top = min(cfg.vocab_size, max_id or cfg.vocab_size)
    x = torch.randint(2, top, (2, 7), generator=g)
    if cfg.model_type == "whisper":
        return {"input_features": torch.randn(2, 8, 32, generator=g), "decoder_input_ids": x[:, :5]}
    if cfg.is_encoder_decoder:
        return {"input_ids": x, "decoder_input_ids": x}
    return {"input_ids": x}


def more_logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits
