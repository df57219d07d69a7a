"""e2cnn R2Conv / Conv2d keywords on the group convs name ours (stop 56)."""

import pytest

from tying.nn.group_conv import GroupConv2d, LiftingConv2d


@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("stride", 2, r"stride 1: y\[\.\.\., ::s, ::s\]"),
        ("dilation", 2, r"dilated kernels are not provided"),
        ("groups", 1, r"grouped convs are not provided"),
        ("padding_mode", "circular", r"only zero padding .*F\.pad"),
        ("initialize", False, r"always initialised"),
        ("basisexpansion", "blocks", r"steerable basis"),
    ],
)
def test_e2cnn_keyword_names_ours(layer, name, value, hint):
    with pytest.raises(TypeError, match=rf"{layer.__name__}: no keyword '{name}' here; .*{hint}"):
        layer(3, 4, 3, **{name: value})


def test_other_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'kernel'"):
        LiftingConv2d(3, 4, 3, kernel=3)
