"""The compiled diag EM loop's windows layout (stop 26, issue 19): a rows unit of at
least ``windows.MIN_ROWS`` rows keeps its overlapping windows' lane layout, filled once
per fit, and runs its densities and the windows kernel there at every E-step. Checked:
the same results as the general loop (to 1e-12) and hmmlearn, several fits in one
process, new data of the same shape (no stale layout), n_jobs=1 vs 2, the fallback
where a check fails, and the layout's memory freed after the fit."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import GaussianHMM, arenas, compiled, fused_em, windows
from tying.hmm.forward_backward import LaneLayout

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)


def _case(seed, K=8, D=4, lengths=(5000,), scale=2.0, A=None):
    """Data of a random diag HMM and explicit start parameters (no k-means)."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K) * 2, size=K) if A is None else np.asarray(A)
    means = rng.normal(scale=scale, size=(K, D))
    n = int(np.sum(lengths))
    states = np.empty(n, dtype=np.int64)  # a run of the chain (a sticky one stays sticky)
    states[0] = 0
    for t in range(1, n):
        states[t] = rng.choice(K, p=A[states[t - 1]])
    X = means[states] + rng.normal(size=(n, D))
    start = rng.dirichlet(np.ones(K))
    return X, list(lengths), {"startprob_init": start, "transmat_init": A,
                              "means_init": means + rng.normal(scale=0.3, size=(K, D)),
                              "covars_init": np.ones((K, D))}  # fmt: skip


def _fit(X, lengths, init, n_jobs=1, n_iter=10):
    K = len(init["startprob_init"])
    return GaussianHMM(K, "diag", n_iter=n_iter, tol=-np.inf, n_jobs=n_jobs, **init).fit(X, lengths)


def _general(monkeypatch):
    monkeypatch.setattr(fused_em.FusedEM, "for_model", classmethod(lambda cls, *a: None))


def _params(m):
    return [np.asarray(m.history_), m.startprob_, m.transmat_, m.means_, m.covars_]


def _assert_close(a, b, rtol=1e-12):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-300)


def _spy_layouts(monkeypatch) -> list:
    """Keep each fit's lane layout (after ``prepare``) with its windows' ``ic`` and its
    dealt rows' ``b`` set to NaN, so a test can see which kernel wrote them."""
    seen = []
    prepare = LaneLayout.prepare

    def spy(self, K):
        prepare(self, K)
        for unit in self.units:
            if "win" in unit:
                unit["icw"][...] = np.nan
                unit["b"][...] = np.nan
        seen.append(self)

    monkeypatch.setattr(LaneLayout, "prepare", spy)
    return seen


def _rows_ran(layout) -> bool:
    """Whether some E-step made the dealt rows' densities (the rows kernel's input: only
    where the windows were not tried or failed a check)."""
    return any(np.isfinite(u["b"]).any() for u in layout.units if "win" in u)


def _windows_ran(layout) -> bool:
    units = [u for u in layout.units if "win" in u]
    assert units, "no unit with a windows layout"
    return all(np.isfinite(u["icw"][0, : len(u["win"]["wlen"])]).all() for u in units)


@needs_numba
@pytest.mark.parametrize("lengths", [(5000,), (3000, 2500), (20_000,)])
def test_the_windows_layout_runs_and_equals_the_general_loop(lengths, monkeypatch):
    X, lengths, init = _case(0, lengths=lengths)
    seen = _spy_layouts(monkeypatch)
    got = _fit(X, lengths, init)
    assert _windows_ran(seen[-1])  # the windows kernel wrote every lane's ic
    assert not _rows_ran(seen[-1])  # and every E-step took its results
    _general(monkeypatch)
    _assert_close(got, _fit(X, lengths, init))


@needs_numba
def test_the_windows_layout_equals_hmmlearn():
    hmm = pytest.importorskip("hmmlearn.hmm")
    X, lengths, init = _case(1)
    got = _fit(X, lengths, init)
    ref = hmm.GaussianHMM(8, "diag", init_params="", n_iter=10, tol=-np.inf, covars_prior=0.0,
                          implementation="scaling")  # fmt: skip
    ref.startprob_, ref.transmat_ = init["startprob_init"], init["transmat_init"]
    ref.means_, ref.covars_ = init["means_init"], init["covars_init"]
    ref.fit(X, lengths)
    np.testing.assert_allclose(got.history_, ref.monitor_.history, rtol=1e-12)
    np.testing.assert_allclose(got.means_, ref.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.transmat_, ref.transmat_, rtol=1e-9, atol=1e-12)


@needs_numba
def test_new_data_of_the_same_shape_is_never_run_on_a_stale_layout(monkeypatch):
    """Fits of X1, X2 (same shape, other values), X1 again in one process: each equals
    the general loop's fit of its own data, and the two fits of X1 the same bits."""
    X1, lengths, init = _case(2)
    X2 = X1[::-1].copy()
    seen = _spy_layouts(monkeypatch)
    a1, a2, a3 = (_fit(X, lengths, init) for X in (X1, X2, X1))
    assert all(_windows_ran(lay) for lay in seen)
    assert a1.history_ == a3.history_ and a1.history_ != a2.history_
    _general(monkeypatch)
    _assert_close(a1, _fit(X1, lengths, init))
    _assert_close(a2, _fit(X2, lengths, init))
    X2[0] += 1.0  # edited in place after its fit: the next fit sees the new values
    _assert_close(_fit(X2, lengths, init), _fit(X2, lengths, init))


@needs_numba
def test_one_and_two_threads_give_the_same_bits():
    X, lengths, init = _case(3, lengths=(5000, 4500))  # two units, each with windows
    one, two = _fit(X, lengths, init, n_jobs=1), _fit(X, lengths, init, n_jobs=2)
    for x, y in zip(_params(one), _params(two), strict=True):
        np.testing.assert_array_equal(x, y)


@needs_numba
@pytest.mark.parametrize("how", ["checks fail", "sticky"])
def test_the_fallback_equals_the_general_loop(how, monkeypatch):
    """Where the windows' burn-in checks fail (two weakly told-apart states that mix
    slowly) or are not tried (a sticky chain: Dobrushin's coefficient above FORGET), the
    rows kernel runs on the dealt rows: still the general loop's results."""
    from tying.hmm import _numba_windows as nw

    if how == "checks fail":
        A = np.array([[0.95, 0.05], [0.05, 0.95]])
        X, lengths, init = _case(8, K=2, D=1, scale=0.05, A=A)
        assert nw.dobrushin(A) <= windows.FORGET
    else:
        A = 0.99 * np.eye(8) + 0.01 / 8
        X, lengths, init = _case(9, A=A)
        assert nw.dobrushin(A) > windows.FORGET
    seen = _spy_layouts(monkeypatch)
    got = _fit(X, lengths, init)
    assert _rows_ran(seen[-1])  # the rows kernel ran
    if how == "checks fail":
        assert _windows_ran(seen[-1])  # after the windows, whose checks failed
    _general(monkeypatch)
    _assert_close(got, _fit(X, lengths, init))


@needs_numba
def test_the_windows_layout_is_freed_after_the_fit(monkeypatch):
    """Once the fit returns, nothing holds the windows' arrays: their block is back in
    the arenas for the next fit (or freed by ``arenas.release``)."""
    X, lengths, init = _case(4)
    refs = []
    prepare = LaneLayout.prepare

    def spy(self, K):
        prepare(self, K)
        refs.extend(weakref.ref(u[name]) for u in self.units if "win" in u
                    for name in ("XLw", "XcLw", "bw", "alphaw"))  # fmt: skip

    monkeypatch.setattr(LaneLayout, "prepare", spy)
    _fit(X, lengths, init)
    gc.collect()
    assert refs and all(r() is None for r in refs)
    assert all(c == arenas._ALONE for c in arenas._refs(arenas._KEPT))


def test_the_window_constants_are_defined_once():
    """``_numba_windows`` takes W and its thresholds from ``windows`` (stop 26: they were
    written out twice)."""
    if not compiled.available():
        pytest.skip("numba")
    from tying.hmm import _numba_windows as nw

    for name in ("BURN_IN", "REL", "MIN_ROWS", "FORGET", "CORE_PER_BURN"):
        assert getattr(nw, name) is getattr(windows, name)
    assert nw.MAX_LANES is windows.MAX_WINDOW_LANES


@needs_numba
@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 10),
    D=st.integers(1, 5),
    lengths=st.lists(st.integers(1, 4000), min_size=1, max_size=3).filter(
        lambda ls: sum(ls) >= windows.MIN_ROWS_DIAG
    ),
    n_jobs=st.sampled_from([1, 2]),
)
def test_property_the_compiled_loop_equals_the_general_loop_on_long_units(
    seed, K, D, lengths, n_jobs
):
    """Any few long sequences (units with and without windows, short sequences among
    them, K=1 included): the compiled diag loop's fit equals the general loop's to 1e-12."""
    X, lengths, init = _case(seed, K=K, D=D, lengths=lengths)
    with pytest.MonkeyPatch.context() as mp:
        got = _fit(X, lengths, init, n_jobs=n_jobs, n_iter=4)
        _general(mp)
        _assert_close(got, _fit(X, lengths, init, n_jobs=n_jobs, n_iter=4))


@needs_numba
@pytest.mark.parametrize("lengths", [(2000, 2000), (1000,) * 4, (1200,)])
def test_few_long_units_under_min_rows_get_the_diag_windows(lengths, monkeypatch):
    """Stop 26 review: 2 x 2000 and 4 x 1000 are two units of 2000 rows, under
    ``MIN_ROWS`` (2048), so they ran the rows kernel; a diag unit of ``MIN_ROWS_DIAG``
    rows now gets the windows layout (1.1x faster), its results those of the general
    loop and of hmmlearn; full and tied models keep ``MIN_ROWS`` (their loops' gathering
    drop-in was slower there). Start probabilities below 1e-30 (here 1e-50 to 1e-70)
    agree to 2e-11 relative after 10 iterations, not 1e-12: EM carries the windows'
    1e-14 rounding into them, as it does on the windows of 5000 rows (7.6e-11 from
    hmmlearn's there, 2026-12-03); everything else to 1e-12."""
    hmm = pytest.importorskip("hmmlearn.hmm")
    from tying.hmm.forward_backward import _unit_plans
    from tying.hmm.sequences import SequenceBatch

    batch = SequenceBatch.from_lengths(list(lengths))
    _, _, plans = _unit_plans(batch, 4, 8, 8, "diag")
    assert all("win" in unit for unit, _ in plans)
    for ctype in ("full", "tied"):
        _, _, plans = _unit_plans(batch, 4, 8, 8, ctype)
        assert not any("win" in unit for unit, _ in plans)
    X, lengths, init = _case(0, lengths=lengths)
    seen = _spy_layouts(monkeypatch)
    got = _fit(X, lengths, init)
    assert _windows_ran(seen[-1]) and not _rows_ran(seen[-1])
    ref = hmm.GaussianHMM(8, "diag", init_params="", n_iter=10, tol=-np.inf, covars_prior=0.0,
                          implementation="scaling")  # fmt: skip
    ref.startprob_, ref.transmat_ = init["startprob_init"], init["transmat_init"]
    ref.means_, ref.covars_ = init["means_init"], init["covars_init"]
    ref.fit(X, lengths)
    _general(monkeypatch)
    general = _fit(X, lengths, init)
    assert got.history_ == general.history_  # the general loop runs the same windows: bits
    for other, hist, sp in ((general, general.history_, general.startprob_),
                            (ref, ref.monitor_.history, ref.startprob_)):  # fmt: skip
        np.testing.assert_allclose(got.history_, hist, rtol=1e-12)
        rtol = 1e-9 if other is ref else 1e-12  # hmmlearn's M-step sums in another order
        for name in ("transmat_", "means_", "covars_"):
            np.testing.assert_allclose(getattr(got, name), getattr(other, name), rtol=rtol,
                                       atol=1e-300)  # fmt: skip
        big = sp >= 1e-30
        np.testing.assert_allclose(got.startprob_[big], sp[big], rtol=1e-12)
        np.testing.assert_allclose(got.startprob_[~big], sp[~big], rtol=1e-10, atol=1e-300)
