"""The fused kernels' integer arithmetic: exact against Python integers at the edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn.hashing import P, PairHash

K = pytest.importorskip("tying.nn._hashed_numba", reason="numba is not installed")


@settings(max_examples=300, deadline=None)
@given(u=st.integers(0, P - 1), B=st.integers(1, P - 1))
def test_mod_by_float_quotient_is_exact(u, B):
    assert K._mod(u, B, 1.0 / B) == u % B


@pytest.mark.parametrize("B", [1, 2, 3, 65_536, 1_000_003, P - 2, P - 1])
def test_mod_is_exact_next_to_multiples_of_the_divisor(B):
    for q in (0, 1, 2, (P - 1) // B):
        for d in (-2, -1, 0, 1, 2):
            u = q * B + d
            if 0 <= u < P:
                assert K._mod(u, B, 1.0 / B) == u % B


@settings(max_examples=50, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=20),
    seed=st.integers(0, 2**31),
    compat=st.sampled_from([None, 1, 7, 128]),
)
def test_row_terms_of_the_kernels_equal_the_torch_ones(ids, seed, compat):
    h = PairHash(seed, 1, compat)
    if compat is not None:  # compat tables have V·D < P: their rows stay below P / D
        ids = [i % (P // compat) for i in ids]
    x = torch.tensor(ids, dtype=torch.int64)
    r1, r2 = h.rows(x)
    k1, k2 = torch.empty_like(x), torch.empty_like(x)
    K.rows(x.numpy(), h.row_coef.numpy(), k1.numpy(), k2.numpy())
    assert torch.equal(r1, k1) and torch.equal(r2, k2)
    assert (r1 >= 0).all() and (r1 < P).all()


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, P - 1), c=st.integers(0, P - 1), B=st.integers(1, P - 1))
def test_bucket_and_parity_without_division_are_exact(a, c, B):
    u, u2 = (a + c) % P, (c + a // 3) % P
    idx, sg = np.empty(2, np.int64), np.empty(2, np.float32)
    cols = np.array([c, 0], dtype=np.int64)
    K._row_hash(a, a // 3, cols, cols % B, cols, P % B, B, True, 2.0, idx, sg)
    assert idx.tolist() == [u % B, a % P % B]
    assert sg.tolist() == [2.0 if u2 & 1 else -2.0, 2.0 if (a // 3) & 1 else -2.0]


@settings(max_examples=300, deadline=None)
@given(v=st.one_of(st.integers(0, 2**62 - 1), st.integers(0, 4).map(lambda k: k * P + P - 1)))
def test_mersenne_fold_is_v_mod_p(v):
    assert K._fold(v) == v % P
    for w in (v + 1, max(v - 1, 0)):
        assert K._fold(w) == w % P


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(
        st.one_of(st.integers(0, 2**62 - 1), st.integers(2**62 - 1000, 2**62 - 1)),
        min_size=1,
        max_size=20,
    ),
    seed=st.integers(0, 2**31),
    compat=st.sampled_from([None, 1, 7, 128]),
)
def test_division_free_row_terms_equal_the_reference(ids, seed, compat):
    """``_row_fold`` (shifts and adds) is the torch row term (int64 %) exactly, up to V·D = 2**62."""
    h = PairHash(seed, 1, compat)
    if compat is not None:
        ids = [i % (P // compat) for i in ids]
    coef = h.row_coef.numpy()
    r1, r2 = h.rows(torch.tensor(ids, dtype=torch.int64))
    assert [K._row_fold(i, coef, 0) for i in ids] == r1.tolist()
    assert [K._row_fold(i, coef, 5) for i in ids] == r2.tolist()


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=30),
    seed=st.integers(0, 2**31),
    R=st.integers(1, P - 1),
    C=st.integers(1, 6),
    signed=st.booleans(),
)
def test_aligned_block_hash_equals_the_reference(ids, seed, R, C, signed):
    """The vectorised aligned-block hash: ``u mod R`` and the sign parity, exactly."""
    h = PairHash(seed, 1)
    x = torch.tensor(ids, dtype=torch.int64)
    r1, r2 = h.rows(x)
    c1, c2 = h.cols(C)
    fac = np.linspace(0.5, 2.0, len(ids)).astype(np.float64)
    bid, sf = np.empty((C, len(ids)), np.int64), np.empty((C, len(ids)), np.float64)
    K.aligned_hash(x.numpy(), h.row_coef.numpy(), c1.numpy(), c2.numpy(), signed, fac, R, bid, sf)
    u1 = (r1.unsqueeze(0) + c1.unsqueeze(1)) % P  # (C, n)
    u2 = (r2.unsqueeze(0) + c2.unsqueeze(1)) % P
    assert bid.tolist() == (u1 % R).tolist()
    want = np.where((u2.numpy() & 1) | (not signed), fac, -fac)
    assert sf.tolist() == want.tolist()
