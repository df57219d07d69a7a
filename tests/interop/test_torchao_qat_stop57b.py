"""torchao QAT (``QATConfig`` prepare / convert) through ``tying.interop.quantization.quantize_``.

A QAT config replaces each selected ``nn.Linear`` with a ``FakeQuantizedLinear`` (a
module swap, where the weight configs swap the weight in place). The module tied whole
to it was skipped and kept reading a module no longer in the model: ``quantize_``
returned, and every later forward was a ``TieError`` telling the user to "apply the tool
through tying.interop", the very function they had called (stop 57). The new module now
serves both paths; prepare and convert equal torchao on the untied copy.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import tying
from tests.interop import models as M
from tying.interop.quantization import quantize_

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torchao.quantization as tq
    from torchao.quantization.qat import QATConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _base():
    return tq.Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=tq.PerGroup(32)
    )


def _pair():
    torch.manual_seed(0)
    tied = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    untied = copy.deepcopy(tied)
    untied[2].load_state_dict(untied[0].state_dict())
    tying.Plan([tying.share("2", like="0")]).apply(tied)
    return tied, untied


def test_qat_prepare_and_convert_of_a_whole_tie_equal_torchao_on_the_untied_copy():
    tied, untied = _pair()
    x = torch.randn(4, 32)
    for step in ("prepare", "convert"):
        quantize_(tied, QATConfig(_base(), step=step))
        tq.quantize_(untied, QATConfig(_base(), step=step))
        assert tied[2] is tied[0]
        assert type(tied[0]) is type(untied[0])
        assert torch.equal(tied(x), untied(x))
        tying.verify(tied)
    assert type(tied[0].weight) is type(untied[0].weight) is not nn.Parameter


def test_qat_on_a_plan_tied_llama_equals_torchao_on_the_untied_copy():
    tied = M.llama()
    M.LLAMA_PLAN.apply(tied)
    untied = copy.deepcopy(tied)
    tying.untie(untied)
    x = M.ids(70)

    def keep_head(m, fqn):
        return isinstance(m, nn.Linear) and fqn != "lm_head"

    quantize_(tied, QATConfig(_base(), step="prepare"), filter_fn=keep_head)
    tq.quantize_(untied, QATConfig(_base(), step="prepare"), filter_fn=keep_head)
    assert torch.equal(M.logits(tied, x), M.logits(untied, x))
    mlp = tied.model.layers
    assert mlp[2].mlp.up_proj is mlp[0].mlp.up_proj


def test_qat_refused_over_a_hook_of_the_tied_module_leaves_the_model_as_it_was():
    tied, _ = _pair()
    tied[2].register_forward_hook(lambda mod, i, o: o * 2)
    x = torch.randn(3, 32)
    ref, children, weight = tied(x), dict(tied._modules), tied[0].weight
    with pytest.raises(tying.TieError, match=r"'2' is tied whole to '0' .* forward hooks"):
        quantize_(tied, QATConfig(_base(), step="prepare"))
    assert dict(tied._modules) == children
    assert tied[0].weight is weight
    assert torch.equal(tied(x), ref)


def test_torchao_failing_half_way_leaves_the_model_as_it_was_and_names_the_layer():
    # IntxWeightOnlyConfig's group of 32 fits the first layers, not the 48-wide input of
    # layer '3': torchao failed there with the layers before it quantized, naming none
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 48), nn.Linear(48, 8))
    tying.Plan([tying.share("1", like="0")]).apply(m)
    x = torch.randn(3, 32)
    ref, weights, text = m(x), [m[i].weight for i in (0, 2, 3)], repr(m)
    config = tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerGroup(32))
    with pytest.raises(AssertionError, match="divisible") as info:
        quantize_(m, config)
    assert any("failed at '3'; the model is as it was" in n for n in info.value.__notes__)
    assert all(m[i].weight is w for i, w in zip((0, 2, 3), weights))
    assert torch.equal(m(x), ref)
    assert repr(m) == text  # no quantized-weight extra_repr left on a float layer
