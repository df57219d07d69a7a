"""The state-vectorised kernel of units of a few long sequences (``tying.hmm._numba_rows``)
against the stop 13 kernel it replaced (``tests/hmm/reference_kernels.rows_fb_stats_v13``)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tying.hmm import compiled

fb = importlib.import_module("tying.hmm.forward_backward")  # the module, not the function

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)


def _rows_unit(seed, K, D, lengths, full, S, *, bad=(), how="zero", lead=0):
    """Kernel inputs for one rows unit: sequences ``lengths`` after ``lead`` rows of another
    unit (``r0 = lead``), random emissions dealt out over ``S`` lanes; the sequences in
    ``bad`` go bad at one step (``how``: "zero" emissions, "nan", "tiny" 1e-300)."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = lead + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    R = int(lengths.sum())
    logb = rng.normal(scale=3.0, size=(R, K))
    steps = [int(starts[s] - lead + rng.integers(0, lengths[s])) for s in sorted(bad)]
    for t in steps:  # one step of each bad sequence
        logb[t] = {"zero": -np.inf, "nan": np.nan, "tiny": 0.0}[how]
    with np.errstate(invalid="ignore"):
        mx = logb.max(1)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        b_rows = np.exp(logb - mx[:, None])
    if how == "tiny":  # a scaling factor of about 1e-300, below TINY
        b_rows[steps] = 1e-300
    Tp = -(-R // S)
    b, m, XcL = np.empty((Tp, K, S)), np.empty((Tp, 1, S)), np.empty((Tp, D, S))
    fb._deal_rows(b_rows, b)
    fb._deal_rows(mx[:, None], m)
    fb._deal_rows(rng.normal(size=(R, D)), XcL)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    E = D if full else 1
    n = len(lengths)
    args = (start, A, b, m[:, 0, :].copy(), XcL, lead, starts, lengths, 0, n, full)

    def run(kernel):
        outs = (np.full(n, np.nan), np.zeros(n, np.bool_), np.full((K, K), np.nan),
                np.full(K, np.nan), np.full(K, np.nan), np.full((D, K), np.nan),
                np.full((D, E, K), np.nan))  # fmt: skip
        kernel(*(a.copy() if isinstance(a, np.ndarray) else a for a in args),
               np.empty((R, K)), np.empty(R), *outs)  # fmt: skip
        return outs

    return run


def _same(new, ref, n_bad):
    """The same sequences bad, log-likelihoods to 1e-12 and every statistic to 1e-12 of
    its scale (its largest magnitude)."""
    assert np.array_equal(new[1], ref[1])
    assert ref[1].sum() == n_bad
    ok = ~ref[1]
    np.testing.assert_allclose(new[0][ok], ref[0][ok], rtol=1e-12, atol=1e-12)
    for got, want in zip(new[2:], ref[2:], strict=True):
        assert np.isfinite(want).all()
        scale = max(1e-300, np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(1, 33),  # one state to past four blocks of 8, odd too
    D=st.integers(1, 16),
    full=st.booleans(),
    lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=3),
    S=st.sampled_from([8, 64, 512]),
    seed=st.integers(0, 2**32 - 1),
    bad=st.sets(st.integers(0, 2), max_size=2),
    how=st.sampled_from(["zero", "nan", "tiny"]),
    lead=st.integers(0, 100),
)
@example(K=8, D=4, full=False, lengths=[5000], S=512, seed=0, bad=set(), how="zero", lead=0)
@example(K=32, D=16, full=True, lengths=[700, 1], S=64, seed=1, bad={1}, how="nan", lead=9)
@example(K=2, D=1, full=False, lengths=[1, 1, 1], S=8, seed=2, bad={0}, how="tiny", lead=0)
def test_property_rows_kernel_equals_the_stop13_kernel(
    K, D, full, lengths, S, seed, bad, how, lead
):
    """The state-vectorised rows kernel gives what the stop 13 scalar kernel gives: the
    same sequences flagged bad (zero, NaN or underflowing emissions at one step), the
    log-likelihoods and every statistic (xi, first, n, sx, sxx; diag and full) to 1e-12
    of its scale; any K (padded to blocks of 8), D, lengths, lane width and start row."""
    from tying.hmm._numba_rows import rows_fb_stats

    from .reference_kernels import rows_fb_stats_v13  # imports numba

    bad = {s for s in bad if s < len(lengths)}
    run = _rows_unit(seed, K, D, lengths, full, S, bad=bad, how=how, lead=lead)
    new, ref = run(rows_fb_stats), run(rows_fb_stats_v13)
    if len(bad) == len(lengths):  # nothing added: every sum is 0 on both
        assert ref[1].all() and new[1].all()
        for got, want in zip(new[2:], ref[2:], strict=True):
            assert not got.any() and not want.any()
        return
    _same(new, ref, len(bad))


@needs_numba
@pytest.mark.parametrize("K", [2, 4, 7, 8, 9, 16, 17, 32])
@pytest.mark.parametrize(
    ("D", "full"), [(1, False), (4, False), (16, False), (4, True), (16, True)]
)
def test_rows_kernel_covers_the_benchmarked_sizes(K, D, full):
    """K from 2 to 32 and D from 1 to 16, diag and full, on one long sequence dealt over
    512 lanes and two more over 64 (the shapes the benchmark runs)."""
    from tying.hmm._numba_rows import rows_fb_stats

    from .reference_kernels import rows_fb_stats_v13  # imports numba

    for lengths, S in (([5000], 512), ([2000, 1500, 3], 64)):
        run = _rows_unit(K * 100 + D, K, D, lengths, full, S)
        _same(run(rows_fb_stats), run(rows_fb_stats_v13), 0)


@needs_numba
def test_rows_kernel_is_the_library_kernel():
    """``compiled._kernels().rows_fb_stats`` (what ``forward_backward_stats`` calls) is the
    state-vectorised kernel."""
    from tying.hmm._numba_rows import rows_fb_stats

    assert compiled._kernels().rows_fb_stats is rows_fb_stats


@needs_numba
@pytest.mark.parametrize("how", ["zero", "nan", "tiny"])
def test_rows_kernel_flags_a_bad_sequence_and_adds_nothing_of_it(how):
    """A sequence whose emissions are all 0, NaN or 1e-300 (a scaling factor below TINY)
    at one step is flagged and adds nothing: the posteriors sum to the other sequence's
    200 steps, its 199 transitions and one first step."""
    from tying.hmm._numba_rows import rows_fb_stats

    out = _rows_unit(5, 5, 3, [300, 200], False, 64, bad={0}, how=how)(rows_fb_stats)
    assert out[1].tolist() == [True, False]
    assert out[4].sum() == pytest.approx(200.0, rel=1e-12)  # n
    assert out[2].sum() == pytest.approx(199.0, rel=1e-12)  # xi
    assert out[3].sum() == pytest.approx(1.0, rel=1e-12)  # first
