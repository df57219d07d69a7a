"""HashedEmbedding / HashedLinear: O(B) storage, lookups equal the logical table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tying
from tying.nn import HashedEmbedding, HashedLinear


def test_embedding_lookup_equals_the_logical_table_and_trains_buckets_only():
    torch.manual_seed(0)
    emb = HashedEmbedding(30, 6, buckets=17, seed=3)
    idx = torch.randint(0, 30, (4, 5))
    torch.testing.assert_close(emb(idx), F.embedding(idx, emb.weight), rtol=0, atol=0)
    assert [n for n, _ in emb.named_parameters()] == ["weight_physical"]
    # the entry (i, j) reads bucket h(i*D + j) times its sign, as tying.Hashed defines
    b, s = tying.Hashed(17, seed=3).hash(torch.tensor([2 * 6 + 4]))
    assert emb.weight[2, 4] == emb.weight_physical[b[0]] * s[0]
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    emb(idx).square().sum().backward()
    assert emb.weight_physical.grad.shape == (17,)
    opt.step()
    torch.testing.assert_close(emb(idx), F.embedding(idx, emb.weight), rtol=0, atol=0)
    assert tying.verify(emb) == 1


def test_embedding_memory_is_buckets_not_vocab_times_dim():
    emb = HashedEmbedding(1_000_000, 512, buckets=1 << 16)  # logical 512 M entries
    assert emb.weight_physical.numel() == 1 << 16
    c = tying.count(emb)
    assert (c.logical, c.physical) == (512_000_000, 1 << 16)
    assert emb.memory_ratio() == pytest.approx((1 << 16) / 512e6)
    out = emb(torch.tensor([0, 999_999]))
    assert out.shape == (2, 512)
    assert tying.fan_in(emb) == 1


def test_linear_equals_dense_linear_with_the_logical_weight():
    torch.manual_seed(1)
    layer = HashedLinear(12, 7, buckets=20)
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert tying.count(layer).physical == 20 + 7
    assert tying.fan_in(layer) == 12
    bound = 1 / math.sqrt(12)
    assert layer.weight_physical.abs().max() <= bound
    big = HashedLinear(400, 300, buckets=5000, bias=False)
    assert big.weight_physical.std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.1)
    compiled = torch.compile(layer, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_save_load_round_trip(tmp_path):
    emb = HashedEmbedding(50, 4, buckets=11)
    path = tmp_path / "e.safetensors"
    tying.save(emb, path)
    other = HashedEmbedding(50, 4, buckets=11)
    tying.load(other, path)
    idx = torch.arange(50)
    torch.testing.assert_close(other(idx), emb(idx), rtol=0, atol=0)


def test_errors():
    with pytest.raises(ValueError, match="buckets must be a positive int, got 0"):
        HashedEmbedding(10, 4, buckets=0)
    emb = HashedEmbedding(10, 4, buckets=8)
    with pytest.raises(IndexError, match=r"indices must be in \[0, 10\), got min 0, max 10"):
        emb(torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="expects int64/int32 indices, got torch.float32"):
        emb(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"expected \(\*, 5\), got shape \(2, 4\)"):
        HashedLinear(5, 3, buckets=4)(torch.randn(2, 4))
