"""A functorch-sampled layer called with a keyword equal in value to its default
(``scale=1`` for ``1.0``, ``np.float64(1.0)``) is not refused under hooks mode: the
re-run on the default computes the same function (review of stop 56)."""

import numpy as np
import pytest
import torch
from torch import nn

from tying.train import grad_sample_module


class _Scale(nn.Module):  # its own parameter, no Opacus sampler: functorch samples it
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))

    def forward(self, x, scale=1.0):
        return x @ self.w.T * scale


class _Net(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.a, self.scale = _Scale(), scale

    def forward(self, x):
        return self.a(x, scale=self.scale)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # Opacus' hook
@pytest.mark.parametrize("scale", [1, np.float64(1.0)], ids=["int", "numpy"])
def test_a_keyword_equal_to_its_default_is_sampled_as_autograd(scale):
    torch.manual_seed(0)
    net, x = _Net(scale), torch.randn(5, 3, dtype=torch.float64)
    gsm = grad_sample_module(net, loss_reduction="sum")
    try:
        gsm(x).sum().backward()
        got = net.a.w.grad_sample
    finally:
        gsm._close()
    want = torch.stack([torch.autograd.grad(net.a(x[i : i + 1], scale=scale).sum(), net.a.w)[0]
                        for i in range(5)])  # fmt: skip
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_keyword_that_differs_from_its_default_is_still_refused():
    net = _Net(3.0)
    gsm = grad_sample_module(net, loss_reduction="sum")
    try:
        with pytest.raises(ValueError, match=r"a \(_Scale\) is called with scale beyond"):
            gsm(torch.randn(5, 3, dtype=torch.float64))
    finally:
        gsm._close()
