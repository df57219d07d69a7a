"""tying.hf on real transformers models: save/load round trips, plain HF loading, resizing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import tying
from tests.interop import models as M

transformers = M.transformers
hf = pytest.importorskip("tying.hf")

CASES = {
    "gpt2": (M.gpt2, M.GPT2_PLAN, transformers.GPT2LMHeadModel, 97),
    "bert-albert": (M.bert, M.BERT_PLAN, transformers.BertModel, 90),
    "t5-kv": (M.t5, M.T5_PLAN, transformers.T5ForConditionalGeneration, 80),
    "llama": (M.llama, M.LLAMA_PLAN, transformers.LlamaForCausalLM, 70),
}


def _tied(name):
    build, plan, cls, vocab = CASES[name]
    model = build()
    plan.apply(model)
    return model, plan, cls, vocab


def _tie_set(model):
    return {(t.target, t.source, t.relation) for t in tying.ties(model)}


def _step(model, x):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    if model.config.is_encoder_decoder:
        out = model(input_ids=x, decoder_input_ids=x)
    else:
        out = model(input_ids=x)
    (out.logits if hasattr(out, "logits") else out.last_hidden_state).pow(2).mean().backward()
    opt.step()
    model.eval()


@pytest.mark.parametrize("name", list(CASES))
def test_save_pretrained_round_trip_recreates_every_tie_with_exact_outputs(name, tmp_path):
    model, _, cls, vocab = _tied(name)
    x = M.ids(vocab)
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(cls, tmp_path).eval()
    assert torch.equal(M.logits(again, x), M.logits(model, x))
    assert _tie_set(again) == _tie_set(model)
    assert tying.count(again).physical == tying.count(model).physical
    assert tying.verify(again) == tying.verify(model)
    _step(again, x)  # the ties hold after an optimizer step
    tying.verify(again)


@pytest.mark.parametrize("name", list(CASES))
def test_hf_own_save_pretrained_folder_loads_tied_given_the_plan(name, tmp_path):
    model, plan, cls, vocab = _tied(name)
    x = M.ids(vocab)
    model.save_pretrained(tmp_path)  # HF's own save: tied slots are not in the file
    again = hf.from_pretrained(cls, tmp_path, plan=plan).eval()
    assert torch.equal(M.logits(again, x), M.logits(model, x))
    assert _tie_set(again) == _tie_set(model)


@pytest.mark.parametrize("name", list(CASES))
def test_hf_own_save_without_plan_is_refused_naming_the_missing_weights(name, tmp_path):
    model, _, cls, _ = _tied(name)
    model.save_pretrained(tmp_path)
    with pytest.raises(
        tying.TieError, match=r"not in the file and no tie explains them: .*pass plan="
    ):
        hf.from_pretrained(cls, tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_plain_transformers_loading_of_a_tying_folder_gives_the_same_outputs(name, tmp_path):
    model, _, cls, vocab = _tied(name)
    x = M.ids(vocab)
    hf.save_pretrained(model, tmp_path)
    with M_quiet():
        plain, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set()
    assert torch.equal(M.logits(plain.eval(), x), M.logits(model, x))


def M_quiet():
    from tying.interop.hf import _quiet

    return _quiet()


def test_embedding_tie_is_kept_as_hf_tie_word_embeddings_so_plain_hf_reties(tmp_path):
    model, _, cls, _ = _tied("gpt2")
    assert model.config.tie_word_embeddings is False
    hf.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    assert model.config.tie_word_embeddings is False  # the in-memory config is unchanged
    assert not hasattr(model.config, hf.CONFIG_KEY)
    plain = cls.from_pretrained(tmp_path)
    assert plain.lm_head.weight is plain.transformer.wte.weight


def test_hf_own_round_trip_of_a_plan_tied_model_is_what_tying_hf_prevents(tmp_path):
    # The first row, measured: HF's own save + load re-initialises the tied slots.
    model, _, cls, vocab = _tied("gpt2")
    x = M.ids(vocab)
    model.save_pretrained(tmp_path)
    with M_quiet():
        plain, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert "transformer.h.1.attn.c_attn.weight" in info["missing_keys"]
    assert (M.logits(plain.eval(), x) - M.logits(model, x)).abs().max() > 0.1


@pytest.mark.parametrize(
    "relation", [tying.Transposed(), tying.Scaled(0.5)], ids=["Transposed", "Scaled"]
)
def test_relation_ties_survive_the_round_trip(relation, tmp_path):
    model = M.gpt2()
    if isinstance(relation, tying.Transposed):  # Conv1D c_proj (128, 32) reads c_fc (32, 128)ᵀ
        rule = tying.share(
            "transformer.h.*.mlp.c_proj.weight",
            like="transformer.h.*.mlp.c_fc.weight",
            relation=relation,
        )
    else:
        rule = tying.share(
            "transformer.h.2.attn.c_proj.weight",
            like="transformer.h.1.attn.c_proj.weight",
            relation=relation,
        )
    tying.Plan([rule]).apply(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 0:
                p.fill_(1.75)  # a learned scale that right_inverse could not recover
    x = M.ids(97)
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(transformers.GPT2LMHeadModel, tmp_path).eval()
    assert torch.equal(M.logits(again, x), M.logits(model, x))
    # one tensor either way round: HF seats it at lm_head, so the reload names it lm_head <- wte
    pairs = {(frozenset((t.target, t.source)), t.relation) for t in tying.ties(again)}
    assert pairs == {(frozenset((t.target, t.source)), t.relation) for t in tying.ties(model)}
    assert tying.count(again).physical == tying.count(model).physical
    with M_quiet():
        plain = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert torch.equal(M.logits(plain, x), M.logits(model, x))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_relation_ties_load_exactly_under_a_dtype_cast(dtype, tmp_path):
    model = M.gpt2()
    rule = tying.share(
        "transformer.h.2.attn.c_proj.weight",
        like="transformer.h.1.attn.c_proj.weight",
        relation=tying.Scaled(0.37),  # 0.37 * w rounds differently in bf16 than cast(0.37 * w)
    )
    tying.Plan([rule]).apply(model)
    hf.save_pretrained(model, tmp_path)
    kwargs = {} if dtype is None else {"dtype": dtype}
    again = hf.from_pretrained(transformers.GPT2LMHeadModel, tmp_path, **kwargs)
    assert _tie_set(again) == _tie_set(model)
    if dtype is not None:
        assert again.transformer.h[2].attn.c_proj.weight.dtype == dtype


def test_a_file_whose_tied_value_disagrees_with_the_tie_is_refused(tmp_path):
    model, _, cls, _ = _tied("gpt2")
    hf.save_pretrained(model, tmp_path)
    f = tmp_path / "model.safetensors"
    tensors = load_file(str(f))
    tensors["transformer.h.2.mlp.c_fc.weight"] = tensors["transformer.h.2.mlp.c_fc.weight"] + 1.0
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(
        tying.TieError,
        match=r"disagree with the tie: transformer\.h\.2\.mlp\.c_fc\.weight \(tied to transformer\.h\.0",
    ):
        hf.from_pretrained(cls, tmp_path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"ties": []}, "expected a dict with format"),
        ({"format": "tying.plan/1", "ties": {}}, "field 'ties' must be a list"),
        ({"format": "tying.plan/1", "ties": [{"target": 3}]}, r"ties\[0\]\.target"),
        (
            {"format": "tying.plan/1", "ties": [{"target": "a", "like": 1, "relation": {}}]},
            r"ties\[0\]\.like",
        ),
        (
            {
                "format": "tying.plan/1",
                "ties": [{"target": "a", "like": "b", "relation": {"type": "Nope"}}],
            },
            "unknown relation type",
        ),
        ("{not json", "not JSON"),
    ],
)
def test_plan_from_json_refuses_malformed_data_naming_the_field(data, match):
    with pytest.raises(tying.TieError, match=match):
        hf.plan_from_json(data)


def test_a_malformed_recorded_plan_is_refused_naming_the_config(tmp_path):
    model, _, cls, _ = _tied("gpt2")
    hf.save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tying"]["ties"][0]["relation"] = {"type": "Bogus"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(tying.TieError, match=r"config\.json: key 'tying': ties\[0\]"):
        hf.from_pretrained(cls, tmp_path)


# -- resize_token_embeddings ------------------------------------------------------------


@pytest.mark.parametrize("config_tied", [False, True], ids=["config-untied", "config-tied"])
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_resize_moves_the_tied_output_embedding_with_its_source(name, config_tied):
    build, plan, _, vocab = CASES[name]
    model = build(tie_word_embeddings=config_tied)
    plan.apply(model)
    emb = model.get_input_embeddings()
    hf.resize_token_embeddings(model, vocab + 13, mean_resizing=False)
    assert model.get_output_embeddings().weight is emb.weight
    assert tuple(model.get_output_embeddings().weight.shape) == (vocab + 13, emb.weight.shape[1])
    c = tying.count(model)
    inv = tying.core.inventory.Inventory(model)
    # every slot the model reads: unique parameters, Plan-tied slots, and the extra
    # ends of hand ties (HF's tie_weights re-ties a config-tied head by assignment)
    logical = (
        sum(p.numel() for p in model.parameters())
        + sum(getattr(i.module, i.name).numel() for i in inv.slots.values() if i.is_tied)
        + sum(getattr(inv.slots[t].module, inv.slots[t].name).numel() for t in inv.hand)
    )
    assert c.logical == logical
    model.load_state_dict(model.state_dict())  # a matching state dict is accepted
    x = M.ids(vocab + 13)
    _step(model, x)
    tying.verify(model)


def test_plain_resize_of_a_plan_tied_model_is_refused_at_the_resize_and_can_be_undone():
    # the row (config untied): HF's resize alone left the slot at its old shape, so
    # count and load_state_dict went wrong with no error. Since stop 26 the tied read
    # inside HF's resize refuses, naming tying.hf.resize_token_embeddings and the undo.
    model, _, _, vocab = _tied("gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"lm_head\.weight is tied to transformer\.wte\.weight.*"
        r"tying\.hf\.resize_token_embeddings",
    ):
        model.resize_token_embeddings(vocab + 16, mean_resizing=False)
    with pytest.raises(tying.TieError, match="shape changed"):
        tying.count(model)  # nothing reads the tie at a shape it does not have
    model.resize_token_embeddings(vocab, mean_resizing=False)  # the undo the error names
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    tying.verify(model)
    hf.resize_token_embeddings(model, vocab + 16, mean_resizing=False)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert tying.core.inventory.Inventory(model).slots["lm_head.weight"].shape == (
        vocab + 16,
        model.config.n_embd,
    )


def test_resize_refuses_a_tie_leaving_the_embeddings_and_changes_nothing():
    model = M.gpt2()
    model.extra = torch.nn.Linear(
        32, 97, bias=False
    )  # a vocabulary-shaped layer outside the embeddings
    tying.Plan(
        [
            tying.share("lm_head.weight", like="transformer.wte.weight"),
            tying.share("extra.weight", like="transformer.wte.weight"),
        ]
    ).apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ties_before = _tie_set(model)
    with pytest.raises(
        tying.TieError, match=r"extra\.weight <- transformer\.wte\.weight .*outside the embeddings"
    ):
        hf.resize_token_embeddings(model, 120)
    assert _tie_set(model) == ties_before
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_resize_failing_inside_transformers_restores_the_model(monkeypatch):
    model, _, _, vocab = _tied("gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ties_before = _tie_set(model)
    original = type(model).resize_token_embeddings

    def fails_after_resizing(self, *a, **k):
        original(self, *a, **k)
        raise RuntimeError("injected failure after HF resized")

    monkeypatch.setattr(type(model), "resize_token_embeddings", fails_after_resizing)
    with pytest.raises(RuntimeError, match="injected"):
        hf.resize_token_embeddings(model, vocab + 5, mean_resizing=False)
    assert _tie_set(model) == ties_before
    assert model.config.vocab_size == vocab
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    tying.verify(model)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_resize_refuses_a_bad_size_naming_it(bad):
    model, _, _, _ = _tied("gpt2")
    with pytest.raises(
        TypeError, match=f"new_num_tokens must be a positive int or None, got {bad!r}"
    ):
        hf.resize_token_embeddings(model, bad)


# -- core enablers: hand ties first-class, no-op assignment, real class names ------------


def test_hf_tie_weights_on_a_plan_tied_model_whose_config_says_tied_is_a_no_op():
    model = M.gpt2(tie_word_embeddings=True)
    M.GPT2_PLAN.apply(model)
    model.tie_weights()
    model.init_weights()
    tying.verify(model)


def test_hf_own_embedding_tie_is_listed_and_verified():
    model = M.gpt2(tie_word_embeddings=True)
    assert ("lm_head.weight", "transformer.wte.weight") in {
        (t.target, t.source) for t in tying.ties(model)
    }


def test_swapped_class_reports_its_real_module():
    model, _, _, _ = _tied("gpt2")
    assert type(model.lm_head).__module__ != "torch.nn.modules.linear"


# -- HF's own ties adopted as a Plan ---------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hf_own_embedding_tie_adopted_as_a_plan_survives_tying_save_and_load(name, tmp_path):
    build, _, _, vocab = CASES[name]
    model = build(tie_word_embeddings=True)
    hf.hf_ties_plan(model).apply(model)
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    assert out.weight is emb.weight and len(tying.ties(model)) == 1
    tying.verify(model)
    tying.save(model, tmp_path / "m.safetensors")
    fresh = build(tie_word_embeddings=False, seed=5)  # an untied model
    tying.load(fresh, tmp_path / "m.safetensors")
    assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight
    x = M.ids(vocab)
    assert torch.equal(M.logits(fresh, x), M.logits(model, x))
    _step(fresh, x)  # still one tensor after a step (today: copies 0.014 apart)
    assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight


def test_hf_ties_plan_is_empty_when_the_config_does_not_tie():
    assert hf.hf_ties_plan(M.gpt2(tie_word_embeddings=False)).rules == []


# -- bad input -------------------------------------------------------------------------


def test_from_pretrained_refuses_a_missing_folder_and_a_folder_without_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a local folder"):
        hf.from_pretrained(transformers.GPT2LMHeadModel, tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"holds no model\.safetensors .*no pickle"):
        hf.from_pretrained(transformers.GPT2LMHeadModel, tmp_path)


def test_from_pretrained_refuses_a_plan_that_is_not_a_plan(tmp_path):
    model, _, cls, _ = _tied("gpt2")
    hf.save_pretrained(model, tmp_path)
    with pytest.raises(TypeError, match="plan must be a tying.Plan, got list"):
        hf.from_pretrained(cls, tmp_path, plan=[tying.share("a", like="b")])


def test_a_given_plan_without_the_recorded_ties_is_warned_naming_them(tmp_path):
    # stop 36: a plan= passed for another reason (here the head tie only) loaded the
    # recorded stack tie as independent copies, with no word: physical count 2.5x, and a
    # step moved layer 0 alone.
    model, _, cls, vocab = _tied("gpt2")
    x = M.ids(vocab)
    hf.save_pretrained(model, tmp_path)
    head = tying.Plan([tying.share("lm_head.weight", like="transformer.wte.weight")])
    with pytest.warns(
        UserWarning,
        match=r"records 24 tie\(s\) that the given plan= does not make: "
        r"transformer\.h\.1\.ln_1\.weight <- transformer\.h\.0\.ln_1\.weight; .*"
        r"To keep them, pass no plan= .*free them in your plan",
    ):
        again = hf.from_pretrained(cls, tmp_path, plan=head).eval()
    assert torch.equal(M.logits(again, x), M.logits(model, x))  # values as saved, untied
    assert tying.count(again).physical > tying.count(model).physical
    # the recorded plan, the same plan, or the stack freed on purpose: no warning
    for plan in (None, M.GPT2_PLAN, tying.Plan([*head.rules, tying.free("transformer.h.*")])):
        again = hf.from_pretrained(cls, tmp_path, plan=plan).eval()
        assert torch.equal(M.logits(again, x), M.logits(model, x))
    _step(again, x)


def test_a_given_plan_need_not_name_a_tie_hf_makes_itself(tmp_path):
    # Llama with tie_word_embeddings: the recorded head tie holds by HF's own tie
    model = M.llama(tie_word_embeddings=True)
    stack = tying.Plan([tying.share("model.layers.*.mlp", like="model.layers.0.mlp")])
    tying.Plan([*hf.hf_ties_plan(model).rules, *stack.rules]).apply(model)
    hf.save_pretrained(model, tmp_path)
    again = hf.from_pretrained(type(model), tmp_path, plan=stack)  # no warning
    assert again.lm_head.weight is again.model.embed_tokens.weight
    assert tying.count(again).physical == tying.count(model).physical
    # into the base model (no lm_head): the recorded ties at its paths are compared
    base = transformers.LlamaModel
    hf.from_pretrained(
        base, tmp_path, plan=tying.Plan([tying.share("layers.*.mlp", like="layers.0.mlp")])
    )
    with pytest.warns(
        UserWarning, match=r"records 3 tie\(s\) .*: layers\.2\.mlp\.gate_proj\.weight <- "
    ):
        hf.from_pretrained(
            base, tmp_path, plan=tying.Plan([tying.share("layers.1.mlp", like="layers.0.mlp")])
        )


def test_save_pretrained_refuses_a_non_hf_module_and_a_state_dict(tmp_path):
    with pytest.raises(
        TypeError, match=r"expected a transformers PreTrainedModel, got Linear; use tying\.save"
    ):
        hf.save_pretrained(torch.nn.Linear(2, 2), tmp_path)
    model, _, _, _ = _tied("gpt2")
    with pytest.raises(TypeError, match="drop state_dict="):
        hf.save_pretrained(model, tmp_path, state_dict={})
    assert not any(tmp_path.iterdir())


def test_save_pretrained_refuses_a_model_whose_tie_is_broken(tmp_path):
    model, _, _, _ = _tied("gpt2")
    model.transformer.h[2].mlp = type(model.transformer.h[0].mlp)(128, model.config)
    with pytest.raises(tying.TieError, match=r"transformer\.h\.2\.mlp\.c_fc\.weight"):
        hf.save_pretrained(model, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_sharded_save_round_trips_exactly(tmp_path):
    model, _, cls, vocab = _tied("t5-kv")
    hf.save_pretrained(model, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    again = hf.from_pretrained(cls, tmp_path).eval()
    x = M.ids(vocab)
    assert torch.equal(M.logits(again, x), M.logits(model, x))
    assert _tie_set(again) == _tie_set(model)


def test_an_embedding_tie_declared_the_other_way_round_is_kept_as_hf_tie_word_embeddings(tmp_path):
    # share(wte <- lm_head) is the same one tensor as share(lm_head <- wte) (and a hand
    # tie's direction is only the order tying met its paths in: XLM-R's comes out
    # reversed). It was saved as two copies with tie_word_embeddings false, so plain HF
    # loaded two independent tensors.
    model = M.gpt2()
    tying.Plan(
        [
            tying.share("transformer.h.*", like="transformer.h.0"),
            tying.share("transformer.wte.weight", like="lm_head.weight"),
        ]
    ).apply(model)
    x = M.ids(97)
    hf.save_pretrained(model, tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    plain = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert plain.lm_head.weight is plain.transformer.wte.weight
    assert torch.equal(M.logits(plain, x), M.logits(model, x))
    again = hf.from_pretrained(transformers.GPT2LMHeadModel, tmp_path).eval()
    assert torch.equal(M.logits(again, x), M.logits(model, x))
    # one tensor either way round: HF seats it at lm_head, so the reload names it lm_head <- wte
    pairs = {(frozenset((t.target, t.source)), t.relation) for t in tying.ties(again)}
    assert pairs == {(frozenset((t.target, t.source)), t.relation) for t in tying.ties(model)}
    assert tying.count(again).physical == tying.count(model).physical


# -- stop 26 review: push_to_hub, a read-only parent ------------------------------------


def test_push_to_hub_is_refused_naming_save_then_upload_and_writes_nothing(tmp_path):
    model, *_ = _tied("gpt2")
    out = tmp_path / "out"
    with pytest.raises(
        TypeError,
        match=r"does not upload \(push_to_hub=True\).*"
        r"huggingface_hub\.upload_folder\(repo_id=\.\.\., folder_path=folder\)",
    ):
        hf.save_pretrained(model, out, push_to_hub=True, repo_id="me/model")
    assert not out.exists()


def _read_only(monkeypatch, parent):
    """``parent`` refuses new entries: chmod where it works, else (root) a patched mkdtemp."""
    import errno
    import os
    import tempfile

    if os.geteuid() != 0:
        parent.chmod(0o555)
        return lambda: parent.chmod(0o755)
    real = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, parent):
            raise PermissionError(errno.EACCES, "Permission denied (simulated)", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    return lambda: None


def test_save_into_a_writable_folder_under_a_read_only_parent(monkeypatch, tmp_path):
    # before: PermissionError from mkdtemp beside the target, though the target was writable
    model, plan, cls, _ = _tied("gpt2")
    parent = tmp_path / "shared"
    out = parent / "model"
    out.mkdir(parents=True)
    (out / "README.md").write_text("mine")  # not the save's: must survive untouched
    hf.save_pretrained(model, out)  # an earlier save, to be replaced
    old_weights = (out / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)  # a new value, to see the replace
    restore = _read_only(monkeypatch, parent)
    try:
        hf.save_pretrained(model, out)
    finally:
        restore()
    names = sorted(f.name for f in out.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors"]
    assert (out / "README.md").read_text() == "mine"
    assert (out / "model.safetensors").read_bytes() != old_weights
    again = hf.from_pretrained(cls, out).eval()
    x = torch.arange(8)[None]
    assert torch.equal(again(x).logits, model.eval()(x).logits)
    assert _tie_set(again) == _tie_set(model)


def test_a_read_only_parent_without_the_target_is_refused_naming_both(monkeypatch, tmp_path):
    model, *_ = _tied("gpt2")
    parent = tmp_path / "shared"
    parent.mkdir()
    restore = _read_only(monkeypatch, parent)
    try:
        with pytest.raises(
            PermissionError,
            match=r"cannot write into .*shared .*nor into "
            r".*model \(it does not exist\); create .*nothing was written",
        ):
            hf.save_pretrained(model, parent / "model")
    finally:
        restore()
    assert list(parent.iterdir()) == []


# -- stop 31 review: tie_word_embeddings is written true only when HF re-makes the same tie


def _marian_unshared(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.MarianConfig(
        vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=32, pad_token_id=59, decoder_start_token_id=59,
        share_encoder_decoder_embeddings=False, tie_word_embeddings=False,
    )  # fmt: skip
    return transformers.MarianMTModel(cfg).eval()


def _switch(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.SwitchTransformersConfig(
        vocab_size=60, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
        num_heads=2, num_experts=2, expert_capacity=8, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )  # fmt: skip
    return transformers.SwitchTransformersForConditionalGeneration(cfg).eval()


def _seq2seq_logits(model, x, d):
    with torch.no_grad():
        return model(input_ids=x, decoder_input_ids=d).logits


@pytest.mark.parametrize(
    ("build", "like"),
    [
        # HF's flag ties lm_head to the *decoder* embedding here: plain HF loaded the head
        # from it (logits 0.37 away) and tying.hf.from_pretrained refused its own folder
        (_marian_unshared, "model.encoder.embed_tokens.weight"),
        # the forward scales the decoder output by d_model ** -0.5 when the flag is true:
        # both loads came back 7.1 away
        (_switch, "shared.weight"),
    ],
    ids=["marian-unshared", "switch-transformers"],
)
def test_the_flag_is_not_written_where_hf_would_tie_otherwise_or_compute_otherwise(
    build, like, tmp_path
):
    model = build()
    tying.Plan([tying.share("lm_head.weight", like=like)]).apply(model)
    x, d = torch.randint(2, 58, (1, 6)), torch.randint(2, 58, (1, 4))
    want = _seq2seq_logits(model, x, d)
    hf.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")  # the head as a copy
    with M_quiet():
        plain = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(_seq2seq_logits(plain, x, d), want)
    again = hf.from_pretrained(type(model), tmp_path).eval()
    assert torch.equal(_seq2seq_logits(again, x, d), want)
    assert _tie_set(again) == _tie_set(model)
    assert tying.count(again).physical == tying.count(model).physical
    assert model.config.tie_word_embeddings is False  # the in-memory config is unchanged


def _load_both(cls, folder, **kw):
    """tying's and plain HF's load of ``folder`` into ``cls``, each from the same seed."""
    torch.manual_seed(5)
    ours = hf.from_pretrained(cls, folder, **kw).eval()
    torch.manual_seed(5)
    plain = cls.from_pretrained(folder, **kw).eval()
    return ours, plain


@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForTokenClassification"])
@pytest.mark.parametrize("source", ["gpt2-plan", "llama-hf-tie", "llama-hf-tie-plain-save"])
def test_a_causal_lm_folder_loads_into_a_classification_class_as_plain_hf_does(
    head, source, tmp_path, caplog
):
    # The usual fine-tuning start: a causal-LM folder into ...ForSequenceClassification.
    # It was refused ("pattern 'lm_head.weight' matches no parameter"; for an HF tie:
    # "score.weight ... not in the file ...; pass plan="). Now the fresh head is
    # initialised as plain HF does (same seed, same values), the recorded ties the class
    # has are made, the head tie of the part it lacks is skipped, and both are noted.
    if source == "gpt2-plan":
        model, _, _, vocab = _tied("gpt2")
        hf.save_pretrained(model, tmp_path)
        cls = getattr(transformers, "GPT2" + head)
    else:
        model, vocab = M.llama(tie_word_embeddings=True), 70
        if source == "llama-hf-tie":
            hf.save_pretrained(model, tmp_path)
        else:
            model.save_pretrained(tmp_path)
        cls = getattr(transformers, "Llama" + head)
    with caplog.at_level("WARNING", logger="tying.hf"):
        ours, plain = _load_both(cls, tmp_path, pad_token_id=0)
    fresh = "classifier" if cls is transformers.GPT2ForTokenClassification else "score"
    assert "newly initialized (not in the file; train them on a down-stream task): " in caplog.text
    assert f"{fresh}.weight" in caplog.text
    x = M.ids(vocab, batch=2)
    with torch.no_grad():
        assert torch.equal(ours(x).logits, plain(x).logits)
    want = dict(plain.named_parameters())
    assert all(torch.equal(p, want[n]) for n, p in ours.named_parameters())
    if source == "gpt2-plan":
        assert "recorded tie(s) skipped, " in caplog.text
        assert "has no such part: lm_head.weight <- transformer.wte.weight" in caplog.text
        h = ours.transformer.h
        assert h[2].attn.c_attn.weight is h[0].attn.c_attn.weight  # the stack tie made
        assert tying.count(ours).physical < tying.count(plain).physical
    tying.verify(ours)
    _step(ours, x)
    tying.verify(ours)


def test_a_fresh_head_does_not_excuse_a_tied_slot_the_file_omits(tmp_path):
    # HF's own save of a Plan-tied GPT-2 omits the stack's tied layers; loaded into
    # ...ForSequenceClassification without plan= they are still refused (HF would
    # initialise them at random), and only they are named, not the fresh score head.
    model, plan, _, _ = _tied("gpt2")
    model.save_pretrained(tmp_path)
    cls = transformers.GPT2ForSequenceClassification
    with pytest.raises(
        tying.TieError, match=r"not in the file and no tie explains them: transformer\.h\.1\."
    ) as err:
        hf.from_pretrained(cls, tmp_path, pad_token_id=0)
    assert "score" not in str(err.value)
    stack = tying.Plan([plan.rules[0]])
    again = hf.from_pretrained(cls, tmp_path, plan=stack, pad_token_id=0)
    assert again.transformer.h[1].mlp.c_fc.weight is again.transformer.h[0].mlp.c_fc.weight


def test_a_base_model_under_another_name_is_refused_not_loaded_at_random(tmp_path):
    # LlamaForQuestionAnswering holds the base model as `transformer`, the causal LM as
    # `model`: HF finds none of the file's weights and initialises the whole body at
    # random. That is no fresh head: refused, naming the class the folder came from.
    model, _, _, _ = _tied("llama")
    hf.save_pretrained(model, tmp_path)
    with pytest.raises(
        tying.TieError,
        match=r"transformer\.embed_tokens\.weight.*saved from LlamaForCausalLM, whose weights "
        r"do not all reach LlamaForQuestionAnswering .*load it as LlamaForCausalLM",
    ):
        hf.from_pretrained(transformers.LlamaForQuestionAnswering, tmp_path)


def test_recorded_ties_under_the_heads_base_model_are_kept_when_the_head_is_skipped(tmp_path):
    # T5ForSequenceClassification holds the encoder/decoder under `transformer`; the
    # recorded decoder-K tie must be moved there, not dropped with the lm_head tie.
    model, _, _, _ = _tied("t5-kv")
    hf.save_pretrained(model, tmp_path)
    cls = transformers.T5ForSequenceClassification
    ours, plain = _load_both(cls, tmp_path)
    dec, enc = ours.transformer.decoder.block, ours.transformer.encoder.block
    assert dec[1].layer[0].SelfAttention.k.weight is enc[1].layer[0].SelfAttention.k.weight
    x = torch.cat([M.ids(80).clamp(min=2), torch.ones(2, 1, dtype=torch.long)], 1)  # one eos
    with torch.no_grad():
        assert torch.equal(ours(x).logits, plain(x).logits)
    assert tying.count(ours).physical < tying.count(plain).physical


@pytest.mark.parametrize(
    ("pad", "error", "match"),
    [
        (-8, ValueError, "pad_to_multiple_of must be a positive int or None, got -8"),
        (0, ValueError, "pad_to_multiple_of must be a positive int or None, got 0"),
        (8.0, TypeError, r"pad_to_multiple_of must be a positive int or None, got 8\.0 \(float\)"),
        (True, TypeError, r"pad_to_multiple_of must be a positive int or None, got True \(bool\)"),
    ],
)
def test_resize_refuses_a_bad_pad_to_multiple_of_before_any_change(pad, error, match):
    # stop 37: HF rounds with ceil(n / pad) * pad, so pad=-8 turned 90 tokens into 88 rows
    # (two rows of the vocabulary gone, no error); 0 was a bare ZeroDivisionError.
    model, _, _, vocab = _tied("gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        hf.resize_token_embeddings(model, vocab - 7, pad_to_multiple_of=pad)
    assert model.config.vocab_size == vocab
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    tying.verify(model)


def test_resize_with_a_positive_pad_to_multiple_of_rounds_up_as_hf_does():
    model, _, _, vocab = _tied("gpt2")  # 97 tokens
    hf.resize_token_embeddings(model, vocab - 7, pad_to_multiple_of=8, mean_resizing=False)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert tuple(model.lm_head.weight.shape) == (96, 32) and model.config.vocab_size == 96
