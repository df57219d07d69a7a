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
    with pytest.raises(
        TieError, match=r"weight was written in place .* nn.init.normal_\(layer.weight_physical"
    ):
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


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
@pytest.mark.parametrize("via", ["left", "right"])
def test_siamese_tower_write_refused_at_either_lookup(cls, via):
    # review stop 61: the right tower looks up the left's buckets, and the write (through
    # either tower's weight) is recorded on the left's slot: R(ids) ran on the old row
    from tying.nn import Siamese

    torch.manual_seed(0)
    s = Siamese(cls(10, 4, buckets=8))
    ids = torch.tensor([3]) if cls is HashedEmbedding else torch.tensor([[3]])
    before = s.right(ids).detach()
    with torch.no_grad():
        getattr(s, via).weight[3] = 0
    with pytest.raises(TieError, match="weight was written in place"):
        s.right(ids)
    assert torch.equal(s.right(ids).detach(), before)  # refused once, reads on unchanged


def test_lost_write_advice_followed_on_a_hashed_table():
    torch.manual_seed(0)
    emb = HashedEmbedding(10, 4, buckets=16)
    ids = torch.arange(10)
    pretrained = torch.randn(10, 4)
    with torch.no_grad():
        emb.weight.copy_(pretrained)  # nn.Embedding's load of a dense table
    with pytest.raises(TieError, match=r"right_inverse\(pretrained\)") as info:
        emb(ids)
    # untying would leave the layer nothing to look up: not advised here
    assert "untie" not in str(info.value)
    with torch.no_grad():
        emb.weight_physical.data.copy_(emb.relation.right_inverse(pretrained))
    # the least-squares buckets: each bucket the mean of the signed entries it serves
    fit = emb(ids)
    assert torch.equal(fit, emb.weight)
    # checked against the least-squares solution over the dense hashing matrix
    basis = torch.eye(16)
    A = torch.stack([emb.relation(b, shape=(10, 4)).reshape(-1) for b in basis], 1)  # (40, 16)
    best = A @ torch.linalg.lstsq(A, pretrained.reshape(-1, 1)).solution  # (40, 1)
    assert torch.allclose(fit.detach().reshape(-1, 1), best, atol=1e-5)
    # the row advice: a masked lookup has the padding row at zero, the others unchanged
    pad = 3
    out = emb(ids) * (ids != pad).unsqueeze(-1)
    assert out[pad].abs().max() == 0 and torch.equal(out[4], fit[4])


def test_init_through_weight_then_load_state_dict_looks_up_the_checkpoint():
    # review stop 61: a generic init pass, then a checkpoint load, then a lookup: the load
    # replaced every bucket, yet the lookup refused the superseded write
    torch.manual_seed(0)
    src = HashedEmbedding(10, 4, buckets=8)
    emb = HashedEmbedding(10, 4, buckets=8)
    nn.init.normal_(emb.weight, std=0.02)
    emb.load_state_dict(src.state_dict())
    ids = torch.tensor([3, 7])
    assert torch.equal(emb(ids), src(ids))
    assert torch.equal(emb.weight, src.weight)
