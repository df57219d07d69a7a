"""The lane-block accumulators of ``tying.hmm._numba_lanes`` against NumPy."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import compiled

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
LB = 8


@functools.cache
def _jitted():
    """njit wrappers of the intrinsics (callable only from compiled code); made once, so
    each is compiled once per session, not once per example (a property test paid 40
    compilations: 94 s under load, stop 51)."""
    import numba

    from tying.hmm import _numba_lanes as L

    @numba.njit
    def dot(x, ox, y, oy, nb, out, oo):
        L.lanes_dot(x, ox, y, oy, nb, out, oo)

    @numba.njit
    def dot3(g, og, x, ox, y, oy, nb, out, oo):
        L.lanes_dot3(g, og, x, ox, y, oy, nb, out, oo)

    @numba.njit
    def lsum(x, ox, nb, out, oo):
        L.lanes_sum(x, ox, nb, out, oo)

    @numba.njit
    def beta_xi(A, oa, K, al, oal, q, S, nb, beta, ob, acc, oacc):
        L.lanes_beta_xi(A, oa, K, al, oal, q, S, nb, beta, ob, acc, oacc)

    @numba.njit
    def forward(AT, K, x, ox, S, nb, b, ob, v, ic, oic):
        L.lanes_forward(AT, K, x, ox, S, nb, b, ob, v, ic, oic)

    @numba.njit
    def post(al, og, beta, ob, b, ic, oic, q, oq, X, ox, S, D, nb, n8, on, sx8, sxx8, osx, KL):
        L.lanes_post_diag(al, og, beta, ob, b, ic, oic, q, oq, X, ox, S, D, nb, n8, on, sx8, sxx8,
                          osx, KL)  # fmt: skip

    return dot, dot3, lsum, beta_xi, post, forward


def _blocks(v, o, nb):
    """``v[o : o + 8 nb]`` as ``(nb, 8)``: block i, lane l."""
    return v[o : o + LB * nb].reshape(nb, LB)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(nb=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), shift=st.integers(0, 3))
def test_property_block_sums_equal_numpy(nb, seed, shift):
    """Each lane of a block accumulates its own sum over the blocks (no sum across lanes),
    added to what the accumulator held; offsets anywhere in the arrays; nb = 0 adds nothing."""
    dot, dot3, lsum, _, _, _ = _jitted()
    rng = np.random.default_rng(seed)
    n = LB * (nb + 4)
    g, x, y = rng.normal(size=(3, n))
    og, ox, oy, oo = LB * shift, LB * ((shift + 1) % 4), LB * ((shift + 2) % 4), LB * shift
    out0 = rng.normal(size=LB * 5)
    want_dot = out0.copy()
    want_dot[oo : oo + LB] += (_blocks(x, ox, nb) * _blocks(y, oy, nb)).sum(0)
    want_dot3 = out0.copy()
    want_dot3[oo : oo + LB] += (_blocks(g, og, nb) * (_blocks(x, ox, nb) * _blocks(y, oy, nb))).sum(
        0
    )
    want_sum = out0.copy()
    want_sum[oo : oo + LB] += _blocks(x, ox, nb).sum(0)
    for f, args, want in (
        (dot, (x, ox, y, oy, nb), want_dot),
        (dot3, (g, og, x, ox, y, oy, nb), want_dot3),
        (lsum, (x, ox, nb), want_sum),
    ):
        out = out0.copy()
        f(*args, out, oo)
        np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)
        rest = np.ones(out.size, bool)
        rest[oo : oo + LB] = False
        assert np.array_equal(out[rest], out0[rest])  # nothing else written


@needs_numba
@settings(max_examples=30, deadline=None)
@given(K=st.integers(1, 9), nb=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_property_beta_xi_equals_numpy(K, nb, seed):
    """One state j of a backward step: beta[j] = A[j] q over the lanes (set, not added),
    and xi's terms alpha[t, j] q[k] added lane by lane into the (K, 8) accumulators."""
    _, _, _, beta_xi, _, _ = _jitted()
    rng = np.random.default_rng(seed)
    S = LB * (nb + 1)  # lanes past the nb blocks: untouched
    A = rng.dirichlet(np.ones(K), size=K)
    q, al = rng.random((K, S)), rng.random((K, S))
    j = int(rng.integers(K))
    beta = rng.normal(size=(K, S))
    acc = rng.normal(size=(K, K, LB))
    want_beta, want_acc = beta.copy(), acc.copy()
    want_beta[j, : LB * nb] = A[j] @ q[:, : LB * nb]
    want_acc[j] += (al[j, None, : LB * nb] * q[:, : LB * nb]).reshape(K, nb, LB).sum(1)
    beta_xi(A.reshape(-1), j * K, K, al.reshape(-1), j * S, q.reshape(-1), S, nb,
            beta.reshape(-1), j * S, acc.reshape(-1), j * K * LB)  # fmt: skip
    np.testing.assert_allclose(beta, want_beta, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(acc, want_acc, rtol=1e-13, atol=1e-13)


@needs_numba
@settings(max_examples=30, deadline=None)
@given(
    K=st.integers(1, 5), D=st.integers(1, 6), nb=st.integers(1, 4), seed=st.integers(0, 2**32 - 1)
)
def test_property_posteriors_and_diag_moments_equal_numpy(K, D, nb, seed):
    """One state k of a backward step: posteriors alpha * beta written back, q = (b beta) ic,
    and the posteriors' sums, first and second moments of every feature, lane by lane."""
    _, _, _, _, post, _ = _jitted()
    rng = np.random.default_rng(seed)
    S, T, t = LB * (nb + 1), 3, 1
    k = int(rng.integers(K))
    alpha, b = rng.random((T, K, S)), rng.random((T, K, S))
    beta, q = rng.random((K, S)), rng.normal(size=(K, S))
    ic, X = rng.random((T, S)) + 0.5, rng.normal(size=(T, D, S))
    n8, sx8, sxx8 = (
        rng.normal(size=(K, LB)),
        rng.normal(size=(D, K, LB)),
        rng.normal(size=(D, K, LB)),
    )
    r = slice(0, LB * nb)
    g = alpha[t, k, r] * beta[k, r]
    want = [alpha.copy(), q.copy(), n8.copy(), sx8.copy(), sxx8.copy()]
    want[0][t, k, r] = g
    want[1][k, r] = b[t, k, r] * beta[k, r] * ic[t, r]
    want[2][k] += g.reshape(nb, LB).sum(0)
    gx = g * X[t, :, r]  # (D, lanes)
    want[3][:, k] += gx.reshape(D, nb, LB).sum(1)
    want[4][:, k] += (gx * X[t, :, r]).reshape(D, nb, LB).sum(1)
    post(alpha.reshape(-1), (t * K + k) * S, beta.reshape(-1), k * S, b.reshape(-1),
         ic.reshape(-1), t * S, q.reshape(-1), k * S, X.reshape(-1), t * D * S, S, D, nb,
         n8.reshape(-1), k * LB, sx8.reshape(-1), sxx8.reshape(-1), k * LB, K * LB)  # fmt: skip
    for got_, want_ in zip((alpha, q, n8, sx8, sxx8), want, strict=True):
        np.testing.assert_allclose(got_, want_, rtol=1e-13, atol=1e-13)


@needs_numba
@settings(max_examples=30, deadline=None)
@given(K=st.integers(1, 9), nb=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_property_forward_step_equals_numpy(K, nb, seed):
    """One forward step: v[k] = (sum_j A[j, k] alpha[t-1, j]) b[t, k] on the first nb
    blocks of lanes (states four at a time, then one by one), and ic[t] = sum_k v[k];
    lanes past the blocks and other steps untouched."""
    *_, forward = _jitted()
    rng = np.random.default_rng(seed)
    S, T, t = LB * (nb + 1), 3, 2
    A = rng.dirichlet(np.ones(K), size=K)
    alpha, b = rng.random((T, K, S)), rng.random((T, K, S))
    v, ic = rng.normal(size=(K, S)), rng.normal(size=(T, S))
    r = slice(0, LB * nb)
    want_v, want_ic = v.copy(), ic.copy()
    want_v[:, r] = (A.T @ alpha[t - 1, :, r]) * b[t, :, r]
    want_ic[t, r] = want_v[:, r].sum(0)
    forward(np.ascontiguousarray(A.T).reshape(-1), K, alpha.reshape(-1), (t - 1) * K * S, S, nb,
            b.reshape(-1), t * K * S, v.reshape(-1), ic.reshape(-1), t * S)  # fmt: skip
    np.testing.assert_allclose(v, want_v, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ic, want_ic, rtol=1e-13, atol=1e-15)


@needs_numba
def test_a_strided_array_is_refused_when_compiled():
    """The intrinsics read lane blocks as contiguous vectors: an array that is not 1-D
    C-contiguous (a strided view would give wrong sums silently) does not compile."""
    import numba

    from tying.hmm import _numba_lanes as L

    @numba.njit
    def strided(x, out):
        L.lanes_sum(x[::2], 0, 1, out, 0)

    with pytest.raises(numba.core.errors.TypingError, match="lanes_sum"):
        strided(np.ones(32), np.zeros(8))


@needs_numba
def test_a_nan_observation_spoils_only_its_own_lane_and_step():
    """The one-pass density: a NaN feature makes that lane's shifted densities NaN at
    that step (its scaling then fails and it is recomputed in log space); every other
    lane and step keeps the densities of the data without the NaN, bit for bit."""
    from tying.hmm.forward_backward import LaneLayout
    from tying.hmm.sequences import SequenceBatch

    rng = np.random.default_rng(7)
    K, D, lengths = 3, 2, [6] * 11  # 11 lanes: two blocks, the second partly padding
    X = rng.normal(size=(66, D))
    means, prec = rng.normal(size=(K, D)), rng.uniform(0.5, 2.0, size=(K, D))
    const = -0.5 * (D * np.log(2 * np.pi) - np.log(prec).sum(1))
    dens = compiled._kernels().lanes_density_diag

    def run(X):
        (unit,) = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths)).units
        T, _, S = unit["XL"].shape
        b, m = np.zeros((T, K, S)), np.zeros((T, S))
        dens(unit["XL"], unit["n_act"], means, prec, const, b, m)
        return b, m, list(unit["seqs"])

    b0, m0, seqs = run(X)
    Xn = X.copy()
    Xn[9 * 6 + 2, 1] = np.nan  # sequence 9, step 2
    b1, m1, _ = run(Xn)
    lane = seqs.index(9)
    assert np.all(np.isnan(b1[2, :, lane]))
    spoilt = np.zeros(b0.shape, bool)
    spoilt[2, :, lane] = True
    assert np.array_equal(b1[~spoilt], b0[~spoilt])
    m_ok = np.ones(m0.shape, bool)
    m_ok[2, lane] = False
    assert np.array_equal(m1[m_ok], m0[m_ok])
