"""HMM with Gaussian-mixture emissions, whose codebooks and weights can be tied across states.

Each state k emits from a mixture ``sum_m w_km N(x; mu_km, Sigma_km)``. Ties
work per parameter kind, over states:

- ``ties={"means": "all", "covars": "all"}`` is the **tied-mixture
  (semi-continuous) HMM** of speech recognition: one Gaussian codebook shared
  by every state, each state with its own mixture weights. hmmlearn cannot
  express it. The codebook densities are computed once for all states (one
  ``(N, n_mix)`` table instead of K), and the M-step pools every state's
  component statistics into the shared codebook.
- ``ties={"weights": [[0, 1]]}``: states 0 and 1 share mixture weights, etc.

Untied, this is hmmlearn's ``GMMHMM`` (maximum likelihood; its default priors
are maximum likelihood too), with a ``min_covar`` floor after every M-step.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GMMHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (80, 1)), rng.normal(3, 1, (80, 1))])
    >>> ties = {"means": "all", "covars": "all"}
    >>> m = GMMHMM(3, n_mix=4, ties=ties, tol=1e-2, random_state=0).fit(X)
    >>> m.group_params("means").shape            # one codebook of 4 Gaussians
    (1, 4, 1)
    >>> m.weights_.shape                          # per-state weights over it
    (3, 4)
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from scipy.special import logsumexp

from tying.hmm import param_names
from tying.hmm.base import BaseHMM
from tying.hmm.covariance_floor import warn_if_mixture_floored
from tying.hmm.covariances import _check_covariance, _check_min_covar, _floor_eigenvalues
from tying.hmm.draws import last_possible
from tying.hmm.fitted_array import fitted
from tying.hmm.kmeans_start import check_rows_for_means, kmeans_centres
from tying.hmm.sequences import check_observations, check_squares
from tying.hmm.start_covariance import data_covariance, start_variances
from tying.hmm.tied_means import weighted_means
from tying.hmm.ties import StateTies
from tying.hmm.validation import _positive_int, _real_array, _shape_text, _stochastic

__all__ = ["GMMHMM"]

_COVARIANCE_TYPES = ("diag", "full")
_LOG_2PI = np.log(2 * np.pi)
_EMPTY = 1e-10  # a component with less posterior mass than this keeps its old value
#: hmmlearn's GMMHMM types that this one lacks: what they are, and the type that holds them
_OTHER_TYPES = {
    "spherical": (
        "hmmlearn's 'spherical' (one variance per component) is not offered: use 'diag', "
        "one variance per feature and component, which holds it (and fits more freely)"
    ),
    "tied": (
        "hmmlearn's 'tied' (one full covariance shared by the components of each state) "
        "is not offered: use 'full', one per component, which holds it (and fits more "
        "freely); ties={'covars': ...} ties covariances across states, not across the "
        "components of one state"
    ),
}


class GMMHMM(BaseHMM):
    """HMM whose states emit from Gaussian mixtures; codebooks and weights can be tied.

    The positional order is hmmlearn's.

    Args:
        n_components: number of states K.
        n_mix: Gaussians per mixture M.
        weights_prior, means_prior, means_weight, covars_prior, covars_weight:
            accepted at hmmlearn's neutral values only (maximum likelihood).
        covariance_type: ``"diag"`` or ``"full"`` (per component).
        min_covar: floor on variances / eigenvalues after every M-step.
        ties: tie spec over ``"weights"``, ``"means"``, ``"covars"``,
            ``"transitions"``; ``{"means": "all", "covars": "all"}`` is the
            tied-mixture (semi-continuous) HMM.
        weights_init: ``(K, M)`` or one row per tie group.
        means_init: ``(K, M, D)`` or one per tie group.
        covars_init: diag ``(K, M, D)``, full ``(K, M, D, D)``, or one per group.
        **kwargs: see :class:`~tying.hmm.base.BaseHMM` (``startprob_init``,
            ``transmat_init``, ``params``/``init_params`` with hmmlearn's
            letters ``s t w m c``, ``n_iter``, ``tol``, ``n_init``,
            ``random_state``, ``algorithm``, ``verbose``).

    Attributes:
        weights_: ``(K, M)``, assignable and validated (as are the others).
        means_: ``(K, M, D)``.
        covars_: ``(K, M, D)`` (diag) or ``(K, M, D, D)`` (full), hmmlearn's shapes.
        others: ``startprob_``, ``transmat_``, ``ties_``, ``monitor_``, ``history_``, ...
    """

    _emission_kinds = ("weights", "means", "covars")
    _emission_params = ("weights", "means", "covars")
    _letters = {"s": "startprob", "t": "transmat", "w": "weights", "m": "means", "c": "covars"}

    def __init__(
        self,
        n_components: int = 1,
        n_mix: int = 1,
        min_covar: float = 1e-3,
        startprob_prior=None,
        transmat_prior=None,
        weights_prior=None,
        means_prior=None,
        means_weight=None,
        covars_prior=None,
        covars_weight=None,
        algorithm: str = "viterbi",
        covariance_type: str = "diag",
        random_state=None,
        n_iter: int | None = None,
        tol: float | None = None,
        verbose: bool = False,
        params=None,
        init_params=None,
        implementation: str | None = None,
        *,
        ties=None,
        weights_init=None,
        means_init=None,
        covars_init=None,
        **kwargs,
    ):
        super().__init__(
            n_components,
            ties=ties,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
            **kwargs,
        )
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.n_mix = n_mix
        self.min_covar = min_covar
        self.covariance_type = covariance_type
        self.weights_init = weights_init
        self.means_init = means_init
        self.covars_init = covars_init

    @classmethod
    def from_params(
        cls,
        startprob,
        transmat,
        weights,
        means,
        covars,
        *,
        covariance_type="diag",
        ties=None,
        **kwargs,
    ) -> GMMHMM:
        """A ready model with the given parameters (for scoring, decoding, sampling).

        Args:
            startprob: ``(K,)``.
            transmat: ``(K, K)``.
            weights: ``(K, M)`` or one row per tie group.
            means: ``(K, M, D)`` or one row per tie group.
            covars: ``(K, M, D)`` diag or ``(K, M, D, D)`` full, or one per tie group.
            covariance_type, ties, **kwargs: as in the constructor.

        Returns:
            A GMMHMM ready to ``score``/``predict``/``sample`` or to ``fit`` further.

        Raises:
            ValueError: on shapes, non-stochastic rows, non-positive covariances,
                or tied states given different values.
            TypeError: for text or complex values, or a keyword that ``from_params``
                fills itself (``n_components=``, ``means_init=``, ...). Every message
                names the argument as typed (``means``, not ``means_init``).

        Example:
            >>> m = GMMHMM.from_params([1.0], [[1.0]], [[0.5, 0.5]], [[[-1.0], [1.0]]],
            ...                        [[[1.0], [1.0]]])
            >>> round(m.score([[0.0]]), 6)         # log N(0; ±1, 1)
            -1.418939
        """
        param_names.refuse_filled(kwargs, param_names.GMM_FILLED)
        K = param_names.n_states(startprob)
        with param_names.typed_names(K, "startprob", "transmat", "weights", "means", "covars"):
            weights = param_names.array_of_ndim("weights", weights, (2,), "(n_components, n_mix)")
            means = param_names.array_of_ndim(
                "means", means, (3,), "(n_components, n_mix, n_features)"
            )
            if weights.shape[1] != means.shape[1]:  # n_mix is read from both: they must agree
                raise ValueError(
                    f"weights has {weights.shape[1]} mixture components per state "
                    f"(shape {weights.shape}) but means has {means.shape[1]} (shape "
                    f"{means.shape}); give both n_mix components per state"
                )
            model = cls(
                K,
                means.shape[1],
                covariance_type=covariance_type,
                ties=ties,
                startprob_init=startprob,
                transmat_init=transmat,
                weights_init=weights,
                means_init=means,
                covars_init=covars,
                **kwargs,
            )
            model._check_settings()
            model.ties_ = StateTies.resolve(ties, n_states=K, kinds=model.tie_kinds)
            model.n_features_ = means.shape[-1]
            model._initialise(np.zeros((1, model.n_features_)), np.random.default_rng(0), {})
        return model

    # ------------------------------------------------------------ attributes
    @fitted
    def weights_(self) -> np.ndarray:
        """``(K, M)`` mixture weights of every state; assignable."""
        self._check_set("weights_", "_weights")
        return self.ties_.spread("weights", self._weights)

    @weights_.setter
    def weights_(self, value) -> None:
        with self._assignment("weights"):
            K, M = self._checked_n_components(), self._checked_n_mix()
            arr = _stochastic("weights_", value, (K, M), ("n_components", "n_mix"))
            self._ensure_ties()
            self._weights = self._to_groups("weights", "weights_", arr)

    @fitted
    def means_(self) -> np.ndarray:
        """``(K, M, D)`` component means of every state; assignable."""
        self._check_set("means_", "_means")
        return self.ties_.spread("means", self._means)

    @means_.setter
    def means_(self, value) -> None:
        with self._assignment("means"):
            K, M = self._checked_n_components(), self._checked_n_mix()
            arr = _real_array("means_", value)
            if arr.ndim != 3 or arr.shape[:2] != (K, M):
                want = _shape_text(("n_components", K), ("n_mix", M), ("n_features", None))
                raise ValueError(f"means_ must have shape {want}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError("means_ must be finite")
            if "_covars" in self.__dict__ and self._covars.shape[2] != arr.shape[2]:
                raise ValueError(
                    f"means_ has {arr.shape[2]} features but covars_ has "
                    f"{self._covars.shape[2]}; assign matching shapes"
                )
            self._ensure_ties()
            self._means = self._to_groups("means", "means_", arr)
            self.n_features_ = arr.shape[2]

    @fitted
    def covars_(self) -> np.ndarray:
        """Component covariances: ``(K, M, D)`` diag, ``(K, M, D, D)`` full; assignable."""
        self._check_set("covars_", "_covars")
        return self.ties_.spread("covars", self._covars)

    @covars_.setter
    def covars_(self, value) -> None:
        with self._assignment("covars"):
            self._checked_n_components()
            self._checked_n_mix()
            self._check_type()
            self._ensure_ties()
            arr = self._checked_covars("covars_", value, per_group_ok=False)
            self._covars = self._to_groups("covars", "covars_", arr)

    # ------------------------------------------------------------- settings
    def _checked_n_mix(self) -> int:
        return _positive_int("n_mix", self.n_mix)

    def _check_type(self) -> None:
        if self.covariance_type not in _COVARIANCE_TYPES:
            # hmmlearn's other two types tie within a state's mixture, which ties= (over
            # states) cannot: its advice "ties={'covars': ...}" gave another model (stop 59)
            ct = self.covariance_type
            fix = _OTHER_TYPES.get(ct, "") if isinstance(ct, str) else ""
            raise ValueError(
                f"covariance_type must be one of {_COVARIANCE_TYPES} for GMMHMM, got "
                f"{ct!r}{'; ' if fix else ''}{fix}"
            )

    def _check_settings(self) -> None:
        super()._check_settings()
        self._checked_n_mix()
        neutral = {"weights_prior": 1.0, "means_weight": 0.0}
        for name in (
            "weights_prior",
            "means_prior",
            "means_weight",
            "covars_prior",
            "covars_weight",
        ):
            value = getattr(self, name)
            if value is None or (name in neutral and np.all(np.asarray(value) == neutral[name])):
                continue
            if name == "means_prior" and np.all(np.asarray(value) == 0):
                continue
            raise ValueError(
                f"GMMHMM: {name}={value!r} is not supported; the M-step is maximum likelihood "
                f"(hmmlearn's default priors for GMMHMM), so leave {name} unset"
            )
        self._check_type()
        _check_min_covar(self.min_covar)

    def _checked_covars(self, name, value, *, per_group_ok) -> np.ndarray:
        K, M = self.n_components, self.n_mix
        G = self.ties_.n_groups("covars")
        arr = _real_array(name, value)
        full = self.covariance_type == "full"
        D = self._means.shape[2] if "_means" in self.__dict__ else arr.shape[-1]
        shape = (M, D, D) if full else (M, D)
        rows = (K, G) if per_group_ok else (K,)
        if arr.shape[1:] != shape or arr.shape[0] not in rows:
            known = D if "_means" in self.__dict__ else None  # else any D is accepted
            axes = (("n_components", K), ("n_mix", M)) + (("n_features", known),) * (1 + full)
            want = _shape_text(*axes)
            if per_group_ok and G != K:
                per_group = _shape_text(("groups in ties['covars']", G), *axes[1:])
                want += f" or {per_group} (one per group)"
            raise ValueError(
                f"{name} must have shape {want} for {self.covariance_type!r} components, "
                f"got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        for idx in np.ndindex(arr.shape[:2]):
            _check_covariance(f"{name}[{idx[0]}, {idx[1]}]", arr[idx], full=full)
        return arr

    def _check_X(self, X, lengths, fitting):
        X = check_observations(X, lengths)
        if fitting:
            self.n_features_ = X.shape[1]
        elif X.shape[1] != self.n_features_:
            raise ValueError(f"X has {X.shape[1]} features but this model has {self.n_features_}")
        check_squares(X, lengths)
        return X

    def _check_consistent(self) -> None:
        self._check_type()
        # n_mix or covariance_type changed after the parameters were set would read them
        # as another mixture (a dropped component, a wrong density): refuse, naming them
        M, full = self._checked_n_mix(), self.covariance_type == "full"
        shapes = {"weights_": self._weights.shape[1], "means_": self._means.shape[1]}
        shapes["covars_"] = self._covars.shape[1]
        wrong = {name: m for name, m in shapes.items() if m != M}
        if wrong:
            raise ValueError(
                f"n_mix is {M} but {', '.join(f'{n} has {m}' for n, m in wrong.items())} "
                f"components (n_mix changed after they were set); set n_mix back, assign "
                f"{' and '.join('m.' + n for n in wrong)} for {M} components, or call "
                f"fit(X, lengths)"
            )
        if self._covars.ndim != (4 if full else 3):
            held = "diag" if full else "full"
            raise ValueError(
                f"covariance_type is {self.covariance_type!r} but covars_ holds {held!r} "
                f"covariances (stored shape {self._covars.shape}): covariance_type was "
                f"changed after they were set; set it back to {held!r}, assign covars_ for "
                f"{self.covariance_type!r}, or call fit(X, lengths)"
            )
        if self._means.shape[2] != self._covars.shape[2]:
            raise ValueError(
                f"means_ has {self._means.shape[2]} features but covars_ has "
                f"{self._covars.shape[2]}; assign matching shapes"
            )

    # ------------------------------------------------------------- emission
    def _pairs(self):
        """Distinct (means group, covars group) codebooks and the states that read each."""
        gm, gc = self.ties_.group_of["means"], self.ties_.group_of["covars"]
        keys = {}
        for k in range(self.ties_.n_states):  # the fitted states, whatever n_components says
            keys.setdefault((int(gm[k]), int(gc[k])), []).append(k)
        return keys

    def _component_log_density(self, X, center, gm, gc) -> np.ndarray:
        """``(N, M)`` log N(x; mu_m, Sigma_m) of one codebook, exact for far-apart means."""
        mu = self._means[gm] - center  # (M, D)
        cov = self._covars[gc]
        Xc = X - center
        N, D = X.shape
        out = np.empty((N, self.n_mix))
        for m in range(self.n_mix):
            diff = Xc - mu[m]  # (N, D): no expansion of the quadratic form
            if self.covariance_type == "diag":
                out[:, m] = -0.5 * (D * _LOG_2PI + np.log(cov[m]).sum() + (diff**2 / cov[m]).sum(1))
            else:
                L = np.tril(cho_factor(cov[m], lower=True, check_finite=False)[0])
                z = solve_triangular(L, diff.T, lower=True, check_finite=False)
                out[:, m] = -0.5 * (
                    D * _LOG_2PI + 2.0 * np.log(np.diag(L)).sum() + np.einsum("dn,dn->n", z, z)
                )
        return out

    def _log_parts(self, X):
        """Per-state emission log-density and, per codebook, the component table."""
        center = X.mean(0) if len(X) else np.zeros(X.shape[1])
        with np.errstate(divide="ignore"):
            log_w = np.log(self._plain("weights_"))  # (K, M)
        log_b = np.empty((len(X), self.ties_.n_states))
        tables = {}
        for (gm, gc), states in self._pairs().items():
            comp = self._component_log_density(X, center, gm, gc)  # once per codebook
            tables[(gm, gc)] = comp
            for k in states:
                log_b[:, k] = logsumexp(comp + log_w[k], axis=1)
        return log_b, tables, log_w, center

    def _log_emission(self, X):
        return self._log_parts(X)[0]

    def _warn_floored(self, X, batch, name: str) -> None:
        warn_if_mixture_floored(self, X, batch, name)  # covariances held at min_covar

    def _em_context(self, X, batch) -> dict:
        """Holds each iteration's emission parts from the E-step for its M-step."""
        return {}

    def _em_log_emission(self, X, context) -> np.ndarray:
        """The generic E-step's densities, keeping the component tables for this
        iteration's M-step: the parameters do not change in between, so the densities
        are computed once."""
        context["parts"] = parts = self._log_parts(X)
        return parts[0]

    def _emission_update(self, X, post, learn, context) -> None:
        self._emission_mstep(X, post.gamma, learn, context.pop("parts"))

    def _emission_mstep(self, X, gamma, learn, parts) -> None:
        """The M-step from posteriors ``gamma`` and the E-step's ``_log_parts(X)``."""
        ties, K, M = self.ties_, self.n_components, self.n_mix
        log_b, tables, log_w, center = parts
        Xc = X - center
        D = X.shape[1]
        full = self.covariance_type == "full"
        Nkm = np.zeros((K, M))
        Sx = np.zeros((K, M, D))
        resp = {}
        for (gm, gc), states in self._pairs().items():
            comp = tables[(gm, gc)]
            for k in states:
                with np.errstate(invalid="ignore"):
                    r = gamma[:, k, None] * np.exp(comp + log_w[k] - log_b[:, k, None])  # (N, M)
                r = np.nan_to_num(r)
                resp[k] = r
                Nkm[k] = r.sum(0)
                Sx[k] = r.T @ Xc
        if "weights" in learn:
            Nw = ties.pool("weights", Nkm)  # (G, M)
            tot = Nw.sum(1)
            ok = tot > _EMPTY
            self._weights[ok] = Nw[ok] / tot[ok, None]
        if "means" in learn:
            Nm, Sm = ties.pool("means", Nkm), ties.pool("means", Sx)
            ok = Nm > _EMPTY  # (G, M)
            new = Sm / np.where(ok, Nm, 1.0)[..., None] + center
            self._means[ok] = new[ok]
            covs = self._covars[ties.group_of["covars"]]  # (K, M, D[, D]): before this M-step
            zero = np.zeros((K, D))  # GMMHMM takes no means prior
            for m in range(M):  # a component tied over unequal covariances: see tied_means
                for g, mu in weighted_means(
                    ties.group_of["means"], Nkm[:, m], Sx[:, m], zero, zero, covs[:, m], ok[:, m]
                ):
                    self._means[g, m] = mu + center
        if "covars" not in learn:
            return
        mu = self._means[ties.group_of["means"]] - center  # (K, M, D), each state's codebook
        if full:
            scatter = np.zeros((K, M, D, D))
        else:
            scatter = np.zeros((K, M, D))
        for k, r in resp.items():
            for m in range(M):
                diff = Xc - mu[k, m]  # (N, D): scatter about the new mean, no cancellation
                if full:
                    scatter[k, m] = (diff * r[:, m, None]).T @ diff
                else:
                    scatter[k, m] = r[:, m] @ diff**2
        Nc, Sc = ties.pool("covars", Nkm), ties.pool("covars", scatter)
        for g, m in zip(*np.nonzero(Nc > _EMPTY)):
            c = Sc[g, m] / Nc[g, m]
            if full:
                self._covars[g, m] = _floor_eigenvalues(0.5 * (c + c.T), self.min_covar)
            else:
                self._covars[g, m] = np.maximum(c, self.min_covar)

    def _check_start_rows(self, X, kept) -> None:
        if "means" not in kept and self.means_init is None:  # k-means starts the means
            shape = (self.n_mix, X.shape[1])
            check_rows_for_means(self, len(X), self.ties_.n_groups("means"), shape)

    def _emission_init(self, X, rng, kept) -> None:
        ties, M, D = self.ties_, self.n_mix, self.n_features_
        Gw, Gm, Gc = (ties.n_groups(k) for k in ("weights", "means", "covars"))
        full = self.covariance_type == "full"
        need = {"weights": (M,), "means": (M, D), "covars": (M, D, D) if full else (M, D)}
        names = ("n_components", "n_mix", "n_features", "n_features")
        for param, value in kept.items():  # kept from a model of another n_mix or D
            if param in need and np.shape(value)[1:] != need[param]:
                K = self.n_components
                raise ValueError(
                    f"{param}_ has shape {np.shape(value)} but this fit needs "
                    f"{_shape_text(*zip(names, (K,) + need[param]))} ({D} features in X, "
                    f"covariance_type={self.covariance_type!r}); fit starts from it (it was "
                    f"assigned, or init_params={self.init_params!r} leaves it out): assign "
                    f"m.{param}_ of that shape, or let fit initialise it"
                )
        if "weights" in kept:
            self._weights = self._to_groups("weights", "weights_", kept["weights"])
        elif self.weights_init is None:
            self._weights = np.full((Gw, M), 1.0 / M)
        else:
            w = _real_array("weights_init", self.weights_init)
            self._weights = self._per_group("weights", "weights_init", w, (M,), ("n_mix",))
            _stochastic("weights_init", self._weights, self._weights.shape)
        if "means" in kept:
            self._means = self._to_groups("means", "means_", kept["means"])
        elif self.means_init is None:  # k-means centres, dealt out to the codebooks
            centres = kmeans_centres(X, Gm * M, rng)
            self._means = centres[rng.permutation(Gm * M)].reshape(Gm, M, D)
        else:
            self._means = self._per_group(
                "means", "means_init", self.means_init, (M, D), ("n_mix", "n_features")
            )
        if "covars" in kept:
            self._covars = self._to_groups("covars", "covars_", kept["covars"])
        elif self.covars_init is None:
            if self.covariance_type == "full":
                cov = data_covariance(X, self.min_covar)
                self._covars = np.broadcast_to(cov, (Gc, M, D, D)).copy()
            else:  # hmmlearn-style: hmmlearn's start (stop 33), see start_covariance
                style = self._hmmlearn_style()
                var = start_variances(X, self.min_covar, hmmlearn=style, spherical=False)
                self._covars = np.broadcast_to(var, (Gc, M, D)).copy()
        else:
            arr = self._checked_covars("covars_init", self.covars_init, per_group_ok=True)
            shape = arr.shape[1:]
            axes = ("n_mix", "n_features", "n_features")[: len(shape)]
            self._covars = self._per_group("covars", "covars_init", arr, shape, axes)

    def _emission_sizes(self) -> dict:
        M, D = self.n_mix, self.n_features_
        cov = M * D * D if self.covariance_type == "full" else M * D
        return {"weights": M, "means": M * D, "covars": cov}

    def _free_sizes(self) -> dict:
        M, D = self.n_mix, self.n_features_
        cov = M * D * (D + 1) // 2 if self.covariance_type == "full" else M * D
        return {"weights": M - 1, "means": M * D, "covars": cov}

    def _sample_emissions(self, states, rng) -> np.ndarray:
        w, means, covars = self._plain("weights_"), self._plain("means_"), self._plain("covars_")
        cdf = np.cumsum(w, axis=1)[states]  # (n, M)
        cap = last_possible(w)[states]  # a u past a row's rounded sum: a possible component
        mix = np.minimum((cdf <= rng.random(len(states))[:, None]).sum(1), cap)
        z = rng.standard_normal((len(states), self.n_features_))
        mu = means[states, mix]
        if self.covariance_type == "diag":
            return mu + z * np.sqrt(covars[states, mix])
        chol = np.linalg.cholesky(covars[states, mix])  # (n, D, D)
        return mu + np.einsum("nij,nj->ni", chol, z)
