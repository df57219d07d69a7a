"""An ``nn.MultiheadAttention`` and a ``tying.nn.Attention`` holding the same weights, for
the tests that compare the two number for number (stop 59)."""

import torch
from torch import nn

from tying.nn import Attention

E, H = 8, 2


def mha_and_attention(batch_first: bool, causal: bool = False):
    """``(mha, att)`` in float64 with equal projections (random biases too); ``mha`` in
    eval mode."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first).double().eval()
    att = Attention(E, H, batch_first=batch_first, causal=causal).double()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
        for i, proj in enumerate((att.q_proj, att.k_proj, att.v_proj)):
            proj.weight.copy_(mha.in_proj_weight[i * E : (i + 1) * E])
            proj.bias.copy_(mha.in_proj_bias[i * E : (i + 1) * E])
        att.out_proj.load_state_dict(mha.out_proj.state_dict())
    return mha, att
