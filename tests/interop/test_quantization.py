"""Quantizing tied models: quantized once and read by every use, or refused before any change."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import tying
from tying.interop.quantization import quantize_, quantize_dynamic

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore:.*quantize_per_tensor"
)


def _stack(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


def _untied(m):
    ref = copy.deepcopy(m)
    tying.untie(ref)
    return ref


def _plain_ao(m):
    from torch.ao.quantization import quantize_dynamic as ao

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ao(m, {nn.Linear}, dtype=torch.qint8)


def _quantized(mod) -> bool:
    return type(mod).__module__.startswith("torch.ao.nn.quantized.dynamic")


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_module_tied_whole_is_quantized_once_and_every_use_reads_it():
    m = _stack()
    x = torch.randn(4, 32)
    q = quantize_dynamic(m, {nn.Linear})
    assert q[2] is q[0] and _quantized(q[0])
    assert list(q.parameters()) == []  # no float copy left anywhere
    tying.verify(q)
    # anchor: the untied model quantized by torch.ao itself gives the same outputs
    torch.testing.assert_close(q(x), _plain_ao(_untied(m))(x), rtol=0, atol=0)
    assert tying.verify(m) == 2 and isinstance(m[0], nn.Linear)  # the float model is untouched


def test_plain_torch_ao_on_a_tied_module_is_refused_naming_it():
    # the row, measured: torch.ao swaps by exact class, TiedLinear was skipped and
    # left float reading a weight outside the model; since stop 56 the tied module's
    # qconfig propagation refuses it by name (tests/core/test_eager_quant_stop56b.py)
    m = _stack()
    with pytest.raises(tying.TieError, match=r"quantize_dynamic: '2' is a tied module"):
        _plain_ao(m)
    assert isinstance(m[0], nn.Linear) and tying.verify(m) == 2


@pytest.mark.parametrize("inplace", [False, True])
def test_a_partial_tie_on_a_module_to_quantize_is_refused_and_nothing_changes(inplace):
    torch.manual_seed(0)
    m = nn.ModuleDict({"emb": nn.Embedding(10, 8), "head": nn.Linear(8, 10, bias=False)})
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    before = _state(m)
    with pytest.raises(
        tying.TieError,
        match=r"the tie head\.weight <- emb\.weight \(Same\(\)\) touches 'head' .*Exclude it",
    ):
        quantize_dynamic(m, {nn.Linear}, inplace=inplace)
    assert isinstance(m["head"], nn.Linear) and _same_state(before, m.state_dict())
    tying.verify(m)


def test_a_relation_tie_on_a_module_to_quantize_is_refused():
    m = nn.ModuleDict({"enc": nn.Linear(4, 6, bias=False), "dec": nn.Linear(6, 4, bias=False)})
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(m)
    with pytest.raises(tying.TieError, match=r"dec\.weight <- enc\.weight \(Transposed"):
        quantize_dynamic(m, {nn.Linear}, inplace=True)
    assert isinstance(m["enc"], nn.Linear)


def test_quantize_dynamic_refuses_a_spec_it_cannot_check():
    with pytest.raises(TypeError, match=r"qconfig_spec must be a set of module classes.*got \{'0'"):
        quantize_dynamic(_stack(), {"0": None})


def test_albert_style_bert_quantizes_to_the_same_outputs_as_the_untied_model():
    M = pytest.importorskip("tests.interop.models")
    model = M.bert()
    M.BERT_PLAN.apply(model)
    q = quantize_dynamic(model, {nn.Linear})
    layer = q.encoder.layer
    assert layer[3].attention.self.query is layer[0].attention.self.query
    tying.verify(q)
    x = M.ids(90)
    ref = _plain_ao(_untied(model))
    with torch.no_grad():
        torch.testing.assert_close(q(x).last_hidden_state, ref(x).last_hidden_state, rtol=0, atol=0)


def test_a_gpt2_with_its_lm_head_tied_to_the_embedding_is_refused_naming_the_tie():
    M = pytest.importorskip("tests.interop.models")
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    with pytest.raises(tying.TieError, match=r"lm_head\.weight <- transformer\.wte\.weight"):
        quantize_dynamic(model, {nn.Linear})


# -- torchao ---------------------------------------------------------------------------


def _int8():
    ao = pytest.importorskip("torchao.quantization", reason="torchao is not installed")
    return ao.Int8WeightOnlyConfig()


def test_torchao_int8_weight_only_quantizes_the_shared_weight_once():
    config = _int8()
    m = _stack()
    ref = _untied(m)
    x = torch.randn(4, 32)
    quantize_(m, config)
    assert type(m[0].weight).__name__ == "Int8Tensor" and m[2].weight is m[0].weight
    tying.verify(m)
    from torchao.quantization import quantize_ as ao_quantize_

    ao_quantize_(ref, _int8())
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)


def test_plain_torchao_on_a_tied_model_fails_half_way():
    # the row, measured: the source is quantized, then re-quantizing the tied use fails
    config = _int8()
    from torchao.quantization import quantize_ as ao_quantize_

    m = _stack()
    with pytest.raises(NotImplementedError, match="aten.view"):
        ao_quantize_(m, config)
    assert type(m[0].weight).__name__ == "Int8Tensor"


def test_torchao_refuses_a_partial_tie_before_any_change():
    config = _int8()
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {
            "emb": nn.Embedding(10, 32),
            "head": nn.Linear(32, 10, bias=False),
            "mlp": nn.Linear(32, 32),
        }
    )
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    before = _state(m)
    with pytest.raises(tying.TieError, match=r"quantize_: the tie head\.weight <- emb\.weight"):
        quantize_(m, config)
    assert type(m["mlp"].weight) is nn.Parameter and _same_state(before, m.state_dict())


def test_excluding_the_tied_head_quantizes_the_rest_and_keeps_the_tie():
    M = pytest.importorskip("tests.interop.models")
    model = M.llama()
    M.LLAMA_PLAN.apply(model)
    q = quantize_dynamic(model, {nn.Linear}, exclude={"lm_head"})
    layers = q.model.layers
    assert _quantized(layers[0].self_attn.q_proj) and layers[2].mlp.up_proj is layers[0].mlp.up_proj
    assert isinstance(q.lm_head, nn.Linear) and q.lm_head.weight is q.model.embed_tokens.weight
    tying.verify(q)
    x = M.ids(70)
    ref = copy.deepcopy(model)
    tying.untie(ref)
    ref = quantize_dynamic(ref, {nn.Linear}, exclude={"lm_head"})  # untied: the plain path
    with torch.no_grad():
        torch.testing.assert_close(q(x).logits, ref(x).logits, rtol=0, atol=0)


def test_an_unknown_exclude_path_is_refused_naming_the_closest():
    with pytest.raises(
        tying.TieError, match=r"exclude='lm_haed' is not a module path.*closest: lm_head"
    ):
        quantize_dynamic(
            nn.ModuleDict({"lm_head": nn.Linear(2, 2)}), {nn.Linear}, exclude={"lm_haed"}
        )


def _hand_tied(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    m[2].weight = m[0].weight  # one Parameter in two modules
    return m


def _int8_quantize(m):
    from torchao.quantization import Int8WeightOnlyConfig

    return quantize_(m, Int8WeightOnlyConfig())


@pytest.mark.parametrize(
    "quantize",
    [lambda m: quantize_dynamic(m, {nn.Linear}, inplace=True), _int8_quantize],
    ids=["quantize_dynamic", "quantize_"],
)
def test_a_hand_tie_touching_a_quantized_module_is_refused_before_any_change(quantize):
    # each module got its own quantized copy of the one Parameter: the tie was gone with
    # no error (verify counted 0 ties afterwards)
    pytest.importorskip("torchao")
    m = _hand_tied()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(
        tying.TieError,
        match=r"the hand-made tie 2.weight <- 0.weight \(one nn.Parameter in two modules\) touches '2'",
    ):
        quantize(m)
    assert type(m[0]) is nn.Linear and type(m[2]) is nn.Linear and m[2].weight is m[0].weight
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    # a tie of whole modules is quantized once (the message names it only where every tensor
    # agrees: here 2.bias differs, so it names a copy for 2, stop 60)
    tying.Plan([tying.free("2.weight")]).apply(m)
    tying.Plan([tying.share("2", like="0")]).apply(m)
    q = quantize(m)
    assert q[2] is q[0] or q[2].weight is q[0].weight


def test_a_module_reached_twice_stays_one_quantized_module():
    # torch's quantize_dynamic lists children without duplicates: the second reference
    # stayed a float nn.Linear, so one model ran the layer quantized once and float once
    torch.manual_seed(0)
    lin = nn.Linear(32, 32)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    q = quantize_dynamic(m, {nn.Linear})
    assert q[2] is q[0] and q[0]._get_name() == "DynamicQuantizedLinear"
    x = torch.randn(4, 32)
    torch.testing.assert_close(q(x), q[0](q[1](q[0](x))), rtol=0, atol=0)
    assert type(_plain_ao(copy.deepcopy(m))[2]) is nn.Linear  # what torch alone does


@pytest.mark.parametrize("excluded", ["0", "2"])
def test_excluding_one_seat_of_a_module_reached_twice_is_refused(excluded):
    # it ran float at the excluded seat and quantized at the other, with no error
    torch.manual_seed(0)
    lin = nn.Linear(32, 32)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    with pytest.raises(
        tying.TieError, match=r"is also seated at '[02]' \(one module reached twice\)"
    ):
        quantize_dynamic(m, {nn.Linear}, exclude={excluded}, inplace=True)
    assert m[0] is lin and m[2] is lin and type(lin) is nn.Linear
    q = quantize_dynamic(m, {nn.Linear}, exclude={"0", "2"})  # every seat: kept float
    assert q[0] is q[2] and type(q[0]) is nn.Linear


@pytest.mark.parametrize("inplace", [False, True])
def test_a_pruned_module_not_made_permanent_is_refused_before_any_change(inplace):
    # stop 25 review: the swap copied prune's forward hook onto the quantized module,
    # whose first call failed with "'Linear' object has no attribute 'weight_mask'"
    # (inplace=True, the model already swapped); inplace=False failed in deepcopy
    from torch.nn.utils import prune as torch_prune

    from tying.interop.pruning import prune

    m = _stack()
    prune(m, "2.weight", torch_prune.l1_unstructured, amount=0.5)
    before = _state(m)
    with pytest.raises(
        tying.TieError,
        match=r"quantize_dynamic: '0' is pruned .*torch\.nn\.utils\.prune\.remove\("
        r"model\.get_submodule\('0'\), 'weight'\)",
    ):
        quantize_dynamic(m, {nn.Linear}, inplace=inplace)
    assert isinstance(m[0], nn.Linear) and _same_state(before, m.state_dict())
    # the fix the message names: the mask made permanent, the tie holds, one quantized module
    x = torch.randn(3, 32)
    torch_prune.remove(m[0], "weight")
    ref = m(x)
    q = quantize_dynamic(m, {nn.Linear}, inplace=inplace)
    assert q[2] is q[0] and _quantized(q[0])
    assert torch.allclose(q(x), ref, atol=0.1)
    tying.verify(q)


def test_quantize_refuses_a_pruned_module_before_torchao_changes_it():
    pytest.importorskip("torchao")
    from torch.nn.utils import prune as torch_prune
    from torchao.quantization import Int8WeightOnlyConfig

    m = _stack()
    torch_prune.l1_unstructured(m[4], "weight", amount=0.5)
    before = _state(m)
    with pytest.raises(tying.TieError, match=r"quantize_: '4' is pruned"):
        quantize_(m, Int8WeightOnlyConfig())
    assert _same_state(before, m.state_dict())


# -- stop 26 review: embeddings --------------------------------------------------------


def _embeddings(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    m = nn.ModuleDict({"a": nn.Embedding(10, 4), "b": nn.Embedding(10, 4), "h": nn.Linear(4, 10)})
    tying.Plan([tying.share("b", like="a")]).apply(m)
    return m


def test_plain_torch_ao_on_a_tied_embedding_is_refused_naming_it():
    # measured: torch swaps nn.Embedding by exact class; the TiedEmbedding stayed float
    # reading the source's old weight, outside the model; refused by name since stop 56
    from torch.ao.quantization import quantize_dynamic as ao

    with pytest.raises(tying.TieError, match=r"quantize_dynamic: 'b' is a tied module"):
        ao(_embeddings(), {nn.Embedding}, dtype=torch.quint8)


def _is_float_embedding(mod) -> bool:
    return isinstance(mod, nn.Embedding)


def test_a_tied_embedding_is_quantized_once_and_every_use_reads_it():
    m = _embeddings()
    q = quantize_dynamic(m, {nn.Embedding}, dtype=torch.quint8)
    assert q["b"] is q["a"] and not _is_float_embedding(q["a"])
    tying.verify(q)
    x = torch.arange(10)
    # weight-only 8-bit rows: within one quantization step of the float rows
    err = (q["b"](x) - m["b"](x)).abs().max().item()
    assert 0 < err < 0.01


@pytest.mark.parametrize("inplace", [False, True])
def test_an_embedding_with_the_default_dtype_is_refused_before_any_change(inplace):
    # before: torch's AssertionError "only supported with float_qparams_weight_only_qconfig",
    # and with inplace=True the tied seat 'b' was left as nn.Identity
    m = _embeddings()
    before = _state(m)
    with pytest.raises(
        TypeError,
        match=r"Embedding is quantized weight-only, with dtype "
        r"torch\.quint8, got torch\.qint8.*dtype=torch\.quint8\).*\['Linear'\]",
    ):
        quantize_dynamic(m, {nn.Linear, nn.Embedding}, inplace=inplace)
    assert type(m["b"]).__name__ == "TiedEmbedding" and _same_state(before, m.state_dict())
    tying.verify(m)


def test_embeddings_and_linears_in_one_call_are_refused_naming_the_two_calls():
    m = _embeddings()
    with pytest.raises(TypeError, match=r"\['Linear'\] cannot take dtype torch\.quint8.*two calls"):
        quantize_dynamic(m, {nn.Linear, nn.Embedding}, dtype=torch.quint8, inplace=True)
    assert isinstance(m["h"], nn.Linear) and type(m["b"]).__name__ == "TiedEmbedding"
    # the two calls the message names do it
    q = quantize_dynamic(quantize_dynamic(m, {nn.Embedding}, dtype=torch.quint8), {nn.Linear})
    assert q["b"] is q["a"] and _quantized(q["h"])
    tying.verify(q)


def test_a_failure_inside_torch_leaves_an_inplace_model_as_it_was(monkeypatch):
    import torch.ao.quantization as tq

    original = tq.quantize_dynamic

    def fails_after_swapping(model, *args, **kwargs):
        original(model, *args, **kwargs)
        raise RuntimeError("injected failure after torch swapped")

    monkeypatch.setattr(tq, "quantize_dynamic", fails_after_swapping)
    m = _stack()
    before, kinds = _state(m), [type(x) for x in m]
    with pytest.raises(RuntimeError, match="injected"):
        quantize_dynamic(m, {nn.Linear}, inplace=True)
    assert [type(x) for x in m] == kinds and _same_state(before, m.state_dict())
    assert not any("qconfig" in x.__dict__ for x in m.modules())
    tying.verify(m)


def test_an_embedding_tied_to_a_quantized_linear_source_is_caught():
    # the tied LM head the other way round (embedding reads the head): plain torch
    # quantizes the head and the embedding keeps a stale float copy; tying refuses
    from torch.ao.quantization import quantize_dynamic as ao

    def model():
        torch.manual_seed(0)
        m = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
        tying.Plan([tying.share("emb.weight", like="head.weight")]).apply(m)
        return m

    with pytest.raises(tying.TieError, match=r"emb\.weight: reads <a module outside the model>"):
        tying.verify(ao(model(), {nn.Linear}))
    with pytest.raises(
        tying.TieError, match=r"the tie emb\.weight <- head\.weight .* touches 'head'"
    ):
        quantize_dynamic(model(), {nn.Linear})


# -- stop 26 review: selected but left float -------------------------------------------


@pytest.mark.parametrize(
    ("model", "spec", "dtype", "match"),
    [
        (
            lambda: nn.Sequential(nn.Conv2d(2, 2, 3), nn.Linear(4, 4)),
            {nn.Conv2d, nn.Linear},
            torch.qint8,
            r"no dynamically quantized module for \['Conv2d'\]; they would stay float",
        ),
        (
            lambda: nn.Linear(4, 4),
            {nn.Linear},
            torch.qint8,
            r"the model itself is a Linear.*quantize_dynamic\(torch\.nn\.Sequential\(model\), \.\.\.\)\[0\]",
        ),
        (
            lambda: nn.Embedding(10, 4),
            {nn.Embedding},
            torch.quint8,
            r"the model itself is a Embedding.*would stay float",
        ),
    ],
    ids=["conv2d", "root-linear", "root-embedding"],
)
def test_a_selected_class_torch_would_leave_float_is_refused_before_any_change(
    model, spec, dtype, match
):
    # before: returned with those modules silently in float (torch does the same)
    m = model()
    before, kinds = _state(m), [type(x) for x in m.modules()]
    with pytest.raises(TypeError, match=match):
        quantize_dynamic(m, spec, dtype=dtype, inplace=True)
    assert [type(x) for x in m.modules()] == kinds and _same_state(before, m.state_dict())


def test_the_wrapped_root_the_message_names_is_quantized():
    q = quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear})[0]
    assert _quantized(q)


def test_a_selected_module_torch_leaves_float_is_caught_after_and_undone(monkeypatch):
    # the safety net: a torch that swaps nothing (simulated) leaves the model as it was
    import torch.ao.quantization as tq

    monkeypatch.setattr(tq, "quantize_dynamic", lambda model, *a, **k: model)
    m = _stack()
    kinds = [type(x) for x in m]
    with pytest.raises(
        tying.TieError, match=r"torch left '0', '2', '4' in float though Linear was selected"
    ):
        quantize_dynamic(m, {nn.Linear}, inplace=True)
    assert [type(x) for x in m] == kinds
    tying.verify(m)


def test_an_embedding_with_max_norm_is_refused_as_torch_would_drop_the_cap():
    # before: quantized; torch's quantized Embedding ignores max_norm, so rows of norm
    # 2.5 came out of a table capped at 0.5 (outputs 1.7 away), no error
    torch.manual_seed(0)
    m = nn.ModuleDict({"e": nn.Embedding(10, 4, max_norm=0.5), "f": nn.Embedding(10, 4)})
    with pytest.raises(TypeError, match=r"'e' is an Embedding with max_norm=0\.5.*exclude=\{'e'\}"):
        quantize_dynamic(m, {nn.Embedding}, dtype=torch.quint8, inplace=True)
    assert isinstance(m["f"], nn.Embedding)
    q = quantize_dynamic(m, {nn.Embedding}, dtype=torch.quint8, exclude={"e"})
    assert isinstance(q["e"], nn.Embedding) and not isinstance(q["f"], nn.Embedding)


def test_a_hand_tie_of_a_head_to_an_embedding_is_refused_with_a_fix_that_applies():
    # the refusal said to declare a tie of whole modules, which a Linear and an Embedding
    # cannot be (stop 33 review); the copy it names now quantizes
    torch.manual_seed(0)
    m = nn.ModuleDict({"emb": nn.Embedding(10, 8), "head": nn.Linear(8, 10, bias=False)})
    m["head"].weight = m["emb"].weight  # as HF's tie_word_embeddings does
    with pytest.raises(
        tying.TieError,
        match=r"Exclude it from quantization \(quantize_dynamic\(\.\.\., exclude=\{'head'\}\)\), "
        r"or 'head' \(Linear\) and 'emb' \(Embedding\) "
        r"cannot be one module.*tying\.Plan\(\[tying\.free\('head\.weight'\)\]\)",
    ):
        quantize_dynamic(m, {nn.Linear})
    assert m["head"].weight is m["emb"].weight
    tying.Plan([tying.free("head.weight")]).apply(m)
    q = quantize_dynamic(m, {nn.Linear})
    assert not isinstance(q["head"], nn.Linear) and isinstance(q["emb"], nn.Embedding)


# -- stop 35 review: a layer seated in two blocks under torchao -------------------------


def _two_blocks(seed: int = 0):
    torch.manual_seed(seed)
    shared = nn.Linear(32, 32)  # one layer in two blocks (a hand-built weight-tied net)
    return nn.Sequential(
        nn.Sequential(shared, nn.ReLU()), nn.Sequential(nn.Linear(32, 32), nn.ReLU(), shared)
    )


def test_torchao_quantizes_a_layer_seated_in_two_blocks_once():
    # torchao's walk reached the layer in each block and failed at the second on the
    # weight it had just quantized (NotImplementedError aten.view, half-way, naming nothing)
    config = _int8()
    from torchao.quantization import quantize_ as ao_quantize_

    m = _two_blocks()
    ref = copy.deepcopy(m)
    ref[1][2] = copy.deepcopy(ref[0][0])  # the untied reference: two copies
    with pytest.raises(NotImplementedError, match="aten.view"):  # what torchao alone does
        ao_quantize_(copy.deepcopy(m), _int8())
    x = torch.randn(4, 32)
    q = quantize_(m, config)
    assert q[1][2] is q[0][0] and type(q[0][0].weight).__name__ == "Int8Tensor"
    ao_quantize_(ref, _int8())
    with torch.no_grad():
        torch.testing.assert_close(q(x), ref(x), rtol=0, atol=0)


def test_torchao_filter_selecting_one_seat_of_a_layer_is_refused_before_any_change():
    config = _int8()
    m = _two_blocks()
    before = _state(m)
    with pytest.raises(
        tying.TieError,
        match=r"quantize_: the module at '0\.0' is also seated at '1\.2' \(one module reached "
        r"twice\), which filter_fn leaves out.*Select every seat \(\['0\.0', '1\.2'\]\)",
    ):
        quantize_(m, config, filter_fn=lambda mod, fqn: fqn == "0.0")
    assert type(m[0][0].weight) is nn.Parameter and _same_state(before, m.state_dict())


# -- stop 35 review: what torch's quantized EmbeddingBag ignores -------------------------


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_an_embedding_bag_that_does_not_sum_is_refused_before_any_change(mode):
    # torch's quantized EmbeddingBag passes mode 0 (sum) to its kernel whatever mode
    # says: mean bags came back 1.8 away, max bags 1.6, no error
    from torch.ao.quantization import float_qparams_weight_only_qconfig

    torch.manual_seed(0)
    m = nn.ModuleDict({"bag": nn.EmbeddingBag(10, 8, mode=mode), "h": nn.Linear(8, 8)})
    idx, off = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2])
    plain = _plain_ao_bag(m, float_qparams_weight_only_qconfig)
    assert (plain["bag"](idx, off) - m["bag"](idx, off)).abs().max() > 1.0  # what torch does
    with pytest.raises(
        TypeError,
        match=rf"'bag' is an EmbeddingBag with mode='{mode}'.*always sums \(expected "
        rf"mode='sum', got '{mode}'\).*exclude=\{{'bag'\}}",
    ):
        quantize_dynamic(m, {nn.EmbeddingBag}, dtype=torch.quint8, inplace=True)
    assert type(m["bag"]) is nn.EmbeddingBag
    q = quantize_dynamic(m, {nn.EmbeddingBag}, dtype=torch.quint8, exclude={"bag"})
    assert torch.equal(q["bag"](idx, off), m["bag"](idx, off))


def _plain_ao_bag(m, qconfig):
    from torch.ao.quantization import quantize_dynamic as ao

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # untied: torch.ao refuses a tied module (stop 56); its own swap of "a" is the same
        m = copy.deepcopy(m)
        tying.untie(m)
        return ao(m, {nn.EmbeddingBag: qconfig}, dtype=torch.quint8)


def test_a_tied_embedding_bag_with_a_non_zero_padding_row_is_refused():
    # the quantized EmbeddingBag has no padding_idx: a non-zero padding row was added
    # into every bag holding it (1.0 away, no error); zeroed, the float bags are unchanged
    # and the one quantized table serves both tied uses
    from torch.ao.quantization import float_qparams_weight_only_qconfig

    torch.manual_seed(0)
    m = nn.ModuleDict(
        {
            "a": nn.EmbeddingBag(10, 8, mode="sum", padding_idx=1),
            "b": nn.EmbeddingBag(10, 8, mode="sum"),
        }
    )
    tying.Plan([tying.share("b", like="a")]).apply(m)
    with torch.no_grad():
        m["a"].weight[1] = 1.0  # e.g. a checkpoint whose padding row is not zero
    idx, off = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2])
    plain = _plain_ao_bag(m, float_qparams_weight_only_qconfig)
    assert (plain["a"](idx, off) - m["a"](idx, off)).abs().max() > 0.9  # what torch does
    before = _state(m)
    with pytest.raises(
        TypeError,
        match=r"'a' is an EmbeddingBag with padding_idx=1 whose row is not zero.*"
        r"exclude=\{'a'\}.*weight\[1\] = 0",
    ):
        quantize_dynamic(m, {nn.EmbeddingBag}, dtype=torch.quint8)
    assert _same_state(before, m.state_dict())
    want = m["a"](idx, off)
    with torch.no_grad():
        m["a"].weight[1] = 0.0  # the fix the message names: float bags unchanged
    torch.testing.assert_close(m["a"](idx, off), want, rtol=0, atol=0)
    q = quantize_dynamic(m, {nn.EmbeddingBag}, dtype=torch.quint8)
    assert q["b"] is q["a"]
    torch.testing.assert_close(q["a"](idx, off), want, rtol=0, atol=0.02)


@pytest.mark.parametrize("dtype", [torch.quint8, torch.float32, torch.bfloat16, "qint8"])
def test_a_dtype_dynamic_linear_cannot_take_is_a_type_error_before_any_change(dtype):
    # torch raised "Unknown dtype specified" or a bare AssertionError
    m = _stack()
    before = _state(m)
    with pytest.raises(
        TypeError, match=r"\['Linear'\] are quantized with dtype torch\.qint8 or torch\.float16"
    ):
        quantize_dynamic(m, {nn.Linear}, dtype=dtype, inplace=True)
    assert type(m[0]) is nn.Linear and _same_state(before, m.state_dict())


# -- stop 35 review: hooks on a module tied whole ----------------------------------------


@pytest.mark.parametrize("where", ["tied", "source"])
def test_a_module_tied_whole_with_its_own_hooks_is_refused_before_any_change(where):
    # one quantized module serves both uses, so a hook on the tied module was dropped and
    # one on the source ran at both: outputs 0.19 / 0.39 away from the untied model
    # quantized by torch.ao (which keeps each module's hooks), no error
    m = _stack()
    x = torch.randn(3, 32)
    if where == "tied":
        handle = m[2].register_forward_hook(lambda mod, args, out: 2 * out)
    else:
        handle = m[0].register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
    ref = _plain_ao(_untied(m))
    before = _state(m)
    with pytest.raises(
        tying.TieError,
        match=r"quantize_dynamic: '2' is tied whole to '0' and would become the very same "
        r"module, but they carry different forward (pre-)?hooks .*handle's \.remove\(\)",
    ):
        quantize_dynamic(m, {nn.Linear}, inplace=True)
    assert type(m[2]) is not nn.Linear and _same_state(before, m.state_dict())  # still tied
    with torch.no_grad():
        assert (ref(x) - m(x)).abs().max() < 0.05  # torch.ao on the untied copy keeps the hook
    handle.remove()  # the fix the message names
    q = quantize_dynamic(m, {nn.Linear})
    assert q[2] is q[0]


def test_one_hook_registered_on_both_ends_is_kept():
    m = _stack()
    x = torch.randn(3, 32)

    def double(mod, args, out):
        return 2 * out

    m[0].register_forward_hook(double)
    m[2].register_forward_hook(double)
    ref = _plain_ao(_untied(m))
    q = quantize_dynamic(m, {nn.Linear})
    assert q[2] is q[0]
    with torch.no_grad():
        torch.testing.assert_close(q(x), ref(x), rtol=0, atol=0)
