"""Siamese.distance refuses embeddings whose dim 0 is not the inputs' batch (stop 59b).

nn.Linear and nn.Conv2d towers take one unbatched item; its embedding (3,) or (4, 6, 6)
was read as 3 or 4 pairs, and distance returned one "distance" per coordinate or
channel (|za_i - zb_i|) instead of the one ||za - zb||, with no error.
"""

import pytest
import torch
from torch import nn

from tying.nn import Siamese


@pytest.mark.parametrize(
    "tower,shape",
    [(nn.Linear(5, 3), (5,)), (nn.Conv2d(1, 4, 3), (1, 8, 8)), (nn.Embedding(10, 4), ())],
)
def test_unbatched_pair_refused_and_the_advice_works(tower, shape):
    torch.manual_seed(0)
    net = Siamese(tower)
    if shape:
        a, b = torch.randn(shape), torch.randn(shape)
    else:
        a, b = torch.tensor(1), torch.tensor(7)
    with pytest.raises(
        ValueError, match=r"Siamese.distance: one distance per pair .* a\.unsqueeze"
    ):
        net.distance(a, b)
    d = net.distance(a.unsqueeze(0), b.unsqueeze(0))  # the advice
    want = (net.left(a) - net.left(b)).norm()
    assert d.shape == (1,)
    torch.testing.assert_close(d[0], want)


@pytest.mark.parametrize(
    "tower,a",
    [
        (nn.Linear(5, 3), torch.randn(2, 5)),
        (nn.Linear(5, 3), torch.randn(1, 5)),
        (nn.Embedding(10, 4), torch.tensor([1, 2, 3])),
        (nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)), torch.randn(4, 5)),  # (B,) embedding
        (nn.Conv2d(1, 2, 3), torch.randn(3, 1, 6, 6)),
    ],
)
def test_batched_distances_unchanged(tower, a):
    net = Siamese(tower)
    b = a.flip(0)
    za, zb = net.left(a), net.left(b)
    want = (za - zb).reshape(za.shape[0], -1).norm(dim=1)
    torch.testing.assert_close(net.distance(a, b), want)
