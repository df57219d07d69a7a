"""Stop 58: a LocallyConnected2d state dict records where its windows sit.

``LocallyConnected2d(1, 2, 8, 3)`` and ``LocallyConnected2d(1, 2, 13, 3, stride=2)`` both
hold 6 × 6 per-position filters; the first's state dict loaded into the second with no
error and applied each filter to another window (another function). Loads across stride
or padding are refused now, naming both; the input size is not compared.
"""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.nn import LocallyConnected2d


def _through_file(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "saved, other, named",
    [
        (
            {"input_size": 8},
            {"input_size": 13, "stride": 2},
            r"stride=\(1, 1\) \(this layer: \(2, 2\)\)",
        ),
        (
            {"input_size": 8, "padding": 1},
            {"input_size": 10},
            r"padding=\(1, 1\) \(this layer: \(0, 0\)\)",
        ),
    ],
)
def test_a_load_across_stride_or_padding_is_refused_and_changes_nothing(saved, other, named):
    src = LocallyConnected2d(1, 2, kernel_size=3, **saved)
    dst = LocallyConnected2d(1, 2, kernel_size=3, **other)
    assert src.weight.shape == dst.weight.shape  # torch's shape check cannot tell them apart
    before = dst.weight.detach().clone()
    with pytest.raises(ValueError, match=named):
        dst.load_state_dict(_through_file(src.state_dict()))
    assert torch.equal(dst.weight, before)
    # inside a container: the modules before the layer are not loaded either
    a = nn.Sequential(nn.Linear(2, 2), src)
    b = nn.Sequential(nn.Linear(2, 2), dst)
    lin = b[0].weight.detach().clone()
    with pytest.raises(ValueError, match=r"LocallyConnected2d at '1'"):
        b.load_state_dict(a.state_dict())
    assert torch.equal(b[0].weight, lin)


def test_the_advice_builds_a_layer_that_loads_and_computes_the_same():
    src = LocallyConnected2d(1, 2, input_size=8, kernel_size=3)
    with pytest.raises(ValueError, match=r"input_size=\(8, 8\), stride=\(1, 1\), padding=\(0, 0\)"):
        LocallyConnected2d(1, 2, 13, 3, stride=2).load_state_dict(src.state_dict())
    dst = LocallyConnected2d(1, 2, input_size=(8, 8), kernel_size=3, stride=(1, 1), padding=(0, 0))
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(dst(x), src(x))


def test_legitimate_loads_pass():
    # another input size at one stride and padding: the same windows, the same function
    a = LocallyConnected2d(1, 2, 7, 3, stride=2)
    b = LocallyConnected2d(1, 2, 8, 3, stride=2)
    b.load_state_dict(_through_file(a.state_dict()))
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(b(x), a(x[..., :7, :7]))
    # a tied layer's one filter is a conv's: it loads across strides as nn.Conv2d does
    t = LocallyConnected2d(1, 2, 13, 3, stride=2).tie_filters()
    t.load_state_dict(LocallyConnected2d(1, 2, 8, 3).tie_filters().state_dict())
    # the deliberate move: a plain dict carries no record; padding=1 == padding=0 on F.pad(x)
    p1 = LocallyConnected2d(1, 2, 8, 3, padding=1)
    p0 = LocallyConnected2d(1, 2, 10, 3)
    p0.load_state_dict(dict(p1.state_dict()))
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(p0(F.pad(x, (1, 1, 1, 1))), p1(x), rtol=0, atol=1e-6)
    # a partial load without the weight is not checked (bias only, strict=False)
    state = LocallyConnected2d(1, 2, 8, 3).state_dict()
    del state["weight"]
    LocallyConnected2d(1, 2, 13, 3, stride=2).load_state_dict(state, strict=False)
