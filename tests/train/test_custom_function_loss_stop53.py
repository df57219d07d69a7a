"""A custom autograd.Function in the LOSS under Opacus' hooks (stop 53).

``grad_sample_module`` probed custom Functions inside the model's forward only; the
loss is built by the caller from the model's output and its backward hands Opacus'
hooks their gradients. A loss Function whose backward divides by the batch's norm gave
per-sample gradients 0.69 off the per-example loop, no error. Now refused by name, in
the loss, before any gradient is written. Anchor: ``tests.train.models.loop_grads``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import loop_grads
from tests.train.test_custom_backward_stop51 import BatchNormed, Reversed
from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

IN_THE_LOSS = (
    r"grad_sample_module: the loss applies the custom autograd.Function {} to the model's "
    r"output, in the loss: .* or mode='vmap'"
)


def _case(B=5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    return model, x, torch.randn(B, 3, generator=g, dtype=torch.float64)


def _loss(fn):
    return lambda out, y: (fn.apply(out) - y).pow(2).sum(1)  # (B,)


def test_a_mixing_loss_function_is_refused_and_nothing_is_written():
    model, x, y = _case()
    loss_fn = _loss(BatchNormed)
    plain = lambda out, y: (out - y).pow(2).sum(1)  # noqa: E731
    want = loop_grads(model, plain, x, y)  # before Opacus' hooks, which record every forward
    gsm = grad_sample_module(model, loss_reduction="sum")
    out = gsm(x)  # the old code wrote per-sample gradients 0.69 off the loop here
    with pytest.raises(ValueError, match=IN_THE_LOSS.format("BatchNormed")):
        loss_fn(out, y).sum().backward()
    assert all(p.grad is None and getattr(p, "grad_sample", None) is None for p in gsm.parameters())
    assert all(p._forward_counter == 0 for p in model.parameters())
    assert all(not getattr(m, "activations", None) for m in model.modules())
    # the next step with a plain loss is counted right: nothing of the refused one is left
    plain(gsm(x), y).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[n])


def test_a_loss_function_is_refused_even_where_its_backward_keeps_rows_apart():
    # its backward has run before the outputs' gradient exists, and its graph may be
    # freed: it cannot be probed as the model's Functions are, so it is named instead
    model, x, y = _case()
    gsm = grad_sample_module(model, loss_reduction="mean")
    with pytest.raises(ValueError, match=IN_THE_LOSS.format("Reversed")):
        _loss(Reversed)(gsm(x), y).mean().backward()


def test_a_function_on_the_weights_alone_is_no_examples_and_is_let_through():
    model, x, y = _case()
    plain = lambda out, y: (out - y).pow(2).sum(1)  # noqa: E731
    want = loop_grads(model, plain, x, y)
    gsm = grad_sample_module(model, loss_reduction="sum")
    (plain(gsm(x), y).sum() + Reversed.apply(model[0].weight).sum()).backward()
    for n, p in model.named_parameters():  # Opacus leaves the penalty out of grad_sample
        torch.testing.assert_close(p.grad_sample, want[n])
