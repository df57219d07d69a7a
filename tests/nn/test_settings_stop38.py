"""Layer and loss settings refused when the object is built (stop 38).

``SymmetricConv1d`` took a float, bool, 0 or negative stride/padding/dilation and failed
only at the first call, inside torch; ``SoftDiceLoss``/``SoftIoULoss`` checked ``eps``
only when called and never checked ``from_logits``, so ``from_logits="no"`` (truthy)
applied a sigmoid to probabilities with no error.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import SoftDiceLoss, SoftIoULoss, SymmetricConv1d
from tying.nn.losses import soft_dice


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"stride": 1.5}, "stride"),
        ({"stride": True}, "stride"),
        ({"stride": 0}, "stride"),
        ({"stride": (1, 2)}, "stride"),
        ({"padding": -1}, "padding"),
        ({"padding": 1.0}, "padding"),
        ({"dilation": 0}, "dilation"),
    ],
)
def test_symmetric_conv_geometry_is_refused_when_built(kwargs, name):
    with pytest.raises(ValueError, match=rf"SymmetricConv1d: {name} must be an int >= [01]"):
        SymmetricConv1d(2, 4, 5, **kwargs)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    stride=st.sampled_from([1, 2, 3, (2,), np.int64(2), 0, -1, 1.0, True, (1, 1), "1"]),
    padding=st.sampled_from([0, 2, (1,), "same", "valid", -1, 0.5, False]),
    dilation=st.sampled_from([1, 2, (3,), 0, 2.0]),
)
def test_property_built_exactly_when_nn_conv1d_runs_and_then_mirrored_taps_agree(
    stride, padding, dilation
):
    """Accepted exactly when plain nn.Conv1d builds and runs (with "same" refused for a
    stride, as torch refuses it); then outputs equal nn.Conv1d on the mirrored weight."""
    x = torch.randn(2, 2, 23)

    def plain():
        conv = torch.nn.Conv1d(2, 4, 5, stride=stride, padding=padding, dilation=dilation)
        return conv, conv(x)

    try:
        plain_conv, _ = plain()
        plain_ok = not isinstance(stride, bool | str) and not isinstance(padding, bool)
    except (RuntimeError, TypeError, ValueError):
        plain_ok = False
    try:
        ours = SymmetricConv1d(2, 4, 5, stride=stride, padding=padding, dilation=dilation)
    except ValueError:
        assert not plain_ok
        return
    assert plain_ok
    plain_conv.weight.data = ours.weight.detach().clone()
    plain_conv.bias.data = ours.bias.detach().clone()
    torch.testing.assert_close(ours(x), plain_conv(x))
    assert torch.equal(ours.weight, ours.weight.flip(-1))


@pytest.mark.parametrize("cls", [SoftDiceLoss, SoftIoULoss])
def test_loss_settings_are_refused_when_built(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: eps must be a finite number >= 0"):
        cls(eps=-1.0)
    with pytest.raises(ValueError, match="eps must be"):
        cls(eps=float("nan"))
    with pytest.raises(ValueError, match="eps must be"):
        cls(eps="1e-6")
    with pytest.raises(TypeError, match=rf"{cls.__name__}: from_logits must be True or False"):
        cls(from_logits="no")


def test_a_truthy_from_logits_no_longer_applies_a_sigmoid():
    p = torch.tensor([[0.9, 0.1, 0.8]])
    t = torch.tensor([[1.0, 0.0, 1.0]])
    with pytest.raises(TypeError, match="from_logits must be True or False, got 'no'"):
        soft_dice(p, t, from_logits="no")
    assert soft_dice(p, t) > soft_dice(p, t, from_logits=True)  # what "no" used to give
