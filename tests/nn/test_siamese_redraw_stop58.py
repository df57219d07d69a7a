"""An untied Siamese re-draws every parameter of its right tower, or names what it could not (stop 58).

``Siamese(tower, tied=False)`` re-drew the right tower with each module's
``reset_parameters``. torch's ``nn.MultiheadAttention`` and ``nn.Transformer`` name theirs
``_reset_parameters``, so the right tower of a ``TransformerEncoderLayer`` kept the left's
``in_proj_weight`` bit for bit, and a module with no reset method at all was copied with
no word: the untied baseline started partly tied.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.nn import Attention, Siamese, TiedAutoencoder


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return x * self.w


def _copied(net: Siamese) -> list[str]:
    """Right-tower parameters equal to the left's that are not a constant init (ones, zeros)."""
    pairs = zip(net.left.named_parameters(), net.right.named_parameters(), strict=True)
    return [n for (n, p), (_, q) in pairs if torch.equal(p, q) and p.unique().numel() > 1]


def test_torch_attention_in_the_right_tower_is_redrawn():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    net = Siamese(layer, tied=False)
    assert _copied(net) == []  # before: ['self_attn.in_proj_weight']
    x = torch.randn(2, 3, 8)
    net.eval()
    za, zb = net(x, x)
    assert not torch.allclose(za, zb)  # two towers, not one


def test_a_parameter_no_reset_reaches_is_named_with_a_fix_that_works():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"not re-drawn: right\.1\.w \(_Scale: no reset_param"):
        net = Siamese(nn.Sequential(nn.Linear(4, 4), _Scale()), tied=False)
    assert _copied(net) == ["1.w"]
    torch.nn.init.normal_(net.right.get_parameter("1.w"))  # the advice, as printed
    assert _copied(net) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GRU(4, 3)),
        lambda: nn.MultiheadAttention(8, 2),
        lambda: Attention(8, 2, kv_heads=1),
        lambda: TiedAutoencoder(6, 3),
    ],
)
def test_towers_that_reset_fully_are_redrawn_without_a_warning(make):
    torch.manual_seed(0)
    net = Siamese(make(), tied=False)  # warnings are errors here
    assert _copied(net) == []
    assert len(list(net.right.parameters())) == len(list(net.left.parameters()))


def test_a_parent_reset_keeps_its_scheme_in_the_right_tower():
    # Attention's reset is Xavier with zero biases; nn.Linear's own reset (kaiming, uniform
    # biases) ran after it on the right tower's projections: std 0.072 for 0.125, biases
    # up to 0.12 for 0. A TiedAutoencoder's encoder went from Xavier (std 0.17) to 0.29.
    torch.manual_seed(0)
    net = Siamese(Attention(64, 4), tied=False)
    xavier = (6 / 128) ** 0.5 / 3**0.5  # std of U(±√(6/(fan_in+fan_out)))
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        right = net.right.get_submodule(proj)
        assert not right.bias.any()
        assert right.weight.std().item() == pytest.approx(xavier, rel=0.08)
    assert _copied(net) == []
    ae = Siamese(TiedAutoencoder(64, 4), tied=False)
    assert ae.right.encoder.weight.std().item() == pytest.approx((6 / 68) ** 0.5 / 3**0.5, rel=0.1)
    assert _copied(ae) == []


def test_running_statistics_of_the_right_tower_start_afresh():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, affine=False)
    bn(torch.randn(8, 3) * 5 + 2)  # the left tower has seen data
    net = Siamese(nn.Sequential(nn.Linear(3, 3), bn), tied=False)
    assert net.left[1].running_mean.abs().min() > 0
    assert not net.right[1].running_mean.any() and int(net.right[1].num_batches_tracked) == 0
