"""peft token adapters on HF's own embedding tie: accepted where peft keeps it, refused
where peft's idea of the tie (the config) and the tensors disagree.

- ``TrainableTokensConfig`` on the input embedding of a model whose tie is HF's own
  (``tie_word_embeddings=True``): peft gives every tied module (the head; T5's and BART's
  encoder and decoder embeddings) the embedding's very token delta. It was refused; it
  is accepted now and checked against plain PyTorch training only those rows of HF's
  tied tensor (logits, reload and merge, Δ = 0 in float32 here).
- A head trained apart under a config that says tied (transformers 5 loads such a
  checkpoint untied): peft ties its adapter to the embedding's anyway, from the config,
  so a fresh token adapter or a ``modules_to_save`` copy with ``ensure_weight_tying``
  replaced the head's rows by the embedding's, logits 0.99 off before any training, no
  error (stop 50). Refused now, naming the fix.
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop.lora import from_pretrained, get_peft_model, merge_and_unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated", "ignore::UserWarning"
)
ROWS = [3, 5, 7]


def _t5():
    torch.manual_seed(0)
    cfg = M.transformers.T5Config(
        num_layers=1, num_decoder_layers=1, d_model=16, d_kv=8, d_ff=32, num_heads=2,
        vocab_size=50, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return M.transformers.T5ForConditionalGeneration(cfg).eval()


MODELS = {"llama": lambda: M.llama(tie_word_embeddings=True), "t5": _t5}
X = M.ids(50)


def _run(model, labels: bool = True):
    kw = {"input_ids": X}
    if model.config.is_encoder_decoder:
        kw["decoder_input_ids"] = X
    if labels:
        kw["labels"] = X
    return model(**kw)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return _run(model, labels=False).logits


def _rows_trained(model, steps: int = 2) -> None:
    """The anchor: plain PyTorch training rows ROWS of HF's one tied tensor, nothing else."""
    for p in model.parameters():
        p.requires_grad_(False)
    w = model.get_input_embeddings().weight
    w.requires_grad_(True)
    opt = torch.optim.SGD([w], lr=0.5)
    mask = torch.zeros_like(w)
    mask[ROWS] = 1
    for _ in range(steps):
        opt.zero_grad()
        _run(model).loss.backward()
        w.grad *= mask
        opt.step()


def _adapter_trained(pm, steps: int = 2) -> None:
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        _run(pm).loss.backward()
        opt.step()


@pytest.mark.parametrize("declared", [False, True], ids=["hf-tie", "hf_ties_plan"])
@pytest.mark.parametrize("target", [None, "embedding"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_trainable_tokens_on_the_embedding_of_hfs_tie_trains_the_one_tensor(name, target, declared):
    make = MODELS[name]
    model, ref = make(), make()
    if declared:
        tying.hf.hf_ties_plan(model).apply(model)
    emb = next(p for p, m in model.named_modules() if m is model.get_input_embeddings())
    targets = None if target is None else [emb.rpartition(".")[2]]
    pm = get_peft_model(
        model, peft.TrainableTokensConfig(target_modules=targets, token_indices=ROWS)
    )
    _adapter_trained(pm)
    _rows_trained(ref)
    want = _logits(ref)
    assert torch.equal(_logits(pm), want)
    folder = tempfile.mkdtemp()
    pm.save_pretrained(folder)
    fresh = make()
    if declared:
        tying.hf.hf_ties_plan(fresh).apply(fresh)
    assert torch.equal(_logits(from_pretrained(fresh, folder)), want)
    merged = merge_and_unload(pm)
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    assert torch.equal(_logits(merged), want)
    assert torch.equal(merged.get_input_embeddings().weight, ref.get_input_embeddings().weight)


@pytest.mark.parametrize("target", [["lm_head"], ["embed_tokens", "lm_head"]])
def test_a_token_adapter_naming_the_head_stays_refused(target):
    """On the head alone peft trains rows of its own (merged 33.6 off its adapter model);
    naming both, peft's forward fails ("wraps an unknown layer type")."""
    model = M.llama(tie_word_embeddings=True)
    before = [type(m) for m in model.modules()]
    with pytest.raises(tying.TieError, match=r"hand-made tie lm_head.weight <- model.embed_tokens"):
        get_peft_model(model, peft.TrainableTokensConfig(target_modules=target, token_indices=ROWS))
    assert [type(m) for m in model.modules()] == before
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_a_token_adapter_on_the_embedding_of_a_plan_tie_stays_refused():
    """peft ties token adapters only under config.tie_word_embeddings: a Plan tie's head would
    lose its source."""
    model = M.llama()
    tying.Plan([tying.share("lm_head.weight", like="model.embed_tokens.weight")]).apply(model)
    with pytest.raises(tying.TieError, match=r"lm_head.weight <- model.embed_tokens.weight"):
        get_peft_model(model, peft.TrainableTokensConfig(token_indices=ROWS))


def _apart():
    """A Llama whose config says tied but whose head was trained apart (HF loads it so)."""
    model = M.llama(tie_word_embeddings=True)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 0.1)
    return model


CONFIGS = {
    "tokens": lambda: peft.TrainableTokensConfig(token_indices=ROWS),
    "token_indices": lambda: peft.LoraConfig(
        r=2, target_modules=["q_proj"], trainable_token_indices=ROWS
    ),
    "modules_to_save": lambda: peft.LoraConfig(
        r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens"], ensure_weight_tying=True
    ),
    "head_to_save": lambda: peft.LoraConfig(
        r=2, target_modules=["q_proj"], modules_to_save=["lm_head"], ensure_weight_tying=True
    ),
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_peft_does_not_tie_a_head_trained_apart_under_a_tied_config(kind):
    model = _apart()
    x = M.ids(70)
    with torch.no_grad():
        want = model(input_ids=x).logits
    # the defect, plain peft: a fresh adapter moves the logits (0.99)
    plain = peft.get_peft_model(copy.deepcopy(model), CONFIGS[kind]())
    with torch.no_grad():
        assert (plain(input_ids=x).logits - want).abs().max() > 0.5
    head = model.lm_head.weight
    with pytest.raises(
        tying.TieError,
        match=r"tie_word_embeddings is True, so peft ties this adapter of 'model.embed_tokens' "
        r"to 'lm_head', but lm_head.weight is not model.embed_tokens.weight \(max \|diff\| 0.1;"
        r".*Set model.config.tie_word_embeddings = False",
    ):
        get_peft_model(model, CONFIGS[kind]())
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight is head
    model.config.tie_word_embeddings = False  # the fix the message names
    pm = get_peft_model(model, CONFIGS[kind]())
    with torch.no_grad():
        assert torch.equal(pm(input_ids=x).logits, want)


def test_loading_a_token_adapter_onto_a_head_trained_apart_is_refused():
    folder = tempfile.mkdtemp()
    cfg = peft.TrainableTokensConfig(token_indices=ROWS)
    get_peft_model(M.llama(tie_word_embeddings=True), cfg).save_pretrained(folder)
    model = _apart()
    with pytest.raises(tying.TieError, match=r"from_pretrained: model.config.tie_word_embeddings"):
        from_pretrained(model, folder)
    assert type(model.lm_head) is torch.nn.Linear and type(model.model.embed_tokens).__name__ == (
        "Embedding"
    )
