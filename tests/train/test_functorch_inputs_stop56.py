"""Layers Opacus samples with functorch get their first positional input only (stop 56).

Opacus' functorch way re-runs a layer without a grad sampler of its class on the first
input its forward hook recorded (``activations[0]``); keyword arguments never reach a
forward hook. Before: ``nn.Bilinear`` failed at the backward with "missing 1 required
positional argument: 'input2'" (naming no layer, its forward counters left raised), and a
layer called with ``scale=3.0`` got per-sample gradients of ``scale=1.0`` (6.5 off a
per-example loop, no error). Anchor: ``tests.train.models.loop_grads``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import loop_grads
from tying.train import DPSGD, grad_sample_module

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _sq(o, y):
    return ((o - y) ** 2).sum(1)


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.b = nn.Bilinear(3, 4, 2).double()

    def forward(self, x):  # (B, 7) -> (B, 2)
        return self.b(x[:, :3], x[:, 3:])


class _Scale(nn.Module):  # own parameter, no Opacus sampler: functorch samples it
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 3, dtype=torch.float64))

    def forward(self, x, scale=1.0):
        return x * self.w * scale


class _Scaled(nn.Module):
    def __init__(self, call):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.s, self.call = nn.Linear(3, 3).double(), _Scale(), call

    def forward(self, x):
        return self.call(self.s, self.a(x))


def _data(cols):
    g = torch.Generator().manual_seed(3)
    return torch.randn(5, cols, generator=g, dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap, trilinear
def test_bilinear_is_refused_by_name_before_anything_is_wrapped():
    model = _Pair()
    hooks = [sorted(m._forward_hooks) for m in model.modules()]
    with pytest.raises(
        ValueError, match=r"b \(Bilinear\) needs the inputs input1, input2.*mode='vmap'"
    ):
        grad_sample_module(model, loss_reduction="sum")
    assert [sorted(m._forward_hooks) for m in model.modules()] == hooks
    assert not any(hasattr(p, "_forward_counter") for p in model.parameters())
    # the fix the message names gives the loop's gradients
    x, y = _data(7), _data(2)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=0.0,
               max_grad_norm=1e9, sample_rate=0.5)  # fmt: skip
    pg = dp.step(_sq, x, y)
    want = loop_grads(model, _sq, x, y)
    assert torch.allclose(pg.grads["b.weight"], want["b.weight"].mean(0), atol=1e-12)


@pytest.mark.parametrize(
    "call, said",
    [
        (lambda m, h: m(h, scale=3.0), "scale beyond"),  # was 6.5 off the loop, no error
        (lambda m, h: m(h, 3.0), "scale beyond"),  # was "'float' object has no attribute 'detach'"
        # stop 57: it said "x beyond its first positional input" of the first input itself
        (lambda m, h: m(x=h), r"its first input by keyword \(x=\.\.\.\), .* s\(x\)"),
    ],
)
def test_a_functorch_layer_given_more_than_its_first_input_is_refused_at_the_call(call, said):
    model = _Scaled(call)
    x = _data(3)
    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        with pytest.raises(ValueError, match=rf"s \(_Scale\) is called with {said}"):
            gsm(x)
        # Opacus' records of the refused forward were taken back
        assert all(p._forward_counter == 0 for p in model.parameters())
        assert all(not m.__dict__.get("activations") for m in model.modules())
    finally:
        gsm._close()


def test_a_functorch_layer_called_with_its_defaults_equals_the_loop():
    for call in (lambda m, h: m(h), lambda m, h: m(h, scale=1.0)):
        model = _Scaled(call)
        x, y = _data(3), _data(3)
        want = loop_grads(model, _sq, x, y)
        gsm = grad_sample_module(model, loss_reduction="sum")
        try:
            _sq(gsm(x), y).sum().backward()
            for n, p in model.named_parameters():
                assert torch.allclose(p.grad_sample, want[n], atol=1e-12), n
        finally:
            gsm._close()
