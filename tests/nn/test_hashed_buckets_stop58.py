"""Stop 58: more buckets than logical entries is refused in every hashed-embedding mode.

Entry mode refused it already; block mode stored values no lookup reads
(``HashedEmbedding(3, 2, 100, mode="block", block=2)``: 100 values for 6 entries,
``tying.count`` ratio 0.06), and a qr budget above ``V·D`` stored more values than the
dense table (``HashedEmbedding(30, 2, 200, mode="qr")``: 62 for 60), with no error.
"""

import pytest
import torch

import tying
from tying.nn import HashedEmbedding, HashedEmbeddingBag


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "block", "block": 2},
        {"mode": "block", "block": 2, "aligned": True},
        {"mode": "qr"},
    ],
)
@pytest.mark.parametrize("cls", [HashedEmbedding, HashedEmbeddingBag])
def test_more_buckets_than_entries_is_refused_in_every_mode(cls, kwargs):
    with pytest.raises(ValueError, match=r"buckets=100 is more than the table's 3 × 2 = 6 "):
        cls(3, 2, 100, **kwargs)
    with pytest.raises(ValueError, match=r"use buckets <= 60"):
        cls(30, 2, 200, **kwargs)


def test_qr_budget_refusal_says_why_and_its_advice_works():
    with pytest.raises(ValueError, match=r"mode='qr'.*more values than the dense table"):
        HashedEmbedding(30, 2, 200, mode="qr")
    emb = HashedEmbedding(30, 2, 60, mode="qr")  # the advice, followed
    c = tying.count(emb)
    assert c.physical <= c.logical == 60


@pytest.mark.parametrize(
    "kwargs", [{"mode": "entry"}, {"mode": "block", "block": 2}, {"mode": "qr"}]
)
def test_a_table_of_exactly_v_times_d_buckets_and_fewer_still_builds(kwargs):
    # legitimate variants: B = V·D and B < V·D in every mode, stored values <= entries
    for buckets in (60, 40):
        emb = HashedEmbedding(30, 2, buckets, **kwargs)
        c = tying.count(emb)
        assert c.physical <= buckets and c.logical == 60
        assert emb.weight.shape == (30, 2)  # the table reads (no lookup: no kernel compile)


def test_a_qr_state_dict_loads_across_seed_sign_and_a_budget_of_the_same_split():
    # qr hashes nothing: seed and sign are not read, and budgets 40 and 41 both split
    # (q, m) = (3, 10). The load was refused: "every stored value would land in other
    # logical entries", though both layers compute the same table from the same values.
    src = HashedEmbedding(30, 2, 40, mode="qr", seed=0)
    dst = HashedEmbedding(30, 2, 41, mode="qr", seed=5, signed=False)
    dst.load_state_dict(src.state_dict())
    ids = torch.arange(30)
    assert torch.equal(dst(ids), src(ids))
    assert tying.verify(dst) == 1


def test_a_qr_state_dict_of_another_split_or_mode_is_still_refused():
    src = HashedEmbedding(30, 2, 40, mode="qr")  # split (3, 10): 13 rows
    dst = HashedEmbedding(30, 2, 36, mode="qr")  # split (4, 9): 13 rows too, read otherwise
    before = dst.weight_physical.detach().clone()
    with pytest.raises(ValueError, match=r"buckets=40 \(this layer: 36\)"):
        dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.weight_physical, before)
    with pytest.raises(ValueError, match=r"mode='qr' \(this layer: 'block'\)"):
        HashedEmbedding(30, 2, 26, mode="block", block=2).load_state_dict(src.state_dict())
