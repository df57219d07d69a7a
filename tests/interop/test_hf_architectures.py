"""tying.hf over architectures the first tests did not name (the review of stop 24).

Each architecture is built tiny from its config, tied in two ways ("hf": HF's own
``tie_word_embeddings`` adopted as a plan; "plan": the config untied and the same
ties made by a Plan), and its layer stack shared ALBERT-style. Among them:
ViT, whose weights transformers 5 renames on save (``vit.layers.0.mlp.fc1`` is
written ``vit.encoder.layer.0.intermediate.dense``), and BART/mBART/T5-style
models whose encoder, decoder and head share one embedding.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")

CASES = [(n, mode) for n in M.MORE for mode in (("plan",) if n == "vit" else ("hf", "plan"))]
IDS = [f"{n}-{mode}" for n, mode in CASES]


def _tie_set(model):
    # A hand tie (one Parameter under two paths, e.g. XLM-R's decoder and word embeddings)
    # has no direction of its own; which end ties() names first is not part of the contract.
    return {(frozenset((t.target, t.source)), t.relation) for t in tying.ties(model)}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_sharded_round_trip_is_exact_for_tying_and_for_plain_hf(name, mode, tmp_path):
    model, _ = M.more(name, mode)
    x = M.more_inputs(model)
    hf.save_pretrained(model, tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    again = hf.from_pretrained(type(model), tmp_path).eval()
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))
    assert _tie_set(again) == _tie_set(model)
    assert tying.count(again).physical == tying.count(model).physical
    plain = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(M.more_logits(plain, x), M.more_logits(model, x))


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_hf_own_save_loads_tied_given_the_plan(name, mode, tmp_path):
    model, plan = M.more(name, mode)
    x = M.more_inputs(model)
    model.save_pretrained(tmp_path)  # tied slots not in the file
    again = hf.from_pretrained(type(model), tmp_path, plan=plan).eval()
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))
    assert _tie_set(again) == _tie_set(model)


def _edit_one_tied_copy(folder, stack_index_from: str = ".1.", to: str = ".0."):
    """Add 1 to one file tensor of layer 1 that equals its layer-0 twin (a tied copy).

    Found by value and by either naming (the model's, or the one HF writes), so the
    test does not lean on the code under test to find it.
    """
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            tensors = {k: h.get_tensor(k) for k in h.keys()}
            meta = h.metadata()
        for k in sorted(tensors):
            twin = k.replace(stack_index_from, to, 1)
            # a random weight (not a norm's ones, equal in untied layers too)
            if stack_index_from in k and twin != k and tensors[k].float().std() > 0:
                # the twin may sit in another shard: find it
                for g in sorted(folder.glob("*.safetensors")):
                    with safe_open(str(g), framework="pt") as h2:
                        if twin in h2.keys() and torch.equal(h2.get_tensor(twin), tensors[k]):
                            tensors[k] = tensors[k] + 1.0
                            save_file(tensors, str(f), metadata=meta)
                            return k
    raise AssertionError(f"no tied layer-1 copy found in {folder}")


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_a_folder_whose_tied_copy_was_edited_is_refused(name, mode, tmp_path):
    # ViT's file names its layers vit.encoder.layer.N (renamed by transformers on save):
    # the check must find the tied copy under that name, not skip it.
    model, _ = M.more(name, mode)
    hf.save_pretrained(model, tmp_path, max_shard_size="20KB")
    _edit_one_tied_copy(tmp_path)
    with pytest.raises(tying.TieError, match=r"disagree with the tie: .*\.1\..*tied to .*\.0\."):
        hf.from_pretrained(type(model), tmp_path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["vit", "bart", "gemma", "xlm-roberta"])
def test_a_dtype_load_equals_plain_hf_loading_the_same_folder(name, dtype, tmp_path):
    model, _ = M.more(name, "plan")
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(type(model), tmp_path, dtype=dtype).eval()
    plain = type(model).from_pretrained(tmp_path, dtype=dtype).eval()
    x = {k: v.to(dtype) if v.is_floating_point() else v for k, v in M.more_inputs(model).items()}
    assert {p.dtype for p in again.parameters()} == {dtype}
    assert torch.equal(M.more_logits(again, x), M.more_logits(plain, x))
    assert _tie_set(again) == _tie_set(model)


RESIZES = [
    (150, {}),
    (40, {}),
    (100, {"pad_to_multiple_of": 64}),
    (None, {"pad_to_multiple_of": 32}),
]


@pytest.mark.parametrize(("new", "kw"), RESIZES, ids=["bigger", "smaller", "pad-64", "none-pad-32"])
@pytest.mark.parametrize(
    ("name", "mode"), [c for c in CASES if c[0] != "vit"], ids=[i for i in IDS if "vit" not in i]
)
def test_resize_keeps_every_embedding_tie_or_refuses_leaving_the_model_unchanged(
    name, mode, new, kw
):
    model, _ = M.more(name, mode)
    x = M.more_inputs(model, max_id=40)
    before_logits = M.more_logits(model, x)
    before, ties = copy.deepcopy(model.state_dict()), _tie_set(model)
    vocab = model.config.get_text_config().vocab_size
    if name == "xlm-roberta" and mode == "plan":
        # the Plan ties lm_head.decoder.bias to lm_head.bias, which HF does not resize
        # when the config is untied: refused, all or nothing
        with pytest.raises(
            tying.TieError, match=r"lm_head\.decoder\.bias <- lm_head\.bias .*outside"
        ):
            hf.resize_token_embeddings(model, new, mean_resizing=False, **kw)
        assert _same_state(model.state_dict(), before) and _tie_set(model) == ties
        assert model.config.get_text_config().vocab_size == vocab
        assert torch.equal(M.more_logits(model, x), before_logits)
        tying.verify(model)
        return
    hf.resize_token_embeddings(model, new, mean_resizing=False, **kw)
    tying.verify(model)
    assert _tie_set(model) == ties
    rows = model.get_input_embeddings().weight.shape[0]
    assert model.get_output_embeddings().weight.shape[0] == rows
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tying.count(model).physical == sum(p.numel() for p in model.parameters())
    model.load_state_dict(model.state_dict())  # every slot at its new shape
    after = M.more_logits(model, x)
    k = min(rows, vocab)
    assert torch.equal(after[..., :k], before_logits[..., :k])  # the kept rows are the old ones


@pytest.mark.parametrize("name", ["bart", "mbart"])
def test_resize_of_a_plan_tied_shared_embedding_reaches_encoder_and_decoder(name):
    model, _ = M.more(name, "plan")
    hf.resize_token_embeddings(model, 120, mean_resizing=False)
    shared = model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is shared
    assert model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared and shared.shape[0] == 120


@pytest.mark.parametrize("edit", [False, True], ids=["as-saved", "edited"])
def test_tied_copies_tying_cannot_name_in_the_file_are_checked_as_hf_loaded_them(
    edit, monkeypatch, tmp_path
):
    # Were a weight converted by HF on load (merged or split: no one-to-one saved name),
    # its tied copy is compared as HF loaded it; it must not be dropped silently.
    import tying.interop.hf_loading as ihf  # from_pretrained looks _saved_names up there

    model, _ = M.more("vit", "plan")
    hf.save_pretrained(model, tmp_path)
    if edit:
        _edit_one_tied_copy(tmp_path)
    monkeypatch.setattr(ihf, "_saved_names", lambda m, keys: dict.fromkeys(keys))
    if edit:
        with pytest.raises(tying.TieError, match=r"disagree with the tie: vit\.layers\.1\."):
            hf.from_pretrained(type(model), tmp_path)
        return
    again = hf.from_pretrained(type(model), tmp_path).eval()
    x = M.more_inputs(model)
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))


def _mixtral(tied):
    return M.transformers.MixtralForCausalLM(
        M.transformers.MixtralConfig(
            num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=71, num_local_experts=4, num_experts_per_tok=2,
            max_position_embeddings=32, pad_token_id=0, tie_word_embeddings=tied,
        )
    )  # fmt: skip


@pytest.mark.parametrize("own_save", [False, True], ids=["tying-save", "hf-own-save"])
def test_moe_experts_fused_by_hf_on_load_round_trip_tied(own_save, tmp_path):
    # Mixtral's experts are one fused Parameter in the model and one tensor per expert
    # in the file: tying could not name their file keys and refused every load
    # (a missing weight; its tied copies went unchecked). Now checked as HF loaded them.
    torch.manual_seed(0)
    model = _mixtral(False).eval()
    plan = tying.Plan(
        [
            tying.share("model.layers.*", like="model.layers.0"),
            tying.share("lm_head.weight", like="model.embed_tokens.weight"),
        ]
    )
    plan.apply(model)
    x = torch.randint(1, 70, (2, 6))
    if own_save:
        model.save_pretrained(tmp_path)
        again = hf.from_pretrained(type(model), tmp_path, plan=plan).eval()
    else:
        hf.save_pretrained(model, tmp_path)
        again = hf.from_pretrained(type(model), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, model(input_ids=x).logits)
    assert _tie_set(again) == _tie_set(model)


def test_an_edited_tied_expert_copy_is_refused(tmp_path):
    torch.manual_seed(0)
    model = _mixtral(False).eval()
    tying.Plan([tying.share("model.layers.*", like="model.layers.0")]).apply(model)
    hf.save_pretrained(model, tmp_path)
    _edit_one_tied_copy(tmp_path)  # some layer-1 tensor; experts are most of them
    with pytest.raises(
        tying.TieError, match=r"disagree with the tie: model\.layers\.1\.mlp\.experts\."
    ):
        hf.from_pretrained(type(model), tmp_path)


@pytest.mark.parametrize(("name", "mode"), [("bart", "plan"), ("bart", "hf"), ("qwen2", "hf")])
def test_resize_failing_inside_transformers_restores_modules_values_and_ties(
    name, mode, monkeypatch
):
    model, _ = M.more(name, mode)
    x = M.more_inputs(model)
    before_logits = M.more_logits(model, x)
    before, ties = copy.deepcopy(model.state_dict()), _tie_set(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    vocab = model.config.get_text_config().vocab_size
    original = type(model).resize_token_embeddings

    def fails_after_resizing(self, *a, **k):
        original(self, *a, **k)
        raise RuntimeError("injected failure after HF resized")

    monkeypatch.setattr(type(model), "resize_token_embeddings", fails_after_resizing)
    with pytest.raises(RuntimeError, match="injected"):
        hf.resize_token_embeddings(model, vocab + 7, mean_resizing=False)
    after_modules = dict(model.named_modules(remove_duplicate=False))
    assert after_modules.keys() == modules.keys()
    assert all(after_modules[k] is modules[k] for k in modules)  # BART's embed_tokens too
    assert _same_state(model.state_dict(), before) and _tie_set(model) == ties
    assert model.config.get_text_config().vocab_size == vocab
    assert torch.equal(M.more_logits(model, x), before_logits)
    tying.verify(model)


@pytest.mark.parametrize(("name", "mode"), [("qwen2", "plan"), ("vit", "plan"), ("bart", "hf")])
def test_save_pretrained_of_a_pruned_source_is_refused_writing_nothing(name, mode, tmp_path):
    # HF would write weight_orig/weight_mask and no weight: a fresh model loading the
    # folder got layer 0's weight at random (plain HF silently; tying.hf refused it,
    # blaming the tie). After prune.remove the round trip is exact.
    from torch.nn.utils import prune

    model, _ = M.more(name, mode)
    stack = M.MORE[name][1]
    linears = [
        (m, "weight")
        for p, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and p.startswith(f"{stack}.0.")
    ]
    prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=0.5)
    out = tmp_path / "out"
    with pytest.raises(tying.TieError, match=rf"{stack}\.0\.\S+\.weight is pruned .*prune\.remove"):
        hf.save_pretrained(model, out)
    assert not out.exists() or not any(out.iterdir())
    for m, n in linears:
        prune.remove(m, n)
    x = M.more_inputs(model)
    hf.save_pretrained(model, out)
    again = hf.from_pretrained(type(model), out).eval()
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))


def _snapshot(folder):
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_save_pretrained_failing_half_way_leaves_an_earlier_save_as_it_was(monkeypatch, tmp_path):
    # HF writes config.json first: a failure in the weights left the new config (a new
    # vocabulary, a new recorded plan) beside the old weights. Now all or nothing.
    import transformers.modeling_utils as mu

    model, _ = M.more("qwen2", "plan")
    out = tmp_path / "out"
    hf.save_pretrained(model, out, max_shard_size="20KB")
    before = _snapshot(out)
    hf.resize_token_embeddings(model, 120, mean_resizing=False)

    def fails(*a, **k):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(mu, "safe_save_file", fails)
    with pytest.raises(RuntimeError, match="injected"):
        hf.save_pretrained(model, out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    monkeypatch.undo()
    hf.save_pretrained(model, out)  # single file now: the old shards are gone
    assert not any(n.startswith("model-") for n in _snapshot(out))
    x = M.more_inputs(model)
    again = hf.from_pretrained(type(model), out).eval()
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))


def test_save_pretrained_deletes_only_its_own_old_shards_and_refuses_a_shadowing_file(tmp_path):
    # A single model.safetensors left beside new shards is what from_pretrained loads:
    # the old weights, silently. It is not ours to delete: the save is refused instead.
    model, _ = M.more("qwen2", "plan")
    out = tmp_path / "out"
    hf.save_pretrained(model, out)  # one file
    (out / "pytorch_model-notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match=r"holds \['model.safetensors'\] from an earlier"):
        hf.save_pretrained(model, out, max_shard_size="20KB")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "model.safetensors").unlink()
    hf.save_pretrained(model, out, max_shard_size="20KB")
    shards = sorted(n for n in _snapshot(out) if n.startswith("model-"))
    assert len(shards) > 1
    hf.save_pretrained(model, out, max_shard_size="40KB")  # fewer shards: the rest removed
    after = _snapshot(out)
    assert (out / "pytorch_model-notes.txt").read_text() == "the user's own file"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    kept = sorted(n for n in after if n.startswith("model-"))
    assert 1 <= len(kept) < len(shards) and kept == sorted(set(index["weight_map"].values()))
    x = M.more_inputs(model)
    again = hf.from_pretrained(type(model), out).eval()
    assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))


def test_save_pretrained_refuses_a_quantized_model_and_a_peft_model_writing_nothing(tmp_path):
    import peft
    from torchao.quantization import Int8WeightOnlyConfig

    from tying.interop import lora, quantization

    model, _ = M.more("qwen2", "plan")
    quantization.quantize_(
        model,
        Int8WeightOnlyConfig(),
        filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "lm_head",
    )
    with pytest.raises(TypeError, match=r"model\.layers\.0\.\S+ is a torchao\.\S+Int8Tensor"):
        hf.save_pretrained(model, tmp_path / "q")
    model, _ = M.more("qwen2", "plan")
    dyn = quantization.quantize_dynamic(model, {torch.nn.Linear}, exclude={"lm_head"})
    with pytest.raises(TypeError, match=r"_packed_params\.dtype is a torch\.dtype"):
        hf.save_pretrained(dyn, tmp_path / "d")
    model, _ = M.more("qwen2", "plan")
    pm = lora.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(TypeError, match="got a peft model; save its adapter"):
        hf.save_pretrained(pm, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "mode", "base"),
    [
        ("qwen2", "plan", "Qwen2Model"),
        ("bart", "hf", "BartModel"),
        ("vit", "plan", "ViTModel"),
        ("distilbert", "hf", "DistilBertModel"),
    ],
)
def test_a_head_models_folder_loads_into_its_base_model_tied(name, mode, base, tmp_path):
    # HF loads a ...ForCausalLM folder into the base model (AutoModel) by dropping the
    # prefix; the recorded plan named the head model's paths and was refused
    # ("pattern 'model.layers.1...' matches no parameter"). Now moved the same way.
    model, _ = M.more(name, mode)
    hf.save_pretrained(model, tmp_path)
    cls = getattr(M.transformers, base)
    kw = {"add_pooling_layer": False} if name == "vit" else {}
    again = hf.from_pretrained(cls, tmp_path, **kw).eval()
    inner = getattr(model, model.base_model_prefix)
    x = M.more_inputs(model)
    with torch.no_grad():
        want, got = inner(**x).last_hidden_state, again(**x).last_hidden_state
    assert torch.equal(got, want)
    prefix = model.base_model_prefix + "."
    inside = {
        (t.target[len(prefix) :], t.source[len(prefix) :])
        for t in tying.ties(model)
        if t.target.startswith(prefix) and t.source.startswith(prefix)
    }
    assert {(t.target, t.source) for t in tying.ties(again)} == inside


@pytest.mark.parametrize(("name", "mode"), [("distilbert", "plan"), ("xlm-roberta", "hf")])
def test_an_optimizer_built_before_resizing_is_refused_where_hf_replaced_a_parameter(name, mode):
    # HF replaces DistilBERT's head bias and XLM-R's tied embedding with new Parameters:
    # an optimizer built before kept stepping the old ones and never trained the new
    # ones, with no error. Built after the resize, it trains.
    model, _ = M.more(name, mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hf.resize_token_embeddings(model, 120, mean_resizing=False)
    x = M.more_inputs(model)
    model(**x).logits.pow(2).mean().backward()
    with pytest.raises(
        tying.TieError, match=r"step refused: .*replaced by resize_token_embeddings"
    ):
        opt.step()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert all(
        not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.grad is not None
    )


def test_variant_and_subfolder_load_tied_and_a_variant_save_keeps_the_main_weights(tmp_path):
    # HF names a variant's weights model.<variant>.safetensors; tying looked for
    # model.safetensors only and refused every variant= and subfolder= load.
    model, _ = M.more("qwen2", "plan")
    x = M.more_inputs(model)
    hf.save_pretrained(model, tmp_path / "sub")
    hf.save_pretrained(model, tmp_path / "sub", variant="v2", max_shard_size="20KB")
    names = {f.name for f in (tmp_path / "sub").iterdir()}
    assert "model.safetensors" in names and "model.safetensors.index.v2.json" in names
    for kw in ({"variant": "v2"}, {}):
        again = hf.from_pretrained(type(model), tmp_path, subfolder="sub", **kw).eval()
        assert torch.equal(M.more_logits(again, x), M.more_logits(model, x))
        assert _tie_set(again) == _tie_set(model)


# -- stop 26 review: resizing against an untied reference --------------------------------

EMBED_TIE = {
    "distilbert": ("vocab_projector.weight", "distilbert.embeddings.word_embeddings.weight"),
    "xlm-roberta": ("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
}


def _embedding_tied(name):
    """A tiny untied ``name`` model with the head equal to the embedding, and a Plan-tied copy."""
    torch.manual_seed(0)
    ref = M.MORE[name][0](False).eval()
    with torch.no_grad():
        ref.get_output_embeddings().weight.copy_(ref.get_input_embeddings().weight)
    model = copy.deepcopy(ref)
    target, source = EMBED_TIE[name]
    tying.Plan([tying.share(target, like=source)]).apply(model)
    return model, ref


@pytest.mark.parametrize("new", [120, 60], ids=["bigger", "smaller"])
@pytest.mark.parametrize("name", list(EMBED_TIE))
def test_resize_gives_the_logits_of_an_untied_model_resized_the_same_way(name, new):
    model, ref = _embedding_tied(name)
    hf.resize_token_embeddings(model, new, mean_resizing=False)
    ref.resize_token_embeddings(new, mean_resizing=False)
    with torch.no_grad():  # the new rows are random in each: give the reference the tied ones
        w = model.get_input_embeddings().weight
        ref.get_input_embeddings().weight.copy_(w)
        ref.get_output_embeddings().weight.copy_(w)
    tying.verify(model)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_output_embeddings().bias.shape == (new,)
    x = M.more_inputs(model, max_id=min(new, 60))
    assert torch.equal(M.more_logits(model, x), M.more_logits(ref, x))


@pytest.mark.parametrize("name", list(EMBED_TIE))
def test_plain_hf_resize_of_a_plan_tied_head_with_a_bias_is_refused_at_the_resize(name):
    # HF read the head's weight through the tie at its new size, decided the head needed
    # no resizing and kept its old bias: the first forward failed ("must match the existing
    # size"). Since stop 26 the read inside HF's resize refuses, naming the fix.
    model, _ = _embedding_tied(name)
    vocab = model.config.vocab_size
    with pytest.raises(
        tying.TieError, match=r"shape changed from .*tying\.hf\.resize_token_embeddings"
    ):
        model.resize_token_embeddings(vocab + 10, mean_resizing=False)
    model.resize_token_embeddings(vocab, mean_resizing=False)  # the undo it names
    tying.verify(model)
    assert model.get_output_embeddings().bias.shape == (vocab,)
    M.more_logits(model, M.more_inputs(model))


# -- stop 32 review: a config tie the model does not hold; a part of a tied whole ---------

UNTIED_ON_LOAD = ["llama", "bart", "distilbert", "whisper"]


def _loaded_untied(name, tmp_path):
    """``name`` with ``tie_word_embeddings=True`` whose head was trained apart, saved by HF
    and loaded back: transformers 5 sees both ends in the file, different, and keeps them
    untied (with a warning), though the config still says tied."""
    torch.manual_seed(0)
    build = M.llama if name == "llama" else M.MORE[name][0]
    model = build(True).eval()
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach() + 0.1 * torch.randn_like(head.weight))
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config.tie_word_embeddings
    assert loaded.get_output_embeddings().weight is not loaded.get_input_embeddings().weight
    return loaded


@pytest.mark.parametrize("name", UNTIED_ON_LOAD)
def test_hf_ties_plan_refuses_a_config_tie_the_loaded_model_does_not_hold(name, tmp_path):
    # The plan came from the config: applying it replaced the trained head by the
    # embedding, logits 2.05 away (Llama), no error.
    model = _loaded_untied(name, tmp_path)
    x = M.more_inputs(model, max_id=40)
    before = M.more_logits(model, x)
    with pytest.raises(
        tying.TieError,
        match=r"hf_ties_plan: the config declares \S+ <- \S+ \(max \|diff\| .*holds different "
        r"values.*tie_word_embeddings = False",
    ):
        hf.hf_ties_plan(model)
    assert torch.equal(M.more_logits(model, x), before)
    model.config.tie_word_embeddings = False  # the fix it names: the plan leaves the head
    hf.hf_ties_plan(model).apply(model)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    assert torch.equal(M.more_logits(model, x), before)


def test_hf_ties_plan_adopts_two_tensors_with_equal_values():
    # load_state_dict(assign=True) puts a new Parameter at each end of HF's tie: the values
    # are equal, so adopting the tie changes no output.
    model = M.llama(True)
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    x = M.ids(70)
    before = M.logits(model, x)
    hf.hf_ties_plan(model).apply(model)
    tying.retie(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(M.logits(model, x), before)


@pytest.mark.parametrize("name", UNTIED_ON_LOAD)
def test_resize_refuses_to_let_hf_retie_a_head_loaded_untied(name, tmp_path):
    # HF's resize calls tie_weights(), which re-ties from the config: the trained head
    # was replaced by the embedding (kept-token logits 2.05 away on Llama; plain HF too).
    model = _loaded_untied(name, tmp_path)
    vocab = model.config.vocab_size
    x = M.more_inputs(model, max_id=40)
    before, state = M.more_logits(model, x), copy.deepcopy(model.state_dict())
    with pytest.raises(
        tying.TieError,
        match=r"resize_token_embeddings: the config declares .*HF's resize re-ties.*"
        r"tie_word_embeddings = False.*nothing was changed",
    ):
        hf.resize_token_embeddings(model, vocab + 8, mean_resizing=False)
    assert _same_state(model.state_dict(), state) and model.config.vocab_size == vocab
    model.config.tie_word_embeddings = False  # the fix it names: the head resized on its own
    hf.resize_token_embeddings(model, vocab + 8, mean_resizing=False)
    assert torch.equal(M.more_logits(model, x)[..., :vocab], before)


def _bert2bert(tie_decoder_head):
    torch.manual_seed(0)
    kw = dict(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
        vocab_size=91, max_position_embeddings=32,
    )  # fmt: skip
    cfg = M.T.EncoderDecoderConfig.from_encoder_decoder_configs(
        M.T.BertConfig(**kw),
        M.T.BertConfig(
            **kw, is_decoder=True, add_cross_attention=True, tie_word_embeddings=tie_decoder_head
        ),
    )
    cfg.decoder_start_token_id, cfg.pad_token_id = 2, 0
    return M.T.EncoderDecoderModel(config=cfg).eval()


@pytest.mark.parametrize(
    ("hf_head_tie", "rule"),
    [
        (True, ("decoder.bert.embeddings.word_embeddings.weight", "encoder.embeddings.word_embeddings.weight")),
        (False, ("decoder.cls.predictions.decoder.weight", "decoder.bert.embeddings.word_embeddings.weight")),
    ],
    ids=["shared-with-encoder", "decoder-head"],
)  # fmt: skip
def test_resizing_a_part_whose_embedding_a_plan_on_the_whole_ties_is_refused_unchanged(
    hf_head_tie, rule
):
    # A plan applied to the EncoderDecoderModel, the decoder resized on its own (HF refuses
    # to resize the whole): the decoder could not free or re-make the tie, and HF resized
    # the encoder's table in place through it, (91, 32) -> (120, 32), kept after the call
    # failed with another tie's 'shape changed' error.
    model = _bert2bert(hf_head_tie)
    # HF's own head tie adopted first, so re-tying the decoder's table keeps its head on it
    tying.Plan([*hf.hf_ties_plan(model).rules, tying.share(rule[0], like=rule[1])]).apply(model)
    x, d = M.ids(91), M.ids(91, seq=4, seed=2)
    before = model(input_ids=x, decoder_input_ids=d).logits.detach()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(
        tying.TieError,
        match=r"resize_token_embeddings: \S+ is tied to .* by a plan applied to a model that "
        r"contains this one \(there: " + re.escape(f"{rule[0]} <- {rule[1]}") + r"\).*"
        r"tying\.free.*nothing was changed",
    ):
        hf.resize_token_embeddings(model.decoder, 120, mean_resizing=False)
    assert _same_state(model.state_dict(), state)
    assert model.encoder.embeddings.word_embeddings.weight.shape == (91, 32)
    tying.verify(model)
    assert torch.equal(model(input_ids=x, decoder_input_ids=d).logits, before)


# -- stop 34 review: flags transformers 5 ignores, config kwargs, tables a resize joins ---


@pytest.mark.parametrize("where", ["encoder-decoder", "bart"])
def test_hf_ties_plan_refuses_tie_encoder_decoder_which_transformers_5_ignores(where):
    # transformers 4 tied the decoder's weights to the encoder's under this flag;
    # transformers 5 keeps the key and ties nothing: every layer apart, and hf_ties_plan
    # returned the head ties only, no error.
    if where == "bart":
        model = M.T.BartForConditionalGeneration(
            M.T.BartConfig(**{**_bart_kw(), "tie_encoder_decoder": True})
        )
        named = r"model\.config\.tie_encoder_decoder is True"  # one config, named once
    else:
        model = _bert2bert(True)
        model.config.tie_encoder_decoder = True
        named = r"model\.config\.tie_encoder_decoder is True"
    enc, dec = (
        ("model.encoder.layers.0.self_attn.q_proj", "model.decoder.layers.0.self_attn.q_proj")
        if where == "bart"
        else ("encoder.encoder.layer.0.attention.self.query", "decoder.bert.encoder.layer.0.attention.self.query")
    )  # fmt: skip
    # HF tied nothing: the two layers hold their own (different) weights
    assert not torch.equal(model.get_submodule(enc).weight, model.get_submodule(dec).weight)
    with pytest.raises(
        tying.TieError,
        match=named + r", but transformers 5 no longer ties by that flag.*independent copies.*"
        r"Declare the tie with a Plan.*set it to False.*nothing was changed",
    ):
        hf.hf_ties_plan(model)
    assert not tying.Plan.declared(model).rules  # nothing declared
    model.config.tie_encoder_decoder = False  # the fix it names
    assert hf.hf_ties_plan(model).rules  # the head / shared-embedding ties HF makes


def _bart_kw():
    return dict(
        encoder_layers=1, decoder_layers=1, d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=50,
        max_position_embeddings=32, pad_token_id=1,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["llama", "bart"])
def test_from_pretrained_gives_config_attributes_to_the_config_as_hf_does(name, tmp_path):
    # Passed with config=, the kwargs went to the model's __init__: TypeError
    # "unexpected keyword argument 'tie_word_embeddings'" where HF's own load works.
    if name == "llama":
        model = M.llama(False)
        M.LLAMA_PLAN.apply(model)
        x = {"input_ids": M.ids(70)}
    else:
        model, _ = M.more("bart", "plan")
        x = M.more_inputs(model)
    hf.save_pretrained(model, tmp_path)
    with torch.no_grad():
        want = model(**x).logits
    again = hf.from_pretrained(type(model), tmp_path, tie_word_embeddings=False).eval()
    assert again.config.tie_word_embeddings is False  # as cls.from_pretrained sets it
    with torch.no_grad():
        assert torch.equal(again(**x).logits, want)  # the recorded plan keeps the head tied
    assert _tie_set(again) == _tie_set(model)


@pytest.mark.parametrize("name", ["bart", "mbart"])
def test_resize_refuses_to_let_hf_seat_one_table_where_the_model_holds_several(name):
    # transformers 5 keeps BART's encoder and decoder embeddings apart from model.shared
    # when tie_word_embeddings is False; its resize seats shared at both: kept-token
    # logits 0.28 away, no error (plain HF alike).
    build = M.MORE[name][0]
    torch.manual_seed(0)
    model = build(False).eval()
    vocab = model.config.vocab_size
    x = M.more_inputs(model)
    before, state = M.more_logits(model, x), copy.deepcopy(model.state_dict())
    plain = copy.deepcopy(model)
    plain.resize_token_embeddings(vocab + 8, mean_resizing=False)
    assert not torch.allclose(M.more_logits(plain, x)[..., :vocab], before, atol=1e-3)  # HF's
    with pytest.raises(
        tying.TieError,
        match=r"resize_token_embeddings: HF's resize seats one embedding module at paths that "
        r"held different tables before: model\.shared and model\.encoder\.embed_tokens "
        r"\(max \|diff\| .*model\.shared and model\.decoder\.embed_tokens.*tie them first.*"
        r"resize each table yourself.*nothing was changed",
    ):
        hf.resize_token_embeddings(model, vocab + 8, mean_resizing=False)
    assert _same_state(model.state_dict(), state) and model.config.vocab_size == vocab
    assert model.model.encoder.embed_tokens is not model.model.shared
    assert torch.equal(M.more_logits(model, x), before)
    # the fix it names: one table on purpose (the encoder's values), then the resize keeps it
    tying.Plan(
        [
            tying.share("model.shared.weight", like="model.encoder.embed_tokens.weight"),
            tying.share(
                "model.decoder.embed_tokens.weight", like="model.encoder.embed_tokens.weight"
            ),
        ]
    ).apply(model)
    tied = M.more_logits(model, x)
    hf.resize_token_embeddings(model, vocab + 8, mean_resizing=False)
    assert model.model.encoder.embed_tokens.weight.shape[0] == vocab + 8
    assert torch.equal(M.more_logits(model, x)[..., :vocab], tied)
    tying.verify(model)


def test_from_pretrained_with_a_config_given_re_creates_the_ties_the_folder_recorded(tmp_path):
    # config= built by hand (no recorded plan): the plan was read from that config only,
    # so every tie was dropped without a word (BERT's ALBERT-style stack: three untied
    # copies of layer 0, physical count 1.8x; a training step then moved layer 0 alone).
    model = M.bert()
    M.BERT_PLAN.apply(model)
    hf.save_pretrained(model, tmp_path)
    config = M.bert().config  # same architecture, no "tying" key
    assert getattr(config, hf.CONFIG_KEY, None) is None
    again = hf.from_pretrained(type(model), tmp_path, config=config).eval()
    assert _tie_set(again) == _tie_set(model)
    assert tying.count(again).physical == tying.count(model).physical
    x = M.ids(90)
    assert torch.equal(again(x).last_hidden_state, model(x).last_hidden_state)
    opt = torch.optim.SGD(again.parameters(), lr=0.5)
    again(x).last_hidden_state.square().mean().backward()
    opt.step()
    layers = again.encoder.layer
    assert layers[3].attention.self.query.weight is layers[0].attention.self.query.weight
