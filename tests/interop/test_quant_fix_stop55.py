"""The refusals of a tie touching a quantized module name the argument of the call made
(stop 55): ``quantize_`` was told to pass ``quantize_dynamic(..., exclude=...)`` and
``quantize_dynamic`` to pass a ``filter_fn``, neither of which that function takes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tying
from tying.interop.quantization import quantize_, quantize_dynamic

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torchao.quantization as tq


def _model(hand: bool):
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {"emb": nn.Embedding(40, 32), "lin": nn.Linear(32, 32), "head": nn.Linear(32, 40)}
    )
    if hand:
        m["head"].weight = m["emb"].weight  # as HF's tie_word_embeddings does
    else:
        tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def _out(m, x):
    with torch.no_grad():
        return m["head"](torch.relu(m["lin"](m["emb"](x))))


@pytest.mark.parametrize("hand", [False, True], ids=["plan", "hand"])
def test_quantize_refusal_names_its_own_filter_fn_and_that_fix_works(hand):
    m = _model(hand)
    with pytest.raises(
        tying.TieError,
        match=r"quantize_\(\.\.\., filter_fn=\.\.\.\) returning False for the fqn 'head'",
    ) as err:
        quantize_(m, tq.Int8WeightOnlyConfig())
    assert "exclude=" not in str(err.value)
    x = torch.arange(10)[None]
    ref = _model(hand)
    tying.untie(ref)
    tq.quantize_(ref, tq.Int8WeightOnlyConfig(), filter_fn=lambda mod, fqn: fqn == "lin")
    q = quantize_(
        m,
        tq.Int8WeightOnlyConfig(),
        filter_fn=lambda mod, fqn: isinstance(mod, nn.Linear) and fqn != "head",
    )
    torch.testing.assert_close(_out(q, x), _out(ref, x), rtol=0, atol=0)
    assert q["head"].weight is q["emb"].weight


@pytest.mark.parametrize("hand", [False, True], ids=["plan", "hand"])
def test_quantize_dynamic_refusal_names_exclude_not_a_filter_fn(hand):
    m = _model(hand)
    with pytest.raises(
        tying.TieError, match=r"quantize_dynamic\(\.\.\., exclude=\{'head'\}\)"
    ) as err:
        quantize_dynamic(m, {nn.Linear})
    assert "filter_fn" not in str(err.value)
