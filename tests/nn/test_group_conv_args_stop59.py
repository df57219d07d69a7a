"""Group convs given arguments by position name the public class and the keywords (stop 59)."""

import inspect

import pytest
import torch

from tying.nn import GroupConv2d, LiftingConv2d

CLASSES = [LiftingConv2d, GroupConv2d]


@pytest.mark.parametrize("cls", CLASSES)
def test_padding_by_position_names_the_class_and_the_keyword(cls):
    # before: "_GroupConvBase.__init__() takes 4 positional arguments but 5 were given"
    name = cls.__name__
    with pytest.raises(
        TypeError,
        match=rf"^{name}\(\) takes 3 positional arguments \(in_channels, out_channels, "
        rf"kernel_size\) but 4 were given; the others are keyword-only: group=, padding=.*"
        rf"pass {name}\(1, 2, 5, padding=0\)$",
    ):
        cls(1, 2, 5, 0)
    # the advice, followed literally, builds the layer R2Conv(..., 5, 0) meant
    layer = cls(1, 2, 5, padding=0)
    assert layer.padding == 0
    x = torch.randn(1, 1, 9, 9) if cls is LiftingConv2d else torch.randn(1, 1, 4, 9, 9)
    assert layer(x).shape[-2:] == (5, 5)


def test_more_positionals_read_as_r2conv_and_foreign_ones_named():
    with pytest.raises(
        TypeError,
        match=r"but 9 were given.*pass LiftingConv2d\(1, 2, 3, padding=0, bias=False\) "
        r"\(R2Conv's stride, dilation, padding_mode, groups there: not taken here",
    ):
        LiftingConv2d(1, 2, 3, 0, 1, 1, "zeros", 1, False)
    assert LiftingConv2d(1, 2, 3, padding=0, bias=False).biases is None


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_and_repeated_arguments_name_the_public_class(cls):
    name = cls.__name__
    with pytest.raises(
        TypeError, match=rf"^{name}\(\): missing a required argument: 'kernel_size'"
    ):
        cls(1, 2)
    with pytest.raises(
        TypeError, match=rf"^{name}\(\): multiple values for argument 'kernel_size'"
    ):
        cls(1, 2, 3, kernel_size=3)


def test_legitimate_calls_and_the_signature_are_unchanged():
    assert list(inspect.signature(LiftingConv2d).parameters)[:4] == [
        "in_channels",
        "out_channels",
        "kernel_size",
        "group",
    ]
    a = LiftingConv2d(in_channels=1, out_channels=2, kernel_size=3, group="D4", tied=False)
    b = GroupConv2d(2, 3, 3, group="D4", padding="same", bias=False, dtype=torch.float64)
    assert (a.group, b.kernels.e_e.dtype) == ("D4", torch.float64)
    # e2cnn's keywords keep their own advice
    with pytest.raises(TypeError, match=r"no keyword 'stride' here; the layer runs at stride 1"):
        LiftingConv2d(1, 2, 3, stride=2)
