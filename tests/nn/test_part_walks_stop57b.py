"""torch's walks over a part of a tying.nn layer that holds only a slot's reading end (stop 57b).

tying.nn layers keep a tied module's ``_parameters`` as their own ``SlotParameters`` (which
names a tied slot looked up as a stored parameter). It was a plain ``dict`` subclass, so the
core fix of stop 57 (``TiedParams.items`` reaching the source a slot reads when ``zero_grad``,
``requires_grad_``, ``clip_grad_norm_``, ``parameters_to_vector`` or an optimizer walks a
part) did not reach these layers: on a ``Siamese``'s right tower, a ``TiedResidualNet`` step,
a ``TiedUNet``'s up path or a ``share_layers`` layer, ``clip_grad_norm_`` measured 0.0,
``zero_grad`` kept the gradient, ``requires_grad_(False)`` left the weights training, and an
optimizer was refused as empty. (An optimizer given ``part.parameters()`` is left to the
core tests: once ``torch._dynamo`` is imported, torch wraps the optimizer's constructor and
the core no longer sees the walk as an optimizer's; see the stop 57b report.) Each walk is compared here with the same model tied by hand
(one ``nn.Parameter`` held by both modules), which torch walks as it always does.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import tying
import tying.nn as tnn


def _hand(model: nn.Module, pairs) -> nn.Module:
    """Tie by hand: each target attribute becomes the source's own Parameter."""
    for target, source in pairs:
        path, _, name = target.rpartition(".")
        module = model.get_submodule(path)
        delattr(module, name)
        setattr(module, name, model.get_parameter(source))
    return model


def _siamese(tied):
    torch.manual_seed(0)
    return tnn.Siamese(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)), tied=tied)


def _siamese_hand():
    model = _siamese(False)
    model.right = copy.deepcopy(model.left)
    names = [n for n, _ in model.left.named_parameters()]
    return _hand(model, [(f"right.{n}", f"left.{n}") for n in names])


def _residual(tied):
    torch.manual_seed(0)
    return tnn.TiedResidualNet(4, 6, 3, tied=tied)


def _residual_hand():
    model = _residual(False)
    for i in (1, 2):
        model.steps[i] = copy.deepcopy(model.steps[0])
    names = [n for n, _ in model.steps[0].named_parameters()]
    return _hand(model, [(f"steps.{i}.{n}", f"steps.0.{n}") for i in (1, 2) for n in names])


def _unet(tied):
    torch.manual_seed(0)
    return tnn.TiedUNet(2, 1, (3, 4, 5), tied=tied)


def _unet_hand():
    return _hand(_unet(False), [(f"up.{i}.weight", f"down.{i}.weight") for i in (0, 1)])


def _stack():
    torch.manual_seed(0)
    return tnn.Stack(nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(3))


def _stack_tied():
    model = _stack()
    tnn.share_layers(model)
    return model


def _stack_hand():
    model = _stack()
    for i in (1, 2):
        model.layers[i] = copy.deepcopy(model.layers[0])
    return _hand(
        model,
        [(f"layers.{i}.0.{n}", f"layers.0.0.{n}") for i in (1, 2) for n in ("weight", "bias")],
    )


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


# name: (tying.nn model, the same tied by hand, its loss, the part holding only reading ends)
CASES = {
    "Siamese.right": (
        lambda: _siamese(True),
        _siamese_hand,
        lambda m: sum(z.pow(2).sum() for z in m(_x(3, 5), _x(3, 5) + 1)),
        "right",
    ),
    "TiedResidualNet.steps.2": (
        lambda: _residual(True),
        _residual_hand,
        lambda m: m(_x(3, 4)).pow(2).sum(),
        "steps.2",
    ),
    "TiedUNet.up": (lambda: _unet(True), _unet_hand, lambda m: m(_x(1, 2, 4, 4)).sum(), "up"),
    "share_layers.layers.2": (
        _stack_tied,
        _stack_hand,
        lambda m: m(_x(3, 4)).pow(2).sum(),
        "layers.2",
    ),
}


def _walks(model: nn.Module, loss, path: str) -> dict:
    """What each torch walker does on ``model.<path>`` (numbers over the whole model)."""
    part = model.get_submodule(path)

    def backward():
        model.zero_grad()
        loss(model).backward()

    out = {}
    backward()
    out["vector"] = torch.nn.utils.parameters_to_vector(part.parameters()).numel()
    out["norm"] = float(torch.nn.utils.clip_grad_norm_(part.parameters(), 0.5))
    out["grads after clip"] = sorted(round(float(p.grad.norm()), 5) for p in model.parameters())
    backward()
    part.zero_grad()
    out["grads kept"] = sum(p.grad is not None for p in model.parameters())
    part.requires_grad_(False)
    out["training"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_walks_over_a_part_holding_only_reading_ends_match_the_hand_tie(case):
    tied, hand, loss, path = CASES[case]
    got, want = _walks(tied(), loss, path), _walks(hand(), loss, path)
    assert want["norm"] > 0  # the part does reach the shared gradients
    assert got == want


def test_autoencoder_decoder_walks_reach_the_encoder_weight_it_reads():
    torch.manual_seed(0)
    ae = tnn.TiedAutoencoder(6, 3)
    x = _x(5, 6)
    ae(x).pow(2).sum().backward()
    # the one shared gradient: both uses of W (encoder W x and decoder Wᵀ h) through autograd
    w = ae.encoder.weight.detach().requires_grad_(True)
    (w.T @ (w @ x.T)).pow(2).sum().backward()
    assert torch.allclose(ae.encoder.weight.grad, w.grad)
    norm = torch.nn.utils.clip_grad_norm_(ae.decoder.parameters(), math.inf)
    assert math.isclose(float(norm), float(w.grad.norm()), rel_tol=1e-6)
    assert torch.nn.utils.parameters_to_vector(ae.decoder.parameters()).numel() == 18


def test_fuse_modules_on_a_tied_tower_is_refused_by_name():
    net = tnn.Siamese(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))).eval()
    weight = net.left[0].weight.detach().clone()
    with pytest.raises(tying.TieError, match=r"fuse_modules: right\.0\.\w+ is a tied slot"):
        torch.ao.quantization.fuse_modules(net.right, [["0", "1"]], inplace=True)
    assert type(net.right[0]).__name__ == "TiedConv2d"
    torch.testing.assert_close(net.left[0].weight.detach(), weight)
