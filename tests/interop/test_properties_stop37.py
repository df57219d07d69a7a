"""Properties (stop 37): random tiny HF models through tying.hf, against plain transformers.

Drawn: the architecture (GPT-2, Llama, BERT, T5), its layer count and hidden size, the
config's ``tie_word_embeddings`` flag and which ties a Plan adds (the layer stack shared
ALBERT-style, the head tied to the embedding). Each model goes through
``tying.hf.save_pretrained`` (sometimes sharded so that a tie spans shards) and comes
back through ``tying.hf.from_pretrained`` and plain ``cls.from_pretrained``: both must
give the saved model's logits exactly, tying's with the same ties and physical count and
plain HF's with every parameter a model of that config has. A resize with a drawn
``pad_to_multiple_of`` either gives HF's rounded size with the kept-token logits equal
and the head still the embedding, or is refused by name with the model unchanged:
never a third outcome.
"""

from __future__ import annotations

import math
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers

VOCAB = 48


def _gpt2(layers, width, tied):
    return T.GPT2LMHeadModel(T.GPT2Config(
        n_layer=layers, n_embd=width, n_head=2, vocab_size=VOCAB, n_positions=16,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied))  # fmt: skip


def _llama(layers, width, tied):
    return T.LlamaForCausalLM(T.LlamaConfig(
        num_hidden_layers=layers, hidden_size=width, intermediate_size=2 * width,
        num_attention_heads=2, num_key_value_heads=1, vocab_size=VOCAB,
        max_position_embeddings=16, pad_token_id=0, tie_word_embeddings=tied))  # fmt: skip


def _bert(layers, width, tied):
    return T.BertForMaskedLM(T.BertConfig(
        num_hidden_layers=layers, hidden_size=width, intermediate_size=2 * width,
        num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=16,
        tie_word_embeddings=tied))  # fmt: skip


def _t5(layers, width, tied):
    return T.T5ForConditionalGeneration(T.T5Config(
        num_layers=layers, num_decoder_layers=layers, d_model=width, d_kv=width // 2,
        d_ff=2 * width, num_heads=2, vocab_size=VOCAB, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, tie_word_embeddings=tied))  # fmt: skip


#: name -> (builder, layer stack, head, input embedding)
ARCHS = {
    "gpt2": (_gpt2, "transformer.h", "lm_head.weight", "transformer.wte.weight"),
    "llama": (_llama, "model.layers", "lm_head.weight", "model.embed_tokens.weight"),
    "bert": (
        _bert,
        "bert.encoder.layer",
        "cls.predictions.decoder.weight",
        "bert.embeddings.word_embeddings.weight",
    ),
    "t5": (_t5, "encoder.block", "lm_head.weight", "shared.weight"),
}

models = st.fixed_dictionaries(
    {
        "arch": st.sampled_from(sorted(ARCHS)),
        "layers": st.integers(1, 3),
        "width": st.sampled_from([8, 16, 24]),
        "tied": st.booleans(),
        "share_stack": st.booleans(),
        "tie_head": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _build(d):
    build, stack, head, embed = ARCHS[d["arch"]]
    torch.manual_seed(d["seed"])
    model = build(d["layers"], d["width"], d["tied"]).eval()
    rules = []
    if d["share_stack"] and d["layers"] > 1:
        # T5's first block holds the relative attention bias the others lack: share from 1
        first = 1 if d["arch"] == "t5" else 0
        rules += [
            tying.share(f"{stack}.{i}", like=f"{stack}.{first}")
            for i in range(first + 1, d["layers"])
        ]
    held = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if d["tie_head"] and not held:  # a config tie HF already holds is not declared again
        rules.append(tying.share(head, like=embed))
    if rules:
        tying.Plan(rules).apply(model)
    with torch.no_grad():  # norms away from 1 so a norm loaded at its init value shows
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.01 * torch.arange(p.numel(), dtype=p.dtype) / p.numel())
    return model


def _logits(model, x):
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=x, decoder_input_ids=x[:, :4]).logits
        return model(input_ids=x).logits


def _ties(model):
    return {(t.target, t.source, t.relation) for t in tying.ties(model)}


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(models, st.sampled_from([None, "6KB"]))
def test_a_random_tiny_model_round_trips_through_tying_hf_and_plain_hf(d, shard):
    model = _build(d)
    cls = type(model)
    x = M.ids(VOCAB, batch=1, seq=6, seed=d["seed"])
    want = _logits(model, x)
    kwargs = {"max_shard_size": shard} if shard else {}
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(model, folder, **kwargs)
        again = hf.from_pretrained(cls, folder).eval()
        plain = cls.from_pretrained(folder).eval()
    assert torch.equal(_logits(again, x), want)
    assert _ties(again) == _ties(model)
    assert tying.count(again).physical == tying.count(model).physical
    tying.verify(again)
    # plain HF: a model of this config, every parameter it has loaded (no random init)
    assert torch.equal(_logits(plain, x), want)
    fresh = cls(plain.config)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in fresh.parameters())


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(["gpt2", "llama"]),
    st.integers(VOCAB - 20, VOCAB + 20),
    st.one_of(st.none(), st.integers(-8, 16), st.sampled_from([8.0, True, "8"])),
)
def test_resize_gives_hfs_rounded_size_or_is_refused_by_name_unchanged(arch, new, pad):
    model = _build(
        {"arch": arch, "layers": 2, "width": 8, "tied": False, "share_stack": True,
         "tie_head": True, "seed": 0}
    )  # fmt: skip
    x = M.ids(min(new, VOCAB), batch=1, seq=6)
    before_logits = _logits(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        hf.resize_token_embeddings(model, new, pad_to_multiple_of=pad, mean_resizing=False)
    except (TypeError, ValueError) as err:
        assert "pad_to_multiple_of" in str(err) and repr(pad) in str(err)
        assert not (isinstance(pad, int) and not isinstance(pad, bool) and pad > 0)
        after = model.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert model.config.vocab_size == VOCAB
        return
    rows = new if pad is None else math.ceil(new / pad) * pad
    assert pad is None or (type(pad) is int and pad > 0)
    assert tuple(model.get_input_embeddings().weight.shape) == (rows, 8)
    assert model.config.vocab_size == rows
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    kept = min(rows, VOCAB)
    assert torch.equal(_logits(model, x)[..., :kept], before_logits[..., :kept])
    tying.verify(model)
