"""Layers whose sharing is the design (and their untied baselines)."""

from tying.nn._args import refuse_script
from tying.nn.attention import Attention, kv_sharing_plan
from tying.nn.autoencoder import TiedAutoencoder
from tying.nn.graph import EdgeAdjacency, MultiHopGraphConv, normalized_adjacency
from tying.nn.group_conv import (
    GROUPS,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    group_act,
    group_elements,
)
from tying.nn.hashed import HashedEmbedding, HashedEmbeddingBag, HashedLinear
from tying.nn.locally_connected import LocallyConnected2d
from tying.nn.losses import SoftDiceLoss, SoftIoULoss, soft_dice, soft_iou
from tying.nn.lstm import TiedGateLSTM
from tying.nn.pinn import PeriodicFeatures, SharedBoundary, mlp, partial
from tying.nn.residual_ode import NeuralODE, TiedResidualNet, VectorField, odeint
from tying.nn.siamese import Siamese, contrastive_loss
from tying.nn.stacks import EncoderDecoder, Stack, TransformerBlock, albert_plan, share_layers
from tying.nn.symmetric import SymmetricConv1d
from tying.nn.unet import TiedUNet

__all__ = [
    "Attention",
    "EdgeAdjacency",
    "EncoderDecoder",
    "GROUPS",
    "GroupConv2d",
    "GroupPool",
    "HashedEmbedding",
    "HashedEmbeddingBag",
    "HashedLinear",
    "LiftingConv2d",
    "LocallyConnected2d",
    "MultiHopGraphConv",
    "NeuralODE",
    "PeriodicFeatures",
    "SharedBoundary",
    "Siamese",
    "SoftDiceLoss",
    "SoftIoULoss",
    "Stack",
    "SymmetricConv1d",
    "TiedAutoencoder",
    "TiedGateLSTM",
    "TiedResidualNet",
    "TiedUNet",
    "TransformerBlock",
    "VectorField",
    "albert_plan",
    "contrastive_loss",
    "group_act",
    "group_elements",
    "kv_sharing_plan",
    "mlp",
    "normalized_adjacency",
    "odeint",
    "partial",
    "share_layers",
    "soft_dice",
    "soft_iou",
]


# torch.jit.script compiles none of the layers (Python-side input checks): refuse it by
# name, with what works instead, before TorchScript fails on a line of the layer (stop 52).
# Every module class exported here, so a layer added later is covered too.
def _refuse_script_on_every_layer() -> None:
    from torch import nn

    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            obj.__prepare_scriptable__ = refuse_script


_refuse_script_on_every_layer()
