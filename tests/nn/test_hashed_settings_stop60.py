"""Hashed layers name themselves and the keyword in their settings' refusals (stop 60).

``HashedLinear(6, 4, 100)`` was refused as "rule 0 share('weight', relation=Hashed(...))",
``seed=-1`` as "Hashed(seed=...) must be an int >= 0 ... e.g. Hashed(buckets=1024, ...)",
a relation the caller never wrote; ``buckets=0`` as "buckets must be a positive int"
naming no layer (HashedEmbedding's too). ``HashedEmbedding`` already named itself for
its seed and its buckets beyond the table.
"""

import numpy as np
import pytest
import torch

from tying.nn import HashedEmbedding, HashedEmbeddingBag, HashedLinear


def test_more_buckets_than_weight_entries_names_the_layer_and_the_cap():
    with pytest.raises(
        ValueError, match=r"HashedLinear: buckets=100 is more than .* use buckets <= 24"
    ):
        HashedLinear(6, 4, 100)
    assert HashedLinear(6, 4, 24).buckets == 24  # the advice is taken


@pytest.mark.parametrize("seed", [-1, 1.5, True, np.float64(2)])
def test_bad_seed_names_the_layer(seed):
    with pytest.raises(ValueError, match=r"HashedLinear: seed must be a non-negative int, got "):
        HashedLinear(6, 4, 10, seed=seed)


def test_signed_not_a_bool_names_the_layer():
    with pytest.raises(TypeError, match=r"HashedLinear: signed must be True or False, got 'no'"):
        HashedLinear(6, 4, 10, signed="no")


def test_numpy_bool_signed_hashes_as_the_python_bool():
    a, b = HashedLinear(6, 4, 10, signed=np.False_), HashedLinear(6, 4, 10, signed=False)
    b.load_state_dict(a.state_dict())  # refused if the two hashed differently
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("build", "owner"),
    [
        (lambda: HashedLinear(6, 4, 0), "HashedLinear"),
        (lambda: HashedEmbedding(10, 4, 0), "HashedEmbedding"),
        (lambda: HashedEmbeddingBag(10, 4, 0), "HashedEmbeddingBag"),
    ],
)
def test_non_positive_buckets_name_the_layer(build, owner):
    with pytest.raises(ValueError, match=rf"^{owner}: buckets must be a positive int, got 0"):
        build()
