"""A write into a hashed embedding's computed weight is refused at the lookup (stop 61):
the lookup reads the buckets, not the weight, and ran on the old values with no error."""

import pytest
import torch
from torch import nn

from tying.core.errors import TieError
from tying.nn import HashedEmbedding, HashedEmbeddingBag


@pytest.mark.parametrize("mode", ["entry", "block"])
def test_hashed_embedding_row_write_refused_at_lookup(mode):
    torch.manual_seed(0)
    emb = HashedEmbedding(10, 4, buckets=8, mode=mode)
    ids = torch.tensor([3])
    before = emb(ids).detach()
    assert before.abs().max() > 0.1  # the old code returned this row, not the zeros written
    with torch.no_grad():
        emb.weight[3] = 0  # nn.Embedding's idiom for a padding row
    with pytest.raises(TieError, match=r"weight was written in place .* write to weight_physical"):
        emb(ids)
    # refused once; the tie reads on unchanged
    assert torch.equal(emb(ids).detach(), before)


def test_hashed_bag_init_through_weight_refused():
    bag = HashedEmbeddingBag(10, 4, buckets=8)
    nn.init.normal_(bag.weight, std=0.02)  # lost: bag.weight is computed from the buckets
    with pytest.raises(TieError, match="weight was written in place"):
        bag(torch.tensor([[1, 2]]))
    # the advice, followed, takes
    nn.init.normal_(bag.weight_physical, std=0.02)
    assert bag(torch.tensor([[1, 2]])).abs().max() < 0.2


def test_reading_without_writing_is_not_refused():
    emb = HashedEmbedding(10, 4, buckets=8)
    w = emb.weight  # read, held, never written
    assert torch.equal(emb(torch.tensor([2, 5])), w[[2, 5]])
