"""The HMM estimator: Baum-Welch with tied states, scikit-learn style.

:class:`BaseHMM` owns everything that does not depend on the emission
distribution: the tie spec, the start and transition probabilities, the EM
loop with restarts and a convergence tolerance, scoring, decoding and
sampling (those from its mixin :class:`~tying.hmm.inference.HMMInference`).
Subclasses (:class:`~tying.hmm.GaussianHMM`, :class:`~tying.hmm.CategoricalHMM`)
supply the emission log-densities, their sufficient statistics and their M-step.

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
from tying.hmm import compiled
from tying.hmm import forward_backward as _fb
from tying.hmm.estimator import EstimatorParams
from tying.hmm.fitted_array import assign_written, fitted
from tying.hmm.forward_backward import Posteriors, forward_backward
from tying.hmm.frames import as_array
from tying.hmm.inference import (  # noqa: F401  (re-exported: base.<name> as before)
    _ALGORITHMS,
    _CONTROLLER,
    HMMInference,
    _posteriors_finite,
    _threads,
)
from tying.hmm.integer_args import as_integer
from tying.hmm.monitor import ConvergenceMonitor, check_monitor_kept, keep_monitor
from tying.hmm.priors import check_fitted_finite, check_priors
from tying.hmm.sequences import SequenceBatch, check_lengths, check_unmasked, n_rows
from tying.hmm.ties import StateTies, listed_groups
from tying.hmm.validation import (
    _broadcast,
    _check_finite,
    _check_n_threads,
    _check_prior,
    _check_seed,
    _check_tol,
    _fit_rng,
    _positive_int,
    _real_array,
    _shape_text,
    _stochastic,
)

__all__ = ["BaseHMM", "NotFittedError"]

_log = logging.getLogger(__name__)


def _sequence_list(X) -> bool:
    """Whether ``X`` is a list or tuple of array-likes (sequences given one by one)."""
    if not isinstance(X, (list, tuple)) or not X:
        return False
    try:
        return all(np.ndim(x) >= 1 for x in X)
    except ValueError:  # an entry ragged itself
        return False


class NotFittedError(ValueError, AttributeError):
    """An HMM was used before ``fit`` (or ``from_params``) gave it parameters."""


@contextlib.contextmanager
def _unchanged_on_error(obj):
    """Put ``obj``'s attributes back as they were (arrays and sets copied) if the block raises.

    ``fit`` is all or nothing: a refused fit leaves a fitted model as it was.
    """
    saved = {k: (v.copy() if isinstance(v, (np.ndarray, set)) else v) for k, v in vars(obj).items()}
    try:
        yield
    except BaseException:
        vars(obj).clear()
        vars(obj).update(saved)
        raise


_HMMLEARN_DEFAULTS = {"n_iter": 10, "tol": 1e-2}
_OUR_DEFAULTS = {"n_iter": 100, "tol": 1e-4}
_IMPLEMENTATIONS = ("log", "scaling")


class BaseHMM(HMMInference, EstimatorParams):
    """Shared machinery of the HMM estimators; use a subclass.

    Our own names come first; hmmlearn's arguments are accepted too, so a
    hmmlearn script runs with only its import changed (see ``docs/hmm.md``).
    The arguments are scikit-learn parameters (``get_params``, ``set_params``,
    ``sklearn.base.clone``, grid search: :mod:`tying.hmm.estimator`).

    Args:
        n_components: number of hidden states K.
        ties: which states share parameters, e.g. ``{"means": [[0, 1, 2]],
            "covars": "all", "transitions": [[3, 4]]}`` (see
            :class:`~tying.hmm.StateTies`); tied transitions share a whole row.
        startprob_init, transmat_init: starting values; None draws them from
            ``random_state``. A value assigned to ``startprob_`` / ``transmat_``
            since the last ``fit`` is the start value instead (it wins over these).
        params: which parameters EM updates, as names (``["means", "covars"]``)
            or hmmlearn letters (``"mc"``); the others keep their start values.
        init_params: hmmlearn's switch, names or letters: the parameters
            ``fit`` initialises afresh; the others are taken from the assigned
            attributes. None (ours): initialise what was not given or assigned.
        n_iter: maximum EM iterations per restart; None: 100, or hmmlearn's 10
            when the model is built hmmlearn-style (any of ``init_params``,
            ``implementation``, a prior, or letter ``params`` given).
        tol: stop when the total log-likelihood gains less than this; None:
            1e-4, or hmmlearn's 1e-2 when built hmmlearn-style. A fit that runs out of
            iterations first warns (:class:`~tying.hmm.ConvergenceWarning`, and
            ``converged_`` is False); ``-np.inf`` runs exactly ``n_iter`` iterations.
        n_init: restarts from different random starts; the best is kept.
        random_state: seed or ``numpy.random.Generator``.
        n_threads: BLAS threads while fitting/scoring (None leaves them alone).
        n_jobs: threads the compiled forward-backward spreads sequences over
            (None: ``tying.hmm.compiled.get_n_jobs()``, 1 unless set; -1: every
            core). Results are bit-identical for any count.
        startprob_prior, transmat_prior: Dirichlet concentrations of hmmlearn's
            MAP M-step (None: 1.0, plain maximum likelihood).
        algorithm: default decoder, ``"viterbi"`` or ``"map"``.
        implementation: hmmlearn's ``"log"``/``"scaling"``, accepted for
            compatibility; both give the same numbers here (a scaled recursion
            with an exact log-space fallback).
        verbose: print the log-likelihood of every EM iteration to stderr.
    """

    _emission_kinds: tuple[str, ...] = ()
    _emission_params: tuple[str, ...] = ()
    _letters: dict[str, str] = {"s": "startprob", "t": "transmat"}
    _hmmlearn_only: tuple[str, ...] = (
        "init_params",
        "implementation",
        "startprob_prior",
        "transmat_prior",
    )

    def __init__(
        self,
        n_components: int = 1,
        *,
        ties: Mapping | Sequence | StateTies | None = None,
        startprob_init: np.ndarray | None = None,
        transmat_init: np.ndarray | None = None,
        params: Sequence[str] | str | None = None,
        init_params: Sequence[str] | str | None = None,
        n_iter: int | None = None,
        tol: float | None = None,
        n_init: int = 1,
        random_state: int | np.random.Generator | None = None,
        n_threads: int | None = 1,
        n_jobs: int | None = None,
        startprob_prior=None,
        transmat_prior=None,
        algorithm: str = "viterbi",
        implementation: str | None = None,
        verbose: bool = False,
    ):
        self.n_components = n_components
        self.ties = ties
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.params = params
        self.init_params = init_params
        self.n_iter = n_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads
        self.n_jobs = n_jobs
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.implementation = implementation
        self.verbose = verbose

    # ------------------------------------------------------------ attributes
    @fitted
    def startprob_(self) -> np.ndarray:
        """``(K,)`` initial state distribution; assignable (validated)."""
        self._check_set("startprob_", "_startprob")
        return self._startprob.copy()

    @startprob_.setter
    def startprob_(self, value) -> None:
        with self._assignment("startprob"):
            K = self._checked_n_components()
            # a copy: the caller's array is not the model's (a later in-place change to it
            # would change the model, unvalidated: rows that no longer sum to 1, no error)
            startprob = np.array(_stochastic("startprob_", value, (K,), ("n_components",)))
            if "ties_" in self.__dict__:  # n_components may have changed since the others
                self._ensure_ties()
            self._startprob = startprob

    @fitted
    def transmat_(self) -> np.ndarray:
        """``(K, K)`` transition matrix (tied states read the same row); assignable."""
        self._check_set("transmat_", "_transitions")
        return self.ties_.spread("transitions", self._transitions)

    @transmat_.setter
    def transmat_(self, value) -> None:
        with self._assignment("transmat"):
            K = self._checked_n_components()
            full = _stochastic("transmat_", value, (K, K), ("n_components", "n_components"))
            self._ensure_ties()
            self._transitions = self._to_groups("transitions", "transmat_", full)

    def _plain(self, name: str) -> np.ndarray:
        """The fitted attribute ``name``'s current value as a plain array (for our own reads:
        the public one is a :class:`~tying.hmm.fitted_array.FittedArray`)."""
        return getattr(type(self), name).fget.plain(self)

    def _write_back(self, name: str, before: np.ndarray, after: np.ndarray) -> None:
        """Assign ``after``, a write into ``m.<name>`` (which held ``before``), to the model.

        States of a tie group share one stored value, so a write to some of them holds for
        the whole group; states of one group written with different values are refused,
        naming the tie. The setter then validates the whole value (all or nothing).
        """
        kind = {"startprob_": None, "transmat_": "transitions"}.get(name)
        if name not in ("startprob_", "transmat_"):
            kind = next((k for k in self._emission_kinds if _public(k) == name), None)
        if kind is not None and "ties_" in self.__dict__ and len(after) == self.n_components:
            changed = ~_rows_equal(before, after)
            for group in self.ties_.groups(kind):
                written = [s for s in group if changed[s]]
                if not written or len(group) == 1:
                    continue
                for s in written[1:]:
                    if not np.array_equal(after[s], after[written[0]], equal_nan=True):
                        raise ValueError(
                            f"{name}: states {written[0]} and {s} are tied (ties[{kind!r}] "
                            f"group {group}) and store one value, but this write gives them "
                            f"different values; write one value to the group (e.g. "
                            f"m.{name}[{group}] = value) or untie them"
                            f"{self._pending_ties_note(kind)}"
                        )
                after[group] = after[written[0]]  # the group's one value, in every state
        assign_written(self, name, before, after)

    @property
    def _assigned(self) -> set:
        """Parameters the user assigned since the last fit (used as start values)."""
        return self.__dict__.setdefault("_assigned_names", set())

    @contextlib.contextmanager
    def _assignment(self, param: str):
        """One parameter assignment: all or nothing, then ``param`` counts as assigned.

        A setter may re-resolve ``ties_`` (:meth:`_ensure_ties`, when ``n_components``
        changed) before its value is refused; the ties and the record of parameters
        left over from the old number of states are put back then.
        """
        saved = {k: self.__dict__[k] for k in ("ties_",) if k in self.__dict__}
        stale = dict(self.__dict__.get("_stale_params", {}))
        try:
            yield
        except BaseException:
            self.__dict__.pop("ties_", None)
            self.__dict__.update(saved)
            self.__dict__["_stale_params"] = stale
            raise
        self._assigned.add(param)
        self.__dict__.get("_stale_params", {}).pop(_public(param), None)

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
        K = self.ties_.n_states  # the fitted states (n_components may have changed since)
        sizes = {"startprob": 1, "transitions": K, **self._emission_sizes()}
        return self.ties_.count(sizes)

    def n_free_parameters(self) -> int:
        """Free scalars the model estimates, counting each tie group once (for aic/bic).

        Untied, this is hmmlearn's count (``K-1`` start, ``K(K-1)`` transitions,
        plus the emissions); ties lower it, which is what aic/bic should see.

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> m = GaussianHMM.from_params(np.full(3, 1 / 3), np.full((3, 3), 1 / 3),
            ...                             np.zeros((3, 2)), np.ones((3, 2)),
            ...                             ties={"means": "all"})
            >>> m.n_free_parameters()      # 2 + 6 + 1·2 means + 3·2 variances
            16
        """
        self._check_fitted()
        return int(sum(self._free_per_param().values()))

    def _free_per_param(self) -> dict[str, int]:
        """Free scalars of each parameter, counting each tie group once."""
        K = self.ties_.n_states  # the fitted states (n_components may have changed since)
        sizes = {"startprob": K - 1, "transmat": self.ties_.n_groups("transitions") * (K - 1)}
        sizes |= {k: self.ties_.n_groups(k) * n for k, n in self._free_sizes().items()}
        return sizes

    # ------------------------------------------------------------------ fit
    def fit(self, X, lengths=None) -> BaseHMM:
        """Estimate the parameters by Baum-Welch (EM), with ``n_init`` restarts.

        Start values: attributes assigned since the last ``fit``
        (``m.means_ = ...``), else ``*_init`` arguments, else random draws; with
        hmmlearn's ``init_params`` the parameters it names are always drawn afresh,
        and those it leaves out keep their current values.

        Args:
            X: observations of all sequences, concatenated.
            lengths: length of each sequence (None: one sequence).

        Returns:
            self, with ``startprob_``, ``transmat_``, emission parameters,
            ``ties_``, ``history_`` (total log-likelihood at every E-step of the
            best restart), ``log_likelihood_``, ``n_iter_``, ``converged_``,
            ``monitor_``.

        Warns:
            ConvergenceWarning: EM ran all ``n_iter`` iterations without its gain
                falling below a finite ``tol`` (``tol=-np.inf`` asks for that).

        Raises:
            ValueError: on bad data (named by sequence and position), lengths
                that do not partition X, or bad settings; the model is unchanged.
            tying.TieError: on a bad tie spec.

        Example:
            >>> import numpy as np
            >>> from tying.hmm import GaussianHMM
            >>> X = np.random.default_rng(0).normal(size=(60, 1))
            >>> m = GaussianHMM(2, ties={"covars": "all"}, n_iter=5, tol=-np.inf, random_state=0)
            >>> m = m.fit(X, [40, 20])  # exactly 5 iterations
            >>> m.n_iter_, bool(np.all(np.diff(m.history_) >= 0))
            (5, True)
        """
        with _unchanged_on_error(self):
            self._fit(X, lengths)
        return self

    def _fit(self, X, lengths) -> None:
        self._check_settings()
        check_monitor_kept(self)  # hmmlearn's custom-monitor hook: refused, not dropped
        n_iter, tol = as_integer(self._resolved("n_iter")), self._resolved("tol")
        with _threads(self.n_threads):
            kept = self._kept_start_values()  # per-state values, before ties are re-resolved
            X, batch = self._prepare(X, lengths, fitting=True)
            self.ties_ = StateTies.resolve(
                self._tie_spec(self.n_components), n_states=self.n_components, kinds=self.tie_kinds
            )
            for param, value in kept.items():  # kept from a model of another size
                if len(value) != self.n_components:
                    raise ValueError(
                        f"{_public(param)} has {len(value)} states but n_components is "
                        f"{self.n_components}; fit starts from it (it was assigned, or "
                        f"init_params={self.init_params!r} leaves it out): assign "
                        f"m.{_public(param)} for {self.n_components} states, or let fit "
                        f"initialise it"
                    )
            check_priors(self, self._prior_shapes())  # shapes known now; one prior a group
            self._check_start_rows(X, kept)
            self._warn_degenerate(X)
            rng = _fit_rng(self.random_state)  # made on the first draw, if any
            if self.n_init > 1:  # restarts re-use the given start values' checked forms
                self._start_memo = {}
            best = None
            context = self._em_context(X, batch)  # depends on the data only: once per fit
            for restart in range(self.n_init):
                self._initialise(X, rng, kept)
                monitor = ConvergenceMonitor(tol, n_iter, bool(self.verbose))
                # a prior past float64's range (1e308 summed over a row) overflows in the
                # M-step: not NumPy's RuntimeWarning (an error naming nothing under -W
                # error) nor the E-step's "probability 0" that follows, but the parameter
                # and the priors, by name, once the loop is done (stop 39)
                try:
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        self._em(X, batch, monitor, context)
                except (ValueError, np.linalg.LinAlgError) as err:
                    check_fitted_finite(self, err)
                    raise
                check_fitted_finite(self)
                last = monitor.history[-1] if monitor.history else -np.inf  # n_iter=0
                if best is None or last > best[0]:
                    best = (last, self._snapshot(), monitor, restart)
            _, snap, monitor, restart = best
            self._restore(snap)
            keep_monitor(self, monitor)
            self.history_ = list(monitor.history)
            self.log_likelihood_ = monitor.history[-1] if monitor.history else np.nan
            self.n_iter_ = monitor.iter
            self.converged_ = monitor.converged
            self.best_restart_ = restart
            name = type(self).__name__  # a budget stop is flagged, never passed as a result
            if self.n_init > 1:
                name += f" (restart {restart}, the best of n_init={self.n_init})"
            monitor.warn_if_budget(name)
            self._warn_floored(X, batch, name)
            self._assigned.clear()
            self.__dict__.pop("_stale_params", None)
            self.__dict__.pop("_start_memo", None)

    def _checked_start(self, name: str, check) -> np.ndarray:
        """``check()``: a given start value's checked form; within a fit of several
        restarts, checked once and a fresh copy handed to each restart."""
        memo = self.__dict__.get("_start_memo")
        if memo is None:
            return check()
        if name not in memo:
            memo[name] = check()
        return np.array(memo[name])

    def _kept_start_values(self) -> dict:
        """Per-state start values taken from attributes instead of being initialised."""
        names = ("startprob", "transmat") + self._emission_params
        if self.init_params is None:  # ours: what the user assigned since the last fit
            keep = [p for p in names if p in self._assigned]
        else:  # hmmlearn: what init_params leaves out and is set
            fresh = self._param_names(self.init_params, "init_params")
            keep = [p for p in names if p not in fresh]
            for p in fresh:
                if p in self._assigned:  # hmmlearn's warning, word for word where it can be
                    _log.warning(
                        "Even though the %r attribute is set, it will be overwritten during "
                        "initialization because 'init_params' contains %r",
                        _public(p),
                        next(c for c, n in self._letters.items() if n == p),
                    )
        self._check_not_stale({_public(p) for p in keep})
        out = {}
        for p in keep:
            value = self._per_state_value(p)
            if value is not None:
                out[p] = value
        return out

    def _check_start_rows(self, X, kept) -> None:
        """Refuse, before any draw, a start that ``X`` has too few rows for (k-means)."""

    def _warn_degenerate(self, X) -> None:
        """Log (as hmmlearn does) when EM fits more free scalars than there are data."""
        K = self.n_components  # untied and all learnt, an upper bound: most fits stop here
        if X.size >= K * (K + sum(self._free_sizes().values())):
            return
        learn = self._learn()
        n_free = sum(n for p, n in self._free_per_param().items() if p in learn)
        if X.size < n_free:
            _log.warning(
                "Fitting a model with %d free scalar parameters with only %d data points will "
                "result in a degenerate solution.",
                n_free,
                X.size,
            )

    def _per_state_value(self, param: str):
        """The current per-state value of ``param``, or None when it is not set."""
        if param == "startprob":
            return self.__dict__.get("_startprob")
        kind = "transitions" if param == "transmat" else self._param_kind(param)
        if f"_{kind}" not in self.__dict__ or "ties_" not in self.__dict__:
            return None
        return self.ties_.spread(kind, getattr(self, f"_{kind}"))

    def _param_kind(self, param: str) -> str:
        return param

    def _prior_shapes(self) -> dict:
        """Each prior's tie kind and per-state shape, for :func:`~tying.hmm.priors.check_priors`
        (subclasses add their emission priors)."""
        K = self.n_components
        return {
            "startprob_prior": (None, (K,), "n_components"),
            "transmat_prior": ("transitions", (K, K), "n_components, n_components"),
        }

    def _em(self, X, batch, monitor: ConvergenceMonitor, context, start: int = 0) -> None:
        """EM iterations ``start..n_iter-1`` (a subclass's compiled loop may hand over
        the rest of a fit at ``start``)."""
        for it in range(start, monitor.n_iter):
            post = self._estep(X, batch, context)
            _check_finite(post.log_likelihood, it)
            if not _posteriors_finite(post):  # see _log_space_posteriors
                post = self._log_space_posteriors(self._log_emission(X), batch)
            monitor.report(float(post.log_likelihood.sum()))
            self._mstep(X, post, context)
            if monitor.stopped:
                return

    def _log_space_posteriors(self, log_b, batch) -> Posteriors:
        """The E-step in exact log space, for every sequence (stop 25 review).

        The scaled backward recursion of :mod:`~tying.hmm.forward_backward` overflows for
        a state the forward pass cannot reach (alpha = 0: a zero in ``startprob_`` or
        ``transmat_``) when the data favour it strongly, and 0 * inf then makes the
        posteriors and expected counts NaN while the log-likelihood is finite: NaN
        ``predict_proba`` and an EM that silently stops moving. Until the recursion
        itself is fixed, results with non-finite posteriors are recomputed here.
        """
        seqs = np.arange(batch.n_sequences)
        gamma = np.empty((batch.n_samples, self.n_components))
        start, A = self._startprob, self._plain("transmat_")
        ll, xi = _fb._log_space_subset(start, A, log_b, batch, seqs, posteriors=True, out=gamma)
        with np.errstate(invalid="ignore"):  # a sequence of probability 0: NaN, as before
            return Posteriors(ll, gamma, xi, gamma[batch.starts].sum(0), batch.n_sequences)

    def _warn_floored(self, X, batch, name: str) -> None:
        """Subclass hook: flag covariances held at ``min_covar`` (see covariance_floor)."""

    def _em_context(self, X, batch):
        """Subclass hook: what every EM iteration of every restart re-uses (made once per
        fit, so it may depend on the data but not on the parameters)."""
        return None

    def _estep(self, X, batch, context) -> Posteriors:
        """The E-step: emission log-densities, then the batched forward-backward.

        Subclasses may fuse it (see :meth:`GaussianHMM._estep`); the result's
        ``gamma`` is then None and ``stats`` holds the emission statistics.
        """
        log_b = self._em_log_emission(X, context)
        return forward_backward(
            self._startprob, self._plain("transmat_"), log_b, batch, n_jobs=self.n_jobs
        )

    def _em_log_emission(self, X, context) -> np.ndarray:
        """Subclass hook: the E-step's emission log-densities; a subclass may keep what
        it computed on the way in ``context`` for this iteration's M-step."""
        return self._log_emission(X)

    def _mstep(self, X, post: Posteriors, context=None) -> None:
        learn = self._learn()
        if "startprob" in learn:
            prior = self._prior("startprob_prior", 1.0)
            sp = np.maximum(prior - 1.0 + post.start, 0.0)
            sp = np.where(self._startprob == 0, 0.0, sp)  # a forbidden start stays forbidden
            if sp.sum() > 0:
                self._startprob = sp / sp.sum()
        if "transmat" in learn:
            counts = self.ties_.pool("transitions", post.xi_sum)  # tied rows pool their counts
            prior = _broadcast(
                self._prior("transmat_prior", 1.0), (self.n_components, self.n_components)
            )
            first = self.ties_.firsts("transitions")
            counts = np.maximum(prior[first] - 1.0 + counts, 0.0)
            counts = np.where(self._transitions == 0, 0.0, counts)  # left-right stays so
            total = counts.sum(1, keepdims=True)
            seen = total[:, 0] > 0  # a row never left keeps its old value
            self._transitions[seen] = counts[seen] / total[seen]
        self._emission_update(X, post, learn, context)

    def _emission_update(self, X, post: Posteriors, learn, context) -> None:
        """Subclass hook: the emission M-step from the E-step's result."""
        self._emission_mstep(X, post.gamma, learn)

    # ------------------------------------------------------------- internals
    def _hmmlearn_style(self) -> bool:
        """True when any hmmlearn-only argument was given: hmmlearn's defaults apply."""
        if isinstance(self.params, str):
            return True
        return any(getattr(self, name, None) is not None for name in self._hmmlearn_only)

    def _style_defaults(self) -> dict:
        if "_startprob" not in self.__dict__:  # nothing to go on fitting from: a fresh start
            return {}
        return {n: self._resolved(n) for n in ("n_iter", "tol") if getattr(self, n) is None}

    def _resolved(self, name: str):
        value = getattr(self, name)
        if value is not None:
            return value
        return (_HMMLEARN_DEFAULTS if self._hmmlearn_style() else _OUR_DEFAULTS)[name]

    def _prior(self, name: str, ours, hmmlearn=None):
        value = getattr(self, name)
        if value is not None:
            return _real_array(name, value)
        default = hmmlearn if (hmmlearn is not None and self._hmmlearn_style()) else ours
        return np.asarray(default, dtype=np.float64)

    def _checked_n_components(self) -> int:
        return _positive_int("n_components", self.n_components)

    def _ensure_ties(self) -> StateTies:
        """The resolved ties; resolved from ``ties`` when a parameter is assigned before fit,
        and again when it is assigned for another number of states than ``ties_`` has
        (``n_components`` changed after fit): the parameters still held for the old
        number are then recorded, and the model refuses to score until they are assigned
        again (they would be read through the new ties: wrong states, no error)."""
        K = self._checked_n_components()
        old = self.__dict__.get("ties_")
        if old is None or old.n_states != K or self._ties_outgrown(old):
            ties = StateTies.resolve(self._tie_spec(K), n_states=K, kinds=self.tie_kinds)
            if old is not None:
                stale = self.__dict__.setdefault("_stale_params", {})
                for public, private in self._required().items():
                    if private in self.__dict__:
                        stale.setdefault(public, old)  # the ties its rows are held under
                # n_components set back: a parameter held under ties equal to the new ones
                # reads as it was (it was refused "for 2 states" with n_components 2)
                for public in [p for p, held in stale.items() if self._held_by(p, held, ties)]:
                    del stale[public]
            self.ties_ = ties
        return self.ties_

    def _ties_outgrown(self, ties: StateTies) -> bool:
        """Whether a setting changed since ``ties`` were resolved makes them unable to hold
        the parameters (a covariance_type set to 'tied' needs one covariance group)."""
        return False

    def _held_by(self, public: str, held: StateTies, ties: StateTies) -> bool:
        """Whether ``public``'s rows, held under ``held``, read the same under ``ties``."""
        if not isinstance(held, StateTies) or held.n_states != ties.n_states:
            return False  # (a model pickled before stop 49 recorded the old size only)
        kind = "transitions" if public == "transmat_" else None
        kind = kind or next((k for k in self._emission_kinds if _public(k) == public), None)
        return kind is None or held.groups(kind) == ties.groups(kind)

    def _check_settings(self) -> None:
        self._checked_n_components()
        n_iter = as_integer(self._resolved("n_iter"))  # a 0-d int array too, as hmmlearn
        if n_iter is None or n_iter < 0:
            n_iter = self._resolved("n_iter")
            raise ValueError(
                f"n_iter must be a non-negative integer (0 only initialises), got {n_iter!r}"
            )
        _positive_int("n_init", self.n_init)
        _check_n_threads(self.n_threads)
        compiled.resolve_n_jobs(self.n_jobs)  # refused here too, so set_params refuses it
        _check_tol(self._resolved("tol"))
        _check_seed(self.random_state)
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {self.algorithm!r}")
        if self.implementation is not None and self.implementation not in _IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {_IMPLEMENTATIONS} (accepted for hmmlearn "
                f"compatibility; both give the same numbers here), got {self.implementation!r}"
            )
        for name in ("startprob_prior", "transmat_prior"):
            _check_prior(name, getattr(self, name), nonneg=True)
        self._learn()
        if self.init_params is not None:
            self._param_names(self.init_params, "init_params")

    def _param_names(self, value, arg: str) -> tuple[str, ...]:
        valid = ("startprob", "transmat") + self._emission_params
        if isinstance(value, str):
            bad = [c for c in value if c not in self._letters]
            if bad:
                raise ValueError(
                    f"{arg}={value!r}: unknown letter(s) {bad}; this model's hmmlearn letters "
                    f"are {self._letters}; or pass names like {list(valid)}"
                )
            return tuple(dict.fromkeys(self._letters[c] for c in value))
        if isinstance(value, (bytes, Mapping)) or not isinstance(value, (list, tuple, set)):
            raise TypeError(
                f"{arg} is a list of names like {list(valid)} or hmmlearn letters like "
                f"{''.join(self._letters)!r}, got {value!r}"
            )
        unknown = [p for p in value if p not in valid]
        if unknown:
            raise ValueError(f"{arg}: unknown name(s) {unknown}; choose from {list(valid)}")
        return tuple(value)

    def _learn(self) -> tuple[str, ...]:
        if self.params is None:
            return ("startprob", "transmat") + self._emission_params
        return self._param_names(self.params, "params")

    def _required(self) -> dict[str, str]:
        """Public attribute name -> private storage of every parameter a model needs."""
        out = {"startprob_": "_startprob", "transmat_": "_transitions"}
        out.update({_public(k): f"_{k}" for k in self._emission_kinds})
        return out

    def _check_set(self, public: str, private: str) -> None:
        if private not in self.__dict__:
            name = type(self).__name__
            raise NotFittedError(
                f"this {name} has no {public} yet; call fit(X, lengths), assign "
                f"m.{public} = ..., or build one with {name}.from_params(...)"
            )
        # held for the old n_components: read through the new size's ties_ it raised an
        # IndexError (more states) or silently returned some old states' rows (fewer)
        if public in self.__dict__.get("_stale_params", ()):
            try:
                self._check_not_stale({public})
            except ValueError as err:
                raise NotFittedError(str(err)) from None

    def _check_fitted(self) -> None:
        missing = [pub for pub, priv in self._required().items() if priv not in self.__dict__]
        name = type(self).__name__
        if len(missing) == len(self._required()):
            raise NotFittedError(
                f"this {name} is not fitted yet; call fit(X, lengths) first or build one "
                f"with {name}.from_params(...)"
            )
        if missing:
            raise NotFittedError(
                f"this {name} has no {', '.join(missing)} yet; assign "
                f"{' and '.join('m.' + m + ' = ...' for m in missing)} or call fit(X, lengths)"
            )
        self._check_not_stale()
        self._check_consistent()

    def _check_not_stale(self, params=None) -> None:
        """Refuse parameters still held for another number of states (see :meth:`_ensure_ties`)."""
        stale = self.__dict__.get("_stale_params")
        if not stale:
            return
        names = [p for p in stale if params is None or p in params]
        if names:
            K = self.ties_.n_states
            old = sorted({getattr(stale[p], "n_states", stale[p]) for p in names})
            held = " or ".join(map(str, old)) + " states"
            why = "n_components changed after they were set"
            if K in old:  # set back to the size they have, or the type, but other groups
                tied = getattr(self, "covariance_type", None) == "tied"
                extra = " with covariance_type='tied'" if tied else ""
                held += f" (under other tie groups than ties={self.ties!r}{extra} gives)"
                why = "n_components, ties or covariance_type changed after they were set"
            raise ValueError(
                f"n_components is {K}, but {', '.join(names)} still hold(s) the values for "
                f"{held} ({why}); assign "
                f"{' and '.join('m.' + p for p in names)} for {K} states, or call "
                f"fit(X, lengths)"
            )

    def _check_consistent(self) -> None:
        """Subclass hook: assigned parameters agree with each other (e.g. feature counts)."""

    def _prepare(self, X, lengths, fitting=False):
        try:
            X0 = np.asarray(X)
            if X0.dtype.kind == "O":  # a Float64/Int64 DataFrame: read as numbers
                X0 = as_array(X, X0)
        except ValueError:  # NumPy's "inhomogeneous shape", which names no fix
            if _sequence_list(X):
                raise ValueError(
                    f"X is a {type(X).__name__} of {len(X)} sequences of different lengths; "
                    f"X is one array of all sequences concatenated, with their lengths: "
                    f"fit(np.concatenate(seqs), lengths=[len(s) for s in seqs])"
                ) from None
            raise
        lengths = check_lengths(lengths, n_rows(X0))  # a scalar X is refused as one
        check_unmasked(X, lengths)  # np.asarray dropped the mask of a masked array
        X = self._check_X(X0, lengths, fitting=fitting)
        return X, SequenceBatch(lengths)

    def _initialise(self, X, rng, kept=None) -> None:
        kept = {} if kept is None else kept
        K = self.n_components
        if "startprob" in kept:
            self._startprob = np.array(kept["startprob"], dtype=np.float64)
        elif self.startprob_init is None:
            self._startprob = np.full(K, 1.0 / K)
        else:
            self._startprob = self._checked_start(  # a copy, as the setter keeps
                "startprob_init",
                lambda: np.array(
                    _stochastic("startprob_init", self.startprob_init, (K,), ("n_components",))
                ),
            )
        if "transmat" in kept:
            self._transitions = self._to_groups("transitions", "transmat_", kept["transmat"])
        elif self.transmat_init is None:
            G = self.ties_.n_groups("transitions")
            self._transitions = rng.dirichlet(np.ones(K), size=G)
        else:

            def check():
                full = _stochastic(
                    "transmat_init", self.transmat_init, (K, K), ("n_components", "n_components")
                )
                return self._to_groups("transitions", "transmat_init", full)

            self._transitions = self._checked_start("transmat_init", check)
        self._emission_init(X, rng, kept)

    def _to_groups(self, kind: str, name: str, values: np.ndarray) -> np.ndarray:
        """Per-group values from per-state ``values`` that agree within each group."""
        values = _real_array(name, values)
        if values.ndim and len(values) == self.n_components and self.ties_._untied(kind):
            return values.copy()  # every state its own group, in order: nothing to compare
        found = self.ties_.differing(kind, values)
        if found is not None:
            group, s = found
            fix = "give tied states the same value or untie them"
            if kind == "covars" and getattr(self, "covariance_type", None) == "tied":
                fix = (  # the type ties them, not `ties`: "untie them" was no fix
                    "give tied states the same value (covariance_type='tied' holds one "
                    "covariance for every state: give one (n_features, n_features) "
                    "matrix), or use covariance_type='full' for covariances that differ"
                )
            raise ValueError(
                f"{name}: states {group[0]} and {s} are tied (ties[{kind!r}] group "
                f"{group}) but their values differ; {fix}{self._pending_ties_note(kind)}"
            )
        return np.array([values[group[0]] for group in self.ties_.groups(kind)])

    def _pending_ties_note(self, kind: str) -> str:
        """A tie refusal's addition when ``ties`` was changed since ``ties_`` was resolved:
        the refusal reads the fitted ``ties_`` (the new spec takes effect at the next
        ``fit``), so "untie them" in ``ties`` alone is no fix (stop 49)."""
        try:
            declared = StateTies.resolve(
                self._tie_spec(self.ties_.n_states),
                n_states=self.ties_.n_states,
                kinds=self.tie_kinds,
            ).groups(kind)
        except (ValueError, TypeError):  # a spec for another size: it differs
            declared = None
        if declared == self.ties_.groups(kind):
            return ""
        return (
            f"; note: these are the ties the model holds now (ties_, from the last fit), "
            f"not the ties={self.ties!r} set since, which take effect at the next fit: "
            f"call fit first to use them"
        )

    def _check_group_order(self, kind: str, name: str) -> None:
        """Refuse values given one per tie group when ``ties`` lists the groups in
        another order than the one their rows are read in.

        Rows are read in the order of ``ties_.groups(kind)`` (by each group's smallest
        state); ``ties={"means": [[2], [0, 1]]}`` with ``means_init=[[10.0], [20.0]]``
        gave state 2 the mean 20 and states 0, 1 the mean 10, the reverse of the
        spec's order, with no error (as did a group listed before states it leaves
        untied).
        """
        listed = listed_groups(self.ties, kind, self.ties_.n_states)
        order = self.ties_.groups(kind)
        if listed is None or listed == order:
            return
        K = self.ties_.n_states
        lists = (  # a hand-built StateTies renumbered labels in another group order
            f"the labels of ties (a StateTies) numbered the groups as {listed}"
            if isinstance(self.ties, StateTies)
            else f"ties[{kind!r}] lists the groups (then the states it leaves untied) as {listed}"
        )
        raise ValueError(
            f"{name} has one row per tie group of {kind!r} ({len(order)} rows), read in "
            f"order of each group's smallest state, {order}, but {lists}, so its rows would go "
            f"to other states than that order suggests; give one row per state "
            f"({K} rows, equal within each group), or list the groups in that order "
            f"(ties={{{kind!r}: {order}}})"
        )

    def _per_group(
        self, kind: str, name: str, values, shape: tuple[int, ...], axes: tuple[str, ...]
    ) -> np.ndarray:
        """Per-group values from ``values`` given one per state or one per tie group
        (``shape``: a state's, ``axes``: what each of its axes is, for the message)."""
        arr = _real_array(name, values)
        if not np.isfinite(arr).all():  # else a score of NaN, or an E-step "of probability 0"
            raise ValueError(f"{name} must be finite, got {arr}; give finite start values")
        K = self.n_components
        if arr.shape == (K,) + shape:  # the common form: no group count needed
            return self._to_groups(kind, name, arr)
        G = self.ties_.n_groups(kind)
        if arr.shape == (G,) + shape:
            self._check_group_order(kind, name)
            return arr.copy()
        trailing = tuple(zip(axes, shape))
        want = f"{_shape_text(('n_components', K), *trailing)} (one per state)"
        if G != K:  # untied, the two forms are one
            want += (
                f" or {_shape_text((f'groups in ties[{kind!r}]', G), *trailing)} (one per group)"
            )
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")

    def _snapshot(self) -> dict:
        return {k: np.array(v) for k, v in self._state_arrays().items()}

    def _restore(self, snap: dict) -> None:
        for k, v in snap.items():
            setattr(self, k, v)

    def _state_arrays(self) -> dict:
        return {"_startprob": self._startprob, "_transitions": self._transitions} | {
            f"_{k}": getattr(self, f"_{k}") for k in self._emission_kinds
        }

    def _physical(self, kind: str) -> np.ndarray:
        return getattr(self, f"_{kind}")

    # subclass hooks
    def _tie_spec(self, n_states: int):
        """The spec ``StateTies.resolve`` reads for ``n_states`` states (a subclass may
        add the ties its settings imply, as covariance_type='tied' does)."""
        return self.ties

    def _check_X(self, X, lengths, fitting):  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_emission(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_init(self, X, rng, kept):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_mstep(self, X, gamma, learn):  # pragma: no cover - abstract
        raise NotImplementedError

    def _emission_sizes(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _free_sizes(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample_emissions(self, states, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_params(self) -> None:
        """What ``fit`` refuses of the settings and the tie spec before it looks at the data
        (``set_params`` runs it)."""
        self._check_settings()
        StateTies.resolve(
            self._tie_spec(self.n_components), n_states=self.n_components, kinds=self.tie_kinds
        )


def _rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per leading index: whether ``a`` and ``b`` hold the same values (NaN equals NaN)."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return same.reshape(len(a), -1).all(axis=1)


def _public(param: str) -> str:
    return {"transmat": "transmat_", "startprob": "startprob_", "emissions": "emissionprob_"}.get(
        param, f"{param}_"
    )
