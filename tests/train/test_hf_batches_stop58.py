"""Batches the way transformers users write them (stop 58).

Checked on tiny tied transformers models (5.25; 2 layers, hidden 16, vocab 50; GPT-2,
Llama, BERT-MLM, T5, BART), reproduced here in plain torch so the tests stay fast:

- a dict ``x`` ({input_ids, attention_mask, labels}) was refused with "pass a tuple of
  tensors", which in the dict's order crashed GPT-2 (its second parameter is
  ``past_key_values``) and gave Llama other logits (labels read as ``position_ids``, 4.5e-4
  off, no error). The refusal now reads the forward's signature: the tuple in its order,
  or a wrapper that calls the model by keyword, whose gradients equal a loop's;
- with an ``attention_mask``, every one of them failed in ``mode='vmap'`` with torch's
  "vmap: It looks like you're either (1) calling .item() ... data-dependent control
  flow", naming no line: transformers' mask helpers read the mask's values in Python.
  The refusal names the function and line and, for those helpers, the fix (GPT-2/Llama
  with ``attn_implementation='eager'``: 4.8e-7 / 3.0e-7 off a loop; BERT/T5/BART with the
  4-d additive mask: 7.2e-7 / 1.3e-6 / 2.1e-7; DPSGD on GPT-2 then: the tie held,
  epsilon 2.1477 as Opacus' RDPAccountant for the same run).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tests.train.models import loop_grads
from tying.train import DPSGD, per_example_grads


def seq_ce(logits, y):  # (B, T, V), (B, T) -> (B,); -100 marks padding
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=-100).sum(1)


class CacheFirst(nn.Module):
    """GPT-2's order of forward parameters: the cache before the attention mask."""

    def __init__(self, vocab=11, d=4):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(self)

    def forward(self, input_ids, past_key_values=None, attention_mask=None):
        h = torch.tanh(self.embed(input_ids))  # (B, T, d)
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.lm_head(h)


class MaskSecond(CacheFirst):
    def forward(self, input_ids, attention_mask=None):
        return super().forward(input_ids, None, attention_mask)


def _batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 11, (4, 6), generator=g)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_a_dict_batch_is_told_the_wrapper_that_runs_when_the_order_differs():
    model, batch = CacheFirst(), _batch()
    with pytest.raises(
        TypeError,
        match=r"got a dict; the dict holds \['input_ids', 'attention_mask', 'labels'\]; labels "
        r"are the targets: pass them as y.*CacheFirst.forward takes \(input_ids, "
        r"past_key_values, attention_mask, \.\.\.\) positionally, not the dict's order.*"
        r"def forward\(self, input_ids, attention_mask\): return self.m\(input_ids=input_ids, "
        r"attention_mask=attention_mask\); then pass ByName\(model\) and "
        r"x=\(x\['input_ids'\], x\['attention_mask'\],\)",
    ):
        per_example_grads(model, seq_ce, batch, batch["labels"])

    class ByName(torch.nn.Module):  # the message's wrapper, as written there
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask)

    x = (batch["input_ids"], batch["attention_mask"])
    got = per_example_grads(ByName(model), seq_ce, x, batch["labels"])
    want = loop_grads(_Joined(ByName(model)), seq_ce, torch.stack(x, 1), batch["labels"])
    assert set(want) == {f"m.{k}" for k in got} and len(got) == 1  # one tensor: the tie
    for k, g in got.items():
        assert torch.allclose(g, want[f"m.{k}"], atol=1e-6), k


class _Joined(nn.Module):  # loop_grads slices one tensor: (B, 2, T) -> the two inputs
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, both):
        return self.m(both[:, 0].long(), both[:, 1])


def test_a_dict_batch_in_the_forwards_order_is_told_that_tuple_and_a_step_changes_nothing():
    model, batch = MaskSecond(), _batch()
    dp = DPSGD(
        model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
        max_grad_norm=1.0, sample_rate=0.1,
    )  # fmt: skip
    before = model.embed.weight.detach().clone()
    with pytest.raises(
        TypeError,
        match=r"MaskSecond.forward takes them in this order: "
        r"x=\(x\['input_ids'\], x\['attention_mask'\],\)$",
    ):
        dp.step(seq_ce, {k: batch[k] for k in ("input_ids", "attention_mask")}, batch["labels"])
    assert dp.steps == 0 and torch.equal(model.embed.weight, before)
    dp.step(seq_ce, (batch["input_ids"], batch["attention_mask"]), batch["labels"], n_data=40)
    assert dp.steps == 1 and model.lm_head.weight is model.embed.weight


def _all_kept(mask):  # transformers' sdpa helper: skip the mask when no token is padding
    return bool(mask.all())


class SkipsFullMask(MaskSecond):
    def forward(self, input_ids, attention_mask):
        if _all_kept(attention_mask):
            attention_mask = None
        return super().forward(input_ids, attention_mask)


class WhereMask(MaskSecond):  # the same function without Python reading the mask
    def forward(self, input_ids, attention_mask):
        return super().forward(input_ids, torch.where(attention_mask > 0, attention_mask, 0.0))


def test_vmap_names_the_line_that_reads_a_tensors_value_and_its_fix_runs():
    batch = _batch()
    x, y = (batch["input_ids"], batch["attention_mask"]), batch["labels"]
    model = SkipsFullMask()
    before = model.embed.weight.detach().clone()
    with pytest.raises(
        ValueError,
        match=r"reads a tensor's value in Python in _all_kept \(.*test_hf_batches_stop58.py:\d+: "
        r"return bool\(mask.all\(\)\)\), which torch.func.vmap cannot run.*torch.where.*"
        r"No parameter changed",
    ):
        per_example_grads(model, seq_ce, x, y)
    assert torch.equal(model.embed.weight, before)
    got = per_example_grads(WhereMask(), seq_ce, x, y)
    want = loop_grads(_Joined(MaskSecond()), seq_ce, torch.stack(x, 1), y)
    assert set(want) == {f"m.{k}" for k in got} and len(got) == 1  # one tensor: the tie
    for k, g in got.items():
        assert torch.allclose(g, want[f"m.{k}"], atol=1e-6), k


def test_transformers_mask_helpers_get_their_own_fix():
    from tying.train.per_example_refusals import _refuse_data_dependent_flow

    def _ignore_bidirectional_mask_sdpa(m):  # as transformers' masking_utils names it
        return torch.zeros(()) if m.all() else m.sum()

    try:
        torch.func.vmap(_ignore_bidirectional_mask_sdpa)(torch.ones(2, 3))
    except RuntimeError as err:
        with pytest.raises(ValueError, match=r"4-d additive form.*torch.finfo\(torch.float32\)"):
            _refuse_data_dependent_flow(err)
    else:
        pytest.fail("vmap ran a branch on a tensor's value")


def test_a_dict_key_the_forward_has_no_parameter_for_is_told_the_forwards_order():
    """A keyword wrapper would fail there too (Linear has no parameter 'x')."""
    with pytest.raises(
        TypeError, match=r"Linear.forward has no parameter x \(it takes \(input\)\): pass x as a "
    ):
        per_example_grads(nn.Linear(3, 2), seq_ce, {"x": torch.randn(4, 3)}, torch.zeros(4))
