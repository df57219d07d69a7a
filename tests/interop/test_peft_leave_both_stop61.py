"""get_peft_model's refusal of a tie with both ends targeted names both to leave out (stop 61).

With the embedding and the head of one tie both in ``target_modules`` (HF's own
``tie_word_embeddings`` tie, or a Plan tie), the advice named the module met first only:
leaving it out was refused again for the other end (two tries for one fix). Each advice is
followed here and must be accepted, with the tie kept.
"""

from __future__ import annotations

import re

import pytest
import torch

import tying
from tests.interop.test_quant_exclude_both_stop61 import _hf_tied_mistral
from tying.interop.lora import get_peft_model

peft = pytest.importorskip("peft")


class _LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.proj = torch.nn.Embedding(11, 8), torch.nn.Linear(8, 8)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)
        tying.Plan([tying.share("lm_head.weight", like="wte.weight")]).apply(self)

    def forward(self, x):
        return self.lm_head(torch.relu(self.proj(self.wte(x))))


def _left_out(err: pytest.ExceptionInfo) -> set[str]:
    said = re.search(r"(?i)leave ((?:'[^']+'(?: and )?)+) out of target_modules", str(err.value))
    return set(re.findall(r"'([^']+)'", said.group(1)))


@pytest.mark.parametrize(
    ("build", "ends", "other"),
    [
        (_hf_tied_mistral, {"model.embed_tokens", "lm_head"}, "q_proj"),
        (_LM, {"wte", "lm_head"}, "proj"),
    ],
    ids=["hf-tie", "plan-tie"],
)
def test_both_ends_targeted_advice_names_both_and_works(build, ends, other):
    model = build()
    targets = sorted(ends) + [other]
    with pytest.raises(tying.TieError, match="out of target_modules") as err:
        get_peft_model(model, peft.LoraConfig(r=2, target_modules=targets))
    assert _left_out(err) == ends
    kept = [t for t in targets if t not in _left_out(err)]
    pm = get_peft_model(model, peft.LoraConfig(r=2, target_modules=kept))  # followed: accepted
    base = pm.base_model.model
    assert base.lm_head.weight is base.get_submodule(sorted(ends - {"lm_head"})[0]).weight
    assert tying.verify(pm) >= 1


def test_both_ends_in_target_parameters_advice_names_both_and_works():
    model = _hf_tied_mistral()
    names = [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
    ]
    with pytest.raises(tying.TieError, match="out of target_parameters") as err:
        get_peft_model(model, peft.LoraConfig(r=2, target_modules=[], target_parameters=names))
    said = re.search(r"Leave ((?:'[^']+'(?: and )?)+) out of target_parameters", str(err.value))
    left = set(re.findall(r"'([^']+)'", said.group(1)))
    assert left == {"lm_head.weight", "model.embed_tokens.weight"}
    kept = [n for n in names if n not in left]
    pm = get_peft_model(model, peft.LoraConfig(r=2, target_modules=[], target_parameters=kept))
    base = pm.base_model.model
    assert base.lm_head.weight is base.model.embed_tokens.weight
