"""Stop 53: a resize made under ``td.ddp`` (Hugging Face's own ``resize_token_embeddings``
swaps ``.data`` for a larger table) is seen only at the next training forward, when the
model is already changed. The refusal named the change and said to resize before
wrapping, but not how to go on from the changed model; it now names both ways (resize
back and train on with this wrapper, or wrap again), and both are checked here to work.
A plain module whose table grows the way Hugging Face grows it stands in for a
transformers model (the same check, without importing transformers).
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import tying
import tying.distributed as td

pytestmark = pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default")


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)

    def forward(self, x):  # (B,) -> (B, V)
        return self.head(torch.tanh(self.emb(x)))


def _grow(m: LM, rows: int) -> None:
    """What transformers' resize does to a tied table: the same Parameter, new ``.data``."""
    old = m.emb.weight
    new = torch.zeros(rows, old.shape[1])
    n = min(rows, old.shape[0])
    new[:n] = old.data[:n]
    old.data = new


def _lm() -> LM:
    torch.manual_seed(0)
    m = LM()
    m.head.weight = m.emb.weight  # tied as transformers ties (one Parameter, two modules)
    return m


def _step(wrapped: nn.Module) -> None:
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    opt.zero_grad()
    wrapped(torch.tensor([1, 2, 3])).pow(2).mean().backward()
    opt.step()


def test_a_resize_under_td_ddp_names_the_change_and_both_ways_on(group):
    m = _lm()
    wrapped = td.ddp(m)
    _grow(m, 12)
    x = torch.tensor([1, 2, 3])
    with pytest.raises(
        tying.TieError,
        match=r"changed in place: emb\.weight \(10, 4\) float32 -> \(12, 4\) float32.*"
        r"The model inside already holds the change: either undo it and train on with this "
        r"wrapper .*emb\.weight had 10 rows; Hugging Face: "
        r"model\.resize_token_embeddings\(10\) keeps the first 10\).*or keep it and wrap "
        r"again: inner = wrapped\.module; del wrapped; wrapped = td\.ddp\(inner\)",
    ):
        wrapped(x)
    # way 1: resize back, train on with the same wrapper
    kept = m.emb.weight.detach()[:10].clone()
    _grow(m, 10)
    assert torch.equal(m.emb.weight.detach(), kept)
    _step(wrapped)
    tying.verify(m)
    assert m.head.weight is m.emb.weight
    # way 2: keep the resize, wrap again
    _grow(m, 12)
    inner = wrapped.module
    del wrapped
    gc.collect()
    wrapped = td.ddp(inner)
    before = inner.emb.weight.detach().clone()
    _step(wrapped)
    tying.verify(inner)
    assert inner.emb.weight.shape == (12, 4)
    assert not torch.equal(inner.emb.weight.detach(), before)  # it trained


def test_a_dtype_change_under_td_ddp_names_no_resize(group):
    m = _lm()
    wrapped = td.ddp(m)
    m.double()
    with pytest.raises(
        tying.TieError, match=r"model\.to the old dtype or device\), or keep"
    ) as err:
        wrapped(torch.tensor([1]))
    assert "resize back" not in str(err.value)
