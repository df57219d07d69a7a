"""Every layer's printed form names its class once and its real configuration (stop 54).

A tied ``TiedGateLSTM`` printed as ``TiedTiedGateLSTM(...)`` (tying's subclass name on top
of a class already called Tied…), and several layers printed nothing of settings that
change their output (``signed=False``, ``t1``, ``batch_first``, a loss's ``reduction``):
two layers that compute different things read the same in a printed model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from tying.nn import (
    Attention,
    GroupConv2d,
    GroupPool,
    HashedEmbedding,
    HashedEmbeddingBag,
    HashedLinear,
    LiftingConv2d,
    LocallyConnected2d,
    MultiHopGraphConv,
    NeuralODE,
    PeriodicFeatures,
    SharedBoundary,
    Siamese,
    SoftDiceLoss,
    SoftIoULoss,
    SymmetricConv1d,
    TiedAutoencoder,
    TiedGateLSTM,
    TiedResidualNet,
    TiedUNet,
    VectorField,
)

# (layer built with non-default settings, its class name, what its first line must say)
CASES = {
    "lstm_tied": (
        lambda: TiedGateLSTM(3, 5, batch_first=False),
        "TiedGateLSTM",
        ["3, 5", "tie_gates=True", "batch_first=False"],
    ),
    "lstm_untied": (
        lambda: TiedGateLSTM(3, 5, tie_gates=False),
        "TiedGateLSTM",
        ["tie_gates=False", "batch_first=True"],
    ),
    "hashed_linear": (
        lambda: HashedLinear(8, 4, 10, seed=3, signed=False, bias=False),
        "TiedHashedLinear",
        ["in_features=8", "out_features=4", "buckets=10", "seed=3", "signed=False", "bias=False"],
    ),
    "hashed_embedding": (
        lambda: HashedEmbedding(20, 4, 10, seed=2, signed=False),
        "TiedHashedEmbedding",
        ["20, 4", "buckets=10", "seed=2", "signed=False"],
    ),
    "hashed_bag": (
        lambda: HashedEmbeddingBag(20, 4, 10, pooling="sum"),
        "TiedHashedEmbeddingBag",
        ["buckets=10", "pooling='sum'"],
    ),
    "attention": (
        lambda: Attention(8, 4, kv_heads=2, d_context=6, causal=True, dropout=0.25),
        "Attention",
        ["d_model=8", "n_heads=4", "kv_heads=2", "causal=True", "d_context=6", "dropout=0.25"],
    ),
    "graph": (
        lambda: MultiHopGraphConv(3, 4, 2, shared=False, bias=False),
        "MultiHopGraphConv",
        ["3, 4", "hops=2", "shared=False", "bias=False"],
    ),
    "autoencoder": (
        lambda: TiedAutoencoder(6, 3, tied=False),
        "TiedAutoencoder",
        ["6, 3", "tied=False"],
    ),
    "residual": (
        lambda: TiedResidualNet(4, 3, 5, t1=2.5),
        "TiedResidualNet",
        ["depth=5", "t1=2.5", "tied=True"],
    ),
    "ode": (
        lambda: NeuralODE(VectorField(3, 4), 0.5, method="rk4", steps=16, rtol=1e-3, atol=1e-4),
        "NeuralODE",
        ["t1=0.5", "method='rk4'", "steps=16", "rtol=0.001", "atol=0.0001"],
    ),
    "periodic": (
        lambda: PeriodicFeatures(3, 2.0, harmonics=2, periodic_dims=(1,)),
        "PeriodicFeatures",
        ["in_features=3", "period=2.0", "harmonics=2", "periodic_dims=(1,)"],
    ),
    "boundary": (
        lambda: SharedBoundary(2, 3.0, dim=1, derivatives=1),
        "SharedBoundary",
        ["in_features=2", "period=3.0", "dim=1", "derivatives=1"],
    ),
    "iou": (
        lambda: SoftIoULoss(from_logits=True, eps=0.5, reduction="sum"),
        "SoftIoULoss",
        ["from_logits=True", "eps=0.5", "reduction='sum'"],
    ),
    "dice": (
        lambda: SoftDiceLoss(eps=0.25, reduction="none"),
        "SoftDiceLoss",
        ["from_logits=False", "eps=0.25", "reduction='none'"],
    ),
    "symmetric": (
        lambda: SymmetricConv1d(2, 3, 5, padding=2),
        "TiedSymmetricConv1d",
        ["2, 3", "kernel_size=(5,)", "padding=(2,)", "tied=True"],
    ),
    "lifting": (
        lambda: LiftingConv2d(1, 2, 5, group="D4", padding=0, bias=False),
        "LiftingConv2d",
        ["1, 2", "kernel_size=5", "group=D4", "padding=0", "bias=False", "tied=True"],
    ),
    "group": (
        lambda: GroupConv2d(2, 3, 3, tied=False),
        "GroupConv2d",
        ["2, 3", "kernel_size=3", "group=C4", "padding=1", "tied=False"],
    ),
    "pool": (lambda: GroupPool("mean"), "GroupPool", ["mean"]),
    "locally_connected": (
        lambda: LocallyConnected2d(2, 3, (5, 6), 3, stride=2, padding=1, bias=False),
        "LocallyConnected2d",
        [
            "input_size=(5, 6)",
            "kernel_size=(3, 3)",
            "stride=(2, 2)",
            "padding=(1, 1)",
            "bias=False",
        ],
    ),
    "unet": (
        lambda: TiedUNet(2, 1, (4, 8), tied=False),
        "TiedUNet",
        ["widths=(4, 8)", "tied=False"],
    ),
    "siamese": (lambda: Siamese(nn.Linear(3, 2), tied=False), "Siamese", ["tied=False"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_repr_names_the_class_once_and_the_configuration(case):
    make, name, parts = CASES[case]
    text = repr(make())
    # a container prints its own settings on the line after its name
    head = text.split("\n")[1] if "\n" in text else text
    assert text.startswith(name + "("), text
    assert "TiedTied" not in text
    for part in parts:
        assert part in head, f"{part!r} missing from {head!r}"


def test_parametrized_tied_lstm_keeps_torchs_prefix():
    lstm = TiedGateLSTM(3, 4)
    parametrize.register_parametrization(lstm, "weight_hh", nn.Identity())
    text = repr(lstm)
    assert text.startswith("ParametrizedTiedGateLSTM("), text
    assert "tied: weight_ih_i <- weight_ih_f" in text
    x = torch.randn(2, 3, 3)
    # the name is cosmetic: the layer still computes nn.LSTM's output with its weights
    torch.testing.assert_close(lstm(x)[0], lstm.to_lstm()(x)[0])
