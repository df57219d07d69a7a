"""The pair HMM for alignment, with insert-X and insert-Y tied by default (claim C4).

Three states (Durbin et al., *Biological Sequence Analysis*, ch. 4): match M
emits an aligned pair (a, b) with p(a, b); insert-X emits a symbol of x
against a gap with q(a); insert-Y likewise for y. Gap open δ (M -> X, M -> Y),
gap extend ε (X -> X, Y -> Y), end τ from every state; begin behaves like M.

With ``tied=True`` (the default) X and Y share one δ, one ε and one insert
distribution q, and the match distribution is symmetric, p(a, b) = p(b, a):
the model then cannot tell which sequence is called x, so it scores (x, y)
and (y, x) alike, and Baum-Welch pools the X and Y counts. ``tied=False``
gives X and Y their own δ, ε, q and an unconstrained p.

Example:
    >>> from tying.hmm import PairHMM
    >>> hmm = PairHMM.from_params(alphabet="ACGT")
    >>> a, b = hmm.score_pairs([("GATTACA", "GATACA"), ("GATACA", "GATTACA")])
    >>> bool(a == b)
    True
    >>> print(hmm.format_alignment("GATTACA", "GATACA"))
    GATTACA
    GA-TACA
"""

from __future__ import annotations

import numpy as np

from tying.core.count import Count, Group
from tying.hmm.base import NotFittedError, _threads, _unchanged_on_error
from tying.hmm.estimator import EstimatorParams
from tying.hmm.fitted_array import assign_written, linked
from tying.hmm.integer_args import as_integer
from tying.hmm.monitor import ConvergenceMonitor, check_monitor_kept, keep_monitor
from tying.hmm.pair_alphabet import alphabet_message, table_alphabet_fix
from tying.hmm.pair_dp import (
    IMPOSSIBLE,
    M,
    PairChunk,
    PairParams,
    X,
    Y,
    forward,
    posterior_counts,
    viterbi,
)
from tying.hmm.pair_inputs import refuse_no_pairs, side_error
from tying.hmm.validation import (
    _check_n_threads,
    _check_seed,
    _check_tol,
    _positive_int,
    _real_array,
    _shape_text,
)

__all__ = ["PairHMM", "mirror"]


_FITTED = ("delta", "epsilon", "tau", "match_probs", "insert_probs")
_TABLES = ("match_probs", "insert_probs")  # indexed by symbol: read through the alphabet


def _fitted_attribute(name: str, doc: str) -> property:
    """A fitted attribute that is validated (alone and with the others) when assigned."""

    def plain(self):
        self._check_has_params()  # reading a stored value; the methods check it fits
        value = self.__dict__[f"_{name}"]
        return value.copy() if isinstance(value, np.ndarray) else value

    def get(self):  # an array's item writes go to the model (m.delta_[0] = 0.1, untied)
        value = plain(self)
        return linked(self, f"{name}_", value) if isinstance(value, np.ndarray) else value

    def set_(self, value):
        if "_delta" not in self.__dict__:
            self._set_start()  # the other values start from the constructor's
        self._store(**{name: self._validated(name, value)})
        self.__dict__.setdefault("_assigned_names", set()).add(name)  # fit starts from it

    get.plain = plain
    return property(get, set_, doc=doc)


def _check_rows(delta, epsilon, tau) -> None:
    dx, dy = np.broadcast_to(delta, (2,))
    ex, ey = np.broadcast_to(epsilon, (2,))
    if not 0 < tau < 1:
        raise ValueError(f"tau = {tau:.4g} must lie strictly between 0 and 1")
    if dx + dy + tau >= 1:
        raise ValueError(
            f"gap open and end leave no room to match: 2·delta + tau = "
            f"{dx + dy + tau:.4g} must be < 1; lower delta or tau"
        )
    if max(ex, ey) + tau >= 1:
        raise ValueError(
            f"epsilon + tau = {max(ex, ey) + tau:.4g} must be < 1 (a gap must be "
            f"able to close); lower epsilon or tau"
        )


def mirror(states) -> np.ndarray:
    """An alignment's states with x and y exchanged (insert-X <-> insert-Y).

    Args:
        states: one state per column (0 = match, 1 = insert-X, 2 = insert-Y).

    Returns:
        A new integer array, insert-X and insert-Y exchanged.

    Raises:
        ValueError: on anything but a 1-d sequence of the states 0, 1 and 2.

    Example:
        >>> mirror([0, 1, 2]).tolist()
        [0, 2, 1]
    """
    states = _checked_states(states)  # a 5 or a 1.5 went through unchanged, with no error
    s = states.copy()
    s[states == X], s[states == Y] = Y, X
    return s


def _checked_states(states) -> np.ndarray:
    """``states`` as an integer array of alignment states, refused by entry otherwise."""
    states = np.asarray(states)
    if states.ndim != 1 or (states.size and states.dtype.kind not in "iu"):
        raise ValueError(
            f"states must be a 1-d sequence of integer states (0 = match, 1 = insert-X, "
            f"2 = insert-Y), got {states.dtype} of shape {states.shape}"
        )
    if states.size and (states.min() < 0 or states.max() > 2):
        bad = int(np.flatnonzero((states < 0) | (states > 2))[0])
        raise ValueError(
            f"states[{bad}] = {states[bad]} is not a state; states are 0 (match), "
            f"1 (insert-X) and 2 (insert-Y)"
        )
    return states


class PairHMM(EstimatorParams):
    """Three-state pair HMM (M, insert-X, insert-Y) with X and Y tied by default.

    Args:
        alphabet: a string of symbols (``"ACGT"``), so sequences may be strings;
            or None, with ``n_symbols`` giving integer symbols ``0..n_symbols-1``.
        n_symbols: alphabet size when ``alphabet`` is None.
        tied: share δ, ε and q between X and Y and keep p symmetric (claim C4).
        delta, epsilon, tau: starting gap-open, gap-extend and end probabilities
            (scalars; with ``tied=False`` also ``(x, y)`` pairs for δ and ε).
        match_probs: starting ``(S, S)`` match distribution (None: 0.8 of the mass
            on identities). insert_probs: ``(S,)`` or, untied, ``(2, S)`` (None: uniform).
        n_iter, tol: Baum-Welch iterations (0: ``fit`` only sets the start values, as
            in the other HMMs) and log-likelihood tolerance.
        pseudocount: added to every expected emission count (0 = maximum likelihood).
        chunk_size: pairs per vectorised block for scoring and Viterbi (small
            blocks stay in cache); posteriors and ``fit`` use smaller blocks so
            their full tables stay under ``table_memory`` bytes.
        table_memory: bytes the full DP tables of one block may take (posteriors, fit).
        n_threads: BLAS threads (None leaves them alone).

    The arguments are scikit-learn parameters (``get_params``, ``set_params``,
    ``sklearn.base.clone``: :mod:`tying.hmm.estimator`). Tables set for one
    alphabet are refused after ``alphabet`` changes to another of the same size
    (they are read by position); set it back, assign them in the new order, or fit.

    Attributes:
        delta_, epsilon_: floats when tied, ``(2,)`` arrays ``[x, y]`` when untied.
        tau_: float.
        match_probs_: ``(S, S)``.
        insert_probs_: ``(S,)`` tied, ``(2, S)`` untied.
        others: ``history_`` (log-likelihood per iteration), ``objective_`` (what EM
            raises: the log-likelihood plus, with ``pseudocount > 0``, the log-prior;
            its gain is the stop test), ``log_likelihood_``, ``n_iter_``,
            ``converged_`` (False when the objective fell, as for the other HMMs),
            ``monitor_`` (its :class:`ConvergenceMonitor`) after ``fit``. A fit that
            ran out of iterations with a finite ``tol`` warns
            (:class:`~tying.hmm.ConvergenceWarning`); ``tol=-np.inf`` runs all of them.
    """

    def __init__(
        self,
        alphabet: str | None = None,
        *,
        n_symbols: int | None = None,
        tied: bool = True,
        delta=0.05,
        epsilon=0.3,
        tau=0.01,
        match_probs=None,
        insert_probs=None,
        n_iter: int = 50,
        tol: float = 1e-6,
        pseudocount: float = 0.0,
        chunk_size: int = 128,
        table_memory: int = 2**28,
        n_threads: int | None = 1,
    ):
        self.alphabet = alphabet
        self.n_symbols = n_symbols
        self.tied = tied
        self.delta = delta
        self.epsilon = epsilon
        self.tau = tau
        self.match_probs = match_probs
        self.insert_probs = insert_probs
        self.n_iter = n_iter
        self.tol = tol
        self.pseudocount = pseudocount
        self.chunk_size = chunk_size
        self.table_memory = table_memory
        self.n_threads = n_threads

    @classmethod
    def from_params(cls, alphabet=None, **kwargs) -> PairHMM:
        """A ready-to-use model with the given (or default) parameters, without fitting.

        Args:
            alphabet, **kwargs: as in the constructor.

        Returns:
            A PairHMM with the fitted attributes set from the starting values.

        Raises:
            ValueError: on invalid probabilities, or an asymmetric model when tied.

        Example:
            >>> hmm = PairHMM.from_params("AB", delta=0.1, epsilon=0.2, tau=0.1)
            >>> round(hmm.delta_, 3), hmm.match_probs_.shape
            (0.1, (2, 2))
        """
        model = cls(alphabet, **kwargs)
        model._set_start()
        return model

    # ------------------------------------------------------------ parameters
    @property
    def n_symbols_(self) -> int:
        if self.alphabet is not None:
            return len(self.alphabet)
        if self.n_symbols is None:
            raise ValueError("give alphabet='ACGT' (or any string) or n_symbols=<int>")
        return int(self.n_symbols)

    def _set_start(self) -> None:
        """Set every fitted value from the constructor's (checked) start values."""
        start = self._start_values()
        for name in _FITTED:  # a new start replaces every fitted value at once
            self.__dict__.pop(f"_{name}", None)
        self._store(**start)

    def _check_params(self) -> None:
        """What ``fit`` and ``from_params`` refuse of the settings (``set_params`` runs it)."""
        start = self._start_values()
        _check_rows(start["delta"], start["epsilon"], start["tau"])

    def _start_values(self) -> dict:
        """The settings checked, and the start values they give (nothing is stored)."""
        if self.alphabet is not None and (
            not isinstance(self.alphabet, str) or len(self.alphabet) == 0
        ):
            raise ValueError(alphabet_message(self.alphabet))
        if self.alphabet is None and self.n_symbols is not None:
            _positive_int("n_symbols", self.n_symbols)
        if self.alphabet is not None and self.n_symbols is not None:
            n = _positive_int("n_symbols", self.n_symbols)
            if n != len(self.alphabet):  # the alphabet's size won and n_symbols went unread
                raise ValueError(
                    f"n_symbols={self.n_symbols!r} but alphabet {self.alphabet!r} has "
                    f"{len(self.alphabet)} symbols; give one of them (n_symbols=None with an "
                    f"alphabet), or an alphabet of n_symbols symbols"
                )
        S = self.n_symbols_
        if self.alphabet is not None and len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet {self.alphabet!r} repeats a symbol")
        if isinstance(self.tied, (bool, np.bool_)) is False:
            raise TypeError(f"tied must be True or False, got {self.tied!r}")
        n_iter = as_integer(self.n_iter)  # a 0-d int array too, as the other HMMs
        if n_iter is None or n_iter < 0:
            raise ValueError(
                f"n_iter must be a non-negative integer (0 only initialises), got {self.n_iter!r}"
            )
        for name in ("chunk_size", "table_memory"):
            _positive_int(name, getattr(self, name))
        _check_n_threads(self.n_threads)
        pc = self.pseudocount
        if isinstance(pc, (bool, np.bool_)) or not isinstance(pc, (int, float, np.number)):
            raise TypeError(f"pseudocount must be a number, got {pc!r}")
        if not (np.isfinite(pc) and pc >= 0):
            raise ValueError(f"pseudocount must be >= 0, got {pc!r}")
        _check_tol(self.tol)
        side = () if self.tied else (2,)
        delta = _prob("delta", self.delta, side)
        epsilon = _prob("epsilon", self.epsilon, side)
        tau = _prob("tau", self.tau, ())
        if self.match_probs is None:
            match = np.full((S, S), 0.2 / max(S * S - S, 1)) if S > 1 else np.ones((1, 1))
            if S > 1:
                np.fill_diagonal(match, 0.8 / S)
        else:
            match = _distribution("match_probs", self.match_probs, (S, S))
        if self.insert_probs is None:
            insert = np.full((2, S) if side else (S,), 1.0 / S)
        else:
            insert = _distribution("insert_probs", self.insert_probs, side + (S,))
        if self.tied and not np.allclose(match, match.T, rtol=0, atol=1e-12):
            worst = np.unravel_index(np.abs(match - match.T).argmax(), match.shape)
            raise ValueError(
                f"tied=True needs a symmetric match distribution p(a, b) = p(b, a) so that "
                f"(x, y) and (y, x) score alike; match_probs{tuple(int(w) for w in worst)} = "
                f"{match[worst]:.6g} but its transpose is {match.T[worst]:.6g}; pass "
                f"(p + p.T) / 2 or use tied=False"
            )
        return {
            "delta": delta,
            "epsilon": epsilon,
            "tau": float(tau),
            "match_probs": (match + match.T) / 2 if self.tied else match,
            "insert_probs": insert,
        }

    def _store(self, **values) -> None:
        """Set fitted values after checking them together; on error nothing changes."""
        merged = {k: self.__dict__.get(f"_{k}") for k in _FITTED} | values
        if all(merged[k] is not None for k in ("delta", "epsilon", "tau")):
            _check_rows(merged["delta"], merged["epsilon"], merged["tau"])
        for k, v in values.items():
            self.__dict__[f"_{k}"] = v
        # the alphabet each table was set for (a new dict: fit's undo keeps the old one)
        labels = {k: self.alphabet for k in values if k in _TABLES}
        if labels:
            self.__dict__["_table_alphabets"] = self.__dict__.get("_table_alphabets", {}) | labels

    def _check_table_alphabets(self, names=_TABLES) -> None:
        """Refuse tables set for another alphabet of the same size ("ACGT" -> "TGCA"):
        they are read by position, so each symbol would be scored as another."""
        labels = self.__dict__.get("_table_alphabets", {})
        now = self.alphabet
        old = {n: labels[n] for n in names if isinstance(labels.get(n), str)}
        wrong = [n for n, a in old.items() if isinstance(now, str) and a != now]
        if wrong:
            was = old[wrong[0]]
            moved = [f"{b!r} as {a!r}" for a, b in zip(was, now) if a != b][:4]
            raise ValueError(
                f"{' and '.join(n + '_' for n in wrong)} were set for the alphabet {was!r}, but "
                f"alphabet is now {now!r}: the tables are read by position, so symbols would be "
                f"scored as others ({', '.join(moved)}); set alphabet back to {was!r}, "
                f"{table_alphabet_fix(was, now, wrong)}, or fit"
            )

    def _validated(self, name: str, value):
        """A fitted attribute assigned by the user, checked like a start value."""
        side = () if self.tied else (2,)
        S = self.n_symbols_
        if name in ("delta", "epsilon"):
            return _prob(f"{name}_", value, side)
        if name == "tau":
            return _prob("tau_", value, ())
        if name == "match_probs":
            match = _distribution("match_probs_", value, (S, S))
            if self.tied and not np.allclose(match, match.T, rtol=0, atol=1e-12):
                raise ValueError(
                    "match_probs_: tied=True needs a symmetric match distribution "
                    "p(a, b) = p(b, a); assign (p + p.T) / 2 or use tied=False"
                )
            return match
        return _distribution("insert_probs_", value, side + (S,))

    def log_params(self) -> PairParams:
        """The model's parameters in the log-space form the DP kernels take."""
        self._check_fitted()
        qx, qy = (
            (self._plain("insert_probs_"), None)
            if self.tied
            else (self._plain("insert_probs_")[0], self._plain("insert_probs_")[1])
        )
        return PairParams.from_probs(
            delta=self._plain("delta_"),
            epsilon=self._plain("epsilon_"),
            tau=self.tau_,
            match=self._plain("match_probs_"),
            insert_x=qx,
            insert_y=qy,
        )

    def n_parameters(self) -> Count:
        """Logical vs physical parameter entries (tied X/Y store δ, ε, q once).

        Example:
            >>> c = PairHMM.from_params("ACGT").n_parameters()
            >>> c.logical, c.physical
            (29, 17)
        """
        self._check_fitted()
        S = self.n_symbols_
        sizes = {"delta": 1, "epsilon": 1, "insert_probs": S}
        logical = 1 + S * S + 2 * sum(sizes.values())  # tau, match, then X and Y copies
        if not self.tied:
            return Count(logical, logical, 8 * logical, 8 * logical, [])
        sym = S * (S - 1) // 2  # the symmetric match matrix stores its upper triangle once
        physical = logical - sum(sizes.values()) - sym
        groups = [
            Group(f"{k}.X", n, 8 * n, [f"{k}.X", f"{k}.Y"], 2 * n, 16 * n) for k, n in sizes.items()
        ]
        groups.append(
            Group(
                "match_probs.upper",
                S * (S + 1) // 2,
                4 * S * (S + 1),
                ["match_probs.upper", "match_probs.lower"],
                S * S,
                8 * S * S,
            )
        )
        return Count(logical, physical, 8 * logical, 8 * physical, groups)

    # ----------------------------------------------------------------- input
    def _encode(self, pairs) -> list[tuple[np.ndarray, np.ndarray]]:
        if isinstance(pairs, tuple) and len(pairs) == 2 and not isinstance(pairs[0], tuple):
            raise TypeError("pass a list of (x, y) pairs, e.g. [(x, y)], not one pair")
        S = self.n_symbols_
        lut = None if self.alphabet is None else {ch: k for k, ch in enumerate(self.alphabet)}
        out = []
        for p, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)):  # "AB" would be read as the pair ("A", "B")
                raise TypeError(
                    f"pair {p} is the string {pair!r}, not an (x, y) pair: pairs is a list of "
                    f"(x, y) tuples; pass [(x, y)] for one pair"
                )
            if len(pair) != 2:
                raise ValueError(f"pair {p}: expected (x, y), got {len(pair)} items")
            enc = []
            for side, seq in zip("xy", pair):
                if isinstance(seq, str):
                    if lut is None:
                        raise TypeError(
                            f"pair {p}, {side}: a string needs alphabet=...; this model has "
                            f"integer symbols 0..{S - 1}"
                        )
                    bad = [k for k, ch in enumerate(seq) if ch not in lut]
                    if bad:
                        raise ValueError(
                            f"pair {p}, {side}[{bad[0]}] = {seq[bad[0]]!r} is not in the "
                            f"alphabet {self.alphabet!r}"
                        )
                    arr = np.array([lut[ch] for ch in seq], dtype=np.int64)
                else:
                    arr = np.asarray(seq)
                    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                        raise ValueError(side_error(p, side, seq, arr, self.alphabet, S))
                    # checked before the cast: a uint64 past 2**63 was named as a negative
                    bad = np.flatnonzero((arr < 0) | (arr >= S))
                    if bad.size:
                        raise ValueError(
                            f"pair {p}, {side}[{bad[0]}] = {arr[bad[0]]} is not a symbol "
                            f"(0..{S - 1})"
                        )
                    arr = arr.astype(np.int64)
                enc.append(arr)
            out.append((enc[0], enc[1]))
        refuse_no_pairs(out, pairs)
        return out

    def _chunks(self, enc, tables: bool = False):
        """Pairs grouped by size, in chunks; yields (indices, chunk).

        Pairs are sorted by length and a chunk closes when padding would more
        than double its work, so mixed lengths cost little. With ``tables``
        (full forward tables) a chunk also stays within ``table_memory``.
        """
        n = np.array([len(x) for x, _ in enc])
        m = np.array([len(y) for _, y in enc])
        order = np.lexsort((n, n + m))
        area = (n + 2) * (n + m + 2)  # diagonal-layout cells of one pair's table
        start = 0
        while start < len(order):
            stop, real, n_max, m_max = start, 0, 0, 0
            while stop < len(order) and stop - start < self.chunk_size:
                k = order[stop]
                nm, mm = max(n_max, n[k]), max(m_max, m[k])
                padded = (stop - start + 1) * (nm + 2) * (nm + mm + 2)
                if stop > start and padded > 2 * (real + area[k]) + 4096:
                    break
                if tables and stop > start and 8 * 3 * 2 * padded > self.table_memory:
                    break
                real, n_max, m_max, stop = real + area[k], nm, mm, stop + 1
            idx = order[start:stop]
            yield idx, PairChunk.pack([enc[i] for i in idx])
            start = stop

    # ----------------------------------------------------------------- score
    def score_pairs(self, pairs) -> np.ndarray:
        """log P(x, y) of every pair, summed over all alignments (forward algorithm).

        Args:
            pairs: list of ``(x, y)``: strings over ``alphabet`` or integer arrays.

        Returns:
            ``(n_pairs,)`` log-likelihoods (an empty array for no pairs).

        Raises:
            ValueError: on a symbol outside the alphabet (named by pair and position).
            NotFittedError: without parameters.

        Example:
            >>> hmm = PairHMM.from_params("AC")
            >>> ll = hmm.score_pairs([("AC", "AC"), ("AC", "CA")])
            >>> bool(ll[0] > ll[1])
            True
        """
        self._check_fitted()
        enc = self._encode(pairs)
        p = self.log_params()
        out = np.empty(len(enc))
        with _threads(self.n_threads):
            for idx, chunk in self._chunks(enc):
                out[idx] = forward(p, chunk)
        return out

    def score(self, pairs) -> float:
        """Total log-likelihood of all pairs (the sum of :meth:`score_pairs`).

        Example:
            >>> hmm = PairHMM.from_params("AC")
            >>> bool(hmm.score([("A", "A")]) == hmm.score_pairs([("A", "A")])[0])
            True
        """
        return float(self.score_pairs(pairs).sum())

    def viterbi(self, pairs) -> tuple[np.ndarray, list[np.ndarray]]:
        """Best alignment of every pair.

        Args:
            pairs: list of ``(x, y)``.

        Returns:
            ``(log_p, paths)``: the best path's log-probability per pair and its
            states per column (0 = match, 1 = insert-X, 2 = insert-Y). A pair of
            probability 0 (every alignment uses a zero probability) gets ``-inf`` and
            None: it has no alignment.

        Example:
            >>> hmm = PairHMM.from_params("ACGT")
            >>> _, (path,) = hmm.viterbi([("GATTACA", "GATACA")])
            >>> path.tolist()
            [0, 0, 1, 0, 0, 0, 0]
        """
        self._check_fitted()
        enc = self._encode(pairs)
        p = self.log_params()
        log_p, paths = np.empty(len(enc)), [None] * len(enc)
        for idx, chunk in self._chunks(enc, tables=True):
            lp, ps = viterbi(p, chunk)
            log_p[idx] = lp
            for k, i in enumerate(idx):
                paths[i] = ps[k]
        return log_p, paths

    def sample(self, n_pairs: int = 1, random_state=None, *, max_length: int = 10_000):
        """Draw pairs (and their true alignments) from the model.

        Args:
            n_pairs: how many pairs. random_state: seed or Generator.
            max_length: stop a pair (and raise) if it grows past this many columns.

        Returns:
            ``(pairs, paths)``: pairs as strings when the model has an alphabet
            (integer arrays otherwise), and each pair's state path.

        Example:
            >>> pairs, paths = PairHMM.from_params("ACGT").sample(2, random_state=0)
            >>> len(pairs), all(len(p) == 2 for p in pairs)
            (2, True)
        """
        self._check_fitted()
        count = as_integer(n_pairs)  # an int, NumPy integer or 0-d integer array
        if count is None or count < 0:
            raise ValueError(f"n_pairs must be a non-negative integer, got {n_pairs!r}")
        n_pairs = count
        _positive_int("max_length", max_length)
        _check_seed(random_state)
        rng = np.random.default_rng(random_state)
        p = self.log_params()
        trans = np.exp(p.trans)
        stop = np.exp(p.end)
        qx, qy, pm = np.exp(p.insert_x), np.exp(p.insert_y), np.exp(p.match).ravel()
        S = self.n_symbols_
        pairs, paths = [], []
        for _ in range(n_pairs):
            x, y, path, k = [], [], [], M
            while True:
                probs = np.append(trans[k], stop[k])
                k = int(rng.choice(4, p=probs / probs.sum()))
                if k == 3:
                    break
                path.append(k)
                if k == M:
                    a = int(rng.choice(S * S, p=pm / pm.sum()))
                    x.append(a // S)
                    y.append(a % S)
                elif k == X:
                    x.append(int(rng.choice(S, p=qx / qx.sum())))
                else:
                    y.append(int(rng.choice(S, p=qy / qy.sum())))
                if len(path) > max_length:
                    raise ValueError(f"a sampled pair passed max_length={max_length}; raise tau")
            if self.alphabet is not None:
                pairs.append(
                    ("".join(self.alphabet[v] for v in x), "".join(self.alphabet[v] for v in y))
                )
            else:
                pairs.append((np.array(x, dtype=np.int64), np.array(y, dtype=np.int64)))
            paths.append(np.array(path, dtype=np.int8))
        return pairs, paths

    def path_log_prob(self, x, y, states) -> float:
        """Log-probability of one given alignment (state path) of ``x`` and ``y``.

        Args:
            x, y: the sequences.
            states: one state per column (0 = match, 1 = insert-X, 2 = insert-Y).

        Returns:
            log P(x, y, alignment), the end transition included.

        Raises:
            ValueError: when the states do not consume x and y exactly.

        Example:
            >>> hmm = PairHMM.from_params("AC")
            >>> bool(hmm.path_log_prob("A", "A", [0]) > hmm.path_log_prob("A", "A", [1, 2]))
            True
        """
        self._check_fitted()
        ((xe, ye),) = self._encode([(x, y)])
        p = self.log_params()
        states = _checked_states(states)
        if np.sum(states != Y) != len(xe) or np.sum(states != X) != len(ye):
            raise ValueError("states do not consume x and y exactly")
        total, prev, i, j = 0.0, M, 0, 0
        for k in states:
            total += p.trans[prev, k]
            if k == M:
                total += p.match[xe[i], ye[j]]
                i, j = i + 1, j + 1
            elif k == X:
                total += p.insert_x[xe[i]]
                i += 1
            else:
                total += p.insert_y[ye[j]]
                j += 1
            prev = k
        total += p.end[prev]
        return -np.inf if total < IMPOSSIBLE else float(total)

    def format_alignment(self, x, y) -> str:
        """The Viterbi alignment of one pair as two lines with ``-`` for gaps.

        Symbols of one character are written side by side; where a symbol takes more
        (integer symbols from 10), each column is padded to one width and columns are
        separated by a space, so every symbol stays over the one it is aligned with.

        Args:
            x, y: the sequences (strings over the alphabet, or integer symbols).

        Returns:
            The two lines, joined by a newline.

        Raises:
            ValueError: for a pair of probability 0 (it has no alignment), or symbols
                the model does not have.

        Example:
            >>> print(PairHMM.from_params("ACGT").format_alignment("ACGT", "AGT"))
            ACGT
            A-GT
            >>> print(PairHMM.from_params(n_symbols=12).format_alignment([0, 11, 3], [0, 3]))
            0 11 3
            0  - 3
        """
        _, (path,) = self.viterbi([(x, y)])
        if path is None:
            raise ValueError(
                "this pair has probability 0 under the model (every alignment uses a zero "
                "probability: a symbol's emission, or a gap), so it has no alignment"
            )
        sx, sy = self._symbol_text(x), self._symbol_text(y)
        top, bottom, i, j = [], [], 0, 0
        for k in path:
            top.append(sx[i] if k != Y else "-")
            bottom.append(sy[j] if k != X else "-")
            i, j = i + (k != Y), j + (k != X)
        if any(len(a) > 1 or len(b) > 1 for a, b in zip(top, bottom)):
            # symbols 10.. are several characters: joined, [0, 11, 3] over [0, 3] read
            # "0113" over "0-3", a column out of place (stop 58); one column each instead
            width = [max(len(a), len(b)) for a, b in zip(top, bottom)]
            top = [" ".join(a.rjust(w) for a, w in zip(top, width))]
            bottom = [" ".join(b.rjust(w) for b, w in zip(bottom, width))]
        return "".join(top) + "\n" + "".join(bottom)

    def _symbol_text(self, seq) -> list[str]:
        """One string per symbol of an (encoded-checked) sequence: a string's own
        characters, integer symbols through the alphabet where the model has one (they
        printed as their indices), else their numbers."""
        if isinstance(seq, str):
            return list(seq)
        codes = np.asarray(seq).tolist()
        if self.alphabet is not None:
            return [self.alphabet[c] for c in codes]
        return [str(c) for c in codes]

    def match_posteriors(self, x, y) -> np.ndarray:
        """P(x_i is aligned to y_j | x, y) for one pair.

        Args:
            x, y: the sequences.

        Returns:
            ``(len(x), len(y))`` posterior match probabilities; NaN for a pair of
            probability 0 (its posteriors are undefined).

        Example:
            >>> post = PairHMM.from_params("ACGT").match_posteriors("ACGT", "ACGT")
            >>> bool(post.diagonal().min() > 0.9)
            True
        """
        self._check_fitted()
        enc = self._encode([(x, y)])
        chunk = PairChunk.pack(enc)
        counts = posterior_counts(self.log_params(), chunk, keep_posteriors=True)
        post = counts.posteriors[M, :, 0]
        n, m = int(chunk.n[0]), int(chunk.m[0])
        i, j = np.meshgrid(np.arange(1, n + 1), np.arange(1, m + 1), indexing="ij")
        if not np.isfinite(counts.log_p[0]):  # probability 0: no posterior exists
            return np.full((n, m), np.nan)
        return post[i + j, i]

    # ------------------------------------------------------------------- fit
    def fit(self, pairs) -> PairHMM:
        """Baum-Welch re-estimation of δ, ε, τ and the emissions from unaligned pairs.

        Tied: X and Y counts are pooled (one δ, ε, q) and the match counts
        symmetrised. What EM maximises never decreases (``objective_``: the
        log-likelihood ``history_`` plus, with ``pseudocount > 0``, the log-prior).
        EM starts from the attributes assigned since the last fit (``m.delta_ = 0.1``)
        and from the constructor's values for the others.

        Args:
            pairs: list of ``(x, y)``.

        Returns:
            self.

        Raises:
            ValueError: on invalid symbols or settings, or a pair of probability 0.

        Example:
            >>> pairs, _ = PairHMM.from_params("ACGT", tau=0.1).sample(10, random_state=0)
            >>> fit = PairHMM("ACGT", n_iter=3, tol=-np.inf).fit(pairs)  # exactly 3
            >>> fit.n_iter_, bool(fit.history_[-1] >= fit.history_[0])
            (3, True)
        """
        with _unchanged_on_error(self):
            return self._fit(pairs)

    def _fit(self, pairs) -> PairHMM:
        # values assigned since the last fit are its start values, as in the other HMMs
        # (they were dropped for the constructor's); checked again against the settings
        assigned = {
            n: self.__dict__[f"_{n}"] for n in sorted(self.__dict__.get("_assigned_names", ()))
        }
        self._check_table_alphabets([n for n in assigned if n in _TABLES])
        check_monitor_kept(self)
        self._set_start()
        if assigned:
            self._store(**{n: self._validated(n, v) for n, v in assigned.items()})
        enc = self._encode(pairs)
        if not enc:  # scoring no pairs gives an empty array; EM has nothing to count
            raise ValueError(
                "fit got no pairs: EM needs at least one (x, y) pair to count from; "
                "pass a non-empty list of (x, y) pairs"
            )
        if all(len(x) + len(y) == 0 for x, y in enc):
            raise ValueError(
                f"all {len(enc)} pairs are empty: there is nothing to learn tau, delta, "
                f"epsilon or the emissions from; fit on pairs with symbols"
            )
        history = []
        # EM raises the objective it maximises: the log-likelihood, plus with
        # pseudocount > 0 the log of the Dirichlet prior that the pseudocount is. Its
        # gain is the stop test, and a fall of it is a defect, never convergence.
        monitor = ConvergenceMonitor(self.tol, as_integer(self.n_iter))
        with _threads(self.n_threads):
            for _ in range(monitor.n_iter):
                counts, ll = self._expected_counts(enc)
                history.append(ll)
                monitor.report(ll + self._log_prior())
                self._mstep(counts)
                if monitor.stopped:
                    break
        # n_iter=0 initialises only, as in the other HMMs: no likelihood was computed
        self.history_, self.log_likelihood_ = history, history[-1] if history else np.nan
        self.objective_ = list(monitor.history)
        self.n_iter_, self.converged_ = len(history), monitor.converged
        keep_monitor(self, monitor)  # as the other HMMs: its history is objective_
        monitor.warn_if_budget(
            "PairHMM", "log-likelihood" if self.pseudocount == 0 else "MAP objective"
        )
        self.__dict__.pop("_assigned_names", None)
        return self

    def _log_prior(self) -> float:
        """The log-density (up to a constant) of the Dirichlet prior whose MAP update
        :meth:`_mstep` makes: ``pseudocount`` added to every emission count is weight
        ``pseudocount`` on each log-probability, except the tied match table, whose
        pooled ``(a, b)`` and ``(b, a)`` counts share one pseudocount (weight half of
        it per ordered cell). 0 with ``pseudocount=0`` (maximum likelihood)."""
        pc = self.pseudocount
        if pc == 0:
            return 0.0
        with np.errstate(divide="ignore"):  # a start value of 0: -inf, EM lifts it
            match = np.log(self._plain("match_probs_")).sum() * (pc / 2 if self.tied else pc)
            return float(match + pc * np.log(self._plain("insert_probs_")).sum())

    def _expected_counts(self, enc):
        p = self.log_params()
        S = self.n_symbols_
        trans, end = np.zeros((3, 3)), np.zeros(3)
        match, ins = np.zeros((S, S)), np.zeros((2, S))
        total = 0.0
        for idx, c in self._chunks(enc, tables=True):
            counts = posterior_counts(p, c)
            if not np.all(np.isfinite(counts.log_p)):
                bad = int(np.flatnonzero(~np.isfinite(counts.log_p))[0])
                raise ValueError(
                    f"pair {int(idx[bad])} (lengths {c.n[bad]}, {c.m[bad]}) has probability 0 "
                    f"under the current parameters: every alignment of it uses a zero "
                    f"probability (a symbol's emission, or a gap); use pseudocount > 0 or "
                    f"positive start values, or drop the pair"
                )
            total += float(counts.log_p.sum())
            trans += counts.trans
            end += counts.end
            match += counts.match
            ins += counts.insert
        return (trans, end, match, ins), total

    def _mstep(self, counts) -> None:
        trans, end, match, ins = counts
        if trans.sum() == 0:
            raise ValueError(
                "the pairs hold no transitions to learn from, so the end probability tau "
                "cannot be estimated; fit on pairs with symbols"
            )
        tau = end.sum() / (end.sum() + trans.sum())
        m_out = trans[M].sum()
        delta, eps = self._delta, self._epsilon
        if self.tied:
            gaps = trans[M, X] + trans[M, Y]
            if m_out > 0:
                delta = float(gaps * (1 - tau) / (2 * m_out))
            ext, closes = trans[X, X] + trans[Y, Y], trans[X, M] + trans[Y, M]
            if ext + closes > 0:
                eps = float(ext * (1 - tau) / (ext + closes))
            match = match + match.T  # pool (a, b) with (b, a): p stays symmetric
            ins = ins.sum(0)
        else:
            delta, eps = np.array(delta, dtype=float), np.array(eps, dtype=float)
            if m_out > 0:
                delta = np.array([trans[M, X], trans[M, Y]]) * (1 - tau) / m_out
            for s, k in ((0, X), (1, Y)):
                if trans[k, k] + trans[k, M] > 0:
                    eps[s] = trans[k, k] * (1 - tau) / (trans[k, k] + trans[k, M])
        new = {"delta": delta, "epsilon": eps, "tau": float(tau)}
        match = match + self.pseudocount
        if match.sum() > 0:
            new["match_probs"] = match / match.sum()
        ins = ins + self.pseudocount
        tot = ins.sum(-1, keepdims=True)
        if np.all(tot > 0):
            new["insert_probs"] = ins / tot
        try:
            self._store(**new)
        except ValueError as err:
            raise ValueError(
                f"the pairs cannot support a valid model: the EM update gives {err}; fit on "
                f"more (or longer) pairs"
            ) from None

    def _plain(self, name: str):
        """The fitted attribute ``name``'s current value, plain (see :mod:`tying.hmm.fitted_array`)."""
        return getattr(type(self), name).fget.plain(self)

    def _write_back(self, name: str, before, after) -> None:
        """Assign ``after``, a write into ``m.<name>``, through its validating setter."""
        assign_written(self, name, before, after)

    def _check_has_params(self) -> None:
        if "_delta" not in self.__dict__:
            raise NotFittedError(
                "this PairHMM has no parameters yet; call fit(pairs) or PairHMM.from_params(...)"
            )

    def _check_fitted(self) -> None:
        self._check_has_params()
        self._check_settings_match()

    def _check_settings_match(self) -> None:
        """The settings that shape the parameters (tied, alphabet / n_symbols) may have
        changed since they were set: the tables would then be read with another alphabet
        size, or as tied when they are not (a wrong score, no error): refused."""
        d, S = self.__dict__, self.n_symbols_
        side = () if self.tied else (2,)
        match = d["_match_probs"]
        if (
            np.shape(d["_delta"]) == side
            and np.shape(d["_epsilon"]) == side
            and match.shape == (S, S)
            and d["_insert_probs"].shape == side + (S,)
        ):
            self._check_table_alphabets()
            if self.tied and np.abs(match - match.T).max() > 1e-12:
                raise ValueError(
                    "this PairHMM is tied but match_probs_ is not symmetric (tied was set to "
                    "True after it was set): assign a symmetric match_probs_ ((p + p.T) / 2), "
                    "set tied=False, or fit"
                )
            return
        want = {"delta": side, "epsilon": side, "match_probs": (S, S), "insert_probs": side + (S,)}
        wrong = {n: w for n, w in want.items() if np.shape(d[f"_{n}"]) != w}
        if wrong:
            got = ", ".join(
                f"{n}_ has shape {np.shape(self.__dict__[f'_{n}'])} (expected {_table_shape(n, w)})"
                for n, w in wrong.items()
            )
            raise ValueError(
                f"this PairHMM's parameters do not fit its settings (tied={self.tied}, "
                f"{S} symbols): {got}; tied, alphabet or n_symbols changed after they were "
                f"set: set it back, assign {', '.join(n + '_' for n in wrong)} again, or fit"
            )

    delta_ = _fitted_attribute("delta", "gap-open probability (float tied, (2,) untied)")
    epsilon_ = _fitted_attribute("epsilon", "gap-extend probability (float tied, (2,) untied)")
    tau_ = _fitted_attribute("tau", "end probability")
    match_probs_ = _fitted_attribute("match_probs", "(S, S) match distribution")
    insert_probs_ = _fitted_attribute("insert_probs", "(S,) tied or (2, S) insert distribution")


def _prob(name, value, shape) -> np.ndarray | float:
    arr = _real_array(name, value)  # text and complex: refused, not coerced (stop 42)
    if arr.shape != shape and not (shape and arr.shape == ()):
        # stop 58; tau has no (x, y) form, tied or not
        pair = arr.shape == (2,) and name.rstrip("_") in ("delta", "epsilon")
        pair = " (an (x, y) pair is for tied=False)" if pair else ""
        raise ValueError(
            f"{name} must be a probability{' or an (x, y) pair' if shape else ''}, got {value!r}"
            f"{pair}"
        )
    arr = np.broadcast_to(arr, shape).copy() if shape else arr
    if not np.all((arr > 0) & (arr < 1)):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return arr if shape else float(arr)


def _table_shape(name: str, shape: tuple[int, ...]) -> str:
    """A table's expected shape, readably: ``(4, 4) = (n_symbols, n_symbols)``."""
    if name.rstrip("_") in ("delta", "epsilon"):
        return "(2,) (one for insert-X, one for insert-Y)" if shape else "() (one number)"
    if name.rstrip("_") == "match_probs":
        return _shape_text(*zip(("n_symbols", "n_symbols"), shape))
    axes = ("insert-X and insert-Y", "n_symbols") if len(shape) == 2 else ("n_symbols",)
    return _shape_text(*zip(axes, shape))


def _distribution(name, value, shape) -> np.ndarray:
    arr = _real_array(name, value)
    if arr.shape != shape:
        untied = name.rstrip("_") == "insert_probs" and arr.shape == (2,) + shape
        untied = " ((2, n_symbols) is for tied=False)" if untied else ""
        raise ValueError(
            f"{name} must have shape {_table_shape(name, shape)}, got {arr.shape}{untied}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold non-negative probabilities")
    axes = tuple(range(len(shape) - (2 if name.rstrip("_") == "match_probs" else 1), len(shape)))
    sums = arr.sum(axis=axes)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        raise ValueError(f"{name} must sum to 1 (got {np.round(sums, 6)}); normalise it")
    return arr.copy()  # not the caller's array: changing it later must not change the model
