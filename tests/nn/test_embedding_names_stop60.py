"""nn.Embedding / nn.EmbeddingBag keywords in the hashed layers name what to use (stop 60).

``padding_idx=``, ``max_norm=``, ``include_last_offset=`` got Python's bare "unexpected
keyword argument"; ``HashedEmbeddingBag(..., mode="sum")`` was told the hashing modes,
not that the pooling is ``pooling=``. Each test follows the advice it pins.
"""

import pytest
import torch
from torch import nn

from tying.nn import HashedEmbedding, HashedEmbeddingBag


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_mode_names_pooling_and_the_advice_works(mode):
    with pytest.raises(ValueError, match=rf"mode= here picks the hashing .*pass pooling='{mode}'"):
        HashedEmbeddingBag(20, 4, 16, mode=mode)
    torch.manual_seed(0)
    bag = HashedEmbeddingBag(20, 4, 16, pooling=mode, mode="entry")
    ref = nn.EmbeddingBag(20, 4, mode=mode)
    ref.weight.data.copy_(bag.weight.detach())
    ids = torch.randint(0, 20, (3, 5))
    torch.testing.assert_close(bag(ids), ref(ids))


def test_bag_max_is_refused_by_name():
    with pytest.raises(ValueError, match="max pooling is not provided"):
        HashedEmbeddingBag(20, 4, 16, mode="max")


def test_padding_idx_advice_matches_nn_embedding_outputs():
    with pytest.raises(TypeError, match=r"no keyword 'padding_idx'.*\(ids != padding_idx\)"):
        HashedEmbedding(20, 4, 16, padding_idx=0)
    emb = HashedEmbedding(20, 4, 16)
    ref = nn.Embedding(20, 4, padding_idx=0)
    with torch.no_grad():
        ref.weight.copy_(emb.weight)
        ref.weight[0] = 0
    ids = torch.tensor([[0, 3, 0, 7]])
    out = emb(ids)
    torch.testing.assert_close(out * (ids != 0).unsqueeze(-1), ref(ids))


def test_bag_padding_idx_advice_matches_nn_embedding_bag():
    with pytest.raises(TypeError, match=r"per_sample_weights=\(ids != padding_idx\)"):
        HashedEmbeddingBag(20, 4, 16, padding_idx=0)
    bag = HashedEmbeddingBag(20, 4, 16, pooling="sum")
    ref = nn.EmbeddingBag(20, 4, mode="sum", padding_idx=0)
    with torch.no_grad():
        ref.weight.copy_(bag.weight)
        ref.weight[0] = 0
    ids = torch.tensor([[0, 3, 0, 7], [5, 0, 9, 1]])
    got = bag(ids, per_sample_weights=(ids != 0).to(torch.float32))
    torch.testing.assert_close(got, ref(ids))


def test_max_norm_advice_matches_nn_embedding_outputs():
    with pytest.raises(TypeError, match="no keyword 'max_norm'.*scale the looked-up rows"):
        HashedEmbedding(20, 4, 16, max_norm=0.1)
    emb = HashedEmbedding(20, 4, 16)
    ref = nn.Embedding(20, 4, max_norm=0.1)
    ref.weight.data.copy_(emb.weight.detach())
    ids = torch.tensor([1, 4, 9])
    out = emb(ids)
    scaled = out * (0.1 / out.norm(dim=-1, keepdim=True).clamp_min(1e-7)).clamp(max=1)
    torch.testing.assert_close(scaled, ref(ids))


def test_include_last_offset_advice_matches_nn_embedding_bag():
    with pytest.raises(TypeError, match=r"include_last_offset.*pass offsets\[:-1\]"):
        HashedEmbeddingBag(20, 4, 16, include_last_offset=True)
    bag = HashedEmbeddingBag(20, 4, 16, pooling="sum")
    ref = nn.EmbeddingBag(20, 4, mode="sum", include_last_offset=True)
    ref.weight.data.copy_(bag.weight.detach())
    ids, offsets = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 2, 5])
    torch.testing.assert_close(bag(ids, offsets[:-1]), ref(ids, offsets))


@pytest.mark.parametrize("name", ["scale_grad_by_freq", "norm_type", "_freeze"])
def test_other_embedding_keywords_named(name):
    with pytest.raises(TypeError, match=f"HashedEmbedding: no keyword '{name}' here; "):
        HashedEmbedding(20, 4, 16, **{name: True})


def test_unknown_keyword_keeps_pythons_message():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        HashedEmbeddingBag(20, 4, 16, colour=1)
