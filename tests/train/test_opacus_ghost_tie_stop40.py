"""Opacus' own ghost clipping on a hand-made tie between Linear/Embedding uses is loud,
not wrong (stop 40; stop 41 found a mixed tie it gets wrong silently, see
``test_opacus_ghost_mixed_tie_stop41.py``).

Stop 39 left open whether Opacus' ``GradSampleModuleFastGradientClipping`` (ghost
clipping) misses one use of a tied weight in the per-example norms. Run, Opacus 1.6
refuses the tie at the forward (``capture_activations_hook`` counts the uses of each
parameter). This pins that refusal, so an Opacus upgrade that drops it is noticed, and
shows that tying's own per-example path gives the brute-force norms on the same model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.train import per_example_grads

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


class _HandTied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight  # the tie, by hand

    def forward(self, x):
        return self.head(self.emb(x).mean(1))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 7, (5, 3), generator=g), torch.randint(0, 7, (5,), generator=g)


def _brute_norms(model, x, y):
    norms = []
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())))
    return torch.stack(norms)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_opacus_ghost_clipping_refuses_a_hand_tie_instead_of_missing_a_use():
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    torch.manual_seed(0)
    model = _HandTied()
    gsm = GradSampleModuleFastGradientClipping(model, max_grad_norm=1e9, use_ghost_clipping=True)
    x, _ = _batch()
    with pytest.raises(NotImplementedError, match="Parameter tying is not supported"):
        gsm(x)


def test_tyings_per_example_norms_on_the_same_hand_tie_equal_brute_force():
    torch.manual_seed(0)
    model = _HandTied()
    x, y = _batch()
    want = _brute_norms(model, x, y)
    grads = per_example_grads(
        model, lambda out, t: nn.functional.cross_entropy(out, t, reduction="sum"), x, y
    )
    got = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in grads.values()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
