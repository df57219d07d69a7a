"""Categorical (discrete-symbol) HMM whose emission distributions can be tied across states.

Tied states share one row of emission probabilities; the M-step pools their
expected symbol counts (claim C3 for discrete observations, e.g. the several
states of a coding region that emit codon positions alike).

Example:
    >>> import numpy as np
    >>> from tying.hmm import CategoricalHMM
    >>> X = np.array([0, 0, 1, 2, 2, 2, 1, 0]).reshape(-1, 1)
    >>> m = CategoricalHMM(3, ties={"emissions": [[0, 1]]}, random_state=0).fit(X)
    >>> np.array_equal(m.emissionprob_[0], m.emissionprob_[1])
    True
"""

from __future__ import annotations

import numpy as np

from tying.hmm import param_names
from tying.hmm.base import BaseHMM
from tying.hmm.draws import last_possible
from tying.hmm.fitted_array import fitted
from tying.hmm.integer_args import as_integer
from tying.hmm.sequences import check_observations
from tying.hmm.symbol_table import refuse_oversized, table_fits
from tying.hmm.ties import StateTies
from tying.hmm.validation import _check_prior, _real_array, _shape_text, _stochastic

__all__ = ["CategoricalHMM"]


class CategoricalHMM(BaseHMM):
    """HMM over symbols ``0..n_symbols-1`` with tie-able emission rows.

    Args:
        n_components: number of states K.
        n_symbols: alphabet size M; None takes ``max(X) + 1`` at the first fit.
        ties: tie spec over ``"emissions"`` and ``"transitions"``.
        emissionprob_init: ``(K, M)`` (equal within tie groups) or ``(n_groups, M)``.
        **kwargs: see :class:`~tying.hmm.base.BaseHMM`.

    Attributes:
        emissionprob_: ``(K, M)`` emission probabilities (tied states have equal rows).
        n_symbols_: the alphabet size used.
    """

    _emission_kinds = ("emissions",)
    _emission_params = ("emissions",)
    _letters = {"s": "startprob", "t": "transmat", "e": "emissions"}
    _hmmlearn_only = BaseHMM._hmmlearn_only + ("emissionprob_prior", "n_features")

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior=None,
        transmat_prior=None,
        *,
        emissionprob_prior=None,
        n_features: int | None = None,
        n_symbols: int | None = None,
        ties=None,
        emissionprob_init: np.ndarray | None = None,
        **kwargs,
    ):
        super().__init__(
            n_components,
            ties=ties,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            **kwargs,
        )
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self.n_symbols = n_symbols
        self.emissionprob_init = emissionprob_init

    @classmethod
    def from_params(cls, startprob, transmat, emissionprob, *, ties=None, **kwargs):
        """A fitted model with the given parameters.

        Args:
            startprob: ``(K,)``. transmat: ``(K, K)``. emissionprob: ``(K, M)``.
            ties, **kwargs: as in the constructor.

        Returns:
            A CategoricalHMM ready to score, decode and sample.

        Raises:
            ValueError: on shapes, non-stochastic rows, or tied states with different rows.
            TypeError: for text or complex values, or a keyword that ``from_params``
                fills itself (``n_components=``, ``means_init=``, ...). Every message
                names the argument as typed (``means``, not ``means_init``).

        Example:
            >>> m = CategoricalHMM.from_params([1.0], [[1.0]], [[0.25, 0.75]])
            >>> round(m.score([[1], [1]]), 6)    # 2 log 0.75
            -0.575364
        """
        param_names.refuse_filled(kwargs, param_names.CATEGORICAL_FILLED)
        K = param_names.n_states(startprob)
        with param_names.typed_names(K, "startprob", "transmat", "emissionprob"):
            axes = "(n_components, n_symbols)"
            emission = param_names.array_of_ndim("emissionprob", emissionprob, (2,), axes)
            model = cls(
                K,
                n_symbols=emission.shape[-1],
                ties=ties,
                startprob_init=startprob,
                transmat_init=transmat,
                emissionprob_init=emission,
                **kwargs,
            )
            model._check_settings()
            model.ties_ = StateTies.resolve(ties, n_states=K, kinds=model.tie_kinds)
            model.n_symbols_ = emission.shape[-1]
            model._initialise(np.zeros(1, dtype=np.int64), np.random.default_rng(0), {})
        return model

    @fitted
    def emissionprob_(self) -> np.ndarray:
        """``(K, M)`` emission probabilities (a copy); assignable (validated)."""
        self._check_set("emissionprob_", "_emissions")
        return self.ties_.spread("emissions", self._emissions)

    @emissionprob_.setter
    def emissionprob_(self, value) -> None:
        with self._assignment("emissions"):
            K = self._checked_n_components()
            arr = _real_array("emissionprob_", value)
            M = self._alphabet_size()
            if arr.ndim != 2 or arr.shape[0] != K or (M is not None and arr.shape[1] != M):
                want = _shape_text(("n_components", K), ("n_symbols", M))
                held = self.__dict__.get("n_symbols_")
                note = (
                    f" (n_symbols/n_features is {M}, but the model holds {held} symbols: the "
                    f"size set since takes effect at the next fit; assign all {M} symbols' "
                    f"probabilities, or set n_features back to {held})"
                    if M is not None and held is not None and held != M
                    else ""
                )
                raise ValueError(f"emissionprob_ must have shape {want}, got {arr.shape}{note}")
            arr = _stochastic("emissionprob_", arr, arr.shape)
            self._ensure_ties()
            self._emissions = self._to_groups("emissions", "emissionprob_", arr)
            self.n_symbols_ = arr.shape[1]

    def _alphabet_size(self) -> int | None:
        """The alphabet size the user fixed (n_symbols, hmmlearn's n_features), if any."""
        for name in ("n_symbols", "n_features"):
            M = getattr(self, name)
            if M is not None:
                return int(M)
        return None

    def _check_settings(self) -> None:
        super()._check_settings()
        for name in ("n_symbols", "n_features"):
            M = getattr(self, name)
            if M is not None and (as_integer(M) is None or M < 1):  # 0-d int: as hmmlearn
                raise ValueError(f"{name} must be a positive integer or None, got {M!r}")
        if None not in (self.n_symbols, self.n_features) and self.n_symbols != self.n_features:
            raise ValueError(
                f"n_symbols={self.n_symbols} and n_features={self.n_features} name the same "
                f"alphabet size (n_features is hmmlearn's name); give one of them"
            )
        _check_prior("emissionprob_prior", self.emissionprob_prior, nonneg=True)

    def _prior_shapes(self) -> dict:
        shape = (self.n_components, self.n_symbols_)
        return super()._prior_shapes() | {
            "emissionprob_prior": ("emissions", shape, "n_components, n_symbols")
        }

    def _check_X(self, X, lengths, fitting):
        X = check_observations(X, lengths, ndim=1)
        # what fixes the alphabet's size, so the refusal below names what to change
        source = "held"
        if fitting:
            if self._alphabet_size() is not None:
                self.n_symbols_ = self._alphabet_size()
                source = "given"
            elif {"_emissions", "ties_"} <= self.__dict__.keys() and self._keeps_emissions():
                self.n_symbols_ = self._emissions.shape[1]
                source = "kept"
            elif self.emissionprob_init is not None:
                self.n_symbols_ = np.asarray(self.emissionprob_init).shape[-1]
                source = "init"
            else:
                self.n_symbols_ = int(X.max()) + 1
                source = "data"
                # an id as a symbol (2**40) asked NumPy for an 8 TiB table (stop 60)
                refuse_oversized(
                    X, lengths, int(self.n_components), self.n_symbols_, self._why(source)
                )
        bad = np.flatnonzero((X < 0) | (X >= self.n_symbols_))
        if bad.size:
            row = int(bad[0])
            ends = np.cumsum(lengths)
            seq = int(np.searchsorted(ends, row, side="right"))
            pos = row - (int(ends[seq - 1]) if seq else 0)
            raise ValueError(
                f"X[{row}] = {X[row]} (sequence {seq}, position {pos}) is not a symbol of this "
                f"model (0..{self.n_symbols_ - 1}), as {self._more_symbols(X, source)}"
            )
        return X

    def _more_symbols(self, X, source: str) -> str:
        """What fixed the alphabet's size (``source``), and the fix for symbols past it.
        "raise n_symbols" alone was given whatever fixed the size, and it changes nothing
        where the emissions are held: a fitted model refused the same X again after
        set_params(n_symbols=...) (stop 58)."""
        # the name the user gave (hmmlearn's n_features beside n_symbols is refused)
        name = (
            "n_features" if self.n_features is not None and self.n_symbols is None else "n_symbols"
        )
        why = self._why(source)
        if np.any(X < 0):
            return f"{why}; symbols are integers 0..n_symbols-1: recode X"
        need = int(X.max()) + 1
        if not table_fits(self.n_components, need):  # an alphabet no fit could hold
            return (
                f"{why}; recode X: it holds {len(np.unique(X))} distinct symbols, e.g. "
                f"labels, codes = np.unique(X, return_inverse=True) (an alphabet of {need} "
                f"symbols would not fit in memory)"
            )
        if source == "given":
            return f"{why}; raise it to {name}={need} or recode X"
        if source == "init":
            return f"{why}; give an emissionprob_init with {need} columns, or recode X"
        # each way named only with the settings it needs here: a model from from_params
        # (n_symbols and emissionprob_init given) refused "fit again with n_symbols=5"
        # (emissionprob_init of 3 columns) and an emissionprob_ of 5 columns (n_symbols=3)
        refit = f"{name}={need}" + (
            ", emissionprob_init=None" if self.emissionprob_init is not None else ""
        )
        assign = f"assign an emissionprob_ with {need} columns"
        if self._alphabet_size() is not None:
            assign = f"set_params({name}={need}), then {assign}"
        if self.init_params is None and self._keeps_emissions():
            return f"{why}; recode X, or {assign}"  # a refit would start from it again
        return (
            f"{why}; recode X, or learn the new symbols: fit again with {refit} and "
            f"init_params that include 'e' (the default does), or {assign}"
        )

    def _why(self, source: str) -> str:
        """What fixed the alphabet's size, in words (``source`` as ``_check_X`` names it)."""
        # the name the user gave (hmmlearn's n_features beside n_symbols is refused)
        name = (
            "n_features" if self.n_features is not None and self.n_symbols is None else "n_symbols"
        )
        kept = (
            "init_params leaves it out"
            if self.init_params is not None
            else "an assigned emissionprob_ is where the next fit starts"
        )
        return {
            "held": "a fitted model scores with the emissionprob_ it holds",
            "given": f"{name}={self.n_symbols_} was given",
            "kept": f"this fit starts from the emissionprob_ held ({kept})",
            "init": "emissionprob_init has that many columns",
            "data": "n_symbols_ is read from X's largest symbol",
        }[source]

    def _keeps_emissions(self) -> bool:
        """Whether this fit starts from the held emissions (the rule of
        ``_kept_start_values``, which ``fit`` has applied already): asking that method
        again logged hmmlearn's "will be overwritten" warning a second time."""
        if self.init_params is None:
            return "emissions" in self._assigned
        return "emissions" not in self._param_names(self.init_params, "init_params")

    def _log_emission(self, X):
        with np.errstate(divide="ignore"):
            log_e = np.log(self._plain("emissionprob_"))  # (K, M)
        return np.ascontiguousarray(log_e.T[X])  # (N, K)

    def _emission_init(self, X, rng, kept) -> None:
        G, M = self.ties_.n_groups("emissions"), self.n_symbols_
        if "emissions" in kept:
            arr = np.asarray(kept["emissions"])
            if arr.shape[1] != M:
                raise ValueError(
                    f"emissionprob_ has {arr.shape[1]} symbols but this fit needs {M}; assign "
                    f"an emissionprob_ of shape "
                    f"{_shape_text(('n_components', self.n_components), ('n_symbols', M))}"
                )
            self._emissions = self._to_groups("emissions", "emissionprob_", arr)
            return
        if self.emissionprob_init is None:
            self._emissions = rng.dirichlet(np.ones(M), size=G)
            return
        arr = _real_array("emissionprob_init", self.emissionprob_init)
        K = self.n_components
        if arr.ndim != 2 or arr.shape[1] != M or arr.shape[0] not in (K, G):
            want = f"{_shape_text(('n_components', K), ('n_symbols', M))} (one row per state)"
            if G != K:  # untied, the two forms are one
                per_group = _shape_text(("groups in ties['emissions']", G), ("n_symbols", M))
                want += f" or {per_group} (one per group)"
            raise ValueError(f"emissionprob_init must have shape {want}, got {arr.shape}")
        if arr.shape[0] != K:
            self._check_group_order("emissions", "emissionprob_init")
        arr = _stochastic("emissionprob_init", arr, arr.shape)
        # one row per group is copied: the M-step updates its rows in place, which would
        # rewrite the caller's emissionprob_init (a refit or clone then started elsewhere)
        self._emissions = (
            self._to_groups("emissions", "emissionprob_init", arr)
            if arr.shape[0] == K
            else arr.copy()
        )

    def _emission_mstep(self, X, gamma, learn) -> None:
        if "emissions" not in learn:
            return
        counts = np.stack(  # (K, M) expected symbol counts
            [
                np.bincount(X, weights=gamma[:, k], minlength=self.n_symbols_)
                for k in range(self.n_components)
            ]
        )
        pooled = self.ties_.pool("emissions", counts)  # (G, M)
        prior = np.broadcast_to(
            self._prior("emissionprob_prior", 1.0), (self.n_components, self.n_symbols_)
        )
        first = [g[0] for g in self.ties_.groups("emissions")]
        pooled = np.maximum(prior[first] - 1.0 + pooled, 0.0)
        total = pooled.sum(1)
        ok = total > 0
        self._emissions[ok] = pooled[ok] / total[ok, None]

    def _emission_sizes(self) -> dict:
        return {"emissions": self.n_symbols_}

    def _free_sizes(self) -> dict:
        return {"emissions": self.n_symbols_ - 1}

    def _sample_emissions(self, states, rng) -> np.ndarray:
        E = self._plain("emissionprob_")
        cdf = np.cumsum(E, axis=1)[states]  # (n, M)
        u = rng.random(len(states))[:, None]
        # a u past a row's rounded sum: its last possible symbol, not symbol M - 1
        return np.minimum((cdf <= u).sum(1), last_possible(E)[states]).reshape(-1, 1)
