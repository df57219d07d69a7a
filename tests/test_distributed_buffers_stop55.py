"""A buffer replaced in a forward under ``td.ddp`` trains on (stop 55).

A check added earlier at stop 55 refused it, on the premise that DDP broadcasts only the
buffers it was built with. DDP lists the module's buffers again before every broadcast
(``_assign_modules_buffers``, pytorch#63916), so a replaced buffer is broadcast as an
in-place one is; the check refused correct models such as a rotary cache re-registered
for a longer sequence (rotary_embedding_torch, older Hugging Face Llama). Found in review.
"""

import torch
from torch import nn

import tying
import tying.distributed as td


class RotaryCache(nn.Module):
    """A cos cache rebuilt (a new tensor, a new shape) when a longer sequence comes."""

    def __init__(self, dim=8):
        super().__init__()
        inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._build(8)

    def _build(self, n):
        self.n = n
        cos = torch.outer(torch.arange(n).float(), self.inv_freq).cos()
        self.register_buffer("cos_cached", cos, persistent=False)

    def forward(self, x):
        if x.shape[1] > self.n:
            self._build(x.shape[1])
        return x * self.cos_cached[: x.shape[1]].repeat(1, 2)


def test_a_rebuilt_buffer_trains_under_td_ddp_as_under_plain_ddp(group):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), RotaryCache(), nn.Linear(8, 50))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(model)
    wrapped = td.ddp(model)
    before = model[1].cos_cached
    for n in (6, 16, 16):
        wrapped(torch.randint(0, 50, (2, n))).sum().backward()
    assert model[1].cos_cached is not before and model[1].cos_cached.shape == (16, 4)
    assert model[0].weight.grad is not None  # the tie's gradient reached its source
