"""A group conv's state dict records its group; a load across groups is refused (stop 57).

A tied ``LiftingConv2d`` stores one kernel block and one bias whatever its group, so a
C4 layer's state dict loaded into a D4 layer with no error and the layer computed
another function (the anchor: the same kernel rotated and mirrored by hand, eight
copies instead of four).
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tying.nn import GroupConv2d, GroupPool, LiftingConv2d


def _through_file(state):
    buf = io.BytesIO()
    torch.save(state, buf)  # keeps the state dict's metadata, as a checkpoint does
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _lifting_by_hand(layer, x, flips):
    """The lifting conv built explicitly: the one kernel rotated (and mirrored) per copy."""
    w, b = layer.kernels.e.detach(), layer.biases.e.detach()
    outs = []
    for m in range(flips):
        for r in range(4):
            k = torch.rot90(w.flip(-1) if m else w, r, dims=(-2, -1))
            outs.append(torch.nn.functional.conv2d(x, k, b, padding=layer.padding))
    return torch.stack(outs, dim=2)  # (B, C_out, |G|, H, W)


def test_a_c4_lifting_state_dict_is_refused_by_a_d4_layer_and_changes_nothing():
    torch.manual_seed(0)
    c4 = LiftingConv2d(2, 3, 3, group="C4").double()
    d4 = LiftingConv2d(2, 3, 3, group="D4").double()
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    pool = GroupPool("max")
    # what the load changed before: same pooled shape, another function, no error
    assert pool(c4(x)).shape == pool(d4(x)).shape
    c4_pooled = pool(_lifting_by_hand(c4, x, 1))
    d4_with_c4_kernel = pool(_lifting_by_hand(c4, x, 2))
    assert (d4_with_c4_kernel - c4_pooled).abs().max() > 0.1
    before = {k: v.clone() for k, v in d4.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"group 'C4' and this layer is over group 'D4'.*group='C4'"
    ):
        d4.load_state_dict(_through_file(c4.state_dict()))
    assert all(torch.equal(before[k], v) for k, v in d4.state_dict().items())
    # the same group loads and computes the saved layer's function (the anchor by hand)
    other = LiftingConv2d(2, 3, 3, group="C4").double()
    other.load_state_dict(_through_file(c4.state_dict()))
    assert torch.allclose(other(x), _lifting_by_hand(c4, x, 1), atol=1e-12)


def test_a_refused_group_inside_a_model_loads_nothing_and_old_dicts_still_load():
    torch.manual_seed(1)
    saved = nn.Sequential(nn.Linear(2, 2), LiftingConv2d(2, 3, 3, group="D4"))
    target = nn.Sequential(nn.Linear(2, 2), LiftingConv2d(2, 3, 3, group="C4"))
    w0 = target[0].weight.detach().clone()
    with pytest.raises(ValueError, match=r"LiftingConv2d at '1'.*group 'D4'"):
        target.load_state_dict(_through_file(saved.state_dict()))
    assert torch.equal(target[0].weight, w0)  # the Linear before it was not loaded
    # a plain dict (no record: saved before stop 57) loads as before
    target.load_state_dict(dict(saved.state_dict()))
    assert torch.equal(target[1].kernels.e, saved[1].kernels.e)
    # a partial load without the layer's entries is not refused
    state = _through_file(saved.state_dict())
    for key in [k for k in state if k.startswith("1.")]:
        del state[key]
    result = target.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["1.biases.e", "1.kernels.e"]


def test_group_conv_blocks_of_another_group_are_refused_with_strict_false():
    torch.manual_seed(2)
    c4, d4 = GroupConv2d(2, 3, 3, group="C4"), GroupConv2d(2, 3, 3, group="D4")
    before = {k: v.clone() for k, v in d4.state_dict().items()}
    # before stop 57: four of the eight D4 blocks took C4 values, the load reported success
    with pytest.raises(ValueError, match=r"GroupConv2d at '<root>'.*group 'C4'"):
        d4.load_state_dict(_through_file(c4.state_dict()), strict=False)
    assert all(torch.equal(before[k], v) for k, v in d4.state_dict().items())
