"""Gaussian HMM with tied means and covariances (diagonal, full, or one tied covariance).

Tie groups pool the Baum-Welch sufficient statistics (N = Σγ, Σγx, Σγxxᵀ)
before the update, so a tied group is estimated from the evidence of all its
states (claim C3). A tied covariance is evaluated with **one Cholesky per
group**, not one per state: ``covariance_type="tied"`` costs one
factorisation and one triangular solve of the data, whatever K is.

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

from tying.hmm.base import BaseHMM
from tying.hmm.sequences import check_observations
from tying.hmm.ties import StateTies

__all__ = ["GaussianHMM"]

_COVARIANCE_TYPES = ("diag", "full", "tied")
_LOG_2PI = np.log(2 * np.pi)
_EMPTY = 1e-10  # a group with less posterior mass than this keeps its old value


class GaussianHMM(BaseHMM):
    """HMM with Gaussian emissions whose means and covariances can be tied across states.

    Args:
        n_components: number of states K.
        covariance_type: ``"diag"`` (per-group diagonal), ``"full"`` (per-group
            full), or ``"tied"`` (one full covariance for all states; the same
            as ``"full"`` with ``ties={"covars": "all"}``).
        ties: tie spec over ``"means"``, ``"covars"``, ``"transitions"``, e.g.
            ``{"means": [[0, 1, 2], [3, 4]], "covars": "all"}``, or
            :func:`tying.share` rules over slots like ``"means.3"``.
        means_init: ``(K, D)`` (equal within tie groups) or ``(n_groups, D)``.
        covars_init: diag ``(K, D)``/``(n_groups, D)``; full ``(K, D, D)``/
            ``(n_groups, D, D)``; tied also ``(D, D)``.
        min_covar: floor on variances (eigenvalues for full covariances) so a
            state that loses all its data never yields a singular covariance.
        **kwargs: see :class:`~tying.hmm.base.BaseHMM` (``startprob_init``,
            ``transmat_init``, ``params``, ``n_iter``, ``tol``, ``n_init``,
            ``random_state``, ``n_threads``).

    Attributes:
        means_: ``(K, D)``.
        covars_: ``(K, D)`` for diag, ``(K, D, D)`` otherwise.
        others: ``startprob_``, ``transmat_``, ``ties_``, ``history_``,
            ``log_likelihood_``, ``n_iter_``, ``converged_``.
    """

    _emission_kinds = ("means", "covars")
    _emission_params = ("means", "covars")

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        *,
        ties=None,
        means_init: np.ndarray | None = None,
        covars_init: np.ndarray | None = None,
        min_covar: float = 1e-3,
        **kwargs,
    ):
        super().__init__(n_components, ties=ties, **kwargs)
        self.covariance_type = covariance_type
        self.means_init = means_init
        self.covars_init = covars_init
        self.min_covar = min_covar

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

        Example:
            >>> m = GaussianHMM.from_params([1.0], [[1.0]], [[0.0]], [[1.0]])
            >>> round(m.score(np.zeros((1, 1))), 6)    # log N(0; 0, 1)
            -0.918939
        """
        model = cls(
            len(np.asarray(startprob)),
            covariance_type,
            ties=ties,
            startprob_init=startprob,
            transmat_init=transmat,
            means_init=means,
            covars_init=covars,
            **kwargs,
        )
        model._check_settings()
        model.ties_ = StateTies.resolve(
            model._tie_spec(), n_states=model.n_components, kinds=model.tie_kinds
        )
        model.n_features_ = np.asarray(means).shape[-1]
        model._initialise(np.zeros((1, model.n_features_)), np.random.default_rng(0))
        return model

    # ------------------------------------------------------------ attributes
    @property
    def means_(self) -> np.ndarray:
        """``(K, D)`` state means (a copy; tied states have equal rows)."""
        self._check_fitted()
        return self.ties_.spread("means", self._means)

    @property
    def covars_(self) -> np.ndarray:
        """State covariances: ``(K, D)`` variances for diag, ``(K, D, D)`` otherwise."""
        self._check_fitted()
        return self.ties_.spread("covars", self._covars)

    # ------------------------------------------------------------- settings
    def _check_settings(self) -> None:
        super()._check_settings()
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {_COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        if not (np.isfinite(self.min_covar) and self.min_covar > 0):
            raise ValueError(f"min_covar must be a positive number, got {self.min_covar!r}")

    def _tie_spec(self):
        if self.covariance_type != "tied":
            return self.ties
        spec = self.ties
        if spec is None:
            return {"covars": "all"}
        if isinstance(spec, dict):
            if spec.get("covars", "all") != "all":
                raise ValueError(
                    f"covariance_type='tied' shares one covariance among all states, but ties "
                    f"gives covars={spec['covars']!r}; use covariance_type='full' with those "
                    f"covariance groups instead"
                )
            return {**spec, "covars": "all"}
        raise ValueError(
            "covariance_type='tied' takes its ties as a dict; with tying.share rules use "
            "covariance_type='full' and a rule tying every 'covars.*' to 'covars.0'"
        )

    def _full(self) -> bool:
        return self.covariance_type in ("full", "tied")

    def _check_X(self, X, lengths, fitting):
        X = check_observations(X, lengths)
        if fitting:
            self.n_features_ = X.shape[1]
        elif X.shape[1] != self.n_features_:
            raise ValueError(
                f"X has {X.shape[1]} features but this model was fitted with {self.n_features_}"
            )
        return X

    # ------------------------------------------------------------- emission
    def _log_emission(self, X: np.ndarray) -> np.ndarray:
        means = self._means[self.ties_.group_of["means"]]  # (K, D)
        center = means.mean(0)  # shift both sides: less cancellation in the expansion
        Xc, Mc = X - center, means - center  # (N, D), (K, D)
        D = X.shape[1]
        if not self._full():
            prec = 1.0 / self._covars[self.ties_.group_of["covars"]]  # (K, D)
            const = -0.5 * (D * _LOG_2PI - np.log(prec).sum(1) + (Mc**2 * prec).sum(1))  # (K,)
            out = (Xc**2) @ (-0.5 * prec).T  # (N, K); in place from here: N·K is the big array
            out += Xc @ (Mc * prec).T
            out += const
            return out
        groups = self.ties_.groups("covars")
        out = None if len(groups) == 1 else np.empty((len(X), self.n_components))
        for g, states in enumerate(groups):
            L, _ = cho_factor(self._covars[g], lower=True, check_finite=False)  # one per group
            L = np.tril(L)
            Z = solve_triangular(L, Xc.T, lower=True, check_finite=False)  # (D, N)
            Zm = solve_triangular(L, Mc[states].T, lower=True, check_finite=False)  # (D, S)
            log_det = 2.0 * np.log(np.diag(L)).sum()
            # -0.5 |z - zm|^2 = z·zm - 0.5 |z|^2 - 0.5 |zm|^2, without an (N, S, D) array
            block = Z.T @ Zm  # (N, S)
            block += (-0.5 * np.einsum("dn,dn->n", Z, Z))[:, None]
            block += -0.5 * (D * _LOG_2PI + log_det + np.einsum("ds,ds->s", Zm, Zm))
            if out is None:  # one covariance for all states: the block is the answer
                return block
            out[:, states] = block
        return out

    def _emission_mstep(self, X, gamma, learn) -> None:
        ties = self.ties_
        center = X.mean(0)
        Xc = X - center  # centred statistics: no cancellation for data far from 0
        N = np.ones(len(X)) @ gamma  # (K,) soft counts; a mat-vec beats .sum(0) here
        Sx = gamma.T @ Xc  # (K, D)
        if "means" in learn:
            Ng, Sg = ties.pool("means", N), ties.pool("means", Sx)
            ok = Ng > _EMPTY
            self._means[ok] = Sg[ok] / Ng[ok, None] + center
        if "covars" not in learn:
            return
        m = self._means[ties.group_of["means"]] - center  # (K, D), each state's (tied) mean
        Nc = ties.pool("covars", N)
        ok = Nc > _EMPTY
        if not self._full():
            Sxx = gamma.T @ (Xc**2)  # (K, D)
            c = ties.pool("covars", Sxx - 2.0 * m * Sx + N[:, None] * m**2)
            var = c[ok] / Nc[ok, None]
            self._covars[ok] = np.maximum(var, self.min_covar)
            return
        # pooled Σγxxᵀ per covariance group: one matmul per group, not per state
        member = np.zeros((self.n_components, ties.n_groups("covars")))
        member[np.arange(self.n_components), ties.group_of["covars"]] = 1.0
        W = gamma @ member  # (N, G)
        cross = Sx[:, :, None] * m[:, None, :]  # (K, D, D): Σγx mᵀ
        corr = -cross - cross.transpose(0, 2, 1) + N[:, None, None] * m[:, :, None] * m[:, None, :]
        corr = ties.pool("covars", corr)  # (G, D, D)
        for g in np.flatnonzero(ok):
            S = (Xc * W[:, g, None]).T @ Xc + corr[g]
            S = 0.5 * (S + S.T) / Nc[g]
            self._covars[g] = _floor_eigenvalues(S, self.min_covar)

    def _emission_init(self, X, rng) -> None:
        ties = self.ties_
        D = self.n_features_
        Gm, Gc = ties.n_groups("means"), ties.n_groups("covars")
        if self.means_init is None:
            rows = rng.choice(len(X), size=Gm, replace=len(X) < Gm)
            self._means = np.array(X[rows], dtype=np.float64)
        else:
            self._means = self._per_group("means", "means_init", self.means_init, (D,))
        if self.covars_init is None:
            if self._full():
                cov = np.atleast_2d(np.cov(X.T)) if len(X) > 1 else np.eye(D)
                cov = cov + self.min_covar * np.eye(D)
                self._covars = np.repeat(cov[None], Gc, axis=0)
            else:
                var = X.var(0) if len(X) > 1 else np.ones(D)
                self._covars = np.repeat(np.maximum(var, self.min_covar)[None], Gc, axis=0)
        else:
            cv = np.asarray(self.covars_init, dtype=np.float64)
            if self.covariance_type == "tied" and cv.shape == (D, D):
                cv = cv[None]
            shape = (D, D) if self._full() else (D,)
            self._covars = self._per_group("covars", "covars_init", cv, shape)
            self._check_covars(self._covars)

    def _per_group(self, kind, name, values, shape) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        K, G = self.n_components, self.ties_.n_groups(kind)
        if arr.shape == (K,) + shape:
            return self._to_groups(kind, name, arr)
        if arr.shape == (G,) + shape:
            return arr.copy()
        raise ValueError(
            f"{name} must have shape {(K,) + shape} (one per state) or {(G,) + shape} "
            f"(one per tie group of {kind!r}), got {arr.shape}"
        )

    def _check_covars(self, cv: np.ndarray) -> None:
        if not np.all(np.isfinite(cv)):
            raise ValueError("covars_init must be finite")
        if not self._full():
            if np.any(cv <= 0):
                raise ValueError(f"covars_init: variances must be positive, got min {cv.min()}")
            return
        for g, c in enumerate(cv):
            if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12):
                raise ValueError(f"covars_init[{g}] must be symmetric")
            if np.linalg.eigvalsh(c).min() <= 0:
                raise ValueError(
                    f"covars_init[{g}] must be positive definite (smallest eigenvalue "
                    f"{np.linalg.eigvalsh(c).min():.3g})"
                )

    def _emission_sizes(self) -> dict:
        D = self.n_features_
        return {"means": D, "covars": D * D if self._full() else D}

    def _sample_emissions(self, states, rng) -> np.ndarray:
        means, covars = self.means_, self.covars_
        z = rng.standard_normal((len(states), self.n_features_))
        if not self._full():
            return means[states] + z * np.sqrt(covars[states])
        chol = np.linalg.cholesky(covars)  # (K, D, D)
        return means[states] + np.einsum("nij,nj->ni", chol[states], z)


def _floor_eigenvalues(S: np.ndarray, floor: float) -> np.ndarray:
    """The covariance nearest ``S`` with every eigenvalue at least ``floor``.

    This is also the constrained maximiser of the M-step objective, so EM stays
    monotone when the floor binds.
    """
    w, V = np.linalg.eigh(S)
    if w.min() >= floor:
        return S
    return (V * np.maximum(w, floor)) @ V.T
