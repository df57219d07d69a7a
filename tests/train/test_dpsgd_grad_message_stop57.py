"""The accumulation refusal's advice works when followed in its stated order, and names the
non-accumulation loops it also refuses (a warm-up of the plain optimizer, a GAN)."""

import pytest
import torch
from torch import nn

from tying.train import DPSGD


def _ce(o, y):
    return nn.functional.cross_entropy(o, y, reduction="none")


def test_the_refusal_says_to_clear_first_and_names_a_warm_up():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    dp = DPSGD(m, opt, noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt.zero_grad()
    _ce(m(x), y).mean().backward()
    opt.step()  # a public warm-up step, torch's usual order: its .grad stays
    with pytest.raises(ValueError, match=r"Clear it first .*warm-up of the plain optimizer"):
        dp.step(_ce, x, y)
    opt.zero_grad(set_to_none=True)
    dp.step(_ce, x, y)
    assert dp.steps == 1
