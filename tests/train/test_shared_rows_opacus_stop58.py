"""A layer Opacus samples, called on a table shared by every example (stop 58).

GPT-2 calls its position embedding ``transformer.wpe`` on ``position_ids`` of shape
``(1, T)``, broadcast over the batch. Opacus' hooks read example b's per-sample gradient
from row b of the layer's input, so ``wpe.weight.grad_sample`` held one row (the batch's
sum, 3.54 off each example's loop gradient, whose entries reach 1.92) on a tiny tied GPT-2
(transformers 5.25, 2 layers, hidden 16, vocab 50, B=4, T=7), with no error until Opacus'
DPOptimizer failed on "stack expects each tensor to be equal size, but got [4] ... [1]",
naming no layer. :class:`GPTLike` is the same forward in plain
torch. Now refused by name before the layer runs; the fix the message gives (expand the
positions to one row per example) gives a loop's gradients.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tests.train.models import loop_grads
from tying.train import grad_sample_module

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


class GPTLike(nn.Module):
    """Token and position embeddings, a tied output layer (GPT-2's shape of forward)."""

    def __init__(self, expand=False, vocab=11, d=4, t_max=8):
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(t_max, d)
        self.mix = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        tying.Plan([tying.share("lm_head.weight", like="wte.weight")]).apply(self)
        self.expand = expand

    def forward(self, tok):  # (B, T) -> (B, T, V)
        pos = torch.arange(tok.shape[1])[None]  # (1, T): one table for every example
        if self.expand:
            pos = pos.expand(tok.shape[0], -1)  # (B, T): one row per example
        h = self.wte(tok) + self.wpe(pos)
        return self.lm_head(torch.tanh(self.mix(h)))


def seq_ce(logits, y):  # (B, T, V), (B, T) -> (B,); -100 marks padding
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=-100).sum(1)


def _batch():
    g = torch.Generator().manual_seed(3)
    tok = torch.randint(0, 11, (4, 6), generator=g)
    y = torch.randint(0, 11, (4, 6), generator=g)
    y[1, 4:] = -100
    return tok, y


def _hooks_backward(model, tok, y):
    gsm = grad_sample_module(model, loss_reduction="sum")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        seq_ce(gsm(tok), y).sum().backward()
    return gsm


def test_a_shared_position_table_is_refused_by_name_before_the_layer_runs():
    model = GPTLike()
    tok, y = _batch()
    gsm = grad_sample_module(model, loss_reduction="sum")
    with pytest.raises(
        ValueError,
        match=r"wpe \(Embedding\) is called on an input of 1 rows \(shape \(1, 6\)\) where the "
        r"batch has 4.*position_ids=torch.arange\(T\).expand\(B, T\).*mode='vmap'",
    ):
        gsm(tok)
    # what Opacus recorded for the layers before it (wte) is taken back
    assert not model.wte.__dict__.get("activations")
    assert getattr(model.wte.weight, "grad_sample", None) is None
    gsm._close()


def test_the_advice_expanded_positions_gives_the_loops_per_sample_gradients():
    tok, y = _batch()
    want = loop_grads(GPTLike(expand=True), seq_ce, tok, y)
    model = GPTLike(expand=True)
    gsm = _hooks_backward(model, tok, y)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad_sample, want[name], atol=1e-6), name
    assert model.lm_head.weight is model.wte.weight  # the tie still holds
    gsm._close()


def test_a_batch_of_one_and_an_eval_forward_are_not_refused():
    """One row where the batch has one is that example's; no_grad forwards take no sample."""
    model = GPTLike()
    tok, y = _batch()
    gsm = _hooks_backward(model, tok[:1], y[:1])
    want = loop_grads(GPTLike(), seq_ce, tok[:1], y[:1])
    assert torch.allclose(model.wpe.weight.grad_sample, want["wpe.weight"], atol=1e-6)
    with torch.no_grad():
        assert gsm(tok).shape == (4, 6, 11)
    gsm._close()
