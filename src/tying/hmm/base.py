"""The HMM estimator: Baum-Welch with tied states, scikit-learn style.

:class:`BaseHMM` owns everything that does not depend on the emission
distribution: the tie spec, the start and transition probabilities, the EM
loop with restarts and a convergence tolerance, scoring, decoding and
sampling. Subclasses (:class:`~tying.hmm.GaussianHMM`,
:class:`~tying.hmm.CategoricalHMM`) supply the emission log-densities, their
sufficient statistics and their M-step.

Tying changes one thing in EM: before each M-step the per-state sufficient
statistics are summed over each tie group (:meth:`StateTies.pool`), and the
group's one physical parameter is estimated from the pooled statistics. The
E-step and the updates of untied parameters are unchanged (claim C3).

Parameters are stored once per group; the public attributes (``means_``,
``transmat_``, ...) are per-state views computed from them, so tied rows are
identical by construction.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from tying.core.count import Count
from tying.hmm.forward_backward import Posteriors, forward_backward, forward_log_likelihood
from tying.hmm.sequences import SequenceBatch, check_lengths
from tying.hmm.ties import StateTies
from tying.hmm.viterbi import viterbi

__all__ = ["BaseHMM", "NotFittedError"]

_log = logging.getLogger(__name__)


class NotFittedError(ValueError, AttributeError):
    """An HMM was used before ``fit`` (or ``from_params``) gave it parameters."""


_CONTROLLER: list = []  # one threadpoolctl controller, made on first use


def _threads(n_threads: int | None):
    """Limit BLAS/OpenMP threads while fitting (no oversubscription on small machines).

    The hot loops are small NumPy operations that gain nothing from threads;
    the few large matrix products gain little on 2 cores shared with others.
    The controller is built once (scanning loaded libraries costs milliseconds).
    """
    if n_threads is None:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # then BLAS keeps its own setting (OMP_NUM_THREADS)
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    if _CONTROLLER[0] is None:
        return contextlib.nullcontext()
    return _CONTROLLER[0].limit(limits=int(n_threads))


class BaseHMM:
    """Shared machinery of the HMM estimators; use a subclass.

    Args:
        n_components: number of hidden states K.
        ties: which states share parameters, e.g. ``{"means": [[0, 1, 2]],
            "covars": "all", "transitions": [[3, 4]]}`` (see
            :class:`~tying.hmm.StateTies`); tied transitions share a whole row.
        startprob_init, transmat_init: starting values; None draws them from
            ``random_state``.
        params: which parameters EM updates; the others keep their start values.
        n_iter: maximum EM iterations per restart.
        tol: stop when the total log-likelihood gains less than this.
        n_init: restarts from different random starts; the best is kept.
        random_state: seed or ``numpy.random.Generator``.
        n_threads: BLAS threads while fitting/scoring (None leaves them alone).
    """

    _emission_kinds: tuple[str, ...] = ()
    _emission_params: tuple[str, ...] = ()

    def __init__(
        self,
        n_components: int = 1,
        *,
        ties: Mapping | Sequence | StateTies | None = None,
        startprob_init: np.ndarray | None = None,
        transmat_init: np.ndarray | None = None,
        params: Sequence[str] | None = None,
        n_iter: int = 100,
        tol: float = 1e-4,
        n_init: int = 1,
        random_state: int | np.random.Generator | None = None,
        n_threads: int | None = 1,
    ):
        self.n_components = n_components
        self.ties = ties
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.params = params
        self.n_iter = n_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads

    # ------------------------------------------------------------ attributes
    @property
    def transmat_(self) -> np.ndarray:
        """``(K, K)`` transition matrix (tied states read the same row)."""
        self._check_fitted()
        return self.ties_.spread("transitions", self._transitions)

    @property
    def tie_kinds(self) -> tuple[str, ...]:
        """Parameter kinds this model can tie."""
        return ("transitions",) + self._emission_kinds

    def group_params(self, kind: str) -> np.ndarray:
        """The physical parameters of ``kind``, one row per tie group.

        Args:
            kind: one of :attr:`tie_kinds`.

        Returns:
            A copy, ``(n_groups, ...)``, in the order of ``ties_.groups(kind)``.

        Raises:
            ValueError: for an unknown kind.

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params(np.full(3, 1 / 3), np.full((3, 3), 1 / 3),
            ...                             [[0.0], [0.0], [2.0]], np.ones((3, 1)),
            ...                             ties={"means": [[0, 1]]})
            >>> m.group_params("means").tolist()
            [[0.0], [2.0]]
        """
        self._check_fitted()
        if kind not in self.tie_kinds:
            raise ValueError(f"unknown parameter kind {kind!r}; choose from {self.tie_kinds}")
        return np.array(self._physical(kind))

    def n_parameters(self) -> Count:
        """Logical vs physical parameter entries, as a :class:`tying.Count`.

        Logical counts every state's copy; physical counts each tie group once.
        Entries are counted as stored (a full covariance has D·D entries).

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params(np.full(3, 1 / 3), np.full((3, 3), 1 / 3),
            ...                             np.zeros((3, 2)), np.ones((3, 2)),
            ...                             ties={"means": "all", "covars": "all"})
            >>> c = m.n_parameters()
            >>> c.logical, c.physical
            (24, 16)
        """
        self._check_fitted()
        K = self.n_components
        sizes = {"startprob": 1, "transitions": K, **self._emission_sizes()}
        return self.ties_.count(sizes)

    # ------------------------------------------------------------------ fit
    def fit(self, X, lengths=None) -> BaseHMM:
        """Estimate the parameters by Baum-Welch (EM), with ``n_init`` restarts.

        Args:
            X: observations of all sequences, concatenated.
            lengths: length of each sequence (None: one sequence).

        Returns:
            self, with ``startprob_``, ``transmat_``, emission parameters,
            ``ties_``, ``history_`` (total log-likelihood at every E-step of the
            best restart), ``log_likelihood_``, ``n_iter_``, ``converged_``.

        Raises:
            ValueError: on bad data (named by sequence and position), lengths
                that do not partition X, or bad settings.
            tying.TieError: on a bad tie spec.

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> X = np.random.default_rng(0).normal(size=(60, 1))
            >>> m = GaussianHMM(2, ties={"covars": "all"}, n_iter=5, random_state=0).fit(X, [40, 20])
            >>> m.n_iter_, bool(np.all(np.diff(m.history_) >= 0))
            (5, True)
        """
        self._check_settings()
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths, fitting=True)
            self.ties_ = StateTies.resolve(
                self._tie_spec(), n_states=self.n_components, kinds=self.tie_kinds
            )
            rng = np.random.default_rng(self.random_state)
            best = None
            for restart in range(self.n_init):
                self._initialise(X, rng)
                history, converged = self._em(X, batch)
                if best is None or history[-1] > best[0]:
                    best = (history[-1], self._snapshot(), history, converged, restart)
            _, snap, history, converged, restart = best
            self._restore(snap)
            self.history_ = history
            self.log_likelihood_ = history[-1]
            self.n_iter_ = len(history)
            self.converged_ = converged
            self.best_restart_ = restart
        return self

    def _em(self, X, batch) -> tuple[list[float], bool]:
        history: list[float] = []
        for it in range(self.n_iter):
            log_b = self._log_emission(X)
            post = forward_backward(self.startprob_, self.transmat_, log_b, batch)
            if not np.all(np.isfinite(post.log_likelihood)):
                s = int(np.flatnonzero(~np.isfinite(post.log_likelihood))[0])
                raise ValueError(
                    f"sequence {s} has probability 0 under the parameters of EM iteration {it} "
                    f"(a symbol or transition no state allows); give it non-zero probability "
                    f"in the start values or drop the sequence"
                )
            history.append(float(post.log_likelihood.sum()))
            self._mstep(X, post)
            if it > 0 and history[-1] - history[-2] < self.tol:
                return history, True
        return history, False

    def _mstep(self, X, post: Posteriors) -> None:
        learn = self._learn()
        if "startprob" in learn and post.start.sum() > 0:
            self.startprob_ = post.start / post.start.sum()
        if "transmat" in learn:
            counts = self.ties_.pool("transitions", post.xi_sum)  # tied rows pool their counts
            total = counts.sum(1, keepdims=True)
            seen = total[:, 0] > 0  # a row never left keeps its old value
            self._transitions[seen] = counts[seen] / total[seen]
        self._emission_mstep(X, post.gamma, learn)

    # --------------------------------------------------------------- predict
    def score(self, X, lengths=None) -> float:
        """Total log-likelihood of all sequences (hmmlearn's ``score``).

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            The sum over sequences of log p(x).

        Raises:
            ValueError: on bad data or lengths. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> round(m.score([[0.0], [0.0]], [1, 1]), 6)     # 2 log N(0; 0, 1)
            -1.837877
        """
        return float(self.score_sequences(X, lengths).sum())

    def score_sequences(self, X, lengths=None) -> np.ndarray:
        """Log-likelihood of each sequence.

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(n_sequences,)`` log p(x) per sequence, in the order of ``lengths``.

        Raises:
            ValueError: on bad data or lengths. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> m.score_sequences([[0.0], [0.0], [0.0]], [2, 1]).round(6).tolist()
            [-1.837877, -0.918939]
        """
        self._check_fitted()
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            return forward_log_likelihood(
                self.startprob_, self.transmat_, self._log_emission(X), batch
            )

    def emission_log_prob(self, X, lengths=None) -> np.ndarray:
        """log p(x_t | state k) for every row of ``X`` and every state, ``(n_samples, K)``.

        Tied covariances are factorised once per tie group, not once per state.

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], np.full((2, 2), 0.5), [[0.0], [1.0]],
            ...                             [[1.0], [1.0]])
            >>> np.round(m.emission_log_prob([[0.0]]), 4).tolist()
            [[-0.9189, -1.4189]]
        """
        self._check_fitted()
        with _threads(self.n_threads):
            X, _ = self._prepare(X, lengths)
            return self._log_emission(X)

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """State posteriors p(z_t = k | x) for every row of ``X``.

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(n_samples, K)`` posteriors; each row sums to 1 (NaN for a
            sequence of probability 0).

        Raises:
            ValueError: on bad data or lengths. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> m.predict_proba([[-3.0], [3.0]]).round(3).tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        self._check_fitted()
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            return forward_backward(
                self.startprob_, self.transmat_, self._log_emission(X), batch
            ).gamma

    def decode(self, X, lengths=None) -> tuple[float, np.ndarray]:
        """Viterbi decoding of every sequence.

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(log_prob, states)``: the best paths' log-probability summed over
            sequences, and the state of every row of ``X``.

        Raises:
            ValueError: on bad data or lengths. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> m.decode([[-3.0], [-2.5], [3.0]])[1].tolist()
            [0, 0, 1]
        """
        self._check_fitted()
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            log_p, states = viterbi(self.startprob_, self.transmat_, self._log_emission(X), batch)
        return float(log_p.sum()), states

    def predict(self, X, lengths=None) -> np.ndarray:
        """Most probable state path (Viterbi) of every sequence, one state per row of ``X``.

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(n_samples,)`` states.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> m.predict([[3.0], [3.0], [-3.0]], [2, 1]).tolist()
            [1, 1, 0]
        """
        return self.decode(X, lengths)[1]

    def sample(self, n_samples: int = 1, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sequence of ``n_samples`` observations and its states.

        Args:
            n_samples: length of the sequence.
            random_state: seed or ``numpy.random.Generator``.

        Returns:
            ``(X, states)``.

        Raises:
            ValueError: when ``n_samples`` is not a positive integer.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]],
            ...                             [[0.0], [5.0]], [[1.0], [1.0]])
            >>> X, states = m.sample(4, random_state=0)
            >>> X.shape, states.tolist()
            ((4, 1), [0, 1, 0, 1])
        """
        self._check_fitted()
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        rng = np.random.default_rng(random_state)
        A_cdf = np.cumsum(self.transmat_, axis=1)
        states = np.empty(n_samples, dtype=np.int64)
        u = rng.random(n_samples)
        states[0] = min(
            np.searchsorted(np.cumsum(self.startprob_), u[0], side="right"), self.n_components - 1
        )
        for t in range(1, n_samples):
            row = A_cdf[states[t - 1]]
            states[t] = min(np.searchsorted(row, u[t], side="right"), self.n_components - 1)
        return self._sample_emissions(states, rng), states

    # ------------------------------------------------------------- internals
    def _check_settings(self) -> None:
        K = self.n_components
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"n_components must be a positive integer, got {K!r}")
        for name in ("n_iter", "n_init"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if np.isnan(self.tol) or self.tol == np.inf:
            raise ValueError(
                f"tol must be a number (-inf runs all n_iter iterations), got {self.tol!r}"
            )
        self._learn()

    def _learn(self) -> tuple[str, ...]:
        valid = ("startprob", "transmat") + self._emission_params
        if self.params is None:
            return valid
        if isinstance(self.params, str):
            raise TypeError(
                f"params is a list of names like {list(valid)}, got the string {self.params!r}"
            )
        unknown = [p for p in self.params if p not in valid]
        if unknown:
            raise ValueError(f"params: unknown name(s) {unknown}; choose from {list(valid)}")
        return tuple(self.params)

    def _check_fitted(self) -> None:
        if not hasattr(self, "ties_"):
            name = type(self).__name__
            raise NotFittedError(
                f"this {name} is not fitted yet; call fit(X, lengths) first or build one "
                f"with {name}.from_params(...)"
            )

    def _prepare(self, X, lengths, fitting=False):
        X0 = np.asarray(X)
        n = X0.shape[0] if X0.ndim else 0
        lengths = check_lengths(lengths, n)
        X = self._check_X(X0, lengths, fitting=fitting)
        return X, SequenceBatch(lengths)

    def _initialise(self, X, rng) -> None:
        K = self.n_components
        self.startprob_ = (
            np.full(K, 1.0 / K)
            if self.startprob_init is None
            else _stochastic("startprob_init", self.startprob_init, (K,))
        )
        if self.transmat_init is None:
            G = self.ties_.n_groups("transitions")
            self._transitions = rng.dirichlet(np.ones(K), size=G)
        else:
            full = _stochastic("transmat_init", self.transmat_init, (K, K))
            self._transitions = self._to_groups("transitions", "transmat_init", full)
        self._emission_init(X, rng)

    def _to_groups(self, kind: str, name: str, values: np.ndarray) -> np.ndarray:
        """Per-group values from per-state ``values`` that agree within each group."""
        values = np.asarray(values, dtype=np.float64)
        out = []
        for group in self.ties_.groups(kind):
            first = values[group[0]]
            for s in group[1:]:
                if not np.allclose(values[s], first, rtol=1e-12, atol=0):
                    raise ValueError(
                        f"{name}: states {group[0]} and {s} are tied (ties[{kind!r}] group "
                        f"{group}) but their values differ; give tied states the same value "
                        f"or untie them"
                    )
            out.append(first)
        return np.array(out)

    def _snapshot(self) -> dict:
        return {k: np.array(v) for k, v in self._state_arrays().items()}

    def _restore(self, snap: dict) -> None:
        for k, v in snap.items():
            setattr(self, k, v)

    def _state_arrays(self) -> dict:
        return {"startprob_": self.startprob_, "_transitions": self._transitions} | {
            f"_{k}": getattr(self, f"_{k}") for k in self._emission_kinds
        }

    def _physical(self, kind: str) -> np.ndarray:
        return getattr(self, f"_{kind}")

    # subclass hooks
    def _tie_spec(self):
        return self.ties

    def _check_X(self, X, lengths, fitting):  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_emission(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_init(self, X, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_mstep(self, X, gamma, learn):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_sizes(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample_emissions(self, states, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_components={self.n_components}, ties={self.ties!r})"


def _stochastic(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a probability vector / row-stochastic matrix."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities, got {arr}")
    sums = arr.sum(-1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        rows = np.flatnonzero(~np.isclose(np.atleast_1d(sums), 1.0, rtol=0, atol=1e-8))
        raise ValueError(
            f"{name} must sum to 1 along its last axis; row(s) {rows.tolist()} sum to "
            f"{np.atleast_1d(sums)[rows].tolist()}; normalise it"
        )
    return arr
