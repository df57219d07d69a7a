"""Gaussian HMM with tied means and covariances (spherical, diagonal, full, or one tied covariance).

Tie groups pool the Baum-Welch sufficient statistics (N = Σγ, Σγx, Σγxxᵀ)
before the update, so a tied group is estimated from the evidence of all its
states (claim C3). A tied covariance is evaluated with **one Cholesky per
group**, not one per state: ``covariance_type="tied"`` costs one
factorisation and one triangular solve of the data, whatever K is.

The log-density is exact however far apart the means are: the fast path
expands the quadratic form, and any row where that expansion could lose more
than ~1e-10 nats (a point hundreds of standard deviations from the centre of
the means) is recomputed from ``x - mu`` directly.

The M-step is hmmlearn's MAP update (``means_prior``, ``means_weight``,
``covars_prior``, ``covars_weight``); with the default priors it is maximum
likelihood, and hmmlearn's defaults apply when the model is built hmmlearn-style.

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-2, 1, (50, 1)), rng.normal(2, 1, (50, 1))])
    >>> m = GaussianHMM(3, ties={"means": [[1, 2]]}, random_state=0).fit(X, [60, 40])
    >>> np.array_equal(m.means_[1], m.means_[2])      # one physical mean
    True
    >>> m.n_parameters().physical < m.n_parameters().logical
    True
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, solve_triangular

from tying.hmm import compiled, param_names
from tying.hmm.base import BaseHMM, _posteriors_finite
from tying.hmm.covariance_floor import warn_if_floored
from tying.hmm.covariances import (  # noqa: F401  (gaussian.<name> as before)
    _check_covariance,
    _check_min_covar,
    _covariances_ok,
    _covars_shape,
    _floor_eigenvalues,
    _plain_variances,
    tied_type_spec,
)
from tying.hmm.fitted_array import fitted
from tying.hmm.forward_backward import (
    LaneLayout,
    _deal_rows,
    forward_backward_stats,
)
from tying.hmm.fused_em import FusedEM
from tying.hmm.fused_em_full import FusedEMFull
from tying.hmm.kmeans_start import check_rows_for_means, kmeans_centres
from tying.hmm.sequences import check_observations, check_squares
from tying.hmm.start_covariance import data_covariance, start_variances
from tying.hmm.tied_means import prior_once, weighted_means
from tying.hmm.ties import StateTies
from tying.hmm.validation import (
    _broadcast,
    _check_prior,
    _positive_int,
    _real_array,
    _shape_text,
)

__all__ = ["GaussianHMM", "kmeans_centres"]

_COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
_LOG_2PI = np.log(2 * np.pi)
_EMPTY = 1e-10  # a group whose count (posterior mass + the prior's) is below this keeps its value
# the expanded quadratic form loses about eps·(|x-c|²/σ² + |mu-c|²/σ²) nats; rows where
# that bound passes _EXACT_BELOW are recomputed from x - mu (hmmlearn's exact form)
_EXACT_BELOW = 1e-10 / (8 * np.finfo(float).eps)
_CHUNK = 1 << 20  # entries of an (n, K, D) difference array per block
# the fused E-step evaluates full covariances per state and row (K·D(D+1)/2 multiply-adds,
# lane-block vector code since stop 24); the NumPy density costs one triangular product per
# covariance group and row (BLAS) plus K·D. Measured 2026-12-02 (1 thread, 10-150 sequences
# x 400, the whole fit): with a covariance per state the lanes were 1.15-3.5x cheaper up to
# 29,000 (K=96 D=24, K=16 D=60); with shared covariances ("tied") about even from 6,500
_FUSED_FULL_MAX = 32768  # K·D(D+1)/2 for one covariance per state
_FUSED_SHARED_MAX = 6144  # the same when states share covariances (fewer groups than K)


def _lanes_density_pays(K: int, D: int, n_groups: int) -> bool:
    """Whether the lane kernels' per-state full density is the cheaper one for K states of
    D features whose covariances form ``n_groups`` groups (see ``_FUSED_FULL_MAX``)."""
    limit = _FUSED_FULL_MAX if n_groups >= K else _FUSED_SHARED_MAX
    return K * D * (D + 1) // 2 <= limit


class GaussianHMM(BaseHMM):
    """HMM with Gaussian emissions whose means and covariances can be tied across states.

    The positional order is hmmlearn's, so a hmmlearn script runs unchanged.

    Args:
        n_components: number of states K.
        covariance_type: ``"spherical"`` (one variance per state), ``"diag"``,
            ``"full"``, or ``"tied"`` (one full covariance for all states; the
            same as ``"full"`` with ``ties={"covars": "all"}``).
        min_covar: floor on variances (eigenvalues for full covariances) after
            every M-step, so a state that loses its data never yields a
            singular covariance (hmmlearn uses it only at initialisation).
        startprob_prior, transmat_prior: Dirichlet concentrations (None: 1.0).
        means_prior, means_weight: normal prior on the means (None: 0, 0).
        covars_prior, covars_weight: prior on the covariances (None: 0 and 1,
            maximum likelihood; hmmlearn-style builds get hmmlearn's 1e-2 and 1);
            ``covars_prior`` is a scale: >= 0, or positive semidefinite for full/tied.
        others: ``algorithm``, ``random_state``, ``n_iter``, ``tol``, ``verbose``,
            ``params``, ``init_params``, ``implementation``: see
            :class:`~tying.hmm.base.BaseHMM`.
        ties: tie spec over ``"means"``, ``"covars"``, ``"transitions"``, e.g.
            ``{"means": [[0, 1, 2], [3, 4]], "covars": "all"}``, or
            :func:`tying.share` rules over slots like ``"means.3"``.
        means_init: ``(K, D)`` (equal within tie groups) or ``(n_groups, D)``;
            None starts from k-means centres of ``X`` (one per tie group).
        covars_init: as ``covars_`` accepts (per type), or one row per tie group.
        **kwargs: ``startprob_init``, ``transmat_init``, ``n_init``, ``n_threads``.

    Attributes:
        means_: ``(K, D)``, assignable.
        covars_: ``(K, D, D)`` for every type (hmmlearn's convention); assign
            hmmlearn's per-type shapes: spherical ``(K,)``, diag ``(K, D)``,
            full ``(K, D, D)``, tied ``(D, D)`` (or the ``(K, D, D)`` form).
        others: ``startprob_``, ``transmat_``, ``ties_``, ``history_``, ``monitor_``,
            ``log_likelihood_``, ``n_iter_``, ``converged_``, ``n_features_``.
    """

    _emission_kinds = ("means", "covars")
    _emission_params = ("means", "covars")
    _letters = {"s": "startprob", "t": "transmat", "m": "means", "c": "covars"}
    _hmmlearn_only = BaseHMM._hmmlearn_only + (
        "means_prior",
        "means_weight",
        "covars_prior",
        "covars_weight",
    )

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior=None,
        transmat_prior=None,
        means_prior=None,
        means_weight=None,
        covars_prior=None,
        covars_weight=None,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int | None = None,
        tol: float | None = None,
        verbose: bool = False,
        params=None,
        init_params=None,
        implementation: str | None = None,
        *,
        ties=None,
        means_init: np.ndarray | None = None,
        covars_init: np.ndarray | None = None,
        **kwargs,
    ):
        super().__init__(
            n_components,
            ties=ties,
            params=params,
            init_params=init_params,
            n_iter=n_iter,
            tol=tol,
            random_state=random_state,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            implementation=implementation,
            verbose=verbose,
            **kwargs,
        )
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.means_init = means_init
        self.covars_init = covars_init

    @classmethod
    def from_params(
        cls,
        startprob,
        transmat,
        means,
        covars,
        *,
        covariance_type: str = "diag",
        ties=None,
        **kwargs,
    ) -> GaussianHMM:
        """A fitted model with the given parameters (for scoring, decoding, sampling).

        Args:
            startprob: ``(K,)``. transmat: ``(K, K)``. means: ``(K, D)`` or per group.
            covars: as ``covars_init`` in the class docstring.
            covariance_type, ties, **kwargs: as in the constructor.

        Returns:
            A GaussianHMM ready to ``score``/``predict``/``sample`` (or to
            ``fit`` further from these values).

        Raises:
            ValueError: on shapes, non-stochastic rows, non-positive-definite
                covariances, or tied states given different values.
            TypeError: for text or complex values, or a keyword that ``from_params``
                fills itself; messages name the arguments as typed.

        Example:
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> round(m.score(np.zeros((1, 1))), 6)    # log N(0; 0, 1)
            -0.918939
        """
        param_names.refuse_filled(kwargs, param_names.GAUSSIAN_FILLED)
        K = param_names.n_states(startprob)
        with param_names.typed_names(K, "startprob", "transmat", "means", "covars"):
            means = param_names.array_of_ndim("means", means, (2,), "(n_components, n_features)")
            model = cls(
                K,
                covariance_type,
                ties=ties,
                startprob_init=startprob,
                transmat_init=transmat,
                means_init=means,
                covars_init=covars,
                **kwargs,
            )
            model._check_settings()
            model.ties_ = StateTies.resolve(model._tie_spec(K), n_states=K, kinds=model.tie_kinds)
            model.n_features_ = means.shape[-1]
            model._initialise(np.zeros((1, model.n_features_)), np.random.default_rng(0))
        return model

    # ------------------------------------------------------------ attributes
    @fitted
    def means_(self) -> np.ndarray:
        """``(K, D)`` state means (a copy; tied states have equal rows); assignable."""
        self._check_set("means_", "_means")
        return self.ties_.spread("means", self._means)

    @means_.setter
    def means_(self, value) -> None:
        with self._assignment("means"):
            self._check_type()
            arr = _real_array("means_", value)
            K = self._checked_n_components()
            if arr.ndim != 2 or arr.shape[0] != K:
                want = _shape_text(("n_components", K), ("n_features", None))
                raise ValueError(f"means_ must have shape {want}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"means_ must be finite, got {arr}")
            self._check_features("means_", arr.shape[1])
            self._ensure_ties()
            groups = self._to_groups("means", "means_", arr)
            self.n_features_ = arr.shape[1]
            self._means = groups

    @fitted
    def covars_(self) -> np.ndarray:
        """``(K, D, D)`` covariance of every state, for every type (hmmlearn's convention)."""
        self._check_set("covars_", "_covars")
        cv = self.ties_.spread("covars", self._covars)
        if self._full():
            return cv
        D = self.__dict__.get("n_features_", cv.shape[1])
        var = np.broadcast_to(cv, (len(cv), D))  # the fitted states, whatever n_components says
        return var[:, :, None] * np.eye(D)[None]

    @covars_.setter
    def covars_(self, value) -> None:
        with self._assignment("covars"):
            self._check_type()
            self._checked_n_components()
            self._ensure_ties()
            self._covars = self._covars_groups("covars_", value, per_state_only=True)

    @property
    def n_features(self) -> int:
        """hmmlearn's name for ``n_features_`` (set by ``means_`` or ``fit``)."""
        if "n_features_" not in self.__dict__:
            raise AttributeError("n_features is known once means_ is assigned or fit has run")
        return self.n_features_

    @n_features.setter
    def n_features(self, value) -> None:
        value = _positive_int("n_features", value)  # 2.5 must not become 2
        have = self._means.shape[1] if "_means" in self.__dict__ else None
        if have is not None and value != have:
            raise ValueError(f"n_features={value!r} but means_ has {have} features")
        self.n_features_ = value
        self._assigned.add("n_features")  # the next fit holds X to it, as hmmlearn does

    @property
    def _covars_(self) -> np.ndarray:
        """hmmlearn's stored form: spherical ``(K,)``, diag ``(K, D)``, full ``(K, D, D)``, tied ``(D, D)``."""
        self._check_set("covars_", "_covars")
        if self.covariance_type == "tied":
            return self._covars[0].copy()
        cv = self.ties_.spread("covars", self._covars)
        return cv[:, 0] if self.covariance_type == "spherical" else cv

    # ------------------------------------------------------------- settings
    def _style_defaults(self) -> dict:
        out = super()._style_defaults()
        if out is not None and "_startprob" in self.__dict__ and self.covars_prior is None:
            out["covars_prior"] = float(self._prior("covars_prior", 0.0, 1e-2))
        return out

    def _check_type(self) -> None:
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {_COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )

    def _check_settings(self) -> None:
        super()._check_settings()
        self._check_type()
        _check_min_covar(self.min_covar)
        _check_prior("means_prior", self.means_prior, nonneg=False)
        for name in ("means_weight", "covars_prior", "covars_weight"):
            _check_prior(name, getattr(self, name), nonneg=name != "covars_prior")

    def _prior_shapes(self) -> dict:
        K, D, full = self.n_components, self.n_features_, self._full()
        kd = (K, D)
        return super()._prior_shapes() | {
            "means_prior": ("means", kd, "n_components, n_features"),
            "means_weight": ("means", kd, "n_components, n_features"),
            "covars_prior": ("covars", (K, D, D) if full else kd, "per state, as covars_"),
            "covars_weight": ("covars", (K,) if full else kd, "per state, as covars_"),
        }

    def _check_features(self, name: str, D: int) -> None:
        if "_covars" in self.__dict__ and self.covariance_type != "spherical":
            have = self._covars.shape[1]
            if have != D:
                raise ValueError(
                    f"{name} has {D} features but covars_ has {have}; assign matching "
                    f"shapes (or build a new model for a new number of features)"
                )

    def _tie_spec(self, n_states: int):
        if self.covariance_type != "tied":
            return self.ties
        return tied_type_spec(self.ties, n_states, self.tie_kinds)

    def _full(self) -> bool:
        return self.covariance_type in ("full", "tied")

    def _ties_outgrown(self, ties) -> bool:
        # covariance_type set to 'tied' after a fit under another type: the old ties hold
        # a covariance per group, and a tied covars_ read through them crashed fit
        return self.covariance_type == "tied" and ties.n_groups("covars") != 1

    def _check_X(self, X, lengths, fitting):
        if fitting:
            # the finiteness check's pass over X also sums its columns: the fit's centre
            # (_em_context takes them, for this very array, instead of a second pass)
            X, sums = check_observations(X, lengths, column_sums=True)
            if "n_features" in self._assigned and X.shape[1] != self.n_features_:
                raise ValueError(
                    f"X has {X.shape[1]} features but n_features was set to "
                    f"{self.n_features_}; give X of that many columns, or set n_features"
                )
            check_squares(X, lengths)
            self._fit_sums = (X, sums)
            self.n_features_ = X.shape[1]
            return X
        X = check_observations(X, lengths)
        if X.shape[1] != self.n_features_:
            raise ValueError(
                f"X has {X.shape[1]} features but this model has {self.n_features_} "
                f"(from fit or means_)"
            )
        check_squares(X, lengths)
        return X

    def _check_consistent(self) -> None:
        self._check_type()
        ct, cv, D = self.covariance_type, self._covars, self._means.shape[1]
        # the stored covariances must be of the declared type: a covariance_type changed
        # after fit (or after covars_ was assigned) would read them as another type
        if cv.ndim == 3:
            held = "full"
            ok = ct == "full" or (ct == "tied" and self.ties_.n_groups("covars") == 1)
        else:
            held = "spherical" if cv.shape[1] == 1 and D > 1 else "diag"
            ok = ct == held or (D == 1 and ct in ("spherical", "diag"))
        if not ok:
            raise ValueError(
                f"covariance_type is {ct!r} but covars_ holds {held!r} covariances (stored "
                f"shape {cv.shape}): covariance_type was changed after they were set; set it "
                f"back to {held!r}, assign covars_ for {ct!r}, or call fit(X, lengths)"
            )
        # spherical stores one variance per group; every other type stores D columns
        if self.covariance_type != "spherical" and self._covars.shape[1] != D:
            raise ValueError(
                f"means_ has {D} features but covars_ has {self._covars.shape[1]}; assign "
                f"matching shapes"
            )

    # ------------------------------------------------------------ covariances
    def _covars_groups(self, name: str, value, *, per_state_only: bool) -> np.ndarray:
        """Per-group compact covariances from any accepted form, validated.

        Compact storage: spherical ``(G, 1)``, diag ``(G, D)``, full/tied ``(G, D, D)``.
        """
        ct = self.covariance_type
        cv = _real_array(name, value)
        K = self.n_components
        if per_state_only:  # the feature count the checks below hold it to (None: any)
            D_want = self._means.shape[1] if "_means" in self.__dict__ else None
        else:
            D_want = self.n_features_
        # what the checks below accept, checked at once
        if ct == "diag" and _plain_variances(cv, K, D_want):
            return self._to_groups("covars", name, cv)
        G = self.ties_.n_groups("covars")
        want = _covars_shape(ct, K, D_want, None if per_state_only else G)
        ndims = {"spherical": (1, 2, 3, 4), "diag": (2, 3), "full": (3,), "tied": (2, 3)}[ct]
        if cv.ndim not in ndims or 0 in cv.shape:
            raise ValueError(
                f"{name} must have shape {want} for {ct!r} covariances, got {cv.shape}"
            )
        if not np.all(np.isfinite(cv)):
            raise ValueError(f"{name} must be finite, got {cv}")
        spherical_flat = ct == "spherical" and cv.size in (K, G) and cv.shape[0] == cv.size
        if ct in ("diag", "spherical") and cv.ndim == 3 and not spherical_flat:  # (K, D, D) form
            D = cv.shape[-1]
            off = cv * (1 - np.eye(D))
            if cv.shape[1] != D or np.any(off != 0):
                raise ValueError(
                    f"{name}: a {ct!r} covariance given as matrices must be diagonal, of "
                    f"shape (n_components, n_features, n_features); got shape {cv.shape}"
                    f"{'' if cv.shape[1] != D else ' with off-diagonal entries'}; use "
                    f"covariance_type='full' for correlated features"
                )
            cv = np.diagonal(cv, axis1=1, axis2=2).copy()
            if ct == "spherical":
                if not np.allclose(cv, cv[:, :1], rtol=1e-12, atol=0):
                    raise ValueError(
                        f"{name}: a spherical covariance has one variance per state, but the "
                        f"diagonal entries differ; use covariance_type='diag'"
                    )
                cv = cv[:, :1]
        elif ct == "spherical":
            if cv.size not in (K, G) or (cv.ndim > 1 and cv.shape[0] != cv.size):
                raise ValueError(
                    f"{name} must have shape {want} for 'spherical' covariances (one variance "
                    f"per state), got {cv.shape}"
                )
            cv = cv.reshape(-1, 1)  # hmmlearn accepts (K, 1) and the like: one value per state
        elif ct == "tied" and cv.ndim == 2:
            cv = cv[None]
        shape = {"spherical": (1,), "diag": (cv.shape[-1],)}.get(ct, cv.shape[-1:] * 2)
        if ct != "spherical" and D_want is not None and cv.shape[-1] != D_want:
            raise ValueError(
                f"{name} must have shape {want} for {ct!r} covariances, got {np.shape(value)}"
            )
        rows = (K,) if per_state_only else (K, G)
        if ct == "tied":
            rows += (1,)
        if cv.shape[1:] != shape or cv.shape[0] not in rows:
            raise ValueError(
                f"{name} must have shape {want} for {ct!r} covariances, got {np.shape(value)}"
            )
        if self._full():  # every matrix at once; the first bad one is refused by name
            bad = np.flatnonzero(~_covariances_ok(cv))
            if bad.size:
                i = int(bad[0])
                who = f"{name}[{i}]" if ct != "tied" or len(cv) > 1 else name
                _check_covariance(who, cv[i], full=True)
        else:  # one comparison for every variance, then the first bad state by name (a
            # call per state cost most of a start's checks, 2026-12-02)
            bad = np.flatnonzero((cv <= 0).any(axis=1))
            if bad.size:
                _check_covariance(f"{name}[{bad[0]}]", cv[bad[0]], full=False)
        if cv.shape[0] == K:
            return self._to_groups("covars", name, cv)
        self._check_group_order("covars", name)
        return cv.copy()

    def _variances(self) -> np.ndarray:
        """``(G, D)`` variances per covariance group (diag and spherical)."""
        return _broadcast(self._covars, (len(self._covars), self.n_features_))

    # ------------------------------------------------------------- emission
    def _log_emission(self, X: np.ndarray) -> np.ndarray:
        means = self._means[self.ties_.group_of["means"]]  # (K, D)
        center = means.mean(0)  # shift both sides: less cancellation in the expansion
        Xc, Mc = X - center, means - center  # (N, D), (K, D)
        D = X.shape[1]
        if not self._full():
            prec = 1.0 / self._variances()[self.ties_.group_of["covars"]]  # (K, D)
            const = -0.5 * (D * _LOG_2PI - np.log(prec).sum(1))  # (K,)
            sq = Xc**2  # (N, D)
            m2 = (Mc**2 * prec).sum(1)  # (K,)
            out = sq @ (-0.5 * prec).T  # (N, K); in place from here: N·K is the big array
            out += Xc @ (Mc * prec).T
            out += const - 0.5 * m2
            # rounding bound of the expansion, |x - c|²/σ² + |mu - c|²/σ², over-estimated
            # cheaply with the largest precision (an (N, D) mat-vec, not an (N, K) table)
            bound = sq @ prec.max(0) + m2.max()
            risky = np.flatnonzero(bound > _EXACT_BELOW)
            if risky.size:  # far from the centre: the direct form, as hmmlearn computes it
                for rows in _blocks(risky, len(means) * D):
                    diff = X[rows, None, :] - means[None]  # (n, K, D)
                    out[rows] = const - 0.5 * np.einsum("nkd,kd->nk", diff**2, prec)
            return out
        groups = self.ties_.groups("covars")
        out = None if len(groups) == 1 else np.empty((len(X), self.ties_.n_states))
        for g, states in enumerate(groups):
            L, _ = cho_factor(self._covars[g], lower=True, check_finite=False)  # one per group
            L = np.tril(L)
            # one D×D inverse of the triangular factor, then a mat-mul over the N rows:
            # several times cheaper than a triangular solve with N right-hand sides, and
            # rows where the rounding could matter are recomputed exactly below
            L_inv = solve_triangular(L, np.eye(D), lower=True, check_finite=False)
            Z = L_inv @ Xc.T  # (D, N)
            Zm = L_inv @ Mc[states].T  # (D, S)
            log_det = 2.0 * np.log(np.diag(L)).sum()
            z2 = np.einsum("dn,dn->n", Z, Z)
            zm2 = np.einsum("ds,ds->s", Zm, Zm)
            const = -0.5 * (D * _LOG_2PI + log_det)
            # -0.5 |z - zm|^2 = z·zm - 0.5 |z|^2 - 0.5 |zm|^2, without an (N, S, D) array
            block = Z.T @ Zm  # (N, S)
            block += (-0.5 * z2)[:, None]
            block += const - 0.5 * zm2
            risky = np.flatnonzero(z2 + zm2.max() > _EXACT_BELOW)
            for rows in _blocks(risky, len(states) * D):  # solve x - mu itself, per state
                for j, s in enumerate(states):
                    r = solve_triangular(L, (X[rows] - means[s]).T, lower=True, check_finite=False)
                    block[rows, j] = const - 0.5 * np.einsum("dn,dn->n", r, r)
            if out is None:  # one covariance for all states: the block is the answer
                return block
            out[:, states] = block
        return out

    # ------------------------------------------------------------- fused EM
    def _warn_floored(self, X, batch, name: str) -> None:
        warn_if_floored(self, X, batch, name)  # covariances held at min_covar: flagged

    def _em_context(self, X, batch):
        """What every EM iteration re-uses: the data's centre, and its lane layout.

        Inside ``fit`` (``X`` is the array ``_check_X`` checked and summed), the centre
        comes from those sums (``_column_means``'s own operations, so its bits) and the
        layout reads ``X`` itself, which the fit does not change, instead of a copy: two
        passes over ``X`` fewer (0.3-0.4 ms of a 150 x 400 fit, 2026-12-02)."""
        checked = self.__dict__.pop("_fit_sums", None)
        in_fit = checked is not None and checked[0] is X
        center = checked[1] / len(X) if in_fit else _column_means(X)
        context = {"center": center, "X": np.ascontiguousarray(X, dtype=np.float64)}
        if compiled._kernels() is not None:
            # the lanes are copied by the first E-step's threads, each unit by the thread
            # that claims it first; the compiled loop hands the copy to a helper as it
            # starts (FusedEM.__enter__, LaneLayout.start_fill): not here, where the
            # helper would only wait for the GIL, then take it from this thread mid-setup
            context["layout"] = layout = LaneLayout(
                context["X"], center, batch, n_jobs=self.n_jobs, K=self.n_components,
                covariance_type=self.covariance_type, fill=False, copy=not in_fit,
            )  # fmt: skip
            context["X"] = layout.X  # the layout's X: the E-step's check passes by identity
        return context

    def _em(self, X, batch, monitor, context, start: int = 0) -> None:
        """EM in one compiled call per iteration where nothing in it needs Python
        (:mod:`tying.hmm.fused_em`), with the general loop's bits; else the general loop."""
        fused = FusedEM.for_model(self, context, self._mstep_fast(context))
        if fused is None and self._full():  # full and tied: their own compiled loop
            fused = FusedEMFull.for_model(self, context)
        if fused is None:
            super()._em(X, batch, monitor, context, start)
            return
        # a (near-)zero transition: scaling may drop a state's mass, so the compiled
        # kernels keep a sequence's scaled result only where its factors bound what a
        # dropped state could change (kernels.kept, forward_backward.LOG_TINY); a sequence
        # they do not keep is a failed lane, and the general loop takes over from there
        if self._startprob.all() and self._transitions.all():
            self._em_fused(fused, X, batch, monitor, context, start)
            return
        # a zero start or transition probability (EM keeps it zero) can make the scaled
        # backward pass overflow for a state the chain cannot reach; the compiled loops
        # do not see the NaN counts that follow and stop moving, silently (stop 25
        # review). One E-step at the result checks it; when its counts are not finite,
        # the fit is run again from its start by the general loop, which repairs each
        # such E-step in log space (BaseHMM._log_space_posteriors)
        snap, n_hist = self._snapshot(), len(monitor.history)
        n_dec = len(monitor.decreases)
        if self._em_fused(fused, X, batch, monitor, context, start):
            return  # handed over: the general loop checked its E-steps itself
        post = self._estep(X, batch, context)
        if not np.isfinite(post.log_likelihood).all() or _posteriors_finite(post):
            return
        self._restore(snap)
        del monitor.history[n_hist:], monitor.decreases[n_dec:]
        monitor.iter = len(monitor.history)
        super()._em(X, batch, monitor, context, start)

    def _em_fused(self, fused, X, batch, monitor, context, start: int) -> bool:
        """The compiled loop, and the general loop after a handover (then True)."""
        it = start
        with fused:  # helper threads stop before anything else runs
            while it < monitor.n_iter:
                prev = monitor.history[-1] if monitor.history else np.nan
                # verbose: one iteration per call, so each line prints when it is done
                n_max = 1 if monitor.verbose else monitor.n_iter - it
                history, failed = fused.run(n_max, monitor.tol, prev)  # E- and M-steps
                for total in history:
                    monitor.report(total)
                it += len(history)
                if monitor.stopped:  # (a handover after a converged M-step: done too)
                    return False
                if failed:  # a sequence's scaling failed (or is not finite): the general
                    break  # loop from here, which recomputes it in log space or refuses it
            else:
                return False
        super()._em(X, batch, monitor, context, it)
        return True

    def _estep(self, X, batch, context):
        """Fused compiled E-step (density, forward-backward, statistics) when numba is here.

        Without the kernels this is the generic E-step (NumPy density, then
        :func:`~tying.hmm.forward_backward`), and the M-step computes the
        statistics from ``gamma``: the reference path the fused one is tested
        against.
        """
        kernels = compiled._kernels()
        if kernels is None or "layout" not in context:
            return super()._estep(X, batch, context)
        Xf = context["X"]
        return forward_backward_stats(
            self._startprob,
            self._plain("transmat_"),
            Xf,
            context["center"],
            batch,
            context["layout"],
            self._density_kernel(Xf, kernels),
            self._log_emission,
            full=self._full(),
            n_jobs=self.n_jobs,
        )

    def _density_kernel(self, X, kernels):
        """``density(unit, b, m)`` for the fused E-step: shifted log-densities of a unit.

        The exact form on the raw data (``x - mu`` per state; no expansion, so
        no cancellation however far a point lies from the means). Full
        covariances use each group's inverse Cholesky factor; where that costs
        more per row than the NumPy density (large K·D²), the NumPy density is
        computed once per iteration and only shifted per unit. Every unit has
        its rows in lanes (a few long sequences: lanes of consecutive rows).
        """
        K, D = self.n_components, X.shape[1]
        means = np.ascontiguousarray(self._means[self.ties_.group_of["means"]])  # (K, D)
        if not self._full():
            prec = np.ascontiguousarray(1.0 / self._variances()[self.ties_.group_of["covars"]])
            const = -0.5 * (D * _LOG_2PI - np.log(prec).sum(1))
            lanes, args = kernels.lanes_density_diag, (prec,)
        elif not _lanes_density_pays(K, D, len(self.ties_.groups("covars"))):
            lb = np.ascontiguousarray(self._log_emission(X))

            def shifted(u, b, m):
                if u["kind"] == "lanes":
                    kernels.lanes_shift(lb, u["start"], u["n_act"], b, m)
                else:  # rows dealt out over the lanes in turn
                    _deal_rows(lb[u["r0"] : u["r1"]], b)
                    kernels.lanes_shift_in_place(b, u["n_act"], m)

            return shifted
        else:
            # every group at once: the same LAPACK calls as one cho_factor and one
            # solve_triangular per group (the same bits), without their per-call cost,
            # which ran on the calling thread alone between E-steps
            L = np.linalg.cholesky(self._covars)  # (G, D, D)
            eye = np.broadcast_to(np.eye(D), L.shape)
            linv_g = solve_triangular(L, eye, lower=True, check_finite=False)
            logdet_g = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
            g = self.ties_.group_of["covars"]
            linv = np.ascontiguousarray(linv_g[g])  # (K, D, D)
            const = -0.5 * (D * _LOG_2PI + logdet_g[g])
            lanes, args = kernels.lanes_density_full, (linv,)

        def density(u, b, m):  # both kinds of unit have their rows in lanes
            lanes(u["XL"], u["n_act"], means, *args, const, b, m)  # rows units: dealt rows

        return density

    def _mstep(self, X, post, context=None) -> None:
        """The M-step; a diag model in which no state shares anything, after the fused
        E-step, takes one compiled call with the NumPy M-step's bits (its dozens of small
        NumPy calls ran on one thread between the threaded E-steps, 2026-12-01)."""
        fast = self._mstep_fast(context) if post.stats is not None else None
        if fast is None:
            super()._mstep(X, post, context)
            return
        learn, sp_prior, tp_prior, w, mu0, cp, cw = fast
        st = post.stats
        startprob = self._startprob.copy()  # a new array, as the NumPy M-step makes one
        arrays = (startprob, self._transitions, self._means, self._covars)
        if not all(a.dtype == np.float64 and a.flags.c_contiguous for a in arrays):
            super()._mstep(X, post, context)
            return
        compiled._kernels().mstep_diag_untied(
            learn, startprob, sp_prior, np.ascontiguousarray(post.start, dtype=np.float64),
            self._transitions, tp_prior, np.ascontiguousarray(post.xi_sum, dtype=np.float64),
            self._means, w, mu0, context["center"], st.n, st.sx, st.sxx, self._covars, cp, cw,
            float(self.min_covar), _EMPTY,
        )  # fmt: skip
        self._startprob = startprob

    def _mstep_fast(self, context):
        """The compiled M-step's fixed arguments (made on the fit's first M-step and kept in
        its ``context``: settings, ties and priors do not change during a fit), or None
        when the NumPy M-step runs (other covariance types, ties, no fused E-step)."""
        if context is None or compiled._kernels() is None:
            return None
        fast = context.get("mstep_fast")
        if fast is None:
            ties, K, D = self.ties_, self.n_components, self.n_features_
            untied = all(ties._untied(k) for k in ("transitions", "means", "covars"))
            if self.covariance_type != "diag" or not untied or K > 128:  # see _np_sum
                fast = False
            else:
                learn = self._learn()
                flags = np.array([p in learn for p in ("startprob", "transmat", "means", "covars")])
                fast = (
                    flags,
                    _broadcast(self._prior("startprob_prior", 1.0), (K,)),
                    _broadcast(self._prior("transmat_prior", 1.0), (K, K)),
                    _broadcast(self._prior("means_weight", 0.0), (K, D)),
                    _broadcast(self._prior("means_prior", 0.0), (K, D)),
                    _broadcast(self._prior("covars_prior", 0.0, 1e-2), (K, D)),
                    _broadcast(self._prior("covars_weight", 1.0), (K, D)),
                )
            context["mstep_fast"] = fast
        return fast or None

    def _emission_update(self, X, post, learn, context) -> None:
        if post.stats is None:  # the generic E-step: statistics from gamma
            self._emission_mstep(X, post.gamma, learn, context["center"])
            return
        st = post.stats
        sxx = st.sxx
        if self._full() and "covars" in learn:
            sxx = self.ties_.pool("covars", sxx)  # per covariance group
        self._update_emissions(context["center"], st.n, st.sx, sxx, learn)

    def _emission_mstep(self, X, gamma, learn, center) -> None:
        """The M-step from posteriors ``gamma`` (the generic path; also the reference).

        ``center``: the column means of ``X``, computed once per fit by ``_em_context``.
        """
        ties, K, D = self.ties_, self.n_components, X.shape[1]
        Xc = X - center  # centred statistics: no cancellation for data far from 0
        N = np.ones(len(X)) @ gamma  # (K,) soft counts; a mat-vec beats .sum(0) here
        Sx = gamma.T @ Xc  # (K, D)
        Sxx = None
        if "covars" in learn:
            if not self._full():
                Sxx = gamma.T @ (Xc**2)  # (K, D)
            else:
                # pooled Σγxxᵀ per covariance group: one matmul per group, not per state
                member = np.zeros((K, ties.n_groups("covars")))
                member[np.arange(K), ties.group_of["covars"]] = 1.0
                W = gamma @ member  # (N, G)
                # Σγ x xᵀ of every group in one mat-mul over the rows: (G, N) @ (N, D·D)
                outer = (Xc[:, :, None] * Xc[:, None, :]).reshape(len(Xc), D * D)
                Sxx = (W.T @ outer).reshape(-1, D, D)  # (G, D, D)
        self._update_emissions(center, N, Sx, Sxx, learn)

    def _update_emissions(self, center, N, Sx, Sxx, learn) -> None:
        """hmmlearn's MAP update from centred statistics.

        ``N (K,)``, ``Sx (K, D)`` per state; ``Sxx`` per state ``(K, D)`` for
        diagonal types, per covariance group ``(G, D, D)`` for full ones.
        """
        ties, K, D = self.ties_, self.n_components, Sx.shape[1]
        w = _broadcast(self._prior("means_weight", 0.0), (K, D))
        mu0 = _broadcast(self._prior("means_prior", 0.0), (K, D))
        if "means" in learn:
            first = ties.firsts("means")
            Ng, Sg = ties.pool("means", N), ties.pool("means", Sx)
            wg, pg = w[first], mu0[first] - center
            denom = wg + Ng[:, None]
            ok = np.all(denom > _EMPTY, axis=1)
            self._means[ok] = (wg[ok] * pg[ok] + Sg[ok]) / denom[ok] + center
            if self.covariance_type != "tied":  # a group over unequal covariances: see tied_means
                covs = self._covars[ties.group_of["covars"]]
                covs = covs if self._full() else np.broadcast_to(covs, (K, D))
                for g, mu in weighted_means(
                    ties.group_of["means"], N, Sx, w, mu0 - center, covs, ok
                ):
                    self._means[g] = mu + center
        if "covars" not in learn:
            return
        m = self._means[ties.group_of["means"]] - center  # (K, D), each state's (tied) mean
        md, w = m + center - mu0, prior_once(ties.group_of["means"], w)  # a tie's prior once
        Nc = ties.pool("covars", N)
        first = ties.firsts("covars")
        cw = self._prior("covars_weight", 1.0)
        # a group keeps its covariance only when the update's count (posterior mass plus
        # the prior's, covars_weight - 1 or - D) is empty: with a prior the MAP update of
        # a state no observation reaches is the prior's mode, as hmmlearn computes it
        if not self._full():
            cp = _broadcast(self._prior("covars_prior", 0.0, 1e-2), (K, D))[first]
            cw = _broadcast(cw, (K, D))[first]
            c = ties.pool("covars", w * md**2 + Sxx - 2.0 * m * Sx + N[:, None] * m**2)
            count = np.maximum(cw - 1.0, 0.0) + Nc[:, None]
            ok = np.all(count > _EMPTY, axis=1)
            denom = np.maximum(count, 1e-5)
            var = (cp + c) / denom
            if self.covariance_type == "spherical":
                var = var.mean(1, keepdims=True)
            self._covars[ok] = np.maximum(var[ok], self.min_covar)
            return
        cp = _broadcast(self._prior("covars_prior", 0.0, 1e-2), (K, D, D))[first]
        cw = _broadcast(cw, (K,))[first] if np.ndim(cw) <= 1 else np.asarray(cw)[first]
        ok = np.maximum(cw - D, 0.0) + Nc > _EMPTY
        cross = Sx[:, :, None] * m[:, None, :]  # (K, D, D): Σγx mᵀ
        corr = -cross - cross.transpose(0, 2, 1) + N[:, None, None] * m[:, :, None] * m[:, None, :]
        corr += w[:, :, None] * md[:, :, None] * md[:, None, :]  # hmmlearn's means_weight term
        corr = ties.pool("covars", corr)  # (G, D, D)
        gs = np.flatnonzero(ok)  # every group at once (the same bits as one at a time)
        S = Sxx[gs] + corr[gs] + cp[gs]
        S = 0.5 * (S + S.transpose(0, 2, 1)) / (np.maximum(cw[gs] - D, 0.0) + Nc[gs])[:, None, None]
        self._covars[gs] = _floor_eigenvalues(S, self.min_covar)

    def _check_start_rows(self, X, kept) -> None:
        if "means" not in kept and self.means_init is None:  # k-means starts the means
            check_rows_for_means(self, len(X), self.ties_.n_groups("means"), X.shape[1:])

    def _emission_init(self, X, rng, kept) -> None:
        ties = self.ties_
        D = self.n_features_
        Gm, Gc = ties.n_groups("means"), ties.n_groups("covars")
        if "means" in kept:
            means = np.asarray(kept["means"])
            if means.shape[1] != D:
                raise ValueError(_kept_features("means", means.shape[1], D, self.init_params))
            self._means = self._to_groups("means", "means_", means)
        elif self.means_init is None:
            self._means = kmeans_centres(X, Gm, rng)
        else:
            self._means = self._checked_start(
                "means_init",
                lambda: self._per_group(
                    "means", "means_init", self.means_init, (D,), ("n_features",)
                ),
            )
        if "covars" in kept:
            cv = np.asarray(kept["covars"])
            ct = self.covariance_type
            # kept from a model of another type (covariance_type changed since): refused,
            # else they would be read as this type's covariances
            # one feature: a (K, 1) array is both spherical and diag (the same model)
            held = "full" if cv.ndim == 3 else "spherical" if cv.shape[1] == 1 else "diag"
            if cv.ndim != (3 if self._full() else 2) or (ct == "spherical" and held == "diag"):
                raise ValueError(
                    f"covars_ holds {held!r} covariances (shape {cv.shape}) but "
                    f"covariance_type is {ct!r}; fit starts from them (they were assigned, or "
                    f"init_params={self.init_params!r} leaves them out): assign covars_ for "
                    f"{ct!r}, or let fit initialise them"
                )
            if self.covariance_type != "spherical" and cv.shape[1] != D:
                raise ValueError(_kept_features("covars", cv.shape[1], D, self.init_params))
            self._covars = self._to_groups("covars", "covars_", cv)
        elif self.covars_init is None:
            if self._full():
                cov = data_covariance(X, self.min_covar)
                self._covars = np.repeat(cov[None], Gc, axis=0)
            else:  # hmmlearn-style: hmmlearn's start (stop 33), see start_covariance
                spherical, style = self.covariance_type == "spherical", self._hmmlearn_style()
                var = start_variances(X, self.min_covar, hmmlearn=style, spherical=spherical)
                self._covars = np.repeat(var[None], Gc, axis=0)
        else:
            self._covars = self._checked_start(
                "covars_init",
                lambda: self._covars_groups("covars_init", self.covars_init, per_state_only=False),
            )

    def _covar_size(self, stored: bool) -> int:
        D = self.n_features_
        return {
            "spherical": 1,
            "diag": D,
            "full": D * D if stored else D * (D + 1) // 2,
            "tied": D * D if stored else D * (D + 1) // 2,
        }[self.covariance_type]

    def _emission_sizes(self) -> dict:
        return {"means": self.n_features_, "covars": self._covar_size(stored=True)}

    def _free_sizes(self) -> dict:
        return {"means": self.n_features_, "covars": self._covar_size(stored=False)}

    def _sample_emissions(self, states, rng) -> np.ndarray:
        means = self._plain("means_")
        z = rng.standard_normal((len(states), self.n_features_))
        if not self._full():
            var = self._variances()[self.ties_.group_of["covars"]]
            return means[states] + z * np.sqrt(var[states])
        chol = np.linalg.cholesky(self._plain("covars_"))  # (K, D, D)
        return means[states] + np.einsum("nij,nj->ni", chol[states], z)


def _kept_features(param: str, have: int, D: int, init_params) -> str:
    """The refusal of a start value kept for another number of features than X has."""
    return (
        f"{param}_ has {have} features but X has {D}; fit starts from it (it was assigned, "
        f"or init_params={init_params!r} leaves it out): assign m.{param}_ for {D} "
        f"features, or let fit initialise it"
    )


def _blocks(rows: np.ndarray, width: int):
    """Split row indices into blocks whose (n, width) work arrays stay small."""
    step = max(1, _CHUNK // max(width, 1))
    for i in range(0, len(rows), step):
        yield rows[i : i + step]


def _column_means(X: np.ndarray) -> np.ndarray:
    """``X.mean(0)`` as a mat-vec: NumPy's strided ``.mean(0)`` over 3 columns took
    ~25x longer (365 vs 15 µs for 30,000 rows)."""
    return (np.ones(len(X)) @ X) / len(X)
