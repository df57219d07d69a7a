"""Overlapping windows of one long sequence in the lanes (session 25 probe, issue 19).

Two questions, before any of it goes into the EM loop:

``timing``: the E-step of a unit of few long sequences (density, NumPy's ``exp``, the
scaled forward-backward with the statistics) as it runs today (rows dealt over the
lanes for the density, then ``rows_fb_stats`` one sequence at a time) against the same
rows cut into ``S`` windows (cores of ``L / S`` rows, ``W`` burn-in rows each side) run
by the lane kernels (``to_lanes``, ``lanes_density_diag``, ``lanes_fb_stats``). The
lanes run every window row through the statistics (no core mask), so the windowed
figure is a lower bound on what a real windowed kernel costs. Interleaved rounds, the
median ratio windowed / rows (< 1: windows faster), with the load.

``burnin``: how many burn-in rows the filter needs before a window's normalised alpha
(started uniform) equals the true one per component to ``REL`` relative, and the
same backwards for the direction of beta (started at 1): on the benchmark's models
(``bench_hmm._diag_case``), on the model EM fits to them, and on sticky chains.

``sticky``: what a failed attempt costs on a sticky chain (windows, failed checks, then the
rows kernel) against the rows kernel alone.

``profile`` (stop 26): where a rows unit's E-step goes, stage by stage, before and after
the windows layout filled once per fit. ``oldnew SRC``: another tree's fits against this
one's, interleaved in one process.

Run: ``PYTHONPATH=$PWD/src:$PWD python -m benchmarks.bench_hmm_windows [timing|more|sticky|burnin|profile|oldnew SRC]``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks.bench_hmm import _diag_case

REL = 1e-14
SHAPES = ((8, 4, 1, 5000), (8, 4, 2, 2000), (8, 4, 4, 1000), (8, 4, 3, 3000), (8, 4, 1, 20_000),
          (4, 4, 1, 5000), (16, 4, 1, 5000), (32, 4, 1, 5000), (8, 1, 1, 5000), (8, 16, 1, 5000))  # fmt: skip


def _rows_estep(k, X, lengths, means, prec, const, start, A, center):
    """Today's rows unit: what ``_numba_em._unit`` runs for ``U_ROWS > 0``."""
    R, D = X.shape
    K = len(start)
    S = 8 * (8 if R >= 4096 else 1)
    Tp = -(-R // S)
    n_act = np.full(Tp, S, dtype=np.int64)
    n_act[-1] = R - (Tp - 1) * S
    XL, XcL = np.empty((Tp, D, S)), np.empty((Tp, D, S))
    k.deal_rows(X, center, 0, R, XL, XcL)
    b, m = np.empty((Tp, K, S)), np.empty((Tp, S))
    alpha, inv_c = np.empty((R, K)), np.empty(R)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    lens = np.asarray(lengths, dtype=np.int64)
    n = len(lens)
    ll, bad = np.empty(n), np.zeros(n, dtype=np.bool_)
    xi, first, nsum = np.empty((K, K)), np.empty(K), np.empty(K)
    sx, sxx = np.empty((D, K)), np.empty((D, 1, K))

    def run():
        k.lanes_density_diag(XL, n_act, means, prec, const, b, m)
        np.exp(b, out=b)
        k.rows_fb_stats(start, A, b, m, XcL, 0, starts, lens, 0, n, False, alpha, inv_c, ll,
                        bad, xi, first, nsum, sx, sxx)  # fmt: skip

    return run


def windows(lengths, S, W):
    """(window starts, window lengths) of ``S`` lanes over the sequences: each sequence
    gets lanes in proportion to its rows; cores of equal rows, ``W`` rows each side."""
    lengths = np.asarray(lengths)
    share = np.maximum(1, np.round(S * lengths / lengths.sum()).astype(int))
    ws, wl = [], []
    r0 = 0
    for L, n in zip(lengths, share, strict=True):
        cuts = np.linspace(0, L, n + 1).round().astype(int)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            lo, hi = max(0, a - W), min(L, b + W)
            ws.append(r0 + lo)
            wl.append(hi - lo)
        r0 += L
    order = np.argsort(-np.array(wl), kind="stable")
    return np.array(ws)[order], np.array(wl)[order]


def _windowed_estep(k, X, lengths, means, prec, const, start, A, center, S, W):
    D = X.shape[1]
    K = len(start)
    ws, wl = windows(lengths, S, W)
    n = len(ws)
    Sp = -(-n // 8) * 8
    T = int(wl[0])
    n_act = np.searchsorted(-wl, -np.arange(T), side="left").astype(np.int64)
    lane_start = np.zeros(Sp, dtype=np.int64)
    lane_start[:n] = ws
    XL, XcL = np.empty((T, D, Sp)), np.empty((T, D, Sp))
    k.to_lanes(X, center, lane_start, n_act, XL, XcL)
    b, m = np.empty((T, K, Sp)), np.empty((T, Sp))
    alpha, ic = np.empty((T, K, Sp)), np.empty((T, Sp))
    ll, bad = np.empty(n), np.zeros(n, dtype=np.bool_)
    xi, first, nsum = np.empty((K, K)), np.empty(K), np.empty(K)
    sx, sxx = np.empty((D, K)), np.empty((D, 1, K))
    lens = wl.astype(np.int64)

    def run():
        k.lanes_density_diag(XL, n_act, means, prec, const, b, m)
        np.exp(b, out=b)
        k.lanes_fb_stats(start, A, b, m, n_act, lens, XcL, False, alpha, ic, ll, bad, xi,
                         first, nsum, sx, sxx)  # fmt: skip

    return run, int(wl.sum())


def _real_estep(k, X, lengths, means, prec, const, start, A, center, W):
    """The windows kernel itself (core mask, checks), planned by ``windows.plan``."""
    from tying.hmm import windows
    from tying.hmm._numba_windows import windows_fb_stats

    D = X.shape[1]
    K = len(start)
    p = windows.plan(lengths, W)
    S, T = p["S"], len(p["n_act"])
    lane_start = np.zeros(S, dtype=np.int64)
    lane_start[: len(p["wstart"])] = p["wstart"]
    XL, XcL = np.empty((T, D, S)), np.empty((T, D, S))
    k.to_lanes(X, center, lane_start, p["n_act"], XL, XcL)
    b, m = np.empty((T, K, S)), np.empty((T, S))
    alpha, ic = np.empty((T, K, S)), np.empty((T, S))
    n = len(lengths)
    ll, bad = np.empty(n), np.zeros(n, dtype=np.bool_)
    xi, first, nsum = np.empty((K, K)), np.empty(K), np.empty(K)
    sx, sxx = np.empty((D, K)), np.empty((D, 1, K))

    def run():
        k.lanes_density_diag(XL, p["n_act"], means, prec, const, b, m)
        np.exp(b, out=b)
        failed = windows_fb_stats(start, A, b, m, p["n_act"], p["wlen"], XcL, False, alpha, ic,
                                  p["wstart"], p["core_lo"], p["core_hi"], p["prev_lane"],
                                  p["next_lane"], p["lane_seq"], windows.REL, ll, bad, xi, first,
                                  nsum, sx, sxx)  # fmt: skip
        return failed  # 0 on the benchmark's models: they converge within W = 16

    return run, int(p["wlen"].sum())


def timing(rounds=7, inner=5, lanes=(24, 32), burn=(16, 32), shapes=SHAPES, rows_out=None):
    from tying.hmm import compiled

    k = compiled._kernels()
    for K, D, n_seq, T in shapes:
        X, lengths, start, A, means, covars = _diag_case(K=K, D=D, n_seq=n_seq, T=T)
        prec = 1.0 / covars
        const = -0.5 * (D * np.log(2 * np.pi) - np.log(prec).sum(1))
        center = X.mean(0)
        runs = {"rows": (_rows_estep(k, X, lengths, means, prec, const, start, A, center), 0)}
        for S in lanes:
            for W in burn:
                runs[f"S={S} W={W}"] = _windowed_estep(
                    k, X, lengths, means, prec, const, start, A, center, S, W
                )
        for W in burn:
            runs[f"kernel W={W}"] = _real_estep(
                k, X, lengths, means, prec, const, start, A, center, W
            )
        times = {name: [] for name in runs}
        failed = {name: fn() for name, (fn, _) in runs.items()}  # compiled, warm
        for _ in range(rounds):
            for name, (fn, _) in runs.items():
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name].append((time.perf_counter() - t0) / inner)
        base = np.array(times["rows"])
        R = int(np.sum(lengths))
        print(f"K={K} D={D} {n_seq}x{T}: rows {np.median(base) * 1e9 / R:.1f} ns/row, "
              f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
        for name, (_, rows) in runs.items():
            if name == "rows":
                continue
            r = np.array(times[name]) / base
            if rows_out is not None:
                rows_out.append({
                    "case": f"K={K} D={D} {n_seq}x{T}, E-step, {name}, vs the rows kernel",
                    "anchor": "the rows kernel (rows_fb_stats), same run",
                    "time_ratio": float(np.median(r)),
                    "spread": f"{r.min():.3f}-{r.max():.3f}",
                    "window_rows": rows / R,
                    "checks_failed": int(failed[name] or 0),
                    "load_average_1min": os.getloadavg()[0],
                })  # fmt: skip
            print(f"  {name:12s} window rows {rows / R:.2f}x  time/rows "
                  f"{np.median(r):.3f} ({r.min():.3f}-{r.max():.3f})"
                  + (f"  CHECKS FAILED ({failed[name]}): rows kernel" if failed[name] else ""))  # fmt: skip
        sys.stdout.flush()


def sticky_cost(rounds=7, inner=5):
    """What a failed attempt costs, layouts made once as in a fit: the windows' density,
    ``exp`` and forward pass (whose checks fail on a sticky chain, so no backward pass)
    against the rows unit's whole E-step, K=8, D=2, 1 x 5000. A fit would then run the
    rows kernel too: the failed attempt is this ratio on top of 1."""
    from tying.hmm import compiled

    k = compiled._kernels()
    rng = np.random.default_rng(1)
    K, D, L = 8, 2, 5000
    A = np.full((K, K), 0.01 / (K - 1))
    np.fill_diagonal(A, 0.99)
    means = rng.normal(scale=0.3, size=(K, D))
    states = [0]
    for _ in range(L - 1):
        states.append(rng.choice(K, p=A[states[-1]]))
    X = means[states] + rng.normal(size=(L, D))
    prec = np.ones((K, D))
    const = -0.5 * (D * np.log(2 * np.pi) - np.log(prec).sum(1))
    args = (k, X, np.array([L]), means, prec, const, np.full(K, 1 / K), A, X.mean(0))
    win, _ = _real_estep(*args, 32)
    fns = {"rows": _rows_estep(*args), "windows, failed": win}
    failed = win()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    r = np.array(times["windows, failed"]) / np.array(times["rows"])
    print(f"sticky K=8 D=2 1x5000, W=32 (checks failed: {failed}): failed attempt / rows "
          f"E-step {np.median(r):.2f} ({r.min():.2f}-{r.max():.2f}), load "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip


def _log_b(X, means, covars):
    D = X.shape[1]
    if covars.ndim == 3:  # covars_ as hmmlearn gives it: (K, D, D) diagonal matrices
        covars = np.diagonal(covars, axis1=1, axis2=2)
    d = ((X[:, None, :] - means[None]) ** 2 / covars[None]).sum(-1)
    lb = -0.5 * (d + np.log(covars).sum(-1)[None] + D * np.log(2 * np.pi))
    return np.exp(lb - lb.max(1, keepdims=True))


def _filter(start, A, B, t0, t1):
    """Normalised alpha over rows t0..t1-1 from ``start`` (itself normalised each step)."""
    out = np.empty((t1 - t0, A.shape[0]))
    a = start * B[t0]
    a /= a.sum()
    out[0] = a
    for i, t in enumerate(range(t0 + 1, t1), 1):
        a = (a @ A) * B[t]
        a /= a.sum()
        out[i] = a
    return out


def _smooth_back(A, B, t0, t1):
    """Beta directions (normalised to sum 1) of rows t1-1 down to t0, from beta = 1 at t1-1."""
    out = np.empty((t1 - t0, A.shape[0]))
    be = np.ones(A.shape[0]) / A.shape[0]
    out[-1] = be
    for t in range(t1 - 2, t0 - 1, -1):
        be = A @ (B[t + 1] * be)
        be /= be.sum()
        out[t - t0] = be
    return out


def _rel_ok(a, b):
    return np.abs(a - b) <= REL * np.maximum(np.abs(a), np.abs(b))


GRID = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)


def burnin_needed(start, A, B, cuts, grid=GRID):
    """For each cut s (a core boundary): the fewest burn-in rows W (forward: a window from
    s - W, uniform start, equal to the true alpha at s - 1; backward: a window ending at
    s + W, equal beta direction at s) for which every component agrees to ``REL``; the
    whole rows of one sequence ``B``; the smallest W of ``grid`` that does, None if none."""
    K = A.shape[0]
    L = B.shape[0]
    true_a = _filter(start, A, B, 0, L)
    true_b = _smooth_back(A, B, 0, L)
    fw, bw = [], []
    for s in cuts:
        got = None
        for W in [w for w in grid if w <= s]:
            a = _filter(np.full(K, 1.0 / K), A, B, s - W, s)[-1]
            if _rel_ok(a, true_a[s - 1]).all():
                got = W
                break
        fw.append(got)
        got = None
        for W in [w for w in grid if w <= L - s]:
            be = _smooth_back(A, B, s, s + W)[0]
            if _rel_ok(be, true_b[s]).all():
                got = W
                break
        bw.append(got)
    return fw, bw


def burnin():
    from tying.hmm import GaussianHMM

    def report(name, start, A, means, covars, X, L, n_cuts=8):
        B = _log_b(X[:L], means, covars)
        cuts = np.linspace(0, L, n_cuts + 1).round().astype(int)[1:-1]
        fw, bw = burnin_needed(start, A, B, cuts)
        print(f"{name}: forward W {fw}, backward W {bw}")
        sys.stdout.flush()

    for K, D in ((8, 4), (4, 4), (16, 4), (32, 4), (8, 1), (8, 16)):
        X, lengths, start, A, means, covars = _diag_case(K=K, D=D, n_seq=1, T=5000)
        report(f"bench start K={K} D={D}", start, A, means, covars, X, 5000)
        fit = GaussianHMM(K, "diag", startprob_init=start, transmat_init=A, means_init=means,
                          covars_init=covars, n_iter=10, tol=-np.inf).fit(X, lengths)  # fmt: skip
        report(f"after 10 EM iterations K={K} D={D}", fit.startprob_, fit.transmat_,
               fit.means_, fit.covars_, X, 5000)  # fmt: skip
    rng = np.random.default_rng(1)
    for K, stay, scale in ((8, 0.99, 0.3), (8, 0.99, 2.0), (4, 0.999, 0.3), (2, 0.99, 0.1)):
        A = np.full((K, K), (1 - stay) / (K - 1))
        np.fill_diagonal(A, stay)
        means = rng.normal(scale=scale, size=(K, 2))
        states = [0]
        for _ in range(2999):
            states.append(rng.choice(K, p=A[states[-1]]))
        X = means[states] + rng.normal(size=(3000, 2))
        report(f"sticky K={K} stay={stay} means scale {scale}", np.full(K, 1 / K), A, means,
               np.ones((K, 2)), X, 3000)  # fmt: skip


def _cpu_us(fn, rounds=5, inner=40):
    """Median CPU microseconds of one call of ``fn`` over ``rounds`` of ``inner`` calls."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(inner):
            fn()
        times.append((time.process_time() - t0) / inner)
    return float(np.median(times)) * 1e6


def profile(shapes=SHAPES[:1] + SHAPES[5:6] + SHAPES[8:9], rows_out=None):
    """Where a rows unit's E-step goes (stop 26): stop 25's drop-in (densities on the
    dealt rows, their ``exp``, then ``rows_windows_fb_stats``, which gathers ``b``,
    ``m``, ``XcL`` into fresh lane arrays and runs ``windows_fb_stats``), the rows kernel
    alone (the fallback), and the windows layout filled once per fit (its densities,
    ``exp`` and ``windows_fb_stats``: what the compiled diag loop runs now). CPU us per
    call, each stage timed alone on the benchmark's start model."""
    for K, D, n_seq, T in shapes:
        row = _profile_shape(K, D, n_seq, T)
        print(row)
        if rows_out is not None:
            rows_out.append(row)


def _profile_shape(K, D, n_seq, T):
    """One shape of :func:`profile`: its row."""
    from tying.hmm import _numba_kernels as k
    from tying.hmm import _numba_windows as nw

    X, lengths, start, A, means, covars = _diag_case(K=K, D=D, n_seq=n_seq, T=T)
    lens = np.asarray(lengths, dtype=np.int64)
    prec = 1.0 / covars
    const = -0.5 * (D * np.log(2 * np.pi) - np.log(prec).sum(1))
    center = X.mean(0)
    R = len(X)
    Sd = 8 * (8 if R >= 4096 else 1)
    Tp = -(-R // Sd)
    n_act = np.full(Tp, Sd, dtype=np.int64)
    n_act[-1] = R - (Tp - 1) * Sd
    XL, XcL = np.empty((Tp, D, Sd)), np.empty((Tp, D, Sd))
    k.deal_rows(X, center, 0, R, XL, XcL)
    b, m = np.empty((Tp, K, Sd)), np.empty((Tp, Sd))
    k.lanes_density_diag(XL, n_act, means, prec, const, b, m)
    logb = b.copy()
    np.exp(logb, out=b)
    starts = np.cumsum(lens) - lens
    n = len(lens)
    ll, bad = np.zeros(n), np.zeros(n, dtype=np.bool_)
    xi, first, nsum = np.zeros((K, K)), np.zeros(K), np.zeros(K)
    sx, sxx = np.zeros((D, K)), np.zeros((D, 1, K))
    alpha, inv_c = np.empty((R, K)), np.empty(R)
    ws, wl, clo, chi, seq, prev, nxt, wn = nw.plan_rows(starts, lens, 0, n, 0)
    S = -(-len(ws) // 8) * 8
    Tw = len(wn)
    lane_start = np.zeros(S, dtype=np.int64)
    lane_start[: len(ws)] = ws
    XLw, XcLw = np.empty((Tw, D, S)), np.empty((Tw, D, S))
    bw, mw = np.empty((Tw, K, S)), np.empty((Tw, S))
    aw, icw = np.empty((Tw, K, S)), np.empty((Tw, S))
    k.to_lanes(X, center, lane_start, wn, XLw, XcLw)
    k.lanes_density_diag(XLw, wn, means, prec, const, bw, mw)
    logbw = bw.copy()
    np.exp(logbw, out=bw)
    fb = (start, A, b, m, XcL, 0, starts, lens, 0, n, False, alpha, inv_c, ll, bad, xi,
          first, nsum, sx, sxx)  # fmt: skip
    wfb = (start, A, bw, mw, wn, wl, XcLw, False, aw, icw, ws, clo, chi, prev, nxt, seq,
           nw.REL, ll, bad, xi, first, nsum, sx, sxx)  # fmt: skip
    stages = {
        "copy (once per fit now)": lambda: k.to_lanes(X, center, lane_start, wn, XLw, XcLw),
        "densities, dealt": lambda: k.lanes_density_diag(XL, n_act, means, prec, const, b, m),
        "exp, dealt": lambda: np.exp(logb, out=b),
        "gather + windows (stop 25 drop-in)": lambda: nw.rows_windows_fb_stats(*fb, nw.MIN_ROWS),
        "rows kernel (fallback)": lambda: nw.rows_fb_stats(*fb),
        "densities, windows": lambda: k.lanes_density_diag(
            XLw, wn, means, prec, const, bw, mw
        ),  # fmt: skip
        "exp, windows": lambda: np.exp(logbw, out=bw),
        "windows_fb_stats": lambda: nw.windows_fb_stats(*wfb),
    }
    us = {name: _cpu_us(fn) for name, fn in stages.items()}
    failed = nw.windows_fb_stats(*wfb)
    old = us["densities, dealt"] + us["exp, dealt"] + us["gather + windows (stop 25 drop-in)"]
    new = us["densities, windows"] + us["exp, windows"] + us["windows_fb_stats"]
    row = {"case": f"profile K={K} D={D} {n_seq}x{T}: {len(ws)} windows of {S} lanes, "
                   f"{int(wl.sum())} window rows for {R}", "failed_checks": int(failed),
           **{f"{name} us": round(v, 1) for name, v in us.items()},
           "gather us": round(us["gather + windows (stop 25 drop-in)"] - us["windows_fb_stats"], 1),
           "E-step stop 25 us": round(old, 1), "E-step windows layout us": round(new, 1),
           "load_average_1min": os.getloadavg()[0]}  # fmt: skip
    return row


def _timed_fit(cls, *, K, ctype, X, lengths, init):
    """CPU seconds of a 10-iteration 1-thread fit by ``cls``, and its history."""
    getattr(cls, "activate", lambda: None)()  # its tree's modules (see old_new's load)
    t0 = time.process_time()
    m = cls(K, ctype, n_iter=10, tol=-np.inf, n_jobs=1, **init).fit(X, lengths)
    return time.process_time() - t0, m.history_


def old_new(main_src, rounds=9, rows_out=None, only=None):
    """Fits (diag, full, tied, 10 iterations, 1 thread) with another tree's ``tying``
    (``main_src``, e.g. ``/work/main/src``) and with this one, interleaved in this one
    process: the CPU-time ratio old / new of each pair, median and range, and whether
    the two fits' histories are the same bits. Both packages are imported under the name
    ``tying`` in turn (``sys.modules`` cleared between), each keeping its own classes."""
    import functools
    import importlib

    from threadpoolctl import threadpool_limits

    from benchmarks.bench_hmm import _start_covars

    def ours(name):
        return name == "tying" or name.startswith("tying.")

    def load(src):
        """The tree's GaussianHMM, and a fit that runs with the tree's modules in
        ``sys.modules``: the package imports some modules inside functions (``from
        tying.hmm import _numba_em``), which otherwise resolve to whichever tree was
        loaded last (stop 26 review: the 'old' fits ran this tree's compiled loop)."""
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.path.insert(0, src)
        try:
            cls = importlib.import_module("tying.hmm").GaussianHMM
            importlib.import_module("tying.hmm._numba_em")  # the lazily imported modules
            importlib.import_module("tying.hmm._numba_em_full")
            importlib.import_module("tying.hmm._numba_windows")
        finally:
            sys.path.remove(src)
        mods = {n: m for n, m in sys.modules.items() if ours(n)}
        if not all(os.path.abspath(getattr(m, "__file__", None) or src).startswith(
                os.path.abspath(src)) for m in mods.values()):  # fmt: skip
            raise RuntimeError(f"oldnew: a module of {src} was imported from elsewhere")

        def activate():  # outside the timed part (see _timed_fit)
            for name in [n for n in sys.modules if ours(n)]:
                del sys.modules[name]
            sys.modules.update(mods)

        cls.activate = staticmethod(activate)  # a class per tree: each keeps its own
        return cls

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    old, new = load(main_src), load(here)
    shapes = [("diag", *s) for s in SHAPES] + [(c, 8, 4, n, T) for c in ("full", "tied")
                                               for n, T in ((1, 5000), (2, 2000))]  # fmt: skip
    # and the many-sequence goal shapes (lane units: must not move)
    shapes += [
        (c, 8, 4, n, T) for c in ("diag", "full", "tied") for n, T in ((150, 400), (200, 500))
    ]
    if only is not None:  # e.g. "150x400": the shapes of that many sequences x steps
        shapes = [s for s in shapes if f"{s[3]}x{s[4]}" in only]
    with threadpool_limits(limits=1):
        for ctype, K, D, n_seq, T in shapes:
            X, lengths, start, A, means, _ = _diag_case(K=K, D=D, n_seq=n_seq, T=T)
            init = {"startprob_init": start, "transmat_init": A, "means_init": means,
                    "covars_init": _start_covars(ctype, K, D)}  # fmt: skip
            fit = functools.partial(_timed_fit, K=K, ctype=ctype, X=X, lengths=lengths, init=init)
            fit(old), fit(new)
            pairs = [(fit(old), fit(new)) for _ in range(rounds)]
            ratio = np.array([a[0] / b[0] for a, b in pairs])
            row = {"case": f"old/new {ctype} K={K} D={D} {n_seq}x{T}",
                   "old_ms": float(np.median([a[0] for a, _ in pairs]) * 1e3),
                   "new_ms": float(np.median([b[0] for _, b in pairs]) * 1e3),
                   "old_over_new": float(np.median(ratio)),
                   "spread": f"{ratio.min():.2f}-{ratio.max():.2f}",
                   "same_bits": all(a[1] == b[1] for a, b in pairs),
                   "load_average_1min": os.getloadavg()[0]}  # fmt: skip
            print(row, flush=True)
            if rows_out is not None:
                rows_out.append(row)


def main(parts: list[str] | None = None) -> None:
    """``python -m benchmarks hmm_windows`` (every part) or ``python -m
    benchmarks.bench_hmm_windows [timing|more|sticky|burnin|profile|oldnew SRC [SHAPE ...]]``
    (``oldnew SRC``: fits with the ``tying`` of ``SRC``, e.g. ``/work/main/src``, against
    this tree's, interleaved in one process; ``SHAPE``: only those, e.g. ``150x400``); under
    ``TYING_BENCH_SMOKE=1`` one round of the first timing shape only (CI: it runs)."""
    from benchmarks.common import SMOKE, write

    rows: list[dict] = []
    parts = parts or ["timing", "more", "sticky", "burnin"]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}")
    if SMOKE:
        timing(rounds=1, inner=1, lanes=(32,), burn=(32,), shapes=SHAPES[:1], rows_out=rows)
        write("hmm-windows", rows)
        return
    if "timing" in parts:
        timing(shapes=SHAPES[:5], rows_out=rows)
    if "more" in parts:  # the other K and D of bench_hmm's ROW_SHAPES
        timing(shapes=SHAPES[5:], rows_out=rows)
    if "sticky" in parts:
        sticky_cost()
    if "burnin" in parts:
        burnin()
    if "profile" in parts:
        profile(rows_out=rows)
    if "oldnew" in parts:
        at = parts.index("oldnew")
        old_new(parts[at + 1], rows_out=rows, only=parts[at + 2 :] or None)
    write("hmm-windows", rows)


if __name__ == "__main__":
    main(sys.argv[1:])
