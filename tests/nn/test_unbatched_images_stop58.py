"""Stop 58: LiftingConv2d and TiedUNet take one unbatched image ``(C, H, W)``, as nn.Conv2d does.

Both refused it ("expected an image batch (B, C, H, W)"), where the torch layer they
stand in for returns the unbatched output. The output equals the batched one's row.
GroupConv2d keeps refusing a 4-D input: ``(C, |G|, H, W)`` cannot be told from an image
batch fed to it by mistake.
"""

import pytest
import torch

from tying.nn import GroupConv2d, LiftingConv2d, TiedUNet


@pytest.mark.parametrize(
    "layer",
    [
        lambda: LiftingConv2d(2, 3, 3, group="C4"),
        lambda: LiftingConv2d(2, 3, 3, group="D4", padding=0, tied=False),
        lambda: TiedUNet(2, 3, (4, 8)),
    ],
)
def test_one_image_gives_the_batched_row_and_gradient(layer):
    torch.manual_seed(0)
    net = layer().double()
    x = torch.randn(2, 8, 8, dtype=torch.float64, requires_grad=True)
    y = net(x)
    ref = net(x.detach().unsqueeze(0))[0]
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    xb = x.detach().unsqueeze(0).requires_grad_()
    (gb,) = torch.autograd.grad(net(xb).square().sum(), xb)
    torch.testing.assert_close(gx, gb[0], rtol=0, atol=1e-12)


def test_a_wrong_image_and_a_group_field_without_batch_are_still_refused():
    with pytest.raises(
        ValueError,
        match=r"LiftingConv2d expected .*got shape \(3, 8, 8\) \(one image is \(2, H, W\)\)",
    ):
        LiftingConv2d(2, 3, 3)(torch.randn(3, 8, 8))
    with pytest.raises(
        ValueError, match=r"TiedUNet expected .*got shape \(1, 8, 8\) \(one image is \(2, H, W\)\)"
    ):
        TiedUNet(2, 3, (4, 8))(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match=r"needs H and W divisible by 2"):
        TiedUNet(2, 3, (4, 8))(torch.randn(2, 7, 8))
    with pytest.raises(ValueError, match=r"expected a field \(B, 2, 4, H, W\)"):
        GroupConv2d(2, 3, 3)(torch.randn(2, 4, 8, 8))


def test_vmap_over_a_batch_hands_the_layer_one_image_each():
    # torch.func.vmap over images calls the layer on (C, H, W): it was refused too
    net = LiftingConv2d(2, 3, 3, group="D4").double()
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(net)(x), net(x), rtol=0, atol=1e-12)
