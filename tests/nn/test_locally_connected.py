"""LocallyConnected2d: shapes, the conv equivalence, init, and its errors."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn

import tying
import tying.nn.locally_connected as lc_module
from tying.nn import LocallyConnected2d


def _reference(layer: LocallyConnected2d, x: torch.Tensor) -> torch.Tensor:
    """Slow loop over positions: the definition the unfold forward must match."""
    out_h, out_w = layer.output_size
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    xp = nn.functional.pad(x, (layer.padding[1],) * 2 + (layer.padding[0],) * 2)
    out = torch.zeros(x.shape[0], layer.out_channels, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]  # (B, C_in, kh, kw)
            out[:, :, i, j] = torch.einsum("bchw,ochw->bo", patch, layer.weight[i, j])
            if layer.bias is not None:
                out[:, :, i, j] += layer.bias[i, j]
    return out


@pytest.mark.parametrize(
    "cin,cout,size,kernel,stride,padding",
    [(3, 4, 8, 3, 1, 0), (2, 5, (7, 9), (3, 2), (2, 1), (1, 0)), (1, 1, 4, 4, 1, 0)],
)
def test_forward_matches_per_position_loop(cin, cout, size, kernel, stride, padding):
    torch.manual_seed(0)
    layer = LocallyConnected2d(cin, cout, size, kernel, stride=stride, padding=padding).double()
    x = torch.randn(3, cin, *layer.input_size, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference(layer, x))


def test_weight_and_bias_shapes():
    layer = LocallyConnected2d(3, 16, input_size=(10, 12), kernel_size=3, stride=2, padding=1)
    assert layer.output_size == (5, 6)
    assert layer.weight.shape == (5, 6, 16, 3, 3, 3)
    assert layer.bias.shape == (5, 6, 16)
    assert LocallyConnected2d(3, 16, 10, 3, bias=False).bias is None


def test_unbatched_input():
    layer = LocallyConnected2d(2, 3, 6, 3)
    x = torch.randn(2, 6, 6)
    torch.testing.assert_close(layer(x), layer(x.unsqueeze(0)).squeeze(0))


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), ((1, 2), (2, 0))])
def test_from_conv_same_outputs_and_to_conv_round_trip(stride, padding):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding).double()
    lc = LocallyConnected2d.from_conv(conv, input_size=(9, 8))
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))
    back = lc.to_conv()
    torch.testing.assert_close(back.weight, conv.weight)
    torch.testing.assert_close(back.bias, conv.bias)
    torch.testing.assert_close(back(x), conv(x))
    # untied: the copies are separate storage, so training one position leaves the rest
    assert lc.weight.data_ptr() != conv.weight.data_ptr()


def test_untied_copies_train_apart_and_to_conv_then_refuses():
    torch.manual_seed(2)
    lc = LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=6)
    opt = torch.optim.SGD(lc.parameters(), lr=0.1)
    x = torch.randn(4, 1, 6, 6)
    target = torch.randn(4, 2, 4, 4)
    nn.functional.mse_loss(lc(x), target).backward()
    opt.step()
    with pytest.raises(ValueError, match=r"weight of position \(\d+, \d+\) differs .* atol=0"):
        lc.to_conv()
    assert isinstance(lc.to_conv(atol=10.0), nn.Conv2d)


def test_to_conv_checks_bias_too():
    lc = LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5)
    with torch.no_grad():
        lc.bias[2, 1, 0] += 1.0
    with pytest.raises(ValueError, match=r"bias of position \(2, 1\) differs from position"):
        lc.to_conv()


def test_reset_parameters_uses_one_units_fan_in():
    torch.manual_seed(3)
    layer = LocallyConnected2d(4, 64, input_size=8, kernel_size=3).requires_grad_(False)
    bound = 1 / math.sqrt(4 * 3 * 3)
    assert layer.fan_in() == 36 == tying.fan_in(layer)
    assert float(layer.weight.abs().max()) <= bound
    # a uniform on [-b, b] has variance b^2/3; 6*6*64*36 samples pin it to a few percent
    assert float(layer.weight.var()) == pytest.approx(bound**2 / 3, rel=0.05)
    assert float(layer.bias.abs().max()) <= bound


def test_gradients_flow_to_every_position():
    layer = LocallyConnected2d(2, 3, 5, 3)
    layer(torch.randn(2, 2, 5, 5)).sum().backward()
    assert layer.weight.grad.shape == layer.weight.shape
    assert bool((layer.weight.grad.flatten(2).abs().sum(2) > 0).all())


def test_wrong_input_shape_names_expected_and_got():
    layer = LocallyConnected2d(3, 4, input_size=8, kernel_size=3)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 8, 8\).*got \(2, 3, 9, 8\)"):
        layer(torch.zeros(2, 3, 9, 8))
    with pytest.raises(ValueError, match=r"got \(2, 8, 8\)"):
        layer(torch.zeros(2, 8, 8))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"kernel_size": 9}, ValueError, r"does not fit the padded input"),
        ({"stride": 0}, ValueError, r"stride must be >= 1"),
        ({"padding": -1}, ValueError, r"padding must be >= 0"),
        ({"kernel_size": 2.5}, TypeError, r"kernel_size: expected an int or a pair"),
        ({"kernel_size": (1, 2, 3)}, TypeError, r"kernel_size: expected an int or a pair"),
        ({"in_channels": 0}, ValueError, r"in_channels must be a positive int"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    args = {"in_channels": 3, "out_channels": 4, "input_size": 8, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        LocallyConnected2d(**args)


@pytest.mark.parametrize(
    "conv,match",
    [
        (nn.Conv2d(4, 4, 3, groups=2), r"groups=2"),
        (nn.Conv2d(2, 2, 3, dilation=2), r"dilation=\(2, 2\)"),
        (nn.Conv2d(2, 2, 4, padding="same"), r"padding='same' with kernel_size \(4, 4\)"),
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), r"padding_mode='circular'"),
    ],
)
def test_from_conv_rejects_what_it_cannot_untie(conv, match):
    with pytest.raises(ValueError, match=match):
        LocallyConnected2d.from_conv(conv, input_size=8)


def test_from_conv_type_error():
    with pytest.raises(TypeError, match="expected an nn.Conv2d, got Linear"):
        LocallyConnected2d.from_conv(nn.Linear(2, 2), input_size=4)


def test_docstring_examples_run():
    result = doctest.testmod(lc_module, extraglobs={"torch": torch, "nn": nn})
    assert result.attempted > 0 and result.failed == 0


def test_tie_filters_makes_it_the_conv_and_the_tie_survives_a_step():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    lc = LocallyConnected2d.from_conv(conv, input_size=6).tie_filters()
    assert lc.is_tied and lc.tie_filters() is lc  # tying again is a no-op
    assert sum(p.numel() for p in lc.parameters()) == sum(p.numel() for p in conv.parameters())
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    target = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    for layer in (lc, conv):
        nn.functional.mse_loss(layer(x), target).backward()
    stored = lc.parametrizations.weight.original
    torch.testing.assert_close(stored.grad, conv.weight.grad)
    opt = torch.optim.SGD(lc.parameters(), lr=0.5)
    opt.step()
    # still one filter everywhere after the step: to_conv finds no difference
    w = lc.weight.detach()
    assert float((w - w[0, 0]).abs().max()) == 0.0
    torch.testing.assert_close(lc.to_conv().weight, stored.detach())


def test_tie_filters_keeps_position_zero_and_reset_draws_the_stored_filter():
    torch.manual_seed(5)
    lc = LocallyConnected2d(1, 2, input_size=5, kernel_size=3)
    first = lc.weight[0, 0].detach().clone()
    lc.tie_filters()
    torch.testing.assert_close(lc.weight.detach()[2, 1], first)
    lc.reset_parameters()
    w = lc.weight.detach()
    assert not torch.equal(w[0, 0], first) and float((w - w[0, 0]).abs().max()) == 0.0
    assert float(w.abs().max()) <= 1 / math.sqrt(lc.fan_in())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_to_conv_refuses_a_non_finite_position(bad, name):
    # stop 26: a NaN at position (2, 1) made every difference comparison False, so
    # to_conv returned position (0, 0)'s conv and dropped that position's NaN output
    lc = LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5)
    with torch.no_grad():
        getattr(lc, name)[2, 1].view(-1)[0] = bad
    with pytest.raises(ValueError, match=r"position \(2, 1\) holds a non-finite"):
        lc.to_conv(atol=1e9)


@pytest.mark.parametrize("atol", [float("nan"), -1.0, "0", True])
def test_to_conv_refuses_a_bad_atol(atol):
    # a NaN atol passed every difference (d > nan is False): a non-conv became a conv
    lc = LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5)
    with torch.no_grad():
        lc.weight[1, 1] += 1.0
    with pytest.raises(ValueError, match="atol must be a non-negative number"):
        lc.to_conv(atol=atol)


def test_autocast_returns_the_product_dtype_as_conv2d_does():
    # the float32 bias promoted the bfloat16 product back to float32 (nn.Conv2d: bfloat16)
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, (7, 6), 3, stride=(2, 1), padding=1)
    x = torch.randn(2, 3, 7, 6)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        conv_dtype = nn.Conv2d(3, 4, 3)(x).dtype
    assert y.dtype == conv_dtype == torch.bfloat16
    assert ((y.detach().float() - ref.detach()).norm() / ref.detach().norm()).item() < 2e-2
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    assert torch.equal(layer(x), ref)  # outside autocast: the same bits
