"""Overlapping windows of a few long sequences in the lanes (``tying.hmm.windows``,
``tying.hmm._numba_windows``) against the rows kernel they would replace: the same
results to 1e-12 relative where the burn-in checks pass, and the rows kernel's own
results (the fallback) where they fail."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tying.hmm import compiled, windows

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)


def _model(seed, K, D, lengths, *, sticky=0.0, zeros=False, scale=2.0):
    """Data drawn from a random diag Gaussian HMM (``sticky``: self-transition weight;
    ``zeros``: about a third of A's off-diagonal entries 0), and that model."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K) * 2, size=K)
    if zeros and K > 2:
        A = A * (rng.random((K, K)) > 0.33)
        np.fill_diagonal(A, A.diagonal() + 0.05)
        A /= A.sum(1, keepdims=True)
    if sticky:
        A = (1 - sticky) * A + sticky * np.eye(K)
    start = rng.dirichlet(np.ones(K))
    means = rng.normal(scale=scale, size=(K, D))
    covars = rng.uniform(0.5, 2.0, size=(K, D))
    R = int(np.sum(lengths))
    states = np.empty(R, dtype=np.int64)
    r0 = 0
    for L in lengths:
        s = rng.choice(K, p=start)
        for t in range(L):
            states[r0 + t] = s
            s = rng.choice(K, p=A[s])
        r0 += L
    X = means[states] + rng.normal(size=(R, D)) * np.sqrt(covars[states])
    prec = 1.0 / covars
    const = -0.5 * (D * np.log(2 * np.pi) - np.log(prec).sum(1))
    return X, np.asarray(lengths), start, A, means, prec, const, X.mean(0)


def _close(got, want, rtol=1e-12):
    """Same bad flags; the good sequences' log-likelihoods and every sum to ``rtol``
    (``sx``, a sum of terms of both signs, relative to a bound on the sum of their
    sizes, ``sqrt(nsum sxx)`` by Cauchy-Schwarz: centred on the data's mean, K=1's is 0
    up to rounding)."""
    ll_g, bad_g, *sums_g = got
    ll_w, bad_w, *sums_w = want
    np.testing.assert_array_equal(bad_g, bad_w)
    np.testing.assert_allclose(ll_g[~bad_w], ll_w[~bad_w], rtol=rtol, atol=0)
    xi, first, nsum, sx, sxx = sums_w
    sizes = np.sqrt(nsum * np.abs(sxx[:, 0, :]).max(0)).max()
    for i, (g, w) in enumerate(zip(sums_g, sums_w, strict=True)):
        scale = max(np.abs(w).max(), sizes if i == 3 else 0.0, 1e-300)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


def test_plan_cores_cover_each_sequence_once():
    lengths = np.array([5000, 1200, 300])
    p = windows.plan(lengths, burn_in=16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    covered = np.zeros(lengths.sum(), dtype=np.int64)
    for s in range(len(p["wstart"])):
        covered[p["wstart"][s] + p["core_lo"][s] : p["wstart"][s] + p["core_hi"][s]] += 1
        q = p["lane_seq"][s]
        assert starts[q] <= p["wstart"][s]  # a window never leaves its sequence
        assert p["wstart"][s] + p["wlen"][s] <= starts[q] + lengths[q]
        assert (p["prev_lane"][s] < 0) == (p["wstart"][s] == starts[q])  # only the first
    np.testing.assert_array_equal(covered, 1)
    assert np.all(np.diff(p["wlen"]) <= 0) and p["S"] % 8 == 0
    with pytest.raises(ValueError, match="positive lengths and burn_in"):
        windows.plan(np.array([10, 0]))


@needs_numba
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 33),
    D=st.integers(1, 16),
    lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=3),
    zeros=st.booleans(),
    burn_in=st.sampled_from([8, 16, 32, 64]),
    full=st.booleans(),
)
@example(seed=0, K=8, D=4, lengths=[5000], zeros=False, burn_in=16, full=False)
@example(seed=1, K=33, D=16, lengths=[2000, 2000], zeros=True, burn_in=32, full=True)
@example(seed=2, K=1, D=1, lengths=[3000], zeros=False, burn_in=8, full=False)
def test_windows_equal_the_rows_kernel(seed, K, D, lengths, zeros, burn_in, full):
    """Whichever path it took (windows, or the fallback when a check failed), the E-step
    equals the rows kernel's to 1e-12 relative."""
    model = _model(seed, K, D, lengths, zeros=zeros)
    got = windows.estep(*model, burn_in=burn_in, full=full)
    want = windows.rows_estep(*model, full=full)
    _close(got, want)


@needs_numba
def test_benchmark_like_models_take_the_windows():
    """Well-mixing models converge within 16 rows: the windows' own results are used."""
    stats = {}
    model = _model(3, 8, 4, [5000])
    got = windows.estep(*model, burn_in=16, stats=stats)
    assert stats == {"windows": True, "failed": 0}
    _close(got, windows.rows_estep(*model))


@needs_numba
@pytest.mark.parametrize("K, sticky, scale", [(8, 0.99, 0.3), (2, 0.99, 0.1), (4, 0.999, 0.3)])
def test_sticky_chains_fall_back_to_the_rows_kernel(K, sticky, scale):
    """Sticky chains with weak emissions do not forget their start within the burn-in:
    the checks fail, the windows' results are discarded, and the rows kernel's are
    returned (equal to it: the same kernel on the same inputs)."""
    model = _model(4, K, 2, [3000], sticky=sticky, scale=scale)
    stats = {}
    got = windows.estep(*model, burn_in=32, stats=stats)
    assert stats["windows"] is False and stats["failed"] > 0
    want = windows.rows_estep(*model)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@needs_numba
def test_a_loose_check_would_have_been_wrong():
    """The check matters: on a sticky chain, windows whose results are taken anyway (a
    tolerance of 1) are off by far more than 1e-12; the default tolerance refuses them."""
    model = _model(4, 8, 2, [3000], sticky=0.99, scale=0.3)
    loose = windows.estep(*model, burn_in=32, rel=1.0, stats=(stats := {}))
    assert stats["windows"] is True
    want = windows.rows_estep(*model)
    assert np.max(np.abs(loose[2] - want[2]) / np.abs(want[2]).max()) > 1e-9


@needs_numba
def test_a_bad_sequence_is_bad_as_a_whole():
    """A row that no reachable state can emit (its best state is unreachable: A's column
    is 0) makes a scaling factor underflow in one lane's core: the whole sequence is bad
    and adds nothing; the other sequence's results are the rows kernel's."""
    K, D = 3, 2
    X, lengths, start, A, means, prec, const, center = _model(5, K, D, [2000, 2000])
    A[:, 2] = 0.0
    A /= A.sum(1, keepdims=True)
    means[2] = 200.0
    X[1500] = 200.0  # in sequence 0, inside a core far from its ends
    model = (X, lengths, start, A, means, prec, const, center)
    stats = {}
    got = windows.estep(*model, burn_in=16, stats=stats)
    want = windows.rows_estep(*model)
    assert stats["windows"] is True
    assert got[1].tolist() == [True, False] == want[1].tolist()
    _close(got, want)


@needs_numba
def test_deterministic():
    model = _model(6, 8, 4, [4000, 1000])
    a = windows.estep(*model, burn_in=16)
    b = windows.estep(*model, burn_in=16)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@needs_numba
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 33),
    D=st.integers(1, 16),
    lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=3),
    sticky=st.sampled_from([0.0, 0.0, 0.5, 0.99]),
    full=st.booleans(),
    r0=st.sampled_from([0, 7]),
)
@example(seed=0, K=8, D=4, lengths=[5000], sticky=0.0, full=False, r0=0)
@example(seed=1, K=8, D=4, lengths=[2000, 2000], sticky=0.0, full=True, r0=7)
def test_the_drop_in_equals_the_rows_kernel(seed, K, D, lengths, sticky, full, r0):
    """What the EM loops call for a rows unit (``rows_windows_fb_stats``: windows where
    they apply and pass, else the rows kernel) equals the rows kernel to 1e-12."""
    from tying.hmm._numba_windows import rows_windows_fb_stats

    model = _model(seed, K, D, lengths, sticky=sticky)
    drop_in = lambda *a: rows_windows_fb_stats(*a, windows.MIN_ROWS)  # noqa: E731
    got = windows.rows_estep(*model, full=full, kernel=drop_in, r0=r0)
    _close(got, windows.rows_estep(*model, full=full, r0=r0))


@needs_numba
def test_the_drop_in_takes_windows_only_where_they_pay_and_pass():
    """Windows on a long unit of a chain that forgets; the rows kernel itself (the same
    bits) on a short unit, on a sticky chain (not tried: Dobrushin's coefficient above
    FORGET) and where the checks fail."""
    from tying.hmm import _numba_windows as nw
    from tying.hmm._numba_rows import rows_fb_stats

    took = []

    def spy(*args):
        took.append(nw.rows_windows_fb_stats(*args, nw.MIN_ROWS))

    def same_as_rows(model):
        got = windows.rows_estep(*model, kernel=spy)
        want = windows.rows_estep(*model, kernel=rows_fb_stats)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)

    model = _model(7, 8, 4, [5000])
    _close(windows.rows_estep(*model, kernel=spy), windows.rows_estep(*model))
    assert took == [True]
    same_as_rows(_model(7, 8, 4, [nw.MIN_ROWS - 1]))
    sticky = _model(7, 8, 2, [5000], sticky=0.99, scale=0.3)
    assert nw.dobrushin(sticky[3]) > nw.FORGET
    same_as_rows(sticky)
    assert took == [True, False, False]
    # a chain that passes the gate but not the checks: two weakly told-apart states
    # that mix slowly enough (Dobrushin 0.9) to need more than BURN_IN rows
    slow = list(_model(8, 2, 1, [5000], scale=0.05))
    slow[3] = np.array([[0.95, 0.05], [0.05, 0.95]])
    assert nw.dobrushin(slow[3]) <= nw.FORGET
    stats = {}
    windows.estep(*slow, burn_in=nw.BURN_IN, stats=stats)
    assert stats["failed"] > 0
    same_as_rows(tuple(slow))
    assert took[-1] is False


@needs_numba
def test_a_chain_with_a_zero_transition_takes_no_windows():
    """A chain that forgets (Dobrushin's coefficient below FORGET) but has a zero
    transition: scaling may drop a state there, and a window that starts from a uniform
    alpha would refill it. The windows kernel refuses such a matrix itself (stop 30), and
    the drop-in and the estep return the rows kernel's bits, whose own check of each
    sequence's factors (kernels.kept) is what makes them exact."""
    from tying.hmm import _numba_windows as nw
    from tying.hmm._numba_rows import rows_fb_stats

    model = list(_model(9, 3, 2, [5000]))  # its windows passed their checks before stop 30
    model[3] = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    assert nw.dobrushin(model[3]) <= nw.FORGET
    stats = {}
    got = windows.estep(*model, burn_in=32, stats=stats)
    assert stats == {"windows": False, "failed": 1}
    took = []
    spy = lambda *a: took.append(nw.rows_windows_fb_stats(*a, nw.MIN_ROWS))  # noqa: E731
    got_drop_in = windows.rows_estep(*model, kernel=spy)
    assert took == [False]
    want = windows.rows_estep(*model, kernel=rows_fb_stats)
    for g, d, w in zip(got, got_drop_in, want, strict=True):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(d, w)
    # the same chain with every transition positive takes the windows
    model[3] = np.array([[0.02, 0.49, 0.49], [0.49, 0.02, 0.49], [0.49, 0.49, 0.02]])
    windows.estep(*model, burn_in=32, stats=stats)
    assert stats == {"windows": True, "failed": 0}
