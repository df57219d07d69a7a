"""Hashed layers take NumPy integer seeds and sizes as ``seed=3`` would (stop 38).

``HashedLinear(seed=np.int64(3))`` was accepted; ``HashedEmbedding``/``HashedEmbeddingBag``
refused the same seed ("must be a non-negative int", a seed read from a config array).
Accepted now with exactly the hashing of the Python int; floats and bools stay refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.nn import HashedEmbedding, HashedEmbeddingBag, HashedLinear

_MODES = [("entry", {}), ("block", {"block": 2}), ("qr", {})]


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
@pytest.mark.parametrize(("mode", "extra"), _MODES)
def test_numpy_int_seed_and_sizes_hash_as_python_ints(cls, mode, extra):
    numpy_extra = {k: np.int64(v) for k, v in extra.items()}
    a = cls(np.int64(20), np.int32(4), np.int64(40), seed=np.int64(3), mode=mode, **numpy_extra)
    b = cls(20, 4, 40, seed=3, mode=mode, **extra)
    assert type(a.seed) is int and a.seed == 3
    assert (a.num_embeddings, a.embedding_dim) == (20, 4)
    b.load_state_dict(a.state_dict())  # refused if the two hashed differently
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    if mode == "qr":
        return  # quotient-remainder has no hash: the seed picks nothing (documented)
    other = cls(20, 4, 40, seed=4, mode=mode, **extra)
    with torch.no_grad():
        other.weight_physical.copy_(a.weight_physical)
    assert not torch.equal(other.weight, a.weight)  # the seed does pick the hash


@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
@pytest.mark.parametrize("seed", [np.float64(3), np.bool_(True), True, 3.0, -1, np.int64(-1)])
def test_a_seed_that_is_not_a_non_negative_int_is_still_refused(cls, seed):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: seed must be a non-negative int"):
        cls(20, 4, 40, seed=seed)


def test_hashed_linear_numpy_seed_hashes_as_the_python_int():
    a, b = HashedLinear(8, 4, 5, seed=np.int64(3)), HashedLinear(8, 4, 5, seed=3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
