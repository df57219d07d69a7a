"""LocallyConnected2d returns a contiguous output, as nn.Conv2d does.

Before stop 62 it returned a transposed view: ``lc(x).view(B, -1)`` (the flatten idiom of
conv nets, which ``nn.Conv2d``'s output passes) failed in torch's view.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.nn import LocallyConnected2d


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("tied", [False, True])
def test_output_is_contiguous_and_flattens_with_view(batch, tied):
    conv = nn.Conv2d(2, 4, 3, padding=1)
    lc = LocallyConnected2d.from_conv(conv, input_size=(5, 6))
    if tied:
        lc.tie_filters()
    x = torch.randn(batch, 2, 5, 6)
    y = lc(x)
    assert y.is_contiguous()
    assert torch.allclose(y.view(batch, -1), conv(x).view(batch, -1), atol=1e-6)


def test_unbatched_and_channels_last_inputs_give_contiguous_outputs():
    lc = LocallyConnected2d(3, 2, input_size=4, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 3, 4, 4)
    ref = lc(x)
    assert lc(x[0]).is_contiguous()
    assert torch.equal(lc(x[0]), ref[0])
    y = lc(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous() and torch.allclose(y, ref, atol=1e-6)
