"""Pair-HMM dynamic programming over anti-diagonals, batched over many pairs.

The three-state pair HMM (match M, insert-X, insert-Y; Durbin et al.,
*Biological Sequence Analysis*, ch. 4) fills an (n+1) x (m+1) table per pair.
Cell (i, j) depends on (i-1, j-1), (i-1, j) and (i, j-1), so every cell of an
anti-diagonal ``d = i + j`` depends only on diagonals ``d-1`` and ``d-2``: the
recursion loops over diagonals and is vectorised over the cells of a diagonal
and over a chunk of pairs. Chunks are small (64 pairs) so a diagonal's arrays
stay in cache, which is worth several times in speed.

Everything is in log space. ``-inf`` is replaced by a large finite negative
number (``NEG``) so that log-sum-exp needs no ``isinf`` masking; results below
``NEG / 2`` are reported as ``-inf``.

Layout: a diagonal is stored by row index ``i`` in ``[0, n_max]``; arrays are
``(state, diagonal, pair, i)`` with states in the order M, X, Y.

Example:
    >>> import numpy as np
    >>> p = PairParams.from_probs(delta=0.1, epsilon=0.3, tau=0.05,
    ...                           match=np.full((2, 2), 0.25), insert_x=[0.5, 0.5])
    >>> chunk = PairChunk.pack([([0, 1], [1])])
    >>> float(np.round(forward(p, chunk)[0], 6))
    -7.041287
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "IMPOSSIBLE",
    "NEG",
    "PairChunk",
    "PairCounts",
    "PairParams",
    "forward",
    "posterior_counts",
    "viterbi",
]

NEG = -1e300  # log of zero, kept finite so that max/exp/log1p need no inf handling
_PARAM_NEG = -1e200  # log of a zero probability parameter; sums of many stay finite
#: A log-probability below this used a zero-probability parameter (each adds ``-1e200``)
#: and is reported as ``-inf``: a path of positive probability loses at most ~745 per
#: column (float64's smallest log), so it stays above this for any pair of fewer than
#: 1e196 columns. Before stop 30 the cut was ``NEG / 2`` and an impossible pair scored
#: -1e200: finite, so ``fit`` trained on it (a zero match probability became 1/3) and
#: the posteriors, Viterbi path and alignment of a pair of probability 0 looked valid.
IMPOSSIBLE = _PARAM_NEG / 2
M, X, Y = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class PairParams:
    """Log-space parameters of the three-state pair HMM.

    Attributes:
        trans: ``(3, 3)`` log transition matrix among M, X, Y (no X<->Y moves).
        end: ``(3,)`` log probability of ending from each state.
        match: ``(S, S)`` log p(a, b) of the match state.
        insert_x, insert_y: ``(S,)`` log q(a) of the insert states.

    The begin state behaves like M (Durbin's convention): the first column is
    entered with M's outgoing probabilities.
    """

    trans: np.ndarray
    end: np.ndarray
    match: np.ndarray
    insert_x: np.ndarray
    insert_y: np.ndarray

    @classmethod
    def from_probs(cls, *, delta, epsilon, tau, match, insert_x, insert_y=None) -> PairParams:
        """Build from probabilities: ``delta``/``epsilon`` scalars, or ``(δx, δy)`` pairs.

        Example:
            >>> p = PairParams.from_probs(delta=0.2, epsilon=0.1, tau=0.1,
            ...                           match=np.eye(2) / 2, insert_x=[0.5, 0.5])
            >>> np.round(np.exp(p.trans[0]), 3).tolist()
            [0.5, 0.2, 0.2]
        """
        dx, dy = np.broadcast_to(np.asarray(delta, dtype=np.float64), (2,))
        ex, ey = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (2,))
        trans = np.array(
            [
                [1.0 - dx - dy - tau, dx, dy],
                [1.0 - ex - tau, ex, 0.0],
                [1.0 - ey - tau, 0.0, ey],
            ]
        )
        qx = np.asarray(insert_x, dtype=np.float64)
        qy = qx if insert_y is None else np.asarray(insert_y, dtype=np.float64)
        return cls(
            trans=_log(trans),
            end=_log(np.full(3, float(tau))),
            match=_log(np.asarray(match, dtype=np.float64)),
            insert_x=_log(qx),
            insert_y=_log(qy),
        )

    @property
    def n_symbols(self) -> int:
        return self.match.shape[0]


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        out = np.log(p)
    return np.where(p > 0, out, _PARAM_NEG)


def _lse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(exp(a) + exp(b)), elementwise; symmetric in a and b to the last bit."""
    m = np.maximum(a, b)
    d = np.minimum(a, b)
    d -= m  # -|a - b|
    np.exp(d, out=d)
    np.log1p(d, out=d)
    d += m
    return d


class PairChunk:
    """A few pairs of symbol sequences, padded into arrays.

    Attributes:
        xs: ``(B, n_max + 1)`` symbols of x, ``xs[:, i]`` = x_i (1-based; column 0 unused).
        ys: ``(B, m_max + 1)`` likewise for y.
        n, m: ``(B,)`` lengths.
    """

    def __init__(self, xs, ys, n, m):
        self.xs, self.ys, self.n, self.m = xs, ys, n, m
        self.n_max, self.m_max = int(n.max()), int(m.max())
        self.size = len(n)
        self.equal = bool(np.all(n == n[0]) and np.all(m == m[0]))

    @classmethod
    def pack(cls, pairs) -> PairChunk:
        """Pad a list of ``(x, y)`` integer sequences.

        Example:
            >>> c = PairChunk.pack([([1, 2, 3], [2])])
            >>> c.xs.tolist(), c.n.tolist(), c.m.tolist()
            ([[0, 1, 2, 3]], [3], [1])
        """
        n = np.array([len(x) for x, _ in pairs], dtype=np.int64)
        m = np.array([len(y) for _, y in pairs], dtype=np.int64)
        xs = np.zeros((len(pairs), int(n.max()) + 1), dtype=np.int64)
        ys = np.zeros((len(pairs), int(m.max()) + 1), dtype=np.int64)
        for b, (x, y) in enumerate(pairs):
            xs[b, 1 : len(x) + 1] = x
            ys[b, 1 : len(y) + 1] = y
        return cls(xs, ys, n, m)

    def swapped(self) -> PairChunk:
        """The same pairs with x and y exchanged."""
        return PairChunk(self.ys, self.xs, self.m, self.n)


class _Emissions:
    """Per-diagonal emission log-probabilities of a chunk (gathers, no per-cell Python)."""

    def __init__(self, p: PairParams, c: PairChunk):
        S = p.n_symbols
        self.ex = p.insert_x[c.xs]  # (B, n_max+1): log q_x(x_i)
        self.ey = p.insert_y[c.ys]  # (B, m_max+1)
        self.xsS = c.xs * S
        self.ys = c.ys
        self.match = p.match.ravel()

    def on(self, d: int, a: int, b: int):
        """Emission log-probs for cells i in [a, b] of diagonal d (j = d - i)."""
        ys = self.ys[:, d - b : d - a + 1][:, ::-1]  # y_j for j = d-a .. d-b
        em = np.take(self.match, self.xsS[:, a : b + 1] + ys)
        return em, self.ex[:, a : b + 1], self.ey[:, d - b : d - a + 1][:, ::-1]


def _ranges(d: int, n_max: int, m_max: int):
    lo, hi = max(0, d - m_max), min(d, n_max)
    return lo, hi, max(lo, 1), min(hi, d - 1)  # cells; X needs i>=1; Y needs j>=1


def forward(p: PairParams, c: PairChunk) -> np.ndarray:
    """log P(x, y) for every pair of the chunk (forward pass, two diagonals kept).

    Args:
        p: parameters. c: the pairs.

    Returns:
        ``(B,)`` log-likelihoods (``-inf`` where impossible).
    """
    B, W = c.size, c.n_max + 1
    T = p.trans
    em_all = _Emissions(p, c)
    # three rotating diagonals; a diagonal only reads the cells its two
    # predecessors wrote, except the table's edges, which are reset to NEG
    prev2 = np.full((3, B, W), NEG)  # diagonal -1: empty
    prev1 = np.full((3, B, W), NEG)  # diagonal 0: the begin state, which acts as M at (0, 0)
    prev1[M, :, 0] = 0.0
    cur = np.full((3, B, W), NEG)
    out = np.full(B, NEG)
    _collect_end(out, prev1, 0, c, p)
    ends = set((c.n + c.m).tolist())
    for d in range(1, c.n_max + c.m_max + 1):
        _forward_diagonal(cur, prev1, prev2, d, c, T, em_all)
        if d in ends:
            _collect_end(out, cur, d, c, p)
        prev2, prev1, cur = prev1, cur, prev2
    return np.where(out < IMPOSSIBLE, -np.inf, out)


def _forward_diagonal(cur, prev1, prev2, d, c, T, em_all) -> None:
    lo, hi, a, b = _ranges(d, c.n_max, c.m_max)
    em, ex, ey = em_all.on(d, lo, hi)
    if lo == 0:  # cell (0, d): neither X nor M can be there
        cur[X, :, 0] = NEG
        cur[M, :, 0] = NEG
    if hi == d:  # cell (d, 0): neither Y nor M
        cur[Y, :, d] = NEG
        cur[M, :, d] = NEG
    if a <= hi:  # X(i, j) from (i-1, j) on diagonal d-1
        s = slice(a - 1, hi)
        cur[X, :, a : hi + 1] = ex[:, a - lo :] + _lse(
            T[M, X] + prev1[M, :, s], T[X, X] + prev1[X, :, s]
        )
    if lo <= b:  # Y(i, j) from (i, j-1) on diagonal d-1
        s = slice(lo, b + 1)
        cur[Y, :, lo : b + 1] = ey[:, : b - lo + 1] + _lse(
            T[M, Y] + prev1[M, :, s], T[Y, Y] + prev1[Y, :, s]
        )
    if a <= b:  # M(i, j) from (i-1, j-1) on diagonal d-2
        s = slice(a - 1, b)
        gaps = _lse(T[X, M] + prev2[X, :, s], T[Y, M] + prev2[Y, :, s])
        cur[M, :, a : b + 1] = em[:, a - lo : b - lo + 1] + _lse(T[M, M] + prev2[M, :, s], gaps)


def _collect_end(out, diag, d, c, p) -> None:
    done = np.flatnonzero(c.n + c.m == d)
    if done.size:
        i = c.n[done]
        v = diag[:, done, i] + p.end[:, None]  # (3, k)
        out[done] = _lse(v[M], _lse(v[X], v[Y]))


@dataclasses.dataclass
class PairCounts:
    """Expected counts of one chunk under the posterior: what Baum-Welch's M-step needs.

    Attributes:
        log_p: ``(B,)`` log P(x, y) per pair.
        trans: ``(3, 3)`` expected transitions among M, X, Y (begin counts as M).
        end: ``(3,)`` expected transitions to the end state.
        match: ``(S, S)`` expected match emissions of (a, b).
        insert: ``(2, S)`` expected insert emissions of X (row 0) and Y (row 1).
        posteriors: ``(3, D, B, W)`` state posteriors per cell when asked for, else None.
    """

    log_p: np.ndarray
    trans: np.ndarray
    end: np.ndarray
    match: np.ndarray
    insert: np.ndarray
    posteriors: np.ndarray | None = None


def posterior_counts(p: PairParams, c: PairChunk, *, keep_posteriors: bool = False) -> PairCounts:
    """Forward, then a backward sweep that accumulates expected counts as it goes.

    Only the forward table is stored; the backward values of the two diagonals
    ahead live in rotating buffers, and each diagonal's transition and emission
    posteriors are summed on the spot (small arrays, cache-resident).

    Args:
        p: parameters. c: the pairs.
        keep_posteriors: also return the per-cell state posteriors.

    Returns:
        A :class:`PairCounts`. A pair of probability 0 has ``log_p = -inf``, adds no
        counts and has posteriors 0.
    """
    B, W, Dn = c.size, c.n_max + 1, c.n_max + c.m_max + 1
    S = p.n_symbols
    T = p.trans
    em_all = _Emissions(p, c)
    F = np.full((3, Dn, B, W + 1), NEG)
    F[M, 0, :, 0] = 0.0  # begin
    empty = np.full((3, B, W + 1), NEG)
    for d in range(1, Dn):
        _forward_diagonal(F[:, d], F[:, d - 1], F[:, d - 2] if d >= 2 else empty, d, c, T, em_all)
    ends = c.n + c.m
    log_p = np.full(B, NEG)
    for d in np.unique(ends):
        _collect_end(log_p, F[:, d], d, c, p)
    possible = log_p >= IMPOSSIBLE
    # a pair of probability 0: every weight exp(. - inf) = 0, so it adds no counts and
    # its posteriors are 0 (its log_p is -inf below; callers refuse or flag it)
    lp = np.where(possible, log_p, np.inf)[:, None]  # (B, 1)
    trans, end = np.zeros((3, 3)), np.zeros(3)
    match, insert = np.zeros(S * S), np.zeros((2, S))
    last = F[:, ends, np.arange(B), c.n] + p.end[:, None] - lp[:, 0]  # (3, B)
    end += np.exp(last).sum(1)
    post = np.zeros((3, Dn, B, W)) if keep_posteriors else None
    # backward values plus the cell's emission, for diagonals d+1 and d+2 (and a spare)
    be1, be2, spare = (np.full((3, B, W + 1), NEG) for _ in range(3))
    Tb = T[:, :, None, None]  # (3, 3, 1, 1): from-state, to-state
    for d in range(Dn - 1, -1, -1):
        lo, hi, _, _ = _ranges(d, c.n_max, c.m_max)
        s1, s0 = slice(lo + 1, hi + 2), slice(lo, hi + 1)  # cell i+1 / cell i
        nxt = np.stack([be2[M, :, s1], be1[X, :, s1], be1[Y, :, s0]])  # (3, B, L)
        f = F[:, d, :, s0]  # (3, B, L)
        # terms[k, n] = log T_kn + backward-with-emission of successor n; one
        # exp of the shifted terms gives both the backward value and xi
        terms = Tb + nxt[None]  # (3, 3, B, L)
        top = terms.max(axis=1)  # (3, B, L)
        r = np.exp(terms - top[:, None])
        bk = np.log(r.sum(axis=1)) + top  # (3, B, L)
        w = np.exp(f + top - lp)  # <= 1: f + top - log p <= log posterior of the cell
        trans += np.einsum("kbl,knbl->kn", w, r)  # expected transitions out of diagonal d
        if not c.equal:  # cells outside a shorter pair's table must not feed valid ones
            i = np.arange(lo, hi + 1)
            valid = (i[None, :] <= c.n[:, None]) & (d - i[None, :] <= c.m[:, None])
            bk = np.where(valid, bk, NEG)
        at = np.flatnonzero(ends == d)
        if at.size:  # a pair's last cell: the only way on is to end
            bk[:, at, c.n[at] - lo] = p.end[:, None]
        # state posteriors of this diagonal's cells, and the emissions they account for
        gamma = np.exp(f + bk - lp)  # (3, B, L); begin cell (0, 0) excluded below
        if d == 0:
            gamma[:] = 0.0
        if lo == 0:
            gamma[(M, X), :, 0] = 0.0  # cell (0, d) has no x symbol
        if hi == d:
            gamma[(M, Y), :, d - lo] = 0.0  # cell (d, 0) has no y symbol
        if d > 0:
            em, ex, ey = em_all.on(d, lo, hi)
            sym_y = c.ys[:, d - hi : d - lo + 1][:, ::-1]  # y_j for the cells i = lo..hi
            sym_x = c.xs[:, lo : hi + 1]
            match += np.bincount((sym_x * S + sym_y).ravel(), gamma[M].ravel(), S * S)
            insert[0] += np.bincount(sym_x.ravel(), gamma[X].ravel(), S)
            insert[1] += np.bincount(sym_y.ravel(), gamma[Y].ravel(), S)
            spare[:, :, s0] = bk + np.stack([em, ex, ey])
        else:
            spare[:, :, s0] = NEG
        if post is not None:
            post[:, d, :, s0] = gamma
        be2, be1, spare = be1, spare, be2
    return PairCounts(
        log_p=np.where(possible, log_p, -np.inf),
        trans=trans,
        end=end,
        match=match.reshape(S, S),
        insert=insert,
        posteriors=post,
    )


def viterbi(p: PairParams, c: PairChunk):
    """Best alignment of every pair of the chunk.

    Returns:
        ``(log_p, paths)``: the best path's log-probability ``(B,)`` and, per
        pair, its states from first to last column (0 = M, 1 = X, 2 = Y); ``-inf``
        and None for a pair of probability 0 (no alignment has positive probability).
    """
    B, W, Dn = c.size, c.n_max + 1, c.n_max + c.m_max + 1
    T = p.trans
    em_all = _Emissions(p, c)
    V = np.full((3, Dn, B, W), NEG)
    ptr = np.zeros((3, Dn, B, W), dtype=np.int8)
    V[M, 0, :, 0] = 0.0
    for d in range(1, Dn):
        lo, hi, a, b = _ranges(d, c.n_max, c.m_max)
        em, ex, ey = em_all.on(d, lo, hi)
        p1, p2 = V[:, d - 1], V[:, d - 2] if d >= 2 else np.full((3, B, W), NEG)
        if a <= hi:
            s = slice(a - 1, hi)
            cand = np.stack([T[M, X] + p1[M, :, s], T[X, X] + p1[X, :, s]])
            k = cand.argmax(0)
            V[X, d, :, a : hi + 1] = ex[:, a - lo :] + np.take_along_axis(cand, k[None], 0)[0]
            ptr[X, d, :, a : hi + 1] = np.array([M, X], dtype=np.int8)[k]
        if lo <= b:
            s = slice(lo, b + 1)
            cand = np.stack([T[M, Y] + p1[M, :, s], T[Y, Y] + p1[Y, :, s]])
            k = cand.argmax(0)
            V[Y, d, :, lo : b + 1] = ey[:, : b - lo + 1] + np.take_along_axis(cand, k[None], 0)[0]
            ptr[Y, d, :, lo : b + 1] = np.array([M, Y], dtype=np.int8)[k]
        if a <= b:
            s = slice(a - 1, b)
            cand = np.stack([T[M, M] + p2[M, :, s], T[X, M] + p2[X, :, s], T[Y, M] + p2[Y, :, s]])
            k = cand.argmax(0)
            V[M, d, :, a : b + 1] = (
                em[:, a - lo : b - lo + 1] + np.take_along_axis(cand, k[None], 0)[0]
            )
            ptr[M, d, :, a : b + 1] = k
    ends = c.n + c.m
    last = V[:, ends, np.arange(B), c.n] + p.end[:, None]  # (3, B)
    state, log_p = last.argmax(0), last.max(0)
    # trace all pairs back at once, one column per step
    i, j, k = c.n.copy(), c.m.copy(), state.astype(np.int64)
    width = c.n_max + c.m_max
    buf = np.zeros((B, max(width, 1)), dtype=np.int8)
    col = np.full(B, width - 1)
    live = np.flatnonzero(i + j > 0)
    while live.size:
        kk = k[live]
        buf[live, col[live]] = kk
        col[live] -= 1
        prev = ptr[kk, i[live] + j[live], live, i[live]]
        i[live] -= kk != Y
        j[live] -= kk != X
        k[live] = prev
        live = live[i[live] + j[live] > 0]
    possible = log_p >= IMPOSSIBLE
    # a chunk of empty pairs has width 0: buf keeps one column, which is no path's
    paths = [buf[b, col[b] + 1 : width].copy() if possible[b] else None for b in range(B)]
    return np.where(possible, log_p, -np.inf), paths
