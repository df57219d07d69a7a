"""tying.hf.from_pretrained with a config override that changes the layout (stop 61).

``n_layer=2`` on a folder saved from a 3-layer Plan-tied GPT-2 (the distillation idiom: load
fewer layers) was refused with core's ``pattern 'transformer.h.2.ln_1.weight' matches no
parameter``, naming neither the recorded plan nor the override. The refusal now names both
and the two ways out, each followed here: load without the override, or pass ``plan=``
(then the model equals plain HF's load with the override, tied).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model = M.gpt2(False)
    M.GPT2_PLAN.apply(model)
    return hf.save_pretrained(model, tmp_path_factory.mktemp("gpt2"))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(M.ids(97)).logits


def test_layout_override_names_recorded_plan_and_override(folder):
    with pytest.raises(
        tying.TieError,
        match=r"the plan recorded in .*config\.json \(key 'tying'\) does not fit "
        r"GPT2LMHeadModel: the config override\(s\) n_layer=2 .*Load without n_layer, or "
        r"call tying\.hf\.from_pretrained\(\.\.\., plan=tying\.Plan",
    ):
        hf.from_pretrained(T.GPT2LMHeadModel, folder, n_layer=2)
    again = hf.from_pretrained(T.GPT2LMHeadModel, folder)  # first way out
    assert len(again.transformer.h) == 3 and tying.verify(again) > 0


def test_layout_override_with_plan_loads_as_plain_hf_tied(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = hf.from_pretrained(T.GPT2LMHeadModel, folder, n_layer=2, plan=M.GPT2_PLAN)
    plain = T.GPT2LMHeadModel.from_pretrained(folder, n_layer=2)
    assert len(model.transformer.h) == 2
    assert torch.equal(_logits(model), _logits(plain))
    assert model.transformer.h[1].attn.c_attn.weight is model.transformer.h[0].attn.c_attn.weight
    assert model.lm_head.weight is model.transformer.wte.weight
