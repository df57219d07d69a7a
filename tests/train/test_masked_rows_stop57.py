"""A mean over the tokens a padding mask kept, under loss_reduction="sum", is refused at every
step, not only where the kept count happens to be a multiple of B (8 of B = 4, not 7)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.train import grad_sample_module

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


@pytest.mark.parametrize("kept", [7, 8, 9, 12])
def test_a_mean_over_masked_tokens_under_sum_is_refused_whatever_the_count(kept):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(9, 4), nn.Linear(4, 9))
    gsm = grad_sample_module(net, loss_reduction="sum")
    tok = torch.randint(0, 9, (4, 6))
    keep = (torch.arange(24) < kept).view(4, 6)
    with pytest.raises(ValueError, match=r"the loss is a mean over the (batch|targets it kept)"):
        F.cross_entropy(gsm(tok)[keep], tok[keep]).backward()
    assert net[1].weight.grad is None
