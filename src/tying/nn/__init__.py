"""Layers whose sharing is the design (and their untied baselines)."""

from tying.nn.group_conv import (
    GROUPS,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    group_act,
    group_elements,
)
from tying.nn.hashed import HashedEmbedding, HashedLinear
from tying.nn.locally_connected import LocallyConnected2d
from tying.nn.losses import SoftDiceLoss, SoftIoULoss, soft_dice, soft_iou
from tying.nn.siamese import Siamese, contrastive_loss
from tying.nn.symmetric import SymmetricConv1d
from tying.nn.unet import TiedUNet

__all__ = [
    "GROUPS",
    "GroupConv2d",
    "GroupPool",
    "HashedEmbedding",
    "HashedLinear",
    "LiftingConv2d",
    "LocallyConnected2d",
    "Siamese",
    "SoftDiceLoss",
    "SoftIoULoss",
    "SymmetricConv1d",
    "TiedUNet",
    "contrastive_loss",
    "group_act",
    "group_elements",
    "soft_dice",
    "soft_iou",
]
