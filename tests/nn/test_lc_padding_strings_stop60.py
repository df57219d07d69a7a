"""``LocallyConnected2d(padding='same'|'valid')``, as ``nn.Conv2d`` reads them (stop 60).

The constructor refused them as "padding: expected an int or a pair of ints", naming
neither the layer nor a fix, though ``from_conv`` read them since stop 59. Its size
refusals name the layer now too.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.nn import LocallyConnected2d


def _copy_conv(lc: LocallyConnected2d, conv: nn.Conv2d) -> None:
    with torch.no_grad():
        lc.weight.copy_(conv.weight.expand_as(lc.weight))
        lc.bias.copy_(conv.bias.expand_as(lc.bias))


@pytest.mark.parametrize(
    ("padding", "kernel"), [("same", 3), ("same", (5, 3)), ("valid", 3), ("valid", (2, 4))]
)
def test_string_padding_matches_conv2d(padding, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel, padding=padding).double()
    lc = LocallyConnected2d(2, 3, (7, 6), kernel, padding=padding).double()
    _copy_conv(lc, conv)
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))
    assert lc.padding == LocallyConnected2d.from_conv(conv, (7, 6)).padding


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_even_same_kernel_refused_and_the_advice_matches_conv2d():
    with pytest.raises(
        ValueError,
        match=r"LocallyConnected2d: padding='same' with kernel_size \(3, 2\) .*input_size=\(H \+ 2, W \+ 1\).*F.pad\(x, \(0, 1, 1, 1\)\)",
    ):
        LocallyConnected2d(2, 3, (7, 6), (3, 2), padding="same")
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, (3, 2), padding="same").double()
    lc = LocallyConnected2d(2, 3, (7 + 2, 6 + 1), (3, 2), padding=0).double()
    _copy_conv(lc, conv)
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(lc(F.pad(x, (0, 1, 1, 1))), conv(x))


def test_same_with_stride_refused_and_the_advice_gives_ceil_positions():
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1 .*padding k // 2"):
        LocallyConnected2d(2, 3, 7, 3, stride=2, padding="same")
    assert LocallyConnected2d(2, 3, 7, 3, stride=2, padding=3 // 2).output_size == (4, 4)


def test_other_strings_and_bad_sizes_name_the_layer():
    with pytest.raises(
        ValueError,
        match=r"LocallyConnected2d: padding must be an int, a pair of ints, 'valid' or 'same', got 'full'",
    ):
        LocallyConnected2d(2, 3, 7, 3, padding="full")
    with pytest.raises(TypeError, match=r"^LocallyConnected2d: stride: expected an int or a pair"):
        LocallyConnected2d(2, 3, 7, 3, stride=1.5)
    with pytest.raises(ValueError, match=r"^LocallyConnected2d: padding must be >= 0"):
        LocallyConnected2d(2, 3, 7, 3, padding=-1)
    with pytest.raises(ValueError, match=r"^LocallyConnected2d: kernel_size \(9, 9\) does not fit"):
        LocallyConnected2d(2, 3, 7, 9)
