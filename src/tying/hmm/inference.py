"""Scoring, decoding and sampling a fitted HMM: the methods that read its parameters.

:class:`HMMInference` holds the half of :class:`~tying.hmm.base.BaseHMM` that uses a
model (``score``, ``score_samples``, ``predict_proba``, ``decode``, ``predict``,
``aic``/``bic``, ``get_stationary_distribution``, ``sample``) rather than fits it. It is
a mixin: its methods call the estimator's own checks and hooks (``_check_fitted``,
``_prepare``, ``_log_emission``, ``_log_space_posteriors``, ``_sample_emissions``), so
it is used through :class:`~tying.hmm.base.BaseHMM` and its subclasses only. The BLAS
thread limit that fitting and scoring share (:func:`_threads`) lives here too.
"""

from __future__ import annotations

import contextlib

import numpy as np

from tying.hmm.draws import last_possible
from tying.hmm.forward_backward import Posteriors, forward_backward, forward_log_likelihood
from tying.hmm.integer_args import as_integer
from tying.hmm.stationary import stationary_distribution
from tying.hmm.validation import _check_n_threads, _check_seed
from tying.hmm.viterbi import viterbi

__all__ = ["HMMInference"]

_ALGORITHMS = ("viterbi", "map")

_CONTROLLER: list = []  # one threadpoolctl controller, made on first use


def _threads(n_threads: int | None):
    """Limit BLAS/OpenMP threads while fitting (no oversubscription on small machines): the
    hot loops are small NumPy operations, and large products gain little on 2 shared cores.
    The controller is built once (scanning loaded libraries costs milliseconds); when
    every library already runs ``n_threads`` threads, its limiter (~10 us) is skipped."""
    _check_n_threads(n_threads)
    if n_threads is None:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # then BLAS keeps its own setting (OMP_NUM_THREADS)
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    controller = _CONTROLLER[0]
    if controller is None:
        return contextlib.nullcontext()
    n = int(n_threads)
    if all(lib.get_num_threads() == n for lib in controller.lib_controllers):
        return contextlib.nullcontext()
    return controller.limit(limits=n)


class HMMInference:
    """Scoring, decoding and sampling of :class:`~tying.hmm.base.BaseHMM` (a mixin).

    Example:
        >>> from tying.hmm import GaussianHMM
        >>> issubclass(GaussianHMM, HMMInference)
        True
    """

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
                self._startprob,
                self._plain("transmat_"),
                self._log_emission(X),
                batch,
                n_jobs=self.n_jobs,
            )

    def score_samples(self, X, lengths=None) -> tuple[float, np.ndarray]:
        """Total log-likelihood and state posteriors (hmmlearn's ``score_samples``).

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(log_prob, posteriors)``: the sum of log p(x) over sequences and
            the ``(n_samples, K)`` posteriors p(z_t = k | x).

        Raises:
            ValueError: on bad data or lengths. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> ll, post = m.score_samples([[-3.0], [3.0]])
            >>> post.round(3).tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        self._check_fitted()
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            log_b = self._log_emission(X)
            post = forward_backward(
                self._startprob, self._plain("transmat_"), log_b, batch, n_jobs=self.n_jobs
            )
            if not _posteriors_finite(post):  # see _log_space_posteriors
                post = self._log_space_posteriors(log_b, batch)
        # the scaled backward pass carries ~(T - t) ulps of rounding common to row t's
        # terms (rows summed to 1 - 2.9e-12 at 1e6 rows, stop 36); dividing by the row's
        # sum cancels it, as hmmlearn does. A sequence of probability 0 stays NaN.
        gamma = post.gamma
        with np.errstate(invalid="ignore"):
            gamma /= gamma.sum(axis=1, keepdims=True)  # (n_samples, K)
        return float(post.log_likelihood.sum()), gamma

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
        return self.score_samples(X, lengths)[1]

    def decode(self, X, lengths=None, algorithm: str | None = None) -> tuple[float, np.ndarray]:
        """Most probable states of every sequence: Viterbi path or per-step posterior maxima.

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).
            algorithm: ``"viterbi"`` (the best joint path) or ``"map"`` (each
                step's most probable state); None uses the constructor's
                ``algorithm``.

        Returns:
            ``(log_prob, states)``. Viterbi: the best paths' log-probability
            summed over sequences. MAP: the sum of log max-posteriors (hmmlearn
            returns the sum of the posteriors themselves there, which is not a
            log-probability).

        Raises:
            ValueError: on bad data, lengths or algorithm. NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> m.decode([[-3.0], [-2.5], [3.0]])[1].tolist()
            [0, 0, 1]
        """
        algorithm = self.algorithm if algorithm is None else algorithm
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
        self._check_fitted()
        if algorithm == "map":
            _, post = self.score_samples(X, lengths)
            with np.errstate(divide="ignore"):
                return float(np.log(post.max(1)).sum()), post.argmax(1)
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            log_p, states = viterbi(
                self._startprob, self._plain("transmat_"), self._log_emission(X), batch
            )
        return float(log_p.sum()), states

    def predict(self, X, lengths=None) -> np.ndarray:
        """Most probable states of every sequence (``decode`` with the default algorithm).

        Args:
            X: observations, concatenated.
            lengths: per-sequence lengths (None: one sequence).

        Returns:
            ``(n_samples,)`` states.

        Raises:
            ValueError: on bad data or lengths, or for a sequence of probability 0
                (say a symbol no state emits): it has no most probable states, and
                ``decode`` flags it only by a log-probability of -inf or NaN.
            NotFittedError: before ``fit``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]],
            ...                             [[-3.0], [3.0]], [[1.0], [1.0]])
            >>> m.predict([[3.0], [3.0], [-3.0]], [2, 1]).tolist()
            [1, 1, 0]
        """
        log_p, states = self.decode(X, lengths)
        if not np.isfinite(log_p):  # every path has probability 0: the states are filler
            self._refuse_impossible(X, lengths)
        return states

    def _refuse_impossible(self, X, lengths) -> None:
        """Raise for the first sequence of probability 0, naming it (and a row no state
        can emit, when there is one)."""
        with _threads(self.n_threads):
            X, batch = self._prepare(X, lengths)
            log_b = self._log_emission(X)
            ll = forward_log_likelihood(
                self._startprob, self._plain("transmat_"), log_b, batch, n_jobs=self.n_jobs
            )
        bad = np.flatnonzero(~np.isfinite(ll))
        if not bad.size:  # every sequence is possible after all: nothing to refuse
            return
        s = int(bad[0])
        r0, n = int(batch.starts[s]), int(batch.lengths[s])
        dead = np.flatnonzero(np.isneginf(log_b[r0 : r0 + n]).all(axis=1))
        why = (
            f"position {int(dead[0])} (x = {X[r0 + int(dead[0])].tolist()}) has probability 0 "
            f"in every state"
            if dead.size
            else "no state path allowed by startprob_ and transmat_ can emit it"
        )
        raise ValueError(
            f"predict: sequence {s} (rows {r0}..{r0 + n - 1}) has probability 0 under the "
            f"model ({why}), so it has no most probable states; score_sequences gives -inf "
            f"for such sequences: drop them, or give every observation a positive "
            f"probability (e.g. refit a CategoricalHMM with emissionprob_prior > 1)"
        )

    def aic(self, X, lengths=None) -> float:
        """Akaike information criterion, ``-2 log L + 2 p``, with p from :meth:`n_free_parameters`.

        Untied models give hmmlearn's value; a tie group counts once.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> round(m.aic([[0.0]]), 6)            # 2·0.918939 + 2·2 parameters
            5.837877
        """
        return -2.0 * self.score(X, lengths) + 2.0 * self.n_free_parameters()

    def bic(self, X, lengths=None) -> float:
        """Bayesian information criterion, ``-2 log L + p log n_samples``.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> round(m.bic([[0.0]]), 6)            # log 1 = 0: no penalty
            1.837877
        """
        log_l = self.score(X, lengths)  # first: X is checked (a ragged list refused by name)
        n = len(np.asarray(X))
        return float(-2.0 * log_l + self.n_free_parameters() * np.log(n))

    def get_stationary_distribution(self) -> np.ndarray:
        """The stationary distribution π = π A of the transition matrix.

        A sticky chain (a second eigenvalue within 1e-4 of 1) is solved by GTH
        elimination on its closed class (:mod:`tying.hmm.stationary`), accurate to
        a few ulps where the eigenvector would not be.

        Returns:
            ``(K,)`` probabilities.

        Raises:
            ValueError: when the chain has more than one stationary
                distribution (it splits into closed classes), naming them.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0, 0.0], [[0.9, 0.1], [0.2, 0.8]],
            ...                             [[0.0], [1.0]], [[1.0], [1.0]])
            >>> m.get_stationary_distribution().round(6).tolist()
            [0.666667, 0.333333]
        """
        return stationary_distribution(self._plain("transmat_"))

    def sample(
        self, n_samples: int = 1, random_state=None, currstate: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sequence of ``n_samples`` observations and its states.

        Args:
            n_samples: length of the sequence.
            random_state: seed or ``numpy.random.Generator``; None uses the
                constructor's ``random_state`` (as hmmlearn does).
            currstate: the first sample's state (hmmlearn's), None: drawn from ``startprob_``.
                It is not a step of the chain: to continue ``Z``, drop the first of
                ``sample(n + 1, currstate=Z[-1])`` (else ``Z[-1]`` is repeated).

        Returns:
            ``(X, states)``.

        Raises:
            ValueError: when ``n_samples`` is not a positive integer or
                ``currstate`` is not a state.

        Example:
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]],
            ...                             [[0.0], [5.0]], [[1.0], [1.0]])
            >>> X, states = m.sample(4, random_state=0)
            >>> X.shape, states.tolist(), m.sample(3, currstate=1)[1].tolist()
            ((4, 1), [0, 1, 0, 1], [1, 0, 1])
        """
        self._check_fitted()
        n = as_integer(n_samples)  # an int, NumPy integer or 0-d integer array
        if n is None or n < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        n_samples = n
        K = self.ties_.n_states  # the fitted states (n_components may have changed since)
        if currstate is not None:
            state = as_integer(currstate)
            if state is None:
                raise ValueError(
                    f"currstate must be a state 0..{K - 1} (an integer), got {currstate!r} "
                    f"({type(currstate).__name__}); pass one state, e.g. currstate=int(Z[-1])"
                )
            if not 0 <= state < K:
                raise ValueError(f"currstate must be a state 0..{K - 1}, got {currstate!r}")
            currstate = state
        seed = self.random_state if random_state is None else random_state
        _check_seed(seed)
        rng = np.random.default_rng(seed)
        A = self._plain("transmat_")
        A_cdf = np.cumsum(A, axis=1)
        cap = last_possible(A).tolist()  # a u past a row's rounded sum: never a 0 (draws.py)
        states = np.empty(n_samples, dtype=np.int64)
        u = rng.random(n_samples)
        if currstate is None:
            first = np.searchsorted(np.cumsum(self._startprob), u[0], side="right")
            states[0] = min(first, last_possible(self._startprob))
        else:
            states[0] = currstate
        for t in range(1, n_samples):
            prev = states[t - 1]
            states[t] = min(np.searchsorted(A_cdf[prev], u[t], side="right"), cap[prev])
        return self._sample_emissions(states, rng), states


def _posteriors_finite(post: Posteriors) -> bool:
    """The E-step's counts (and its gamma, when it made one) are finite; a sequence of
    probability 0 (log-likelihood -inf) is left to the callers' own handling."""
    if not np.isfinite(post.log_likelihood).all():
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        total = float(post.xi_sum.sum() + post.start.sum())
        if post.gamma is not None:
            total += float(np.add.reduce(post.gamma, axis=None))
    return bool(np.isfinite(total))
