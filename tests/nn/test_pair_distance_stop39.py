"""Stop 39: pair distances of one-value-per-pair embeddings.

``contrastive_loss`` and ``Siamese.distance`` flattened each embedding from dim 1, so a
``(B,)`` embedding (a tower ending in one unit, flattened: a score per input) crashed with
torch's "Dimension out of range"; it is the distance ``|za_i − zb_i|`` per pair.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import Siamese, contrastive_loss


def _brute_loss(za, zb, same, margin):
    # the Hadsell–Chopra–LeCun loss written pair by pair in plain Python
    total = 0.0
    for i in range(za.shape[0]):
        d = math.sqrt(float(((za[i] - zb[i]) ** 2).sum()))
        total += d * d if same[i] else max(0.0, margin - d) ** 2
    return total / za.shape[0]


def test_contrastive_loss_of_one_value_per_pair():
    za, zb = torch.tensor([0.0, 1.0]), torch.tensor([3.0, 1.2])
    got = contrastive_loss(za, zb, torch.tensor([1.0, 0.0]), margin=1.0)
    assert got.item() == pytest.approx((9.0 + 0.8**2) / 2)


def test_siamese_distance_of_a_one_unit_tower():
    torch.manual_seed(0)
    net = Siamese(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)))
    a, b = torch.rand(4, 3), torch.rand(4, 3)
    assert torch.allclose(net.distance(a, b), (net.left(a) - net.left(b)).abs())


def test_zero_dim_embeddings_are_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"contrastive_loss: za and zb must be \(B, …\).*0-d"):
        contrastive_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0))


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    batch=st.integers(1, 5),
    tail=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    margin=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**16),
)
def test_contrastive_loss_matches_the_pairwise_brute_force_for_any_rank(batch, tail, margin, seed):
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(batch, *tail, generator=g, dtype=torch.float64)
    zb = torch.randn(batch, *tail, generator=g, dtype=torch.float64)
    same = torch.randint(0, 2, (batch,), generator=g).to(torch.float64)
    got = contrastive_loss(za, zb, same, margin=margin)
    assert got.item() == pytest.approx(_brute_loss(za, zb, same, margin), rel=1e-12, abs=1e-12)
