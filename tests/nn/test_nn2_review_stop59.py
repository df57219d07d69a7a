"""Review of abccc7f (stop 59, nn2): false refusals of the new checks.

- Siamese.distance refused a time-first sequence tower (nn.LSTM / nn.TransformerEncoder
  with their default batch_first=False, inputs (T, B, F) pooled to (B, H)), whose
  distances were right before; its advice ("put the batch first") is refused again.
- A tied LocallyConnected2d on the meta device (deferred init) could no longer be
  assigned a meta value ("Tensor.item() cannot be called on meta tensors").
- A filter holding NaN/inf spread to every position was refused as "position (0, 0)
  differs from position (0, 0) by inf".
"""

import pytest
import torch
from torch import nn

from tying.nn import LocallyConnected2d, Siamese


class _TimeFirstLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)  # batch_first=False, torch's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, 4) -> (B, 6)
        return self.lstm(x)[1][0][-1]


class _TimeFirstTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, 8) -> (B, 8)
        return self.enc(x).mean(0)


@pytest.mark.parametrize("tower,f", [(_TimeFirstLSTM, 4), (_TimeFirstTransformer, 8)])
def test_time_first_tower_distance_is_one_per_item(tower, f):
    torch.manual_seed(0)
    net = Siamese(tower()).eval()
    a, b = torch.randn(7, 3, f), torch.randn(7, 3, f)  # (T, B, F)
    za, zb = net.left(a), net.left(b)
    want = (za - zb).norm(dim=1)  # (B,)
    torch.testing.assert_close(net.distance(a, b), want)


def test_unbatched_item_still_refused_with_advice():
    net = Siamese(nn.Conv2d(1, 4, 3))
    a, b = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    with pytest.raises(ValueError, match=r"a\.unsqueeze\(0\), b\.unsqueeze\(0\)"):
        net.distance(a, b)
    assert net.distance(a[None], b[None]).shape == (1,)


def test_tied_meta_layer_takes_a_meta_value():
    with torch.device("meta"):
        layer = LocallyConnected2d(2, 3, input_size=5, kernel_size=3).tie_filters()
    layer.weight = torch.empty(3, 3, 3, 2, 3, 3, device="meta")
    assert layer.parametrizations.weight.original.shape == (3, 2, 3, 3)
    with pytest.raises(ValueError, match=r"reads as \(3, 3, 3, 2, 3, 3\)"):
        layer.weight = torch.empty(3, 2, 3, 3, device="meta")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_equal_positions_with_nonfinite_entries_assign(bad):
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, input_size=5, kernel_size=3).double().tie_filters()
    one = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    one[0, 0, 0, 0] = bad
    layer.weight = one.expand(3, 3, *one.shape)
    assert torch.equal(layer.parametrizations.weight.original.nan_to_num(), one.nan_to_num())
    # positions that differ (one NaN only at one position) are still refused
    value = one.expand(3, 3, *one.shape).clone()
    value[1, 2, 0, 0, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"position \(1, 2\) differs from position \(0, 0\)"):
        layer.weight = value


def test_dim1_coincidence_without_a_time_first_module_still_refused():
    # unbatched (3, 8, 8) through 8 channels and a Flatten: (8, 36), dim 0 = the input's dim 1
    net = Siamese(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()))
    a, b = torch.randn(3, 8, 8), torch.randn(3, 8, 8)
    with pytest.raises(ValueError, match=r"a\.unsqueeze\(0\), b\.unsqueeze\(0\)"):
        net.distance(a, b)
