"""peft methods other than LoRA through ``tying.interop.lora``: prompt learning and configs
that do not save ``exclude_modules``.

Stop 52, each against plain peft on the same model:

- ``from_pretrained`` of a prompt-tuning adapter on a model with a whole-module tie
  crashed (``AttributeError: LlamaModel has no attribute `model```): it looked for the
  modules under ``pm.base_model.model``, which under prompt learning is the model's own
  inner module. ``get_peft_model`` also set ``merge_and_unload`` / ``unload`` as
  attributes of the user's own model.
- VeRA (``VeraConfig`` has no ``exclude_modules`` field) on a stack tied whole: the
  shared adapter trained, but ``save_pretrained`` dropped the exclusion of the tied paths,
  so ``from_pretrained`` of that folder was refused (``TieError: ... moved to
  ...base_layer``). The exclusion is made again at load time, only where the file holds
  no adapter weights under a tied path. The same refusal hit a LoRA / IA3 adapter plain
  peft made on the stack tied by hand (one block object at every layer).
"""

from __future__ import annotations

import pytest
import torch

import tying

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tests.interop.models import LLAMA_PLAN, ids, llama  # noqa: E402
from tying.interop.lora import from_pretrained, get_peft_model, merge_and_unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")
X = ids(70, batch=2, seq=5)


def _tied_llama():
    m = llama(False)
    LLAMA_PLAN.apply(m)  # the MLP tied whole across layers, the head to the embedding
    return m


def _out(pm) -> torch.Tensor:
    with torch.no_grad():
        return pm(input_ids=X).logits


def _prompt_folder(tmp_path):
    torch.manual_seed(3)
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    pm = get_peft_model(_tied_llama(), cfg)
    with torch.no_grad():  # trained virtual tokens
        pm.prompt_encoder["default"].embedding.weight.normal_()
    pm.save_pretrained(tmp_path)
    return pm


def test_a_prompt_tuning_adapter_loads_on_a_model_with_a_whole_module_tie_as_plain_peft(tmp_path):
    made = _prompt_folder(tmp_path)
    # before: AttributeError: LlamaModel has no attribute `model`
    ours = from_pretrained(_tied_llama(), tmp_path)
    anchor = peft.PeftModel.from_pretrained(_tied_llama(), tmp_path)
    assert torch.equal(_out(ours), _out(anchor))
    assert torch.equal(_out(ours), _out(made))
    base = ours.get_base_model()
    assert base.model.layers[2].mlp.gate_proj.weight is base.model.layers[0].mlp.gate_proj.weight
    assert tying.verify(base) == tying.verify(_tied_llama())


def test_prompt_tuning_leaves_the_users_model_alone_and_merging_it_is_refused_by_name(tmp_path):
    made = _prompt_folder(tmp_path)
    base = made.get_base_model()
    # before: the user's LlamaForCausalLM got merge_and_unload / unload instance attributes
    assert "merge_and_unload" not in vars(base) and "unload" not in vars(base)
    with pytest.raises(TypeError, match=r"merge_and_unload: the active adapter 'default' is "
                       r"PROMPT_TUNING, a prompt-learning method.*pm.get_base_model\(\)"):  # fmt: skip
        merge_and_unload(made)
    with pytest.raises(TypeError, match=r"unload: .* nothing to unload"):
        made.unload()


def _gpt2_stack():
    from tests.interop.models import gpt2

    m = gpt2(False)
    tying.Plan([tying.share("transformer.h.*", like="transformer.h.0")]).apply(m)
    return m


def _vera():
    return peft.VeraConfig(r=4, target_modules=["c_fc"], fan_in_fan_out=True, init_weights=False)


def test_a_vera_adapter_shared_by_a_tied_stack_round_trips_and_equals_the_untied_anchor(tmp_path):
    torch.manual_seed(0)
    pm = get_peft_model(_gpt2_stack(), _vera())
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "vera_lambda" in name:
                p.normal_()
    pm.save_pretrained(tmp_path)
    # before: TieError: from_pretrained: wrapping broke a tie, undone: ... moved to base_layer
    again = from_pretrained(_gpt2_stack(), tmp_path)
    blocks = again.base_model.model.transformer.h
    assert blocks[2].mlp.c_fc is blocks[0].mlp.c_fc  # one shared adapter again
    with torch.no_grad():
        got = again(input_ids=X, use_cache=False).logits
    # anchor: plain peft on the untied model, every layer given layer 0's weights and lambdas
    from tests.interop.models import gpt2

    seed = pm.peft_config["default"].projection_prng_key
    cfg = _vera()
    cfg.projection_prng_key = seed
    untied = peft.get_peft_model(gpt2(False), cfg)
    state = pm.state_dict()
    with torch.no_grad():
        for name, p in untied.named_parameters():
            p.copy_(state[name.replace(".h.1.", ".h.0.").replace(".h.2.", ".h.0.")])
    with torch.no_grad():
        want = untied(input_ids=X, use_cache=False).logits
    assert torch.equal(got, want)


def test_a_vera_file_with_a_weight_per_tied_layer_is_still_refused(tmp_path):
    from tests.interop.models import gpt2

    torch.manual_seed(0)
    peft.get_peft_model(gpt2(False), _vera()).save_pretrained(tmp_path)  # untied: 3 adapters
    model = _gpt2_stack()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # sharing layer 0's adapter would drop layers 1 and 2's saved weights silently
    with pytest.raises(tying.TieError, match=r"transformer.h.1.mlp.c_fc reads "):
        from_pretrained(model, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tying.verify(model) == tying.verify(_gpt2_stack())


def _hand_tied_gpt2():
    from tests.interop.models import gpt2

    m = gpt2(False)
    for i in (1, 2):  # the same stack tied by hand: one block object at every layer
        m.transformer.h[i] = m.transformer.h[0]
    return m


@pytest.mark.parametrize(
    "config",
    [
        lambda: peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True,
                                init_lora_weights=False),
        lambda: peft.IA3Config(target_modules=["c_attn", "mlp.c_proj"], fan_in_fan_out=True,
                               feedforward_modules=["mlp.c_proj"], init_ia3_weights=False),
    ],
    ids=["lora", "ia3"],
)  # fmt: skip
def test_an_adapter_plain_peft_made_on_the_stack_tied_by_hand_loads_shared(tmp_path, config):
    torch.manual_seed(0)
    anchor = peft.get_peft_model(_hand_tied_gpt2(), config()).eval()
    anchor.save_pretrained(tmp_path)  # one adapter in the file: layer 0's
    # before: TieError: from_pretrained: wrapping broke a tie, undone: ... moved to base_layer
    ours = from_pretrained(_gpt2_stack(), tmp_path).eval()
    blocks = ours.base_model.model.transformer.h
    assert blocks[1].attn.c_attn is blocks[0].attn.c_attn
    with torch.no_grad():  # no cache: the hand-tied blocks share one layer_idx
        want = anchor(input_ids=X, use_cache=False).logits
        assert torch.equal(ours(input_ids=X, use_cache=False).logits, want)


def test_a_mixed_peft_model_still_shares_one_adapter_and_merges_once():
    # guard for the base-model lookup above: PeftMixedModel has no get_base_model and a list
    # for active_adapter; the shared wrapper and the merge must be as for a PeftModel
    torch.manual_seed(0)
    lora = peft.LoraConfig(r=2, target_modules=["gate_proj"], init_lora_weights=False)
    pm = get_peft_model(_tied_llama(), lora, mixed=True)
    layers = pm.base_model.model.model.layers
    assert layers[2].mlp.gate_proj is layers[0].mlp.gate_proj
    want = _out(pm)
    merged = pm.merge_and_unload()
    torch.testing.assert_close(_out(merged), want, rtol=0, atol=1e-5)
    assert merged.model.layers[2].mlp is not merged.model.layers[0].mlp
    assert (
        merged.model.layers[2].mlp.gate_proj.weight is merged.model.layers[0].mlp.gate_proj.weight
    )
    assert tying.verify(merged) == tying.verify(_tied_llama())
