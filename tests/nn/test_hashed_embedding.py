"""Hashed embedding tables at recommender scale (issue 18): modes, limits, fused kernels, ties."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tying.nn import HashedEmbedding, HashedEmbeddingBag, HashedLinear
from tying.nn import hashed_embedding as he_mod
from tying.nn.hashing import HashedTable, P

# Recorded from the HashedEmbedding of commit 7deabd0 (before issue 18), buckets set to
# 1..B so each output names its bucket and sign: C8's tables must read exactly these.
C8_SNAPSHOT = {
    (30, 6, 17, 3): [
        [13, -15, 9, -3, 14, 8],
        [-10, 4, -15, 9, 3, -14],
        [-15, 9, -11, 5, 16, -10],
    ],
    (1000, 16, 1000, 0): [
        [-808, -775, 742, 709, -676, -290, 257, 224, -191, -158, 125, 739, -706, -673, 640, 607],
        [-574, -541, 155, 122, -89, 56, 23, -990, -957, 571, 538, -505, -472, 439, 406, -373],
        [-725, -339, 306, 273, -240, -207, 174, 788, -755, -722, 689, 656, -623, -590, 204, 171],
    ],
}


def _fused_and_torch(emb, V, D, seed):
    """Outputs of the fused kernels and of the torch path on the same lookups, and the
    fused gradient (the torch path's is left in ``emb.weight_physical.grad``)."""
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(seed % 1000))
    g = torch.randn(40, D)
    out = emb(ids)
    out.backward(g)
    fused_grad = emb.weight_physical.grad
    emb.weight_physical.grad = None
    orig = he_mod.fused_available
    he_mod.fused_available = lambda w: False
    try:
        ref = emb(ids)
        ref.backward(g)
    finally:
        he_mod.fused_available = orig
    return out, ref, fused_grad


def _numbered(emb):
    with torch.no_grad():
        w = emb.weight_physical
        w.copy_(torch.arange(1, w.numel() + 1).float().reshape(w.shape))
    return emb


@pytest.fixture(params=["fused", "torch"])
def path(request, monkeypatch):
    """Run a test on the fused numba kernels and on the pure-torch path."""
    if request.param == "torch":
        monkeypatch.setattr(he_mod, "fused_available", lambda w: False)
    elif not tying.nn.hashed_kernels.fused_available(torch.zeros(1)):
        pytest.skip("numba is not installed: no fused kernels")
    return request.param


def test_c8_tables_read_the_same_buckets_and_signs_as_before(path):
    for (V, D, B, seed), want in C8_SNAPSHOT.items():
        emb = _numbered(HashedEmbedding(V, D, B, seed=seed))
        assert emb(torch.tensor([0, 1, V - 1])).long().tolist() == want
        assert isinstance(emb.relation, tying.Hashed)  # same relation, same files
    emb = _numbered(HashedEmbedding(1_000_000, 512, 1 << 16, seed=7, signed=False))
    assert emb(torch.tensor([999_999]))[0, :4].long().tolist() == [43227, 20000, 62308, 39081]
    # and the definition itself: entry (i, j) reads bucket h(i·D + j) of tying.Hashed
    emb = _numbered(HashedEmbedding(700, 9, 501, seed=11))
    ids = torch.randint(0, 700, (64,))
    b, s = tying.Hashed(501, seed=11).hash(ids.unsqueeze(-1) * 9 + torch.arange(9))
    assert torch.equal(emb(ids), ((b + 1) * s).float())


def test_tables_beyond_2_31_entries_store_only_their_buckets(path):
    for mode in ("entry", "block"):
        emb = HashedEmbedding(10**8, 128, 1 << 20, mode=mode)
        c = tying.count(emb)
        assert (c.logical, c.physical) == (12_800_000_000, 1 << 20)
        out = emb(torch.tensor([0, 5, 10**8 - 1]))
        out.square().sum().backward()
        assert out.shape == (3, 128) and emb.weight_physical.grad.shape == (1 << 20,)
        assert [n for n, _ in emb.named_parameters()] == ["weight_physical"]
    with pytest.raises(ValueError, match=r"12,800,000,000 entries .* layer\(ids\) instead"):
        emb.weight  # noqa: B018 - reading it would need 51 GB


def _limb_sum(x: int, coef) -> int:
    return sum(((x >> (21 * k)) & ((1 << 21) - 1)) * c for k, c in enumerate(coef))


def test_v_times_d_near_2_62_hashes_without_overflow(path):
    # the pair hash, evaluated with Python integers (no overflow possible) as the reference
    V, D, B = 2**55, 128, 1000
    emb = _numbered(HashedEmbedding(V, D, B, mode="entry", seed=5))
    rows = [0, 2**31 + 7, V - 1]
    h = emb._hash
    cols = range(D)
    for r, got in zip(rows, emb(torch.tensor(rows)).long().tolist()):
        c = h._row
        u1 = [(_limb_sum(r, c[1:4]) % P + c[4] + _limb_sum(j, h.col1) % P) % P for j in cols]
        u2 = [(_limb_sum(r, c[6:9]) % P + c[9] + _limb_sum(j, h.col2) % P) % P for j in cols]
        assert got == [(u % B + 1) * (1 if v & 1 else -1) for u, v in zip(u1, u2)]
    big = HashedEmbedding(2**40, 2**22, 4096, mode="block", block=64)  # V·D = 2**62
    assert big(torch.tensor([2**40 - 1])).isfinite().all()
    with pytest.raises(ValueError, match=r"exceeds 2\*\*62; lower num_embeddings"):
        HashedEmbedding(2**41, 2**22, 4096, mode="block")


def test_block_rows_are_signed_contiguous_runs_of_the_circular_array(path):
    B, Z = 40, 8
    emb = _numbered(HashedEmbedding(500, 32, B, mode="block", block=Z, seed=2))
    rows = emb(torch.arange(500)).long().view(500, 32 // Z, Z)  # (V, blocks, Z)
    pos = rows.abs() - 1
    assert torch.equal((pos[..., 1:] - pos[..., :-1]) % B, torch.ones_like(pos[..., 1:]))
    assert (rows.sign() == rows[..., :1].sign()).all()  # one sign per block
    assert ((pos[..., 0] + Z) > B).any()  # some blocks wrap round, and were read right
    assert torch.equal(emb(torch.arange(500)), emb.weight)  # the lookup is the logical table


def test_qr_rows_are_quotient_times_remainder(path):
    V, D = 1000, 4
    emb = HashedEmbedding(V, D, 400, mode="qr")
    q, m = emb._qr
    W = emb.weight_physical
    assert (q + m) * D <= 400 and W.shape == (q + m, D)
    r = torch.arange(V)
    torch.testing.assert_close(emb(r), W[r // m] * W[q + r % m], rtol=0, atol=0)
    assert len({(i // m, i % m) for i in range(V)}) == V  # no two ids share both rows
    with pytest.raises(ValueError, match=r"mode='qr': buckets=100 .* raise buckets to 256"):
        HashedEmbedding(V, D, 100, mode="qr")


@pytest.mark.parametrize("mode", ["entry", "block", "qr"])
def test_gradient_equals_autograd_through_the_logical_table(mode, path):
    torch.manual_seed(0)
    emb = HashedEmbedding(300, 16, 640, mode=mode, block=4 if mode == "block" else None)
    ids = torch.randint(0, 300, (50,))
    target = torch.randn(50, 16)
    (emb(ids) - target).square().sum().backward()
    got = emb.weight_physical.grad.clone()
    emb.weight_physical.grad = None
    (F.embedding(ids, emb.weight) - target).square().sum().backward()
    torch.testing.assert_close(got, emb.weight_physical.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["entry", "block", "qr"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_bag_matches_torch_embedding_bag_on_the_logical_table(mode, pooling, path):
    torch.manual_seed(1)
    kw = {"block": 4} if mode == "block" else {}
    bag = HashedEmbeddingBag(400, 8, 512, mode=mode, pooling=pooling, **kw)
    ids = torch.randint(0, 400, (30,))
    offsets = torch.tensor([0, 3, 3, 10, 29])  # an empty bag and a one-item bag included
    w = bag.weight.detach().requires_grad_()
    psw = torch.rand(30) if pooling == "sum" else None
    want = F.embedding_bag(ids, w, offsets, mode=pooling, per_sample_weights=psw)
    got = bag(ids, offsets, per_sample_weights=psw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(want)
    got.backward(g)
    (grad_logical,) = torch.autograd.grad(
        F.embedding_bag(ids, bag.weight, offsets, mode=pooling, per_sample_weights=psw),
        bag.weight_physical,
        g,
    )
    torch.testing.assert_close(bag.weight_physical.grad, grad_logical, rtol=1e-4, atol=1e-5)
    two_d = torch.randint(0, 400, (6, 5))
    torch.testing.assert_close(
        bag(two_d), F.embedding_bag(two_d, w, mode=pooling), rtol=1e-5, atol=1e-6
    )


@settings(max_examples=25, deadline=None)
@given(
    V=st.integers(1, 5000),
    D=st.sampled_from([1, 3, 8, 12]),
    B=st.integers(1, 3000),
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(["entry", "block"]),
    signed=st.booleans(),
)
def test_fused_kernels_equal_the_torch_path(V, D, B, seed, mode, signed):
    """Property: for any sizes, the fused kernels read and scatter exactly what torch does."""
    if not tying.nn.hashed_kernels.fused_available(torch.zeros(1)):
        pytest.skip("numba is not installed: no fused kernels")
    B = min(B, V * D)  # more buckets than entries is refused (some would never be read)
    Z = max(z for z in range(1, min(D, B) + 1) if D % z == 0) if mode == "block" else None
    emb = HashedEmbedding(V, D, B, mode=mode, block=Z, seed=seed, signed=signed)
    out, ref, fused_grad = _fused_and_torch(emb, V, D, seed)
    assert torch.equal(out, ref)
    torch.testing.assert_close(fused_grad, emb.weight_physical.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["entry", "block", "qr"])
def test_save_load_verify_and_tie_after_a_step(mode, tmp_path):
    kw = {"block": 8} if mode == "block" else {}
    V = 10**7 if mode != "entry" else 10**8  # block / qr / big entry: the HashedTable relation
    emb = HashedEmbedding(V, 16, 120_000, mode=mode, seed=3, **kw)
    ids = torch.tensor([0, 17, V - 1])
    opt = torch.optim.SGD(emb.parameters(), lr=0.5)
    emb(ids).square().sum().backward()
    opt.step()
    assert tying.verify(emb) == 1
    assert [t.relation for t in tying.ties(emb)] == [emb.relation]
    path = tmp_path / "e.safetensors"
    tying.save(emb, path)
    fresh = HashedEmbedding(V, 16, 120_000, mode=mode, seed=3, **kw)
    tying.load(fresh, path)
    assert tying.verify(fresh) == 1
    assert torch.equal(fresh(ids), emb(ids))
    c = tying.count(fresh)
    assert c.logical == V * 16 and c.physical == emb.weight_physical.numel()
    twin = copy.deepcopy(emb)  # deepcopy and state dicts keep the tie and the hash too
    assert tying.verify(twin) == 1 and torch.equal(twin(ids), emb(ids))
    other = HashedEmbedding(V, 16, 120_000, mode=mode, seed=3, **kw)
    other.load_state_dict(emb.state_dict())
    assert list(emb.state_dict()) == ["weight_physical"] and torch.equal(other(ids), emb(ids))


@pytest.mark.parametrize("mode", ["entry", "block", "qr"])
def test_torch_compile_fullgraph(mode):
    kw = {"block": 4} if mode == "block" else {}
    emb = HashedEmbedding(5000, 8, 2048, mode=mode, **kw)
    bag = HashedEmbeddingBag(5000, 8, 2048, mode=mode, pooling="sum", **kw)
    ids = torch.randint(0, 5000, (6, 5))
    compiled = torch.compile(emb, fullgraph=True, backend="aot_eager")
    out = compiled(ids)
    torch.testing.assert_close(out, emb(ids), rtol=0, atol=0)
    out.sum().backward()
    assert emb.weight_physical.grad.shape == emb.weight_physical.shape
    cbag = torch.compile(bag, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(cbag(ids), bag(ids), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [5000, -1])
def test_compiled_lookup_refuses_an_out_of_range_id(bad):
    # every id hashes to some bucket: without the check a compiled graph read a row quietly
    emb = HashedEmbedding(5000, 8, 2048)
    compiled = torch.compile(emb, fullgraph=True, backend="aot_eager")
    compiled(torch.tensor([0, 4999]))
    with pytest.raises(RuntimeError, match=r"indices must be in \[0, 5000\).*id % num_embeddings"):
        compiled(torch.tensor([3, bad]))


def test_same_seed_same_table_other_seed_other_table():
    a = _numbered(HashedEmbedding(10**6, 32, 1000, mode="block", block=8, seed=4))
    b = _numbered(HashedEmbedding(10**6, 32, 1000, mode="block", block=8, seed=4))
    c = _numbered(HashedEmbedding(10**6, 32, 1000, mode="block", block=8, seed=5))
    ids = torch.arange(0, 10**6, 9973)
    assert torch.equal(a(ids), b(ids))
    assert not torch.equal(a(ids), c(ids))


@pytest.mark.parametrize(
    "mode, D, block", [("block", 64, 64), ("entry", 64, None), ("entry", 128, None)]
)
def test_buckets_are_used_evenly_by_big_tables(mode, D, block, path):
    # a universal hash: every bucket is read about equally often (a chi-square bound at
    # ~6 standard deviations), also where V·D >= 2**31-1 and the pair hash takes over
    V = 10**8
    emb = _numbered(HashedEmbedding(V, D, 97, mode=mode, block=block, signed=False))
    first = emb(torch.arange(0, V, V // 20_011))[:, 0].long() - 1  # column 0 of each row
    counts = torch.bincount(first, minlength=97).float()
    expected = first.numel() / 97
    assert ((counts - expected).square() / expected).sum() < 97 + 6 * (2 * 97) ** 0.5
    # D = 128: 2**24·D = 2**31 ≡ 1 mod P, so a hash of r·D + c alone would read row
    # r + 2**24 as row r shifted by one column
    rows = emb(torch.tensor([12_345, 12_345 + 2**24])).long()
    assert not torch.equal(rows[0, 1:], rows[1, :-1])  # no shifted copies of a row


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="buckets must be a positive int, got 0"):
        HashedEmbedding(10, 4, buckets=0)
    with pytest.raises(ValueError, match=r"mode must be one of \('entry', 'block', 'qr'\)"):
        HashedEmbedding(10, 4, 8, mode="robe")
    with pytest.raises(ValueError, match=r"block=5 must divide embedding_dim=16 .* \[1, 2, 4"):
        HashedEmbedding(10, 16, 64, mode="block", block=5)
    with pytest.raises(ValueError, match="block=32 is larger than buckets=16"):
        HashedEmbedding(10, 32, 16, mode="block", block=32)
    with pytest.raises(ValueError, match="block= applies to mode='block' only"):
        HashedEmbedding(10, 16, 64, block=4)
    with pytest.raises(ValueError, match=r"buckets must be below 2\*\*31-1"):
        HashedEmbedding(10**9, 4, 2**31, mode="block", block=4)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        HashedEmbedding(10, 4, 8, seed=-1)
    with pytest.raises(TypeError, match="signed must be True or False, got 1"):
        HashedEmbedding(10, 4, 8, signed=1)
    emb = HashedEmbedding(10, 4, 8, mode="block", block=2)
    before = emb.weight_physical.detach().clone()
    with pytest.raises(IndexError, match=r"indices must be in \[0, 10\), got min -1, max 3"):
        emb(torch.tensor([-1, 3]))
    with pytest.raises(IndexError, match=r"got min 0, max 10; map out-of-vocabulary ids"):
        emb(torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="expects int64/int32 indices, got torch.float32"):
        emb(torch.tensor([1.0]))
    assert torch.equal(emb.weight_physical, before)
    bag = HashedEmbeddingBag(10, 4, 8, pooling="mean")
    with pytest.raises(ValueError, match="pooling must be 'sum' or 'mean', got 'max'"):
        HashedEmbeddingBag(10, 4, 8, pooling="max")
    with pytest.raises(ValueError, match="1-D input needs offsets"):
        bag(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"offsets must start at 0, not decrease .* got \[1, 0\]"):
        bag(torch.tensor([1, 2, 3]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="per_sample_weights need pooling='sum'"):
        bag(torch.tensor([[1, 2]]), per_sample_weights=torch.ones(1, 2))
    sbag = HashedEmbeddingBag(10, 4, 8, pooling="sum")
    with pytest.raises(ValueError, match=r"require grad are not supported .*\.detach\(\)"):
        sbag(torch.tensor([[1, 2]]), per_sample_weights=torch.ones(1, 2, requires_grad=True))
    with pytest.raises(ValueError, match=r"float tensor of the input's shape \(1, 2\)"):
        sbag(torch.tensor([[1, 2]]), per_sample_weights=torch.ones(2))


def test_relation_spec_round_trips_and_rejects_bad_fields():
    rel = HashedTable(mode="block", buckets=64, block=4, seed=9, signed=False)
    assert tying.relation_from_spec(rel.spec()) == rel
    with pytest.raises(ValueError, match=r"HashedTable\(buckets=...\) must be a positive int"):
        HashedTable(mode="entry", buckets=0)


def test_more_buckets_than_entries_is_refused_in_entry_mode():
    with pytest.raises(ValueError, match=r"buckets=2 is more than the table's 1 × 1 = 1 entries"):
        HashedEmbedding(1, 1, 2)


# ---- aligned blocks and sparse gradients (issue 18's throughput goals)

# Recorded from the HashedEmbedding of commit ec36b79 (before aligned/sparse): the
# default block mode (ROBE-Z) must keep reading exactly these values.
BLOCK_SNAPSHOT = {
    (1000, 8, 37, 4, 2): [
        [-8, -9, -10, -11, 9, 10, 11, 12],
        [30, 31, 32, 33, -10, -11, -12, -13],
        [31, 32, 33, 34, -11, -12, -13, -14],
    ],
    (10**9, 16, 1000, 8, 5): [
        [-445, -446, -447, -448, -449, -450, -451, -452, 903, 904, 905, 906, 907, 908, 909, 910],
        [-197, -198, -199, -200, -201, -202, -203, -204, 655, 656, 657, 658, 659, 660, 661, 662],
        [-250, -251, -252, -253, -254, -255, -256, -257, 708, 709, 710, 711, 712, 713, 714, 715],
    ],
}

# (mode, options) of every sparse-gradient table
SPARSE_KINDS = [
    ("entry", {}),
    ("block", {"block": 4, "aligned": True}),
    ("qr", {}),
]


def test_default_block_mode_reads_the_same_values_as_before(path):
    for (V, D, B, Z, seed), want in BLOCK_SNAPSHOT.items():
        emb = _numbered(HashedEmbedding(V, D, B, mode="block", block=Z, seed=seed))
        assert emb(torch.tensor([0, 1, V - 1])).long().tolist() == want
        assert emb.weight_physical.shape == (B,) and not emb.relation.aligned


@pytest.mark.parametrize("signed", [True, False])
def test_aligned_blocks_are_signed_rows_of_a_b_over_z_table(signed, path):
    V, D, B, Z = 10**7, 24, 96, 8
    emb = _numbered(HashedEmbedding(V, D, B, mode="block", block=Z, aligned=True, signed=signed))
    assert emb.weight_physical.shape == (B // Z, Z)
    rows = emb(torch.tensor([0, 5, 777, V - 1])).long().reshape(4, D // Z, Z)
    start = rows[..., :1].abs()  # every block: Z consecutive values from a multiple of Z, + 1
    assert torch.equal(rows.abs(), start + torch.arange(Z))
    assert ((start - 1) % Z == 0).all()
    signs = rows.sign()
    assert (signs == signs[..., :1]).all()  # one sign per block
    assert (signs > 0).all() if not signed else (signs < 0).any()
    # and the definition: block k of row r is table row h(r, k) mod (B/Z), its sign h2's parity
    h = emb._hash
    r1, r2 = h.rows(torch.tensor([777]))
    c1, c2 = h.cols(D // Z)
    want = ((r1.unsqueeze(-1) + c1) % P) % (B // Z) * Z + 1
    assert torch.equal(start[2, :, 0], want[0])
    if signed:
        assert torch.equal(signs[2, :, 0], ((r2.unsqueeze(-1) + c2) % P & 1)[0] * 2 - 1)


@pytest.mark.parametrize("mode, kw", SPARSE_KINDS)
@pytest.mark.parametrize("bag", [None, "sum", "mean"])
def test_sparse_gradient_equals_the_dense_one(mode, kw, bag, path):
    torch.manual_seed(2)
    make = (
        (lambda **o: HashedEmbedding(500, 16, 960, mode=mode, seed=4, dtype=torch.float64, **o))
        if bag is None
        else (
            lambda **o: HashedEmbeddingBag(
                500, 16, 960, mode=mode, pooling=bag, seed=4, dtype=torch.float64, **o
            )
        )
    )
    sparse, dense = make(sparse=True, **kw), make(**kw)
    dense.load_state_dict(sparse.state_dict())
    ids = torch.randint(0, 500, (40,))
    args = (ids, torch.tensor([0, 3, 3, 17, 39])) if bag else (ids,)
    extra = {"per_sample_weights": torch.rand(40, dtype=torch.float64)} if bag == "sum" else {}
    out = sparse(*args, **extra)
    assert torch.equal(out, dense(*args, **extra))
    g = torch.randn_like(out)
    out.backward(g)
    dense(*args, **extra).backward(g)
    grad = sparse.weight_physical.grad
    assert grad.layout == torch.sparse_coo and grad.shape == sparse.weight_physical.shape
    torch.testing.assert_close(grad.to_dense(), dense.weight_physical.grad, rtol=1e-12, atol=1e-12)
    # and both equal autograd through the logical table
    (logical,) = torch.autograd.grad(
        F.embedding_bag(ids, dense.weight, args[1], mode=bag, **extra)
        if bag
        else F.embedding(ids, dense.weight),
        dense.weight_physical,
        g,
    )
    torch.testing.assert_close(grad.to_dense(), logical, rtol=1e-12, atol=1e-12)


# torch 2.13's Adagrad builds its sparse state without choosing invariant checks and
# warns about it, for nn.Embedding(sparse=True) as for us
@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
@pytest.mark.parametrize("mode, kw", SPARSE_KINDS)
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.1),
        lambda p: torch.optim.SparseAdam(p, lr=0.1),
    ],
    ids=["SGD", "Adagrad", "SparseAdam"],
)
def test_sparse_tables_train_with_sparse_optimizers_and_keep_the_tie(mode, kw, make_opt, path):
    torch.manual_seed(3)
    emb = HashedEmbedding(10**5, 16, 12_800, mode=mode, sparse=True, seed=1, **kw)
    ref = HashedEmbedding(10**5, 16, 12_800, mode=mode, seed=1, **kw)
    ref.load_state_dict(emb.state_dict())
    ids, target = torch.randint(0, 10**5, (64,)), torch.randn(64, 16)
    opt = make_opt(list(emb.parameters()))
    loss = (emb(ids) - target).square().sum()
    loss.backward()
    opt.step()
    after = (emb(ids) - target).square().sum()
    assert after < loss  # the step moved the looked-up values the right way
    assert tying.verify(emb) == 1
    if not isinstance(opt, torch.optim.SparseAdam):  # dense twin: the same step
        ref_opt = type(opt)(ref.parameters(), lr=0.1)
        (ref(ids) - target).square().sum().backward()
        ref_opt.step()
        torch.testing.assert_close(emb.weight_physical, ref.weight_physical)


def test_aligned_tables_save_load_and_count_like_any_tie(tmp_path):
    kw = {"mode": "block", "block": 8, "aligned": True, "seed": 3}
    emb = HashedEmbedding(10**9, 16, 120_000, sparse=True, **kw)
    ids = torch.tensor([0, 17, 10**9 - 1])
    assert tying.count(emb).physical == 120_000 and tying.count(emb).logical == 16 * 10**9
    assert [t.relation for t in tying.ties(emb)] == [emb.relation]
    tying.save(emb, tmp_path / "a.safetensors")
    fresh = HashedEmbedding(10**9, 16, 120_000, **kw)  # dense gradient, same table
    tying.load(fresh, tmp_path / "a.safetensors")
    assert tying.verify(fresh) == 1 and torch.equal(fresh(ids), emb(ids))
    rel = tying.relation_from_spec(emb.relation.spec())
    assert rel == emb.relation and rel.aligned


def test_aligned_and_sparse_read_on_the_whole_logical_table(path):
    emb = HashedEmbedding(300, 8, 64, mode="block", block=4, aligned=True, sparse=True)
    ids = torch.arange(300)
    assert torch.equal(emb(ids), emb.weight)  # the relation materialises the same table


@pytest.mark.parametrize("mode, kw", SPARSE_KINDS)
def test_sparse_under_torch_compile(mode, kw):
    emb = HashedEmbedding(5000, 8, 2048, mode=mode, sparse=True, **kw)
    ids = torch.randint(0, 5000, (6, 5))
    if mode == "entry":  # the 1-D bucket array's sparse gradient does not trace
        with pytest.raises(Exception, match="sparse=True in mode='entry' does not compile"):
            torch.compile(emb, fullgraph=True, backend="aot_eager")(ids)
        torch._dynamo.reset()
        compiled = torch.compile(emb, backend="aot_eager")  # graph break: runs eagerly
    else:
        compiled = torch.compile(emb, fullgraph=True, backend="aot_eager")
    out = compiled(ids)
    torch.testing.assert_close(out, emb(ids), rtol=0, atol=0)
    out.sum().backward()
    assert emb.weight_physical.grad.layout == torch.sparse_coo


def test_torch_compile_fullgraph_aligned_dense():
    emb = HashedEmbedding(5000, 8, 2048, mode="block", block=4, aligned=True)
    ids = torch.randint(0, 5000, (6, 5))
    out = torch.compile(emb, fullgraph=True, backend="aot_eager")(ids)
    torch.testing.assert_close(out, emb(ids), rtol=0, atol=0)
    out.sum().backward()
    assert emb.weight_physical.grad.shape == (512, 4)


@settings(max_examples=25, deadline=None)
@given(
    V=st.integers(1, 5000),
    D=st.sampled_from([1, 3, 8, 12]),
    rows=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(["entry-sparse", "aligned", "aligned-sparse"]),
    signed=st.booleans(),
)
def test_fused_keep_kernels_equal_the_torch_path(V, D, rows, seed, kind, signed):
    """Property: aligned and sparse kernels read and return what the torch path does."""
    if not tying.nn.hashed_kernels.fused_available(torch.zeros(1)):
        pytest.skip("numba is not installed: no fused kernels")
    sparse = kind.endswith("sparse")
    if kind == "entry-sparse":
        kw = {"mode": "entry", "buckets": min(rows, V * D)}
    else:
        Z = max(z for z in range(1, D + 1) if D % z == 0 and z <= 4)
        # at most V·D values: more buckets than entries is refused (stop 58)
        kw = {"mode": "block", "block": Z, "aligned": True, "buckets": min(rows, V * D // Z) * Z}
    emb = HashedEmbedding(V, D, seed=seed, signed=signed, sparse=sparse, **kw)
    out, ref, fused_grad = _fused_and_torch(emb, V, D, seed)
    assert torch.equal(out, ref)
    ref_grad = emb.weight_physical.grad
    assert fused_grad.layout == ref_grad.layout
    if sparse:
        fused_grad, ref_grad = fused_grad.to_dense(), ref_grad.to_dense()
    torch.testing.assert_close(fused_grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_bad_aligned_and_sparse_options_are_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"sparse=True in mode='block' needs aligned=True"):
        HashedEmbedding(100, 8, 64, mode="block", block=4, sparse=True)
    with pytest.raises(
        ValueError, match=r"aligned=True applies to mode='block' only, got mode='entry'"
    ):
        HashedEmbedding(100, 8, 64, aligned=True)
    with pytest.raises(
        ValueError, match=r"aligned=True needs block=4 to divide buckets=66 .* use buckets=64 or 68"
    ):
        HashedEmbedding(100, 8, 66, mode="block", block=4, aligned=True)
    with pytest.raises(TypeError, match="sparse must be True or False, got 1"):
        HashedEmbedding(100, 8, 64, sparse=1)
    with pytest.raises(TypeError, match="aligned must be True or False, got 'yes'"):
        HashedEmbedding(100, 8, 64, mode="block", aligned="yes")
    with pytest.raises(ValueError, match=r"HashedTable\(aligned=True\) is for mode='block' only"):
        HashedTable(mode="entry", buckets=8, aligned=True)
    with pytest.raises(
        ValueError, match=r"HashedTable\(aligned=True, block=4\) must divide buckets=10"
    ):
        HashedTable(mode="block", buckets=10, block=4, aligned=True).source_shape((100, 8))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("mode, kw", SPARSE_KINDS[:2])
def test_sparse_gradients_accumulate_and_leave_the_incoming_gradient_alone(mode, kw, signed, path):
    """An unsigned lookup hands the incoming gradient over as it is: accumulating must not
    write into it, and two backward passes must give twice the dense gradient."""
    V = 10**9  # V·D > 2**31: the pair hash (HashedTable), not C8's tying.Hashed
    sparse = HashedEmbedding(
        V, 16, 960, mode=mode, sparse=True, signed=signed, dtype=torch.float64, **kw
    )
    dense = HashedEmbedding(V, 16, 960, mode=mode, signed=signed, dtype=torch.float64, **kw)
    assert isinstance(sparse.relation, HashedTable)
    dense.load_state_dict(sparse.state_dict())
    ids = torch.randint(0, V, (30,))
    g = torch.randn(30, 16, dtype=torch.float64)
    before = g.clone()
    for _ in range(2):
        sparse(ids).backward(g)
        dense(ids).backward(g)
    assert torch.equal(g, before)
    torch.testing.assert_close(
        sparse.weight_physical.grad.to_dense(), dense.weight_physical.grad, rtol=1e-12, atol=1e-12
    )
    torch.optim.SGD(sparse.parameters(), lr=0.1).step()  # the step reads, never writes, g
    assert torch.equal(g, before)


def test_aligned_relation_ties_a_plain_embedding():
    """HashedTable(aligned=True) in a Plan: stored as (B/Z, Z), a projection (idempotent)."""
    rel = HashedTable(mode="block", buckets=64, block=4, aligned=True, seed=1)
    x = torch.randn(100, 8, dtype=torch.float64)
    src = rel.right_inverse(x)
    assert src.shape == (16, 4)
    torch.testing.assert_close(rel.right_inverse(rel(src, shape=(100, 8))), src)
    m = torch.nn.Embedding(100, 8)
    tying.Plan([tying.share("weight", relation=rel)]).apply(m)
    assert tying.count(m).physical == 64 and tying.verify(m) == 1
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.tensor([3, 4])).sum().backward()
    opt.step()
    assert tying.verify(m) == 1


@pytest.mark.parametrize("aligned", [False, True])
def test_block_index_is_made_on_the_rows_device(aligned):
    """flat_index's block offsets follow the rows' device (meta here, CUDA in use): the
    in-block arange once defaulted to the CPU and failed on a device mismatch."""
    rel = HashedTable(mode="block", buckets=64, block=4, aligned=aligned)
    idx, sign = rel.flat_index(torch.arange(10, device="meta"), (10, 8))
    assert idx.device.type == sign.device.type == "meta"
    assert idx.shape == sign.shape == (10, 8)


@pytest.mark.parametrize(
    "kw", [{}, {"mode": "block", "block": 2}, {"aligned": True, "mode": "block", "block": 2}]
)
def test_built_on_meta_then_to_empty_looks_up_the_same_rows(kw):
    # stop 25 review: hash_cols (non-persistent) kept to_empty's uninitialised memory,
    # and the row coefficients stayed on meta (forward: "can't convert meta ... to numpy")
    torch.manual_seed(0)
    ref = HashedEmbedding(50, 8, 40, **kw)
    with torch.device("meta"):
        lazy = HashedEmbedding(50, 8, 40, **kw)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(ref.state_dict())
    ids = torch.arange(50)
    assert torch.equal(lazy.hash_cols, ref.hash_cols)
    assert torch.equal(lazy(ids), ref(ids))


def _saved(module):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: HashedEmbedding(100, 8, 48, seed=seed),
        lambda seed: HashedEmbedding(100, 8, 48, seed=seed, mode="block", block=4),
        lambda seed: HashedEmbeddingBag(100, 8, 48, seed=seed, mode="block", block=4, aligned=True),
        lambda seed: HashedLinear(6, 4, 9, seed=seed),
    ],
    ids=["entry", "block", "aligned-bag", "linear"],
)
def test_a_state_dict_saved_with_another_seed_is_refused(build):
    # stop 31: only weight_physical is in the state dict; loaded into a layer with another
    # seed, every value landed in other logical entries (outputs 3.2 off, no error)
    torch.manual_seed(0)
    state = _saved(build(0))
    same = build(0)
    same.load_state_dict(state)
    other = build(3)
    before = other.weight_physical.detach().clone()
    with pytest.raises(
        ValueError, match=r"saved from a layer hashing with .*seed=0 \(this layer: 3\)"
    ):
        other.load_state_dict(state)
    assert torch.equal(other.weight_physical, before)
    model = torch.nn.ModuleDict({"emb": build(3)})  # inside a model: named by its path
    with pytest.raises(ValueError, match=r"at 'emb'"):
        model.load_state_dict(_saved(torch.nn.ModuleDict({"emb": build(0)})))
    other.load_state_dict(dict(state))  # a plain dict carries no record: loads as before


@pytest.mark.parametrize(
    "saved, other, differs",
    [
        (
            lambda: HashedLinear(12, 2, 9, bias=False),
            lambda: HashedLinear(8, 3, 9, bias=False),
            r"out_features=2 \(this layer: 3\), in_features=12 \(this layer: 8\)",
        ),
        (
            lambda: HashedLinear(12, 2, 9, bias=False),
            lambda: HashedLinear(2, 12, 9, bias=False),
            r"out_features=2 \(this layer: 12\)",
        ),
        (
            lambda: HashedEmbedding(100, 8, 48),
            lambda: HashedEmbedding(100, 4, 48),
            r"embedding_dim=8 \(this layer: 4\)",
        ),
        (
            lambda: HashedEmbedding(100, 8, 48),
            lambda: HashedEmbedding(200, 8, 48),
            r"num_embeddings=100 \(this layer: 200\)",
        ),
        (
            lambda: HashedEmbedding(100, 8, 48, mode="block", block=4),
            lambda: HashedEmbedding(50, 16, 48, mode="block", block=4),
            r"num_embeddings=100 \(this layer: 50\), embedding_dim=8 \(this layer: 16\)",
        ),
        (
            lambda: HashedEmbeddingBag(100, 8, 200, mode="qr"),
            lambda: HashedEmbeddingBag(105, 8, 200, mode="qr"),
            r"num_embeddings=100 \(this layer: 105\)",
        ),
    ],
    ids=["linear", "linear-transposed", "entry-D", "entry-V", "block-VD", "qr-bag-V"],
)
def test_a_state_dict_of_other_sizes_is_refused(saved, other, differs):
    # stop 37: weight_physical holds `buckets` values whatever the logical sizes, so a
    # HashedLinear(12, 2) state dict loaded into a HashedLinear(8, 3) with no error, its
    # values read as other rows and columns (nn.Linear refuses the shape)
    torch.manual_seed(0)
    state = _saved(saved())
    layer = other()
    before = layer.weight_physical.detach().clone()
    with pytest.raises(ValueError, match=r"saved from a layer of other sizes \(" + differs):
        layer.load_state_dict(state)
    assert torch.equal(layer.weight_physical, before)
    with pytest.raises(ValueError, match=r"at 'm'.*build the layer with"):
        torch.nn.ModuleDict({"m": other()}).load_state_dict(
            _saved(torch.nn.ModuleDict({"m": saved()}))
        )
    same = saved()
    same.load_state_dict(state)  # the same sizes load, bit for bit
    assert torch.equal(same.weight_physical, state["weight_physical"])
    layer.load_state_dict(dict(state))  # a plain dict carries no record: loads as before


def test_lookup_refuses_a_weight_tied_through_another_hash(tmp_path):
    # stop 31: the lookup hashes with the layer's own functions, not through the slot; a
    # re-tie (a plan, or tying.load of a file saved with another seed) left layer(ids)
    # and layer.weight[ids] different with no error
    torch.manual_seed(0)
    ids = torch.arange(10)
    emb = HashedEmbedding(100, 8, 48, seed=1)
    tying.untie(emb)
    with pytest.raises(tying.TieError, match="no longer tied to its hash"):
        emb(ids)
    tying.Plan([tying.share("weight", relation=tying.Hashed(48, seed=7))]).apply(emb)
    with pytest.raises(tying.TieError, match=r"tied through Hashed\(buckets=48, seed=7"):
        emb(ids)
    path = tmp_path / "seed0.safetensors"
    tying.save(HashedEmbeddingBag(100, 8, 48, seed=0), path)
    bag = HashedEmbeddingBag(100, 8, 48, seed=1)
    # core's tying.load refuses to replace a model's own tie (stop 36), before the layer's
    # own check ("built to hash through ...") is reached
    refused = r"via Hashed\(buckets=48, seed=1.* ties it .*seed=0.*would replace this model's tie"
    with pytest.raises(tying.TieError, match=refused):
        tying.load(bag, path)
    # the refused load left the layer as it was (stop 31: it was left tied through the
    # file's hash, and every lookup refused): its own hash, its own values
    torch.testing.assert_close(bag(ids[None]), bag.weight[ids].mean(0, keepdim=True))
    assert tying.ties(bag)[0].relation == tying.Hashed(48, seed=1)
    same = HashedEmbeddingBag(100, 8, 48, seed=0)
    tying.load(same, path)
    torch.testing.assert_close(same(ids[None]), same.weight[ids].mean(0, keepdim=True))


# -- stop 34: torch.func transforms, second derivatives and forward-mode AD --------------
_TRANSFORM_CASES = [
    pytest.param(HashedEmbedding, {}, id="entry"),
    pytest.param(HashedEmbedding, {"mode": "block", "block": 4}, id="block"),
    pytest.param(HashedEmbedding, {"mode": "block", "block": 4, "aligned": True}, id="aligned"),
    pytest.param(HashedEmbedding, {"sparse": True}, id="entry-sparse"),
    pytest.param(
        HashedEmbedding,
        {"mode": "block", "block": 4, "aligned": True, "sparse": True},
        id="aligned-sparse",
    ),
    pytest.param(HashedEmbedding, {"mode": "qr"}, id="qr"),
    pytest.param(HashedEmbeddingBag, {"pooling": "sum"}, id="bag-entry-sum"),
    pytest.param(HashedEmbeddingBag, {"mode": "block", "block": 4}, id="bag-block-mean"),
    pytest.param(HashedEmbeddingBag, {"sparse": True, "pooling": "sum"}, id="bag-entry-sparse"),
]


class _Table(torch.nn.Module):
    """Reads the layer's logical ``weight`` (materialised through its tie): the reference."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self):
        return self.layer.weight


def _layer_and_reference(cls, kw):
    torch.manual_seed(0)
    layer = cls(50, 8, 160, dtype=torch.float64, **kw)
    table = _Table(layer)
    bag = isinstance(layer, HashedEmbeddingBag)

    def run(w, ids):  # the layer's lookup, with its stored values swapped for w
        return torch.func.functional_call(layer, {"weight_physical": w}, (ids,))

    def ref(w, ids):  # rows of the materialised table, pooled as the bag pools
        rows = torch.func.functional_call(table, {"layer.weight_physical": w}, ())[ids]
        if not bag:
            return rows
        return rows.sum(-2) if layer.pooling == "sum" else rows.mean(-2)

    return layer, run, ref


def _dense(t):
    return t.to_dense() if t.is_sparse else t


# torch.func's forward mode scripts its decompositions on first use (torch 2.13 warns)
_JIT_WARNING = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@pytest.mark.parametrize(("cls", "kw"), _TRANSFORM_CASES)
@_JIT_WARNING
def test_torch_func_transforms_run_and_match_the_materialised_table(cls, kw):
    # stop 34: the fused kernels (numba) gave torch's "must override the setup_context
    # staticmethod" under vmap/grad/jacrev/jacfwd, and a vmap over ids failed on .item();
    # under torch.func the torch path serves the lookup
    layer, run, ref = _layer_and_reference(cls, kw)
    w = layer.weight_physical.detach().clone()
    ids = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(1))

    def loss(f):
        return lambda w, i: f(w, i.unsqueeze(0)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss(run)), in_dims=(None, 0))(w, ids)
    expected = torch.func.vmap(torch.func.grad(loss(ref)), in_dims=(None, 0))(w, ids)
    torch.testing.assert_close(_dense(per_sample), _dense(expected), rtol=1e-12, atol=1e-12)
    batched = ids.view(2, 2, 5)  # two (2, 5) samples: a bag layer's 2-D input
    torch.testing.assert_close(torch.func.vmap(layer)(batched), ref(w, batched))
    for jac in (torch.func.jacrev, torch.func.jacfwd):
        got = jac(lambda w: run(w, ids))(w)
        torch.testing.assert_close(got, jac(lambda w: ref(w, ids))(w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("cls", "kw"), _TRANSFORM_CASES)
def test_a_second_derivative_through_the_lookup_matches_the_materialised_table(cls, kw):
    # stop 34: a gradient penalty through the fused kernels failed in torch's words
    # ("Can't call numpy() on Tensor that requires grad"); under create_graph=True the
    # gradient is now the torch path's, a graph of the incoming gradient
    layer, run, ref = _layer_and_reference(cls, kw)
    ids = torch.randint(0, 50, (3, 4), generator=torch.Generator().manual_seed(2))
    w = layer.weight_physical
    (g,) = torch.autograd.grad(layer(ids).pow(3).sum(), w, create_graph=True)
    (gg,) = torch.autograd.grad(_dense(g).square().sum(), w)

    def penalty(w):
        return torch.func.grad(lambda w: ref(w, ids).pow(3).sum())(w).square().sum()

    expected = torch.func.grad(penalty)(w.detach())
    torch.testing.assert_close(_dense(gg), expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("cls", "kw"), _TRANSFORM_CASES)
@_JIT_WARNING
def test_forward_mode_ad_through_the_lookup_matches_the_materialised_table(cls, kw):
    # stop 34: "You must implement the jvp function" from the fused kernels
    import torch.autograd.forward_ad as fwAD

    layer, run, ref = _layer_and_reference(cls, kw)
    ids = torch.randint(0, 50, (3, 4), generator=torch.Generator().manual_seed(3))
    w = layer.weight_physical.detach().clone()
    t = torch.randn_like(w)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(run(fwAD.make_dual(w, t), ids)).tangent
    expected = torch.func.jvp(lambda w: ref(w, ids), (w,), (t,))[1]
    torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)


def test_an_out_of_range_id_under_vmap_is_still_refused():
    emb = HashedEmbedding(50, 8, 64)
    ids = torch.randint(0, 50, (4, 5))
    ids[2, 1] = 50
    with pytest.raises(IndexError, match=r"indices must be in \[0, 50\), got min \d+, max 50"):
        torch.func.vmap(emb)(ids)
