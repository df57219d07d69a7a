"""Stop 56: HashedEmbeddingBag's per_sample_weights in another dtype than the table.

``nn.EmbeddingBag`` refuses weights of another dtype than its table (also under autocast);
``HashedEmbeddingBag`` cast them to the table's dtype with no error (float64 weights into
a float32 bag, bfloat16 weights into a float32 bag: a float32 answer from rounded weights).
It refuses by name now, with the fix; weights in the table's dtype still equal
``F.embedding_bag`` over the logical table, in float64 and in bfloat16.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tying.nn import HashedEmbeddingBag

_IDS, _OFFSETS = torch.tensor([3, 7, 7, 1, 49, 0]), torch.tensor([0, 2, 2, 5])


@pytest.mark.parametrize(
    ("table", "weights"),
    [
        (torch.float32, torch.float64),
        (torch.float32, torch.bfloat16),
        (torch.float64, torch.float32),
        (torch.bfloat16, torch.float32),
    ],
)
def test_weights_of_another_dtype_are_refused_as_torch_does(table, weights):
    bag = HashedEmbeddingBag(50, 4, buckets=16, pooling="sum", dtype=table)
    psw = torch.rand(6, dtype=weights)
    with pytest.raises(RuntimeError):  # the anchor refuses the same call
        F.embedding_bag(_IDS, bag.weight.detach(), _OFFSETS, mode="sum", per_sample_weights=psw)
    before = bag.weight_physical.detach().clone()
    with pytest.raises(
        TypeError,
        match=rf"HashedEmbeddingBag: the input per_sample_weights is {weights} but the "
        rf"layer's parameters are {table}; pass per_sample_weights\.to\({table}\)",
    ):
        bag(_IDS, _OFFSETS, per_sample_weights=psw)
    assert torch.equal(bag.weight_physical, before)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_weights_in_the_table_dtype_match_embedding_bag(dtype):
    torch.manual_seed(0)
    bag = HashedEmbeddingBag(50, 4, buckets=16, pooling="sum", dtype=dtype)
    psw = torch.rand(6, dtype=torch.float64).to(dtype)
    got = bag(_IDS, _OFFSETS, per_sample_weights=psw)
    # the anchor in float64 from the same (rounded) values: bf16 rounds the result once
    want = F.embedding_bag(
        _IDS, bag.weight.detach().double(), _OFFSETS, mode="sum", per_sample_weights=psw.double()
    )
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
