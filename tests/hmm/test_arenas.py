"""A fit's lane memory is kept for the next fit, handed out only when no one holds it,
and a kept block's old values never reach a result."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from tying.hmm import GaussianHMM, arenas, compiled

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
PARAMS = ("startprob_", "transmat_", "means_", "covars_")


@pytest.fixture(autouse=True)
def _nothing_kept(monkeypatch):
    monkeypatch.setattr(arenas, "MIN_KEEP_BYTES", 0)  # small blocks too, for small tests
    arenas.release()
    yield
    arenas.release()


def _kept_ids() -> set[int]:
    return {id(b) for b in arenas._KEPT}


def test_a_block_dropped_by_its_user_is_handed_out_again():
    first = arenas.carve([{"a": (100, 3)}, {"b": (7,)}])
    block = first[0]["a"].base
    address = block.ctypes.data
    del first, block
    again = arenas.carve([{"a": (100, 3)}, {"b": (7,)}])
    assert again[0]["a"].base.ctypes.data == address
    assert len(arenas._KEPT) == 1


def test_a_block_someone_still_holds_a_view_of_is_never_handed_out_twice():
    held = arenas.carve([{"a": (50,)}])[0]["a"]  # a caller keeps one view, drops the rest
    held[:] = 7.0
    other = arenas.carve([{"a": (50,)}])[0]["a"]
    assert other.base is not held.base
    other[:] = -1.0
    assert np.all(held == 7.0)


def test_blocks_of_another_size_are_not_handed_out():
    a = arenas.carve([{"a": (64,)}])[0]["a"].base.ctypes.data
    b = arenas.carve([{"a": (72,)}])[0]["a"]
    assert b.base.ctypes.data != a or b.base.size != 72  # a new block of its own size
    assert sorted(x.size for x in arenas._KEPT) == sorted({64 + 8, 72 + 8})


def test_every_array_starts_on_a_cache_line_and_none_overlaps():
    shapes = [{"x": (3, 5), "y": (1,)}, {"x": (2, 2, 2), "z": (9,)}]
    out = arenas.carve(shapes)
    spans = []
    for d in out:
        for a in d.values():
            assert a.ctypes.data % 64 == 0
            spans.append((a.ctypes.data, a.ctypes.data + a.nbytes))
    spans.sort()
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_what_is_kept_never_exceeds_the_limit_and_larger_blocks_are_not_kept(monkeypatch):
    monkeypatch.setattr(arenas, "KEEP_BYTES", 10_000)
    big = arenas.carve([{"a": (2_000,)}])  # 16 KB: over the limit, never kept
    assert arenas.kept_bytes() == 0
    held = [arenas.carve([{"a": (300,)}]) for _ in range(6)]  # 2.4 KB each, all in use
    assert arenas.kept_bytes() <= 10_000
    assert len(arenas._KEPT) == 4  # the oldest were forgotten (still their users')
    for h in held:
        h[0]["a"][:] = 1.0  # still valid memory
    del big


def test_release_forgets_every_block_and_says_how_much():
    held = arenas.carve([{"a": (1000,)}])
    n = arenas.kept_bytes()
    assert n >= 8000
    assert arenas.release() == n
    assert arenas.kept_bytes() == 0
    held[0]["a"][:] = 2.0  # the user's memory stays valid


def test_threads_carving_at_once_never_share_a_block():
    n_threads, rounds = 8, 50
    start = threading.Barrier(n_threads)
    clashes = []

    def work(tag):
        start.wait()
        for _ in range(rounds):
            a = arenas.carve([{"a": (512,)}])[0]["a"]
            a[:] = tag
            if not np.all(a == tag):  # another thread wrote into this one's block
                clashes.append(tag)
            if not np.all(a == tag):
                clashes.append(tag)
            del a

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == []


def _wait_for_idle_pools() -> None:
    """Return once every kept thread pool's threads have all finished what they ran."""
    for (_, n), pool in list(compiled._POOLS.items()):
        barrier = threading.Barrier(n)  # only n idle threads can pass it together
        for f in [pool.submit(barrier.wait, 60) for _ in range(n)]:
            f.result()


def _data(seed, lengths, D=3, K=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(K, D))
    n = int(np.sum(lengths))
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))


@needs_numba
@pytest.mark.parametrize(
    ("ctype", "lengths", "n_jobs"),
    [
        ("diag", [60] * 70 + [33] * 30, 1),  # the compiled EM loop, lanes
        ("diag", [200] * 150 + [57] * 90, 2),  # two units on two threads
        ("full", [60] * 70 + [33] * 30, 1),  # the full/tied compiled loop
        ("tied", [40] * 50, 2),
        ("diag", [9_000, 7_000], 1),  # few long sequences: units of rows, not lanes
    ],
)
def test_a_fit_in_reused_memory_full_of_nan_gives_the_bits_of_a_fit_in_fresh_memory(
    ctype, lengths, n_jobs
):
    X = _data(0, lengths)

    def fit():
        m = GaussianHMM(4, ctype, n_iter=4, tol=-np.inf, random_state=1, n_jobs=n_jobs)
        return m.fit(X, lengths)

    fresh = fit()
    # a helper thread leaves the compiled loop before the fit returns, but its Python frame
    # (holding the fit's plan, so its blocks) may end a moment later: wait until every
    # pool thread is idle. (On a cold cache the helper compiles its loop first, so the
    # moment is long: the units of stop 24 gave this shape a helper, and this test failed
    # there on a fresh clone only.)
    _wait_for_idle_pools()
    # numba compiling on a cold cache raises and catches exceptions while the fit's frames
    # are on the stack: the cycle that leaves holds the first fit's arrays until the cyclic
    # collector runs (they are collectable, not leaked), so the blocks would not be free yet
    gc.collect()
    kept = _kept_ids()
    assert kept, "the fit kept no lane memory"
    for block in arenas._KEPT:
        block.fill(np.nan)  # what a reused block holds must never reach a result
    del block  # (a reference held here would keep it from being reused)
    reused = fit()
    assert _kept_ids() == kept  # the same blocks served the second fit
    assert reused.history_ == fresh.history_
    for name in PARAMS:
        assert np.array_equal(getattr(reused, name), getattr(fresh, name)), name
    assert np.array_equal(reused.predict(X, lengths), fresh.predict(X, lengths))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_nothing_kept_and_a_free_lock():
    import os
    import signal
    import time
    import warnings

    arenas.carve([{"a": (100,)}])
    arenas._LOCK.acquire()  # as if another thread held it at the fork
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: must not deadlock, must keep nothing of the parent's
            ok = arenas.kept_bytes() == 0 and arenas.carve([{"a": (10,)}])[0]["a"].size == 10
            os._exit(0 if ok else 1)
    finally:
        arenas._LOCK.release()
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the lock it inherited")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert arenas.kept_bytes() > 0  # the parent's are still kept


def test_small_blocks_are_not_kept():
    arenas.MIN_KEEP_BYTES = 64 << 10  # (the fixture's patch is undone after the test)
    arenas.carve([{"a": (100,)}])
    assert arenas.kept_bytes() == 0
    arenas.carve([{"a": (10_000,)}])
    assert arenas.kept_bytes() >= 80_000


def test_arrays_of_different_units_never_share_a_cache_line():
    """Threads write different units' arrays at every step: no line may hold two."""
    shapes = [{"xi": (3, 3), "first": (3,), "n": (3,), "sx": (2, 3), "sxx": (2, 1, 3)}] * 4
    lines = {}
    for u, d in enumerate(arenas.carve(shapes)):
        for name, a in d.items():
            for line in range(a.ctypes.data // 64, (a.ctypes.data + a.nbytes - 1) // 64 + 1):
                assert lines.setdefault(line, (u, name)) == (u, name), (u, name, lines[line])


@needs_numba
@pytest.mark.parametrize("garbage", [np.nan, 1e300, -3.5e-310], ids=["nan", "huge", "subnormal"])
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("ctype", ["diag", "full", "tied"])
def test_results_do_not_depend_on_what_fresh_memory_holds(ctype, n_jobs, garbage, monkeypatch):
    """Every float array made by ``np.empty`` in Python (lane blocks, the compiled loops'
    plans and sums, scoring and decoding buffers) filled with garbage: the fit, its
    score, posteriors and Viterbi path keep their bits (stop 34: an entry read before
    it is written would make a fit depend on what the allocator handed back)."""
    lengths = [60] * 40 + [33] * 20 + [2_500, 2_100]  # lane units and rows units
    X = _data(3, lengths)

    def run():
        arenas.release()  # fresh blocks, from np.empty
        m = GaussianHMM(4, ctype, n_iter=4, tol=-np.inf, random_state=1, n_jobs=n_jobs)
        m.fit(X, lengths)
        logprob, path = m.decode(X, lengths)
        return m, (m.score(X, lengths), logprob, path, m.predict_proba(X, lengths))

    clean, clean_out = run()  # (also compiles every kernel before np.empty changes)
    real_empty = np.empty
    busy = []

    def empty(shape, dtype=float, order="C", **kw):
        a = real_empty(shape, dtype=dtype, order=order, **kw)
        if a.dtype.kind == "f" and not busy:  # (fill may call np.empty itself)
            busy.append(1)
            a.fill(garbage)
            busy.pop()
        return a

    with monkeypatch.context() as patch:
        patch.setattr(np, "empty", empty)
        dirty, dirty_out = run()
    assert dirty.history_ == clean.history_
    for name in PARAMS:
        assert np.array_equal(getattr(dirty, name), getattr(clean, name)), name
    for a, b in zip(dirty_out, clean_out, strict=True):
        assert np.array_equal(a, b)
