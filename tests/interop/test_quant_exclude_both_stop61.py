"""A quantization refusal whose two tie ends are both selected names both for exclusion (stop 61).

The refusal of a tie touching a selected module named only the module it met first: with
both ends selected (an HF-tied head and embedding under one ``filter_fn``, two Linears
sharing a weight by hand, a Plan tie of a head to an embedding) following the advice was
refused again for the other end, and ``quantize_dynamic``'s printed ``exclude=`` dropped the
caller's own entries (following it literally quantized a module the caller had excluded,
refused again). Each advice is followed here and must work.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import tying
from tests.interop import models as M
from tying.interop.quantization import quantize_, quantize_dynamic

T = M.transformers


def _advised_exclude(err: pytest.ExceptionInfo) -> set[str]:
    printed = re.search(r"exclude=\{([^}]*)\}", str(err.value)).group(1)
    return set(re.findall(r"'([^']+)'", printed))


def _advised_fqns(err: pytest.ExceptionInfo) -> set[str]:
    printed = re.search(r"returning False for the fqn ((?:'[^']+'(?: or )?)+)", str(err.value))
    return set(re.findall(r"'([^']+)'", printed.group(1)))


def _hand_pair():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    m[2].weight = m[0].weight  # their biases differ: no whole-module tie
    return m


@pytest.mark.parametrize("exclude", [(), ("2",), ("0",)])
def test_quantize_dynamic_hand_pair_advice_names_both_and_keeps_callers(exclude):
    m = _hand_pair()
    with pytest.raises(tying.TieError, match=r"exclude=\{'0', '2'\}") as err:
        quantize_dynamic(m, {nn.Linear}, exclude=exclude)
    q = quantize_dynamic(m, {nn.Linear}, exclude=_advised_exclude(err))  # followed: accepted
    assert q[2].weight is q[0].weight
    x = torch.randn(3, 4)
    assert torch.equal(q(x), m(x))


class _LM(nn.Module):
    """An embedding, one block and a head Plan-tied to the embedding (GPT-2's layout)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.block, self.lm_head = (
            nn.Embedding(11, 8),
            nn.Linear(8, 8),
            nn.Linear(8, 11, bias=False),
        )
        tying.Plan([tying.share("lm_head.weight", like="wte.weight")]).apply(self)

    def forward(self, x):
        return self.lm_head(torch.relu(self.block(self.wte(x))))

    def get_input_embeddings(self):
        return self.wte

    def get_output_embeddings(self):
        return self.lm_head


def test_quantize_dynamic_plan_tie_advice_keeps_callers_exclude():
    m = _LM()
    with pytest.raises(tying.TieError, match=r"exclude=\{'block', 'lm_head'\}") as err:
        quantize_dynamic(m, {nn.Linear}, exclude={"block"})
    q = quantize_dynamic(m, {nn.Linear}, exclude=_advised_exclude(err))
    assert type(q.block) is nn.Linear  # the caller's own exclusion kept
    assert q.lm_head.weight is q.wte.weight


def _hf_tied_mistral():
    torch.manual_seed(0)
    cfg = T.MistralConfig(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=32, num_hidden_layers=1,
        pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    return T.MistralForCausalLM(cfg).eval()


def _intx():
    pytest.importorskip("torchao")
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis

    return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))


def _linear_or_embedding(mod, fqn):
    return isinstance(mod, (nn.Linear, nn.Embedding))


@pytest.mark.parametrize("kind", ["hf", "plan"])
def test_quantize_both_ends_selected_advice_names_both_and_works(kind):
    from torchao.quantization import quantize_ as ao_quantize_

    if kind == "hf":
        model, pair = _hf_tied_mistral(), {"lm_head", "model.embed_tokens"}
    else:
        model, pair = _LM(), {"lm_head", "wte"}
    ref = copy.deepcopy(model)
    with pytest.raises(tying.TieError, match="returning False for the fqn") as err:
        quantize_(model, _intx(), _linear_or_embedding)
    assert _advised_fqns(err) == pair

    def followed(mod, fqn):
        return _linear_or_embedding(mod, fqn) and fqn not in _advised_fqns(err)

    quantize_(model, _intx(), followed)  # accepted; the tie kept in float
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if kind == "hf":
        ao_quantize_(ref, _intx(), followed)  # the same selection, torchao alone
        x = torch.randint(3, 61, (2, 6), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(model(x).logits, ref(x).logits)
