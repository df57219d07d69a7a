"""Opacus' own ghost clipping on a hand tie whose later use has no ghost norm sampler
(stop 41).

Stop 40 found Opacus 1.6 refusing a hand tie under ghost clipping, and called it loud.
It is loud only when the *later* use is by an ``nn.Linear``/``nn.Embedding`` (the types
in ``NORM_SAMPLERS``, where ``capture_activations_hook`` checks the use count). A
Linear's bias read again as a LayerNorm's weight is counted, not refused, and the
per-example norms come out up to 18 % low with no error (the first test's batch: -0.6
to 17.6 %): under-clipping, so a weaker privacy guarantee than the one reported. The first test pins that upstream behaviour
(if it fails, Opacus has fixed it: update docs/train.md); the others show tying's
paths on the same model: ``ghost_norms`` refuses it naming the tied pair, and
``per_example_grads`` gives the brute-force norms.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tying.train import ghost_norms, per_example_grads

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


class _BiasIsNormWeight(nn.Module):
    """``l1.bias`` is ``n1.weight``: one Parameter, a Linear's use first, a LayerNorm's second."""

    def __init__(self, width=6):
        super().__init__()
        self.l1, self.n1 = nn.Linear(4, width), nn.LayerNorm(width)
        self.l2, self.out = nn.Linear(width, width), nn.Linear(width, 1)
        self.l1.bias = self.n1.weight  # the tie, by hand

    def forward(self, x):
        return self.out(torch.tanh(self.l2(self.n1(self.l1(x)))))


def _model(seed, width=6):
    torch.manual_seed(seed)
    model = _BiasIsNormWeight(width)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _mse(out, y):
    return ((out - y) ** 2).sum(-1)


def _batch(seed, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)


def _brute_norms(model, x, y):
    norms = []
    for i in range(len(x)):
        model.zero_grad()
        _mse(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())))
    return torch.stack(norms)


def _opacus_ghost_norms(model, x, y):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    gsm = GradSampleModuleFastGradientClipping(
        model, batch_first=True, loss_reduction="sum", use_ghost_clipping=True, max_grad_norm=1e9
    )
    _mse(gsm(x), y).sum().backward()
    return gsm.get_norm_sample().detach()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Opacus' full backward hook on the input
def test_opacus_ghost_clipping_counts_this_hand_tie_without_refusing_and_its_norms_are_off():
    x, y = _batch(1)
    want = _brute_norms(_model(0), x, y)
    got = _opacus_ghost_norms(_model(0), x, y)  # no NotImplementedError: it runs
    rel = ((got - want).abs() / want).max().item()
    assert rel > 0.01, (
        f"Opacus' ghost norms now match brute force (max rel {rel:.2e}): Opacus fixed the "
        "mixed hand tie; update docs/train.md's section on Opacus' ghost clipping"
    )


def test_tyings_ghost_norms_refuse_the_same_tie_naming_both_uses():
    x, y = _batch(1)
    with pytest.raises(ValueError, match=r"l1\.bias \(also read by n1\.weight"):
        ghost_norms(_model(0), _mse, x, y)


@settings(derandomize=True, deadline=None, max_examples=6)
@given(seed=st.integers(0, 10_000), width=st.integers(2, 8), n=st.integers(1, 6))
def test_tyings_per_example_norms_on_the_mixed_hand_tie_equal_brute_force(seed, width, n):
    x, y = _batch(seed, n)
    want = _brute_norms(_model(seed, width), x, y)
    grads = per_example_grads(_model(seed, width), _mse, x, y)
    got = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in grads.values()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
