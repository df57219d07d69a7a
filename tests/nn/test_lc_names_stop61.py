"""nn.Conv2d's and Keras' keywords on LocallyConnected2d name what to do here (stop 61);
the advice, followed, gives the conv's numbers."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tying.nn import LocallyConnected2d


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("dilation", 2, "dilated windows are not provided"),
        ("groups", 2, r"for groups=g build g layers"),
        ("padding_mode", "reflect", r"F\.pad\(x, \(p, p, p, p\)"),
        ("filters", 4, "out_channels here"),
        ("strides", 2, "stride= here"),
        ("use_bias", False, "bias= here"),
        ("data_format", "channels_last", r"x\.permute\(0, 3, 1, 2\)"),
        ("activation", "relu", "apply the activation"),
        ("implementation", 1, "drop it"),
    ],
)
def test_foreign_keyword_named(name, value, match):
    with pytest.raises(
        TypeError, match=rf"LocallyConnected2d: no keyword {name!r} here; .*{match}"
    ):
        LocallyConnected2d(2, 4, 6, 3, **{name: value})


def test_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        LocallyConnected2d(2, 4, 6, 3, colour=1)


def test_groups_advice_gives_the_grouped_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(2, 4, 5, 5)
    parts = []
    for g, xs in enumerate(x.chunk(2, dim=1)):
        sub = nn.Conv2d(2, 3, 3, padding=1)
        with torch.no_grad():
            sub.weight.copy_(conv.weight[3 * g : 3 * g + 3])
            sub.bias.copy_(conv.bias[3 * g : 3 * g + 3])
        parts.append(LocallyConnected2d.from_conv(sub, 5)(xs))
    torch.testing.assert_close(torch.cat(parts, dim=1), conv(x), atol=1e-5, rtol=0)


def test_padding_mode_advice_gives_the_reflect_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    x = torch.randn(2, 2, 5, 6)
    lc = LocallyConnected2d(2, 3, (5 + 2, 6 + 2), 3, padding=0)
    with torch.no_grad():
        lc.weight.copy_(conv.weight.expand_as(lc.weight))
        lc.bias.copy_(conv.bias.expand_as(lc.bias))
    out = lc(F.pad(x, (1, 1, 1, 1), mode="reflect"))
    torch.testing.assert_close(out, conv(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("groups", 1),
        ("dilation", 1),
        ("dilation", (1, 1)),
        ("padding_mode", "zeros"),
        ("activation", None),
    ],
)
def test_conv_default_named_as_the_default_not_a_recipe(name, value):
    # review stop 61: nn.Conv2d(..., dilation=1, groups=1, padding_mode='zeros') ported by
    # keyword was told "no layer here" / build g layers / pad with F.pad
    said = rf"{name}={re.escape(repr(value))} is .*default, what this layer does: drop {name}="
    with pytest.raises(TypeError, match=said):
        LocallyConnected2d(2, 4, 6, 3, **{name: value})
    LocallyConnected2d(2, 4, 6, 3)  # dropped, as advised
