"""The compiled EM loop of full and tied covariance Gaussian HMMs, threads staying in it.

The diag loop (:mod:`tying.hmm.fused_em`) runs a whole EM iteration in one compiled
call while helper threads wait inside compiled code; full and tied models ran the
general loop (a pool thread woken per E-step, 0.08-0.11 ms late, then a NumPy M-step
with LAPACK calls on one thread): 1.59-1.60x on two threads at K=8, D=4, 150 x 400
(2026-12-02). Here the same machinery runs them (:mod:`tying.hmm._numba_em_full`):
the general loop's density kernel on the inverse Cholesky factors, full second
moments, the full M-step (covariances pooled per group, symmetrised, eigenvalues
floored at ``min_covar``) and the next factors, in compiled code.

Results: the E-step and the start, transition and mean updates are the general
loop's operations; the Cholesky factor, its inverse and the eigenvalue floor are
computed by hand instead of by LAPACK, so parameters and history agree with the
general loop's to rounding (1e-12 relative, tested), and are bit-identical for every
thread count. It runs where the diag loop's conditions hold and the model is an
untied ``"full"`` one, or ``"tied"`` with untied means and transitions (other ties
keep the general loop), with ``covars_weight`` a scalar or one value per state and
``K D (D + 1) / 2`` small enough for the per-state density
(``gaussian._lanes_density_pays``). A sequence
whose scaling fails hands the fit to the general loop before that M-step, as in the
diag loop; a covariance with no Cholesky factor hands it over after it (the general
loop then raises LAPACK's error, or finishes, as it would have).

Example:
    >>> import numpy as np
    >>> from tying.hmm import GaussianHMM
    >>> X = np.random.default_rng(0).normal(size=(400, 2))
    >>> a = GaussianHMM(3, "full", n_iter=5, tol=-np.inf, random_state=0, n_jobs=1).fit(X, [50] * 8)
    >>> b = GaussianHMM(3, "full", n_iter=5, tol=-np.inf, random_state=0, n_jobs=2).fit(X, [50] * 8)
    >>> bool(np.array_equal(a.covars_, b.covars_)), a.history_ == b.history_
    (True, True)
"""

from __future__ import annotations

import numpy as np

from tying.hmm.fused_em import FusedEM
from tying.hmm.validation import _broadcast

__all__ = ["FusedEMFull"]


def _fast_args(model) -> tuple | None:
    """The full M-step's fixed arguments (settings, priors and ties do not change during
    a fit), or None when this loop does not apply (see the module docstring)."""
    from tying.hmm.gaussian import _lanes_density_pays

    ties, K, D = model.ties_, model.n_components, model.n_features_
    if model.covariance_type not in ("full", "tied") or K > 128 or D > 128:
        return None
    if not _lanes_density_pays(K, D, 1 if model.covariance_type == "tied" else K):  # NumPy's
        return None
    if not (ties._untied("transitions") and ties._untied("means")):
        return None
    if model.covariance_type == "full" and not ties._untied("covars"):
        return None  # tied states keep the general loop (only "tied" shares, all of them)
    cw = model._prior("covars_weight", 1.0)
    if np.ndim(cw) > 1:
        return None
    learn = model._learn()
    flags = np.array([p in learn for p in ("startprob", "transmat", "means", "covars")])
    first = ties.firsts("covars")
    return (
        flags,
        _broadcast(model._prior("startprob_prior", 1.0), (K,)),
        _broadcast(model._prior("transmat_prior", 1.0), (K, K)),
        _broadcast(model._prior("means_weight", 0.0), (K, D)),
        _broadcast(model._prior("means_prior", 0.0), (K, D)),
        np.ascontiguousarray(_broadcast(model._prior("covars_prior", 0.0, 1e-2), (K, D, D))[first]),
        np.ascontiguousarray(_broadcast(cw, (K,))[first], dtype=np.float64),
        np.ascontiguousarray(ties.group_of["covars"], dtype=np.int64),
    )


class FusedEMFull(FusedEM):
    """One restart's EM iterations of a full or tied model in compiled code.

    Use :meth:`for_model`, then as :class:`~tying.hmm.fused_em.FusedEM`. Not public:
    :class:`~tying.hmm.GaussianHMM` uses it by itself.

    Args:
        model: the model being fitted (its parameter arrays are updated in place).
        plan: what :meth:`FusedEM._plan` made for this fit, with full second moments.
        fast: :func:`_fast_args` of the model.
    """

    def __init__(self, model, plan: dict, fast: tuple):
        kernels, K, D = self._adopt(model, plan)
        learn, sp_prior, tp_prior, w, mu0, cp, cw, gmap = fast
        self.linv, self.const = np.empty((K, D, D)), np.empty(K)
        logd = np.empty((model._covars.shape[0], D))
        self.ready = kernels.density_constants_full(
            model._covars, gmap, self.linv, self.const, logd, plan["fns"], plan["log2pi"]
        )
        self._set_args(
            (self.linv, self.const),
            (learn, sp_prior, tp_prior, w, mu0, plan["center"], model._covars, cp, cw,
             float(model.min_covar), plan["empty"], plan["log2pi"], gmap, logd,
             np.zeros((K, D))),
        )  # fmt: skip

    _PLAN_KEY = "fused_full_plan"

    @classmethod
    def for_model(cls, model, context, fast=None) -> FusedEMFull | None:
        """The compiled loop for this restart of a full or tied ``model``, or None when
        the general loop must run (see the module docstring for when). Initial
        covariances were checked positive definite; one that is not (a NaN slipped in)
        is not ``ready`` and gets the general loop's own error."""
        return super().for_model(model, context, _fast_args(model))

    @staticmethod
    def _plan(model, context, kernels) -> dict | None:
        """:meth:`FusedEM._plan` with ``(D, D)`` second moments and this loop's kernels."""
        from tying.hmm import _numba_em_full

        plan = FusedEM._plan(model, context, kernels)
        if plan is None:
            return None
        K, D, U = model.n_components, model.n_features_, len(plan["ut"])
        plan["kernels"] = _numba_em_full
        plan["sxx_u"] = np.empty((U, D, D, K))
        plan["sxx"] = np.empty((K, D, D))
        return plan
