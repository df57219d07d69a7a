"""An untied ``nn.Embedding(max_norm=...)`` under Opacus' hooks (stop 57b).

Its forward renormalises the rows the batch reads, in place and without noise: the
weights released after a step show which tokens the private batch held. ``DPSGD`` (both
modes) and a tied Embedding in :func:`~tying.train.grad_sample_module` refused it; an
untied one was wrapped and its rows written at the first forward. Now refused at the
wrapping, the model left unwrapped and unchanged.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import loop_grads, mse
from tying.train import grad_sample_module

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(7, 4, max_norm=0.5), nn.Flatten(), nn.Linear(24, 3))


def test_the_forward_writes_the_batchs_rows():
    """Why it is refused: a forward alone changes the rows the tokens read, not the others."""
    model = _model()
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 1, 2, 1, 2]]))
    changed = (model[0].weight != before).any(1)
    assert changed.tolist() == [False, True, True, False, False, False, False]


def test_grad_sample_module_refuses_a_trainable_max_norm_embedding():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"grad_sample_module: 0 is an Embedding with max_norm=0.5"
    ):
        grad_sample_module(model, loss_reduction="sum")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


# Opacus' hook on a layer whose inputs need no grad (the frozen Embedding's output)
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_a_frozen_max_norm_embedding_is_taken_and_the_rest_equals_the_loop():
    model = _model().double()
    model[0].weight.requires_grad_(False)
    x = torch.tensor([[1, 2, 1, 2, 1, 2], [3, 4, 5, 6, 0, 0]])
    y = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = loop_grads(model, mse, x, y)
    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        mse(gsm(x), y).sum().backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert torch.allclose(p.grad_sample, want[name], atol=1e-10), name
    finally:
        gsm._close()
