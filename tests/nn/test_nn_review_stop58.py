"""Stop 58 review (tying.nn, commit b1e61b7): the new refusals and their legitimate neighbours.

- A ``LocallyConnected2d`` with one output position along an axis reads the one window at
  ``-padding`` whatever its stride there: a load across that stride computes the same
  function, and was refused as "another window of the input".
- ``HashedEmbedding(3, 64, B, mode="qr")``: no budget passes both refusals (the qr minimum
  said "raise buckets to 256", the new cap then "use buckets <= 192").
- A qr state dict across seed/sign/budget of one split: ``load_state_dict`` takes it (stop
  58), ``tying.load`` of the same layer's file refused it.
- ``LiftingConv2d`` takes one unbatched image now; the next ``GroupConv2d`` then told the
  user to "lift an image with LiftingConv2d first" (it was lifted), and ``GroupPool`` said
  nothing of the fix.
"""

import pytest
import torch
from torch import nn

import tying
from tying.nn import (
    GroupConv2d,
    GroupPool,
    HashedEmbedding,
    HashedEmbeddingBag,
    LiftingConv2d,
    LocallyConnected2d,
)


@pytest.mark.parametrize(
    "saved, other, size",
    [
        (
            {"input_size": 5, "kernel_size": 5},
            {"input_size": 5, "kernel_size": 5, "stride": 2},
            (5, 5),
        ),
        (
            {"input_size": (1, 9), "kernel_size": (1, 3), "stride": (1, 3)},
            {"input_size": (1, 9), "kernel_size": (1, 3), "stride": 3},
            (1, 9),
        ),
    ],
)
def test_lc_stride_on_an_axis_with_one_position_moves_no_window(saved, other, size):
    torch.manual_seed(0)
    src = LocallyConnected2d(2, 3, **saved)
    dst = LocallyConnected2d(2, 3, **other)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 2, *size)
    assert torch.equal(dst(x), src(x))


def test_lc_stride_on_an_axis_with_several_positions_is_still_refused():
    src = LocallyConnected2d(2, 3, (1, 9), (1, 3), stride=(1, 3))  # 1 × 3 positions
    dst = LocallyConnected2d(2, 3, (1, 7), (1, 3), stride=(1, 2))  # 1 × 3 positions too
    with pytest.raises(ValueError, match=r"stride=\(1, 3\) \(this layer: \(1, 2\)\)"):
        dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("V, D", [(1, 64), (2, 8), (3, 64)])
def test_qr_for_three_rows_or_fewer_is_refused_with_advice_that_works(V, D):
    # the qr minimum's advice (raise buckets) and the cap's (buckets <= V·D) sent a user
    # back and forth; now the cap's advice, followed, ends at one that works
    with pytest.raises(ValueError, match=f"use buckets <= {V * D}"):
        HashedEmbedding(V, D, 4 * V * D, mode="qr")
    for buckets in (1, V * D):
        with pytest.raises(
            ValueError,
            match=r"mode='qr' cannot store a .* use mode='entry' or "
            r"mode='block' with buckets <= " + f"{V * D}",
        ):
            HashedEmbedding(V, D, buckets, mode="qr")
    HashedEmbedding(V, D, V * D, mode="block")  # the advice, followed (entry mode builds too;
    # its first build compiles a hash kernel: seconds, left out here)
    HashedEmbedding(4, D, 4 * D, mode="qr")  # four rows: qr fits below the dense size


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_tying_load_agrees_with_load_state_dict_on_a_qr_table_of_one_split(cls, tmp_path):
    torch.manual_seed(0)
    src = cls(30, 2, 40, mode="qr", seed=0)
    path = tying.save(src, tmp_path / "qr.safetensors")
    dst = cls(30, 2, 41, mode="qr", seed=5, signed=False)  # split (3, 10) too
    tying.load(dst, path)
    ids = torch.arange(30)
    assert torch.equal(dst.weight, src.weight)
    assert tying.verify(dst) == 1
    if cls is HashedEmbedding:
        assert torch.equal(dst(ids), src(ids))
    # another split is still refused by both, and changes nothing
    other = cls(30, 2, 36, mode="qr")  # split (4, 9): 13 rows as well
    before = other.weight_physical.detach().clone()
    with pytest.raises(tying.TieError, match=r"buckets=36"):
        tying.load(other, path)
    with pytest.raises(ValueError, match=r"buckets=40 \(this layer: 36\)"):
        other.load_state_dict(src.state_dict())
    assert torch.equal(other.weight_physical, before)


def test_one_image_through_a_group_cnn_is_refused_with_the_fix_that_works():
    torch.manual_seed(0)
    net = nn.Sequential(LiftingConv2d(2, 3, 3), GroupConv2d(3, 3, 3), GroupPool())
    x = torch.randn(2, 8, 8)
    with pytest.raises(
        ValueError,
        match=r"got shape \(3, 4, 8, 8\); a 4-D field is what "
        r"LiftingConv2d returns .* net\(x.unsqueeze\(0\)\)\[0\]",
    ):
        net(x)
    with pytest.raises(ValueError, match=r"GroupPool expected .*net\(x.unsqueeze\(0\)\)\[0\]"):
        nn.Sequential(LiftingConv2d(2, 3, 3), GroupPool())(x)
    y = net(x.unsqueeze(0))[0]  # the advice, followed
    assert y.shape == (3, 8, 8)
    # an image batch given to GroupConv2d by mistake keeps its advice
    with pytest.raises(ValueError, match=r"lift an image with LiftingConv2d first"):
        GroupConv2d(3, 3, 3)(torch.randn(2, 3, 8, 8))
