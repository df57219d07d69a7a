"""Stop 61: ghost clipping's Embedding refusals name the setting and give a fix that runs.

``max_norm``, ``scale_grad_by_freq`` and ``sparse`` were refused together ("uses
max_norm/scale_grad_by_freq/sparse ... use mode='vmap'"), trainable or frozen: the advice
was refused again by ``mode='vmap'`` for ``max_norm`` and ``sparse``, and a frozen
Embedding with ``sparse=True`` or ``scale_grad_by_freq=True`` (no gradient to get wrong)
could not be trained around at all.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import loop_grads
from tying.train import DPSGD, ghost_norms, per_example_grads


def sq(out, y):
    return (out - y).pow(2).flatten(1).sum(1)


class Bag(nn.Module):
    def __init__(self, **settings):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = nn.Embedding(7, 4, **settings), nn.Linear(4, 3)
        self.double()

    def forward(self, tokens):  # (B, T) -> (B, 3)
        return self.out(torch.tanh(self.emb(tokens)).mean(1))


TOKENS = torch.tensor([[1, 1, 2, 3], [4, 4, 4, 5], [0, 1, 6, 6]])  # repeats: freq matters
Y = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _loop_norms(model):
    grads = loop_grads(model, sq, TOKENS, Y)
    return torch.cat([g.flatten(1) for g in grads.values()], 1).norm(dim=1)


@pytest.mark.parametrize("setting", [{"sparse": True}, {"scale_grad_by_freq": True}])
def test_a_frozen_embedding_with_sparse_or_freq_is_taken_and_equals_the_loop(setting):
    model = Bag(**setting)
    model.emb.weight.requires_grad_(False)
    torch.testing.assert_close(ghost_norms(model, sq, TOKENS, Y), _loop_norms(model))
    dp = DPSGD(model, torch.optim.SGD(model.out.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.5, mode="ghost")  # fmt: skip
    dp.step(sq, TOKENS, Y)  # was refused at the constructor
    assert model.emb.weight.grad is None


def test_a_trained_sparse_embedding_is_told_sparse_false_which_runs():
    with pytest.raises(ValueError, match=r"embedding emb has sparse=True.*set sparse=False"):
        ghost_norms(Bag(sparse=True), sq, TOKENS, Y)
    model = Bag(sparse=False)  # the advice, followed
    torch.testing.assert_close(ghost_norms(model, sq, TOKENS, Y), _loop_norms(model))


def test_a_trained_freq_scaled_embedding_is_told_mode_vmap_which_equals_the_loop():
    model = Bag(scale_grad_by_freq=True)
    with pytest.raises(ValueError, match=r"emb has scale_grad_by_freq=True.*use mode='vmap'"):
        DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
              max_grad_norm=1.0, sample_rate=0.5, mode="ghost")  # fmt: skip
    got = per_example_grads(model, sq, TOKENS, Y)  # the advice, followed
    want = loop_grads(model, sq, TOKENS, Y)
    for name in want:
        torch.testing.assert_close(got[name], want[name])


@pytest.mark.parametrize("frozen", [False, True])
def test_max_norm_is_told_to_renormalise_after_the_step_not_to_use_vmap(frozen):
    model = Bag(max_norm=1.0)
    model.emb.weight.requires_grad_(not frozen)
    with pytest.raises(ValueError, match=r"emb has max_norm=1.0.*set max_norm=None and renorm"):
        ghost_norms(model, sq, TOKENS, Y)
    # the advice, followed: no max_norm in the forward, rows renormalised after the step
    model.emb.max_norm = None
    dp = DPSGD(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1),
               noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, mode="ghost")  # fmt: skip
    dp.step(sq, TOKENS, Y)
    with torch.no_grad():
        torch.embedding_renorm_(model.emb.weight, TOKENS.unique(), 1.0, 2.0)
    assert float(model.emb.weight.detach()[TOKENS.unique()].norm(dim=1).max()) <= 1.0 + 1e-6
