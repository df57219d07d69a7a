"""LocallyConnected2d.from_conv takes nn.Conv2d's string paddings (stop 59b).

``padding="same"`` (odd kernel) and ``padding="valid"`` were refused as "need explicit
numbers", though both are the symmetric windows the layer makes from numbers; an even
kernel's uneven ``"same"`` is still refused, with advice that is run here.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.nn import LocallyConnected2d


@pytest.mark.parametrize(
    "kernel,padding,numbers",
    [(3, "same", (1, 1)), ((3, 5), "same", (1, 2)), (1, "same", (0, 0)), ((3, 5), "valid", (0, 0))],
)
def test_string_padding_equals_the_conv(kernel, padding, numbers):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel, padding=padding).double()
    x = torch.randn(2, 2, 7, 9, dtype=torch.float64)
    lc = LocallyConnected2d.from_conv(conv, input_size=(7, 9))
    assert lc.padding == numbers
    torch.testing.assert_close(lc(x), conv(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(lc.to_conv()(x), conv(x), atol=1e-12, rtol=0)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel", [4, (3, 2)])
def test_even_same_refused_and_the_advice_works(kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel, padding="same").double()
    x = torch.randn(2, 2, 7, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"padding='same' with kernel_size .* F\.pad\(x, \(") as e:
        LocallyConnected2d.from_conv(conv, input_size=(7, 9))
    kh, kw = conv.kernel_size
    sizes = re.search(r"input_size=\(H \+ (\d+), W \+ (\d+)\)", str(e.value)).groups()
    pads = re.search(r"F\.pad\(x, \((\d+), (\d+), (\d+), (\d+)\)\)", str(e.value)).groups()
    copy = nn.Conv2d(2, 3, kernel, padding=0).double()
    copy.load_state_dict(conv.state_dict())
    lc = LocallyConnected2d.from_conv(copy, input_size=(7 + int(sizes[0]), 9 + int(sizes[1])))
    out = lc(F.pad(x, tuple(int(p) for p in pads)))
    torch.testing.assert_close(out, conv(x), atol=1e-12, rtol=0)
