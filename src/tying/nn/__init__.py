"""Layers whose sharing is the design (and their untied baselines)."""

from tying.nn.attention import Attention, kv_sharing_plan
from tying.nn.autoencoder import TiedAutoencoder
from tying.nn.graph import MultiHopGraphConv, normalized_adjacency
from tying.nn.lstm import TiedGateLSTM
from tying.nn.pinn import PeriodicFeatures, SharedBoundary, mlp, partial
from tying.nn.residual_ode import NeuralODE, TiedResidualNet, VectorField, odeint
from tying.nn.stacks import EncoderDecoder, Stack, TransformerBlock, albert_plan, share_layers

__all__ = [
    "Attention",
    "EncoderDecoder",
    "MultiHopGraphConv",
    "NeuralODE",
    "PeriodicFeatures",
    "SharedBoundary",
    "Stack",
    "TiedAutoencoder",
    "TiedGateLSTM",
    "TiedResidualNet",
    "TransformerBlock",
    "VectorField",
    "albert_plan",
    "kv_sharing_plan",
    "mlp",
    "normalized_adjacency",
    "odeint",
    "partial",
    "share_layers",
]
