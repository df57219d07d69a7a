"""Stop 59: a quotient-remainder table's repr shows what it reads, not a hash it ignores.

``HashedEmbedding(100, 8, 400, mode="qr", seed=3)`` printed ``seed=3, signed=True`` (and its
relation ``HashedTable(..., seed=3, signed=True, ...)``) though a qr lookup reads no hash:
two layers computing the same function printed as different ones.
"""

from __future__ import annotations

import pytest
import torch

from tying.nn import HashedEmbedding, HashedEmbeddingBag
from tying.nn.hashing import HashedTable


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_qr_repr_names_the_split_not_the_ignored_hash(cls):
    a = cls(100, 8, 400, mode="qr", seed=3, signed=True)
    b = cls(100, 8, 400, mode="qr", seed=0, signed=False)
    b.load_state_dict(a.state_dict())
    ids = torch.arange(100)
    args = (ids, torch.tensor([0, 40])) if cls is HashedEmbeddingBag else (ids,)
    assert torch.equal(a(*args), b(*args))  # one function...
    assert repr(a) == repr(b)  # ...one repr
    text = repr(a)
    assert "tables=(q=4, m=25)" in text
    assert "seed" not in text and "signed" not in text
    assert "HashedTable(mode='qr', buckets=400)" in text


def test_hashing_modes_keep_their_settings_in_the_repr():
    entry = HashedEmbedding(100, 8, 40, seed=2, signed=False)
    assert "seed=2, signed=False" in repr(entry)
    block = HashedEmbedding(100, 8, 40, mode="block", block=4, seed=5)
    assert "block=4, seed=5, signed=True" in repr(block)
    rel = HashedTable(mode="block", buckets=40, block=4, seed=2)
    assert eval(repr(rel)) == rel  # noqa: S307 - the repr is the constructor call
    assert (
        repr(HashedTable(mode="qr", buckets=400, seed=9)) == "HashedTable(mode='qr', buckets=400)"
    )


def test_qr_relations_of_one_budget_are_equal_whatever_seed_and_sign(tmp_path):
    import tying

    a = HashedTable(mode="qr", buckets=400, seed=3, signed=False)
    assert a == HashedTable(mode="qr", buckets=400)  # one function, one relation
    assert a != HashedTable(mode="qr", buckets=401)
    src = HashedEmbedding(100, 8, 400, mode="qr", seed=3, signed=True)
    dst = HashedEmbedding(100, 8, 400, mode="qr", seed=7, signed=False)
    tying.save(src, tmp_path / "qr.safetensors")
    tying.load(dst, tmp_path / "qr.safetensors")
    tying.verify(dst)
    assert torch.equal(dst(torch.arange(100)), src(torch.arange(100)))
    with pytest.raises(tying.TieError, match=r"HashedTable\(seed=...\) must be a non-negative int"):
        HashedTable(mode="qr", buckets=400, seed=-1)  # still checked before it is dropped
