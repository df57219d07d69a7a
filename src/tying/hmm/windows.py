"""Overlapping windows of a few long sequences, run in the lanes (session 25, issue 19).

The plan of :mod:`tying.hmm._numba_windows`: which rows each lane runs, which of them
are its core, and the fused E-step of a unit of a few long sequences through it, with
the rows kernel (:func:`~tying.hmm._numba_rows.rows_fb_stats`) as the exact fallback
whenever a burn-in check fails. The EM loops run the same kernel through
:func:`~tying.hmm._numba_windows.rows_windows_fb_stats` (which plans its windows itself,
as :func:`plan` does, with :func:`~tying.hmm._numba_windows.plan_rows`); the compiled
diag loop runs it on a windows layout of the same windows filled once per fit
(``_numba_em.windows_unit_stats``, stop 26); this module is the kernel's reference
harness and the benchmark's (``benchmarks/bench_hmm_windows.py``), and defines the
windows' constants once.

Example:
    >>> p = plan(np.array([5000]), burn_in=32)
    >>> len(p["wstart"]), int(p["core_lo"][p["prev_lane"] >= 0].min())
    (32, 32)
"""

from __future__ import annotations

import numpy as np

__all__ = ["BURN_IN", "FORGET", "MIN_ROWS", "MIN_ROWS_DIAG", "REL", "estep", "plan"]

#: burn-in rows each side of a core: the benchmark's models (K = 4..32, D = 1..16) and the
#: models EM fits to them converged to ``REL`` in 4-24 rows (2026-12-02, ``bench_hmm_windows
#: burnin``); sticky chains need hundreds or never converge (the fallback catches them)
BURN_IN = 32
#: the boundary check's relative tolerance, per component
REL = 1e-14
#: the most lanes a unit's windows fill, and rows of core per ``burn_in`` row at least
#: (fewer, longer cores: the burn-in's share of the work is ``2 W / core``)
MAX_WINDOW_LANES, CORE_PER_BURN = 32, 6
LANE_BLOCK = 8
#: the EM loops try windows on a unit of at least ``MIN_ROWS`` rows whose transition
#: matrix forgets: Dobrushin's coefficient at most ``FORGET`` (a sticky chain, whose
#: burn-in would fail its checks, is not tried). The one definition of these constants:
#: :mod:`tying.hmm._numba_windows` imports them (its numba cache is keyed on their values)
MIN_ROWS, FORGET = 2048, 0.9
#: the compiled diag loop's windows layout (filled once per fit, no gather per E-step)
#: pays from fewer rows: a unit of at least ``MIN_ROWS_DIAG`` rows gets one (stop 26
#: review: 2 x 2000 and 4 x 1000, K=8 D=4, are two units of 2000 rows, 1.05-1.13x faster
#: with it (noisy); 1 x 1000 1.08x, 1 x 1500 1.21x, K=32 unchanged; full and tied, whose loops
#: run the gathering drop-in, were 3-6% slower at 2000 rows: they keep ``MIN_ROWS``)
MIN_ROWS_DIAG = 1000


def plan(lengths: np.ndarray, burn_in: int = BURN_IN, n_lanes: int | None = None) -> dict:
    """The windows of a unit of sequences of ``lengths`` (consecutive rows from row 0).

    Each sequence gets lanes in proportion to its rows (at least one), cut into cores of
    equal rows; lane ``j``'s window is its core and ``burn_in`` rows each side, clipped.
    Depends on the lengths and ``burn_in`` only.

    Args:
        lengths: the unit's sequences' lengths (positive).
        burn_in: rows before and after each core.
        n_lanes: lanes to fill; by default ``rows / (CORE_PER_BURN burn_in)`` rounded up
            to whole lane blocks, at most ``MAX_WINDOW_LANES``.

    Returns:
        Arrays per lane, longest window first: ``wstart`` (first row), ``wlen``,
        ``core_lo``/``core_hi`` (the core in the window's steps), ``prev_lane``,
        ``next_lane`` (-1: none) and ``lane_seq``; ``n_act`` (per step, running lanes)
        and ``S`` (lanes, whole blocks).

    Raises:
        ValueError: for a length below 1 or ``burn_in`` below 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0 or lengths.min() < 1 or burn_in < 1:
        raise ValueError(
            f"windows.plan needs positive lengths and burn_in, got lengths "
            f"{lengths.tolist()[:8]} and burn_in {burn_in}"
        )
    R = int(lengths.sum())
    if n_lanes is None:
        want = -(-R // (CORE_PER_BURN * burn_in))
        n_lanes = min(MAX_WINDOW_LANES, -(-want // LANE_BLOCK) * LANE_BLOCK)
    share = np.maximum(1, np.floor(n_lanes * lengths / R).astype(np.int64))
    rows = []  # (wstart, wlen, core_lo, core_hi, seq, segment)
    r0 = 0
    for q, (L, n) in enumerate(zip(lengths.tolist(), share.tolist(), strict=True)):
        n = max(1, min(n, L // max(1, 2 * burn_in)))  # cores of at least 2 burn_in rows
        cuts = np.linspace(0, L, n + 1).round().astype(np.int64)
        for j, (a, e) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)):
            lo, hi = max(0, a - burn_in), min(L, e + burn_in)
            rows.append((r0 + lo, hi - lo, a - lo, e - lo, q, j))
        r0 += L
    wlen = np.array([r[1] for r in rows], dtype=np.int64)
    order = np.argsort(-wlen, kind="stable")
    where = np.empty(len(rows), dtype=np.int64)
    where[order] = np.arange(len(rows))
    prev_lane = np.full(len(rows), -1, dtype=np.int64)
    next_lane = np.full(len(rows), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        if r[5] > 0:
            prev_lane[where[i]] = where[i - 1]
            next_lane[where[i - 1]] = where[i]
    pick = [rows[i] for i in order]
    col = lambda c: np.array([r[c] for r in pick], dtype=np.int64)  # noqa: E731
    wl = col(1)
    T = int(wl[0])
    S = -(-len(pick) // LANE_BLOCK) * LANE_BLOCK
    n_act = np.searchsorted(-wl, -np.arange(T), side="left").astype(np.int64)
    return {"wstart": col(0), "wlen": wl, "core_lo": col(2), "core_hi": col(3),
            "lane_seq": col(4), "prev_lane": prev_lane, "next_lane": next_lane,
            "n_act": n_act, "S": S}  # fmt: skip


def estep(X, lengths, startprob, transmat, means, prec, const, center, *, burn_in=BURN_IN,
          n_lanes=None, rel=REL, full=False, stats=None):  # fmt: skip
    """The fused diag E-step of one unit of a few long sequences through windows, or the
    rows kernel where a burn-in check fails.

    Args:
        X: the unit's rows ``(R, D)``, its sequences one after the other.
        lengths: their lengths.
        startprob, transmat, means, prec, const: the model (``prec = 1 / covars``,
            ``const`` the density's constants, as ``_numba_em.density_constants``).
        center: the centre the statistics are taken about ``(D,)``.
        burn_in, n_lanes: see :func:`plan`.
        rel: the burn-in check's tolerance.
        full: the full ``(D, D, K)`` moments instead of the diagonal ``(D, 1, K)``.
        stats: a dict that gets ``"windows"`` (True: the windows' results) and
            ``"failed"`` (the failed checks), when given.

    Returns:
        ``(ll, bad, xi, first, nsum, sx, sxx)`` as ``rows_fb_stats`` writes them.
    """
    from tying.hmm import _numba_kernels as k
    from tying.hmm._numba_windows import windows_fb_stats

    X = np.ascontiguousarray(X, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    R, D = X.shape
    K = len(startprob)
    n = len(lengths)
    ll, bad = np.zeros(n), np.zeros(n, dtype=np.bool_)
    E = D if full else 1
    xi, first, nsum = np.zeros((K, K)), np.zeros(K), np.zeros(K)
    sx, sxx = np.zeros((D, K)), np.zeros((D, E, K))
    p = plan(lengths, burn_in, n_lanes)
    S, T = p["S"], len(p["n_act"])
    lane_start = np.zeros(S, dtype=np.int64)
    lane_start[: len(p["wstart"])] = p["wstart"]
    XL, XcL = np.empty((T, D, S)), np.empty((T, D, S))
    k.to_lanes(X, center, lane_start, p["n_act"], XL, XcL)
    b, m = np.empty((T, K, S)), np.empty((T, S))
    k.lanes_density_diag(XL, p["n_act"], means, prec, const, b, m)
    np.exp(b, out=b)
    alpha, ic = np.empty((T, K, S)), np.empty((T, S))
    failed = windows_fb_stats(startprob, transmat, b, m, p["n_act"], p["wlen"], XcL, full,
                              alpha, ic, p["wstart"], p["core_lo"], p["core_hi"], p["prev_lane"],
                              p["next_lane"], p["lane_seq"], rel, ll, bad, xi, first, nsum, sx,
                              sxx)  # fmt: skip
    if stats is not None:
        stats["windows"], stats["failed"] = failed == 0, int(failed)
    if failed == 0:
        return ll, bad, xi, first, nsum, sx, sxx
    return rows_estep(X, lengths, startprob, transmat, means, prec, const, center, full=full)


def rows_estep(X, lengths, startprob, transmat, means, prec, const, center, *, full=False,
               kernel=None, r0=0):  # fmt: skip
    """The same E-step as a rows unit runs it (rows dealt over the lanes for the density,
    then ``kernel``: :func:`~tying.hmm._numba_rows.rows_fb_stats` by default, the
    reference and the fallback of :func:`estep`; the EM loops' drop-in
    :func:`~tying.hmm._numba_windows.rows_windows_fb_stats`). ``r0``: the unit's first
    row in the numbering of the sequences' starts (another unit before it)."""
    from tying.hmm import _numba_kernels as k

    X = np.ascontiguousarray(X, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    R, D = X.shape
    K = len(startprob)
    S = LANE_BLOCK * (8 if R >= 4096 else 1)
    Tp = -(-R // S)
    n_act = np.full(Tp, S, dtype=np.int64)
    n_act[-1] = R - (Tp - 1) * S
    XL, XcL = np.empty((Tp, D, S)), np.empty((Tp, D, S))
    k.deal_rows(X, center, 0, R, XL, XcL)
    b, m = np.empty((Tp, K, S)), np.empty((Tp, S))
    k.lanes_density_diag(XL, n_act, means, prec, const, b, m)
    np.exp(b, out=b)
    starts = r0 + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n = len(lengths)
    ll, bad = np.zeros(n), np.zeros(n, dtype=np.bool_)
    E = D if full else 1
    xi, first, nsum = np.zeros((K, K)), np.zeros(K), np.zeros(K)
    sx, sxx = np.zeros((D, K)), np.zeros((D, E, K))
    (kernel or k.rows_fb_stats)(startprob, transmat, b, m, XcL, r0, starts, lengths, 0, n, full,
                    np.empty((R, K)), np.empty(R), ll, bad, xi, first, nsum, sx, sxx)  # fmt: skip
    return ll, bad, xi, first, nsum, sx, sxx
