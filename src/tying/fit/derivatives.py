"""The Jacobian of the model: complex step, central differences or autograd.

The exact **complex step** (one call with parameter j + i·h on copy j of the data
sets) is used wherever it is verified, once, to agree with the reference way:
central finite differences for a NumPy model, autograd for a torch one (one
forward and P+1 backward passes, P = fitted parameters per data set). It is
checked again at the solution (:meth:`Derivatives.complex_step_mismatch`).

Finite differences take a relative step ``eps^(1/3)·|v|`` per parameter
(``eps^(1/3)`` times the start value's magnitude, or 1, for a parameter at 0),
so a parameter of 2e-6 is differenced as accurately as one of 2e6. A column that
such a step leaves 0 on every point of a data set (lost in rounding under a model near
1e14, or stepped into the flat tails of a peak 1e-9 wide) is differenced again with
shorter, then longer steps.

:class:`Derivatives` is the Jacobian half of :class:`~tying.fit.model.ModelEvaluator`
(it calls the model through the evaluator's methods).

Example:
    >>> import numpy as np
    >>> from tying.fit.derivatives import fd_step
    >>> (fd_step(np.array([1.0, 0.0]), zero_scale=1e-3) / [1.0, 1e-3]).round(8).tolist()
    [6.06e-06, 6.06e-06]
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.fit.model_call import (
    ModelError,
    NonFiniteModel,
    _float64,
    _is_tensor,
    _ShapeError,
    _stacked_float,
    _unmasked,
    torch,
)

_FD_STEP = np.finfo(float).eps ** (1 / 3)  # the optimal relative step of central differences
_FD_SCALE_FLOOR = np.finfo(float).tiny / _FD_STEP  # the smallest scale with a normal step
#: ulps of rounding allowed in each model value a central difference subtracts: the part
#: of a difference that rounding can account for is no evidence against the complex step
_FD_ROUNDING_ULPS = 16.0
#: a difference column that is 0 on every point of a data set is tried again with steps
#: these times the first, in turn: shorter first (a center at 0 stepped by 6e-6 across a
#: peak 1e-9 wide sees its flat tails), then longer (a step lost in rounding of 1e14)
_LOST_STEP_FACTORS = (1e-4, 1e-8, 1e-12, 1e4, 1e8, 1e12)
# one stacked call (finite differences, complex step) while it stays this small (values):
# it saves per-call overhead on one small data set (every NIST problem is below 3,400);
# beyond, separate real calls measured faster (K=50 x 100 points: 6 ms vs 8.6 ms per fit)
_STACK_MAX_VALUES = 8_192
# the stacked screen of a torch model's first autograd Jacobian (run once per fit) may be
# larger: one call of 2P copies instead of 2P calls (a 20-parameter, 10-data-set fit
# spent 24 % of its CPU time in that check before stop 54, 5 % since)
_SCREEN_MAX_VALUES = 1 << 20


class _AutogradError(ValueError):
    """A torch model whose autograd derivative two other ways refute (a ValueError)."""


class Derivatives:
    """The Jacobian of ``model_fn``: the half of :class:`~tying.fit.model.ModelEvaluator`
    that differentiates it (a mixin: it calls the model through the evaluator).

    Raises:
        ValueError: (from :meth:`jacobian`) NaN or inf in the Jacobian at the starting
            values, naming the parameter and the data set.
        ModelError: the same met during the fit, or a model that raises.

    Example:
        >>> from tying.fit.model import ModelEvaluator
        >>> issubclass(ModelEvaluator, Derivatives)    # ev.jacobian(theta) is defined here
        True
    """

    def complex_step_mismatch(self, theta: np.ndarray) -> str:
        """Check the complex-step Jacobian at the solution against the other way.

        The complex step is verified once, on the first Jacobian; a model can be
        analytic there and not where the fit ends (a branch taken only past some
        value that calls ``abs``, ``conj`` or ``real`` on a parameter). A wrong
        Jacobian at the solution gives wrong standard errors without any other
        sign, so the fit checks again here, against autograd (torch) or central
        differences (NumPy), to the same tolerance as the first check.

        Args:
            theta: the physical parameters at the solution.

        Returns:
            "" when the complex step is not in use or agrees; else which
            parameter's column differs, and by how much.
        """
        if not (self._complex_ok and self.vectorized):
            return ""
        values = self.pmap.logical(theta)
        free = self.pmap.free_names
        fast = self._jac_complex_step(values, free)
        self._complex_ok = False  # the other way alone, for the reference
        try:
            reference = self._jac_torch(values) if self.backend == "torch" else self._jac_fd(values)
        finally:
            self._complex_ok = True
        rtol = 1e-9 if self.backend == "torch" else 1e-6
        noise = None
        if self.backend != "torch":  # what rounding can put in the differences, as at the start
            v = np.stack([values[n] for n in free], axis=1)  # (K, P)
            noise = self._fd_noise(values, *self._inside_bounds(v, fd_step(v, self._fd_zero_scale)))
        if fast is not None and _same_jacobian(fast, reference, rtol=rtol, noise=noise):
            return ""
        if fast is not None and self.backend == "torch":
            # autograd can be the wrong one (a backward wrong only where the fit ended):
            # refitting with it would trade an exact Jacobian for a wrong one
            self._check_autograd(values, free, fast, reference)
        if fast is not None and self.backend != "torch":
            # central differences are the weak witness near 0 (a step relative to 1e-16 is
            # lost in rounding): a second one, with steps no smaller than at the start
            reference = self._fd_floored(values, free)
            if _same_jacobian(fast, reference, rtol=rtol):
                return ""
            if self._one_sided_agrees(values, free, fast, rtol):
                return ""
        if fast is None:
            return "at the solution the complex-step call of model_fn failed"
        scale = np.max(np.abs(reference), axis=(0, 1))
        diff = np.max(np.abs(fast - reference), axis=(0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            # a column that agrees exactly (all zeros: 0/0) is no culprit; a NaN is one
            err = np.where(diff == 0, 0.0, np.nan_to_num(diff / scale, nan=np.inf))
        j = int(np.argmax(err))
        way = "autograd" if self.backend == "torch" else "central differences"
        return (
            f"at the solution the complex-step derivative for {free[j]!r} differs from "
            f"{way} by {err[j]:.3g} of the column's largest entry (model_fn is not analytic "
            f"there: abs, conj or real of a parameter?)"
        )

    def _one_sided_agrees(
        self, values: dict[str, np.ndarray], free: list[str], fast: np.ndarray, rtol: float
    ) -> bool:
        """Whether ``fast`` agrees with differences whose steps a bound made uneven, once
        their first-order error is extrapolated away.

        A step clipped by a bound differences to first order only: ``b**2`` on ``(0, None)``
        at ``b = 0`` reads its step ``h`` for the exact derivative 0, and the complex step,
        right there, was reported "not analytic" and dropped (stop 56's open item).
        Richardson's ``2·D(h/2) - D(h)`` cancels the term in ``h`` on those entries (exact
        for a quadratic); its rounding is 5 times that of ``D(h)``.
        """
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        h_up, h_dn = self._inside_bounds(v, fd_step(v, self._fd_zero_scale))
        uneven = h_up != h_dn  # (K, P)
        if not uneven.any():
            return False
        cols = np.flatnonzero(uneven.any(axis=0))
        try:
            with np.errstate(all="ignore"):
                d1 = self._fd_columns(values, v, h_up, h_dn, cols)
                d2 = self._fd_columns(values, v, h_up / 2, h_dn / 2, cols)
        except Exception:  # a step out of the model's domain: no witness
            return False
        ext = np.where(uneven[:, None, cols], 2 * d2 - d1, d1)  # (K, n_max, C)
        noise = 5 * self._fd_noise(values, h_up[:, cols], h_dn[:, cols])
        rest = np.setdiff1d(np.arange(len(free)), cols)
        if rest.size:
            with np.errstate(all="ignore"):
                reference = self._fd_columns(values, v, h_up, h_dn, rest)
            near = self._fd_noise(values, h_up[:, rest], h_dn[:, rest])
            if not _same_jacobian(fast[:, :, rest], reference, rtol=rtol, noise=near):
                return False
        return _same_jacobian(fast[:, :, cols], ext, rtol=rtol, noise=noise)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d model / d (free logical parameters): ``(K, n_max, P)``, P = ``len(pmap.free_names)``."""
        self.njev += 1
        values = self.pmap.logical(theta)
        try:
            jac = self._jac_torch(values) if self.backend == "torch" else self._jac_fd(values)
        except (_ShapeError, ModelError, _AutogradError):
            raise
        except Exception as err:
            raise self._failure(err, values) from err
        self._check_jacobian(jac, theta, values)
        if self.backend == "torch" and not self._complex_ok and self.njev == 1:
            self._check_autograd_alone(values, jac)  # no complex step to vouch for autograd
        return jac

    def _check_jacobian(self, jac: np.ndarray, theta: np.ndarray, values: dict) -> None:
        """Refuse a Jacobian with NaN or inf on a real point, naming the parameter.

        No solver can use one: MINPACK and our LM took NaN steps until ``max_iter`` (then
        reported the start values as "a minimum all the same", the parameter as one that
        "does not change the model"), and trf raised SciPy's bare "array must not contain
        infs or NaNs" (stop 32 review). It comes from a model not differentiable where it
        is evaluated (``sqrt(b)`` at ``b = 0``: autograd's inf, or a central difference
        that stepped to ``b < 0``), or a difference step that left the model's domain.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(jac)):  # one pass, no temporaries: the common case
                return
        bad = ~np.isfinite(jac) & self.data.mask[:, :, None]  # (K, n_max, P)
        if not bad.any():  # a sum that overflowed, or NaN on padded points only
            return
        i, point, j = (int(v[0]) for v in np.nonzero(bad))
        name = self.pmap.free_names[j]
        at_start = np.array_equal(theta, self.pmap.x0)
        shown = ", ".join(f"{n}={float(v[i]):.10g}" for n, v in values.items())
        message = (
            f"the derivative of model_fn with respect to {name!r} is {jac[i, point, j]} on "
            f"{self._where(i)} (first at point {point}), at "
            f"{'the starting values ' if at_start else ''}{shown}: model_fn is not "
            f"differentiable there (sqrt, log or a power of {name!r} at the edge of its "
            f"domain?), or a difference step left its domain; "
            f"{'start inside the domain, or ' if at_start else ''}"
            f"bound {name!r} (bounds={{{name!r}: (lower, upper)}} keeps the steps inside)"
        )
        # refused at the start like a model that gives NaN there; met mid-fit, like a
        # model that raises mid-fit
        if at_start:
            raise NonFiniteModel(message, bad.any(axis=2))
        raise ModelError(message)

    def _jac_torch(self, values: dict[str, np.ndarray]) -> np.ndarray:
        free = self.pmap.free_names
        k, n_max = self.data.y.shape
        jac = np.zeros((k, n_max, len(free)))
        if self.vectorized:
            small = len(free) * self.data.y.size <= _STACK_MAX_VALUES
            fast = None
            if small and self._complex_ok is not False:
                fast = self._jac_complex_step(values, free)
                if self._complex_ok and fast is not None:
                    return fast
            params = self._batched_params(values)
            cols = _jvp_columns(self._call_batched, params, free)
            if cols.shape != jac.shape:
                # jac[:] = cols broadcast a (1, n_max) or (n_max,) output into every row
                # without a word (stop 52)
                raise _ShapeError(
                    f"model_fn returned shape {cols.shape[:-1]} from the call on all data "
                    f"sets at once (x of shape {(k, n_max)}), expected {(k, n_max)}: one "
                    f"value per point; make its output shape follow x's on every call, or "
                    f"pass vectorized=False"
                )
            jac[:] = cols
            if self._complex_ok is None and small:
                # used from now on only if it matches autograd (to 1e-9 of each column)
                self._complex_ok = fast is not None and _same_jacobian(fast, jac, rtol=1e-9)
                if fast is not None and not self._complex_ok:
                    self._check_autograd(values, free, fast, jac)
            return jac
        for i in range(k):
            n = int(self.data.lengths[i])
            params = self._params_one(values, i, True)
            cols = _jvp_columns(lambda p, i=i: self._call_one(i, p, True), params, free)
            if cols.shape != (n, len(free)):
                raise _ShapeError(
                    f"model_fn returned shape {cols.shape[:-1]} for {self._where(i)}, "
                    f"expected ({n},): one value per point of x"
                )
            jac[i, :n] = cols
        return jac

    def _check_autograd(self, values: dict, free: list[str], fast: np.ndarray, jac: np.ndarray):
        """Refuse a torch model whose autograd disagrees with two witnesses that agree.

        When the complex step and autograd differ, the complex step was dropped and
        autograd trusted: right for a model with ``abs`` (the complex step is then wrong),
        wrong for a custom ``torch.autograd.Function`` with a wrong ``backward`` or a
        ``.detach()`` on a parameter's path. That fit converged and reported standard
        errors 2x off with ``success=True`` and no word (stop 53). Central differences
        arbitrate: where they agree with the complex step and not with autograd, autograd
        is the one that is wrong.
        """
        if getattr(self, "low_precision", ""):
            return  # float32 differences are noise at 1e-2: the fit is flagged for it anyway
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        h_up, h_dn = self._inside_bounds(v, fd_step(v, self._fd_zero_scale))
        try:
            with np.errstate(all="ignore"):
                fd = self._fd_columns(values, v, h_up, h_dn, range(len(free)))
                noise = self._fd_noise(values, h_up, h_dn)
        except Exception:
            return  # no third witness: autograd stands, as before
        if not _same_jacobian(fast, fd, rtol=1e-6, noise=noise) or _same_jacobian(
            jac, fd, rtol=1e-6, noise=noise
        ):
            return
        self._autograd_refuted(free, jac, fd, "the complex step and central differences")

    def _check_autograd_alone(self, values: dict, jac: np.ndarray) -> None:
        """Refuse autograd that central differences with two step sizes refute, on many points.

        A problem too large for the complex step, or fitted with ``vectorized=False``, had
        no check of autograd at all: a wrong ``backward`` gave wrong standard errors with
        no word (stop 53). A kink (``relu``, ``clamp``) on a data point makes the two
        disagree on that point alone, so a column is refuted only where more than
        ``max(2, 10 %)`` of a data set's points disagree with both step sizes, which agree
        with each other there.
        """
        if getattr(self, "low_precision", ""):
            return  # float32 differences are noise at 1e-2: the fit is flagged for it anyway
        free = self.pmap.free_names
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        mask = self.data.mask[:, :, None]  # (K, n_max, 1)
        allowed = np.maximum(2, 0.1 * self.data.lengths)[:, None]  # (K, 1)
        h0 = fd_step(v, self._fd_zero_scale)
        try:
            with np.errstate(all="ignore"):
                f = np.abs(self._predict_values(values))  # (K, n_max): for the rounding noise
                # the first step on every column; a point refutes autograd only where this
                # difference disagrees with it, so the second step (truncation 100x apart,
                # rounding 10x apart) is taken only on columns with more than
                # max(2, 10 %) such points in a data set: 2P model calls where autograd is
                # right, not 4P (stop 54; the decision is the same as with both on all)
                h_up, h_dn = self._inside_bounds(v, h0)
                everyone = range(len(free))
                # the screen: all 2P difference calls stacked into one call on P·2 copies
                # of the data sets where the model allows it (vectorized); a column it
                # flags is differenced again one call at a time, as before, so only those
                # calls can refute autograd (a model that mixes stacked copies cannot)
                fd0 = self._fd_columns_stacked(values, v, h_up, h_dn)
                if fd0 is not None:
                    tol0 = _fd_tolerance(fd0, mask, f, h_up, h_dn)
                    off0 = mask & ~(np.abs(jac - fd0) <= tol0)  # (K, n_max, P)
                    if not (off0.sum(axis=1) > allowed).any():
                        return
                fd0 = self._fd_columns(values, v, h_up, h_dn, everyone)
                tol0 = _fd_tolerance(fd0, mask, f, h_up, h_dn)
                off0 = mask & ~(np.abs(jac - fd0) <= tol0)  # (K, n_max, P)
                suspect = np.nonzero((off0.sum(axis=1) > allowed).any(axis=0))[0]  # (S,)
                if suspect.size == 0:
                    return
                h_up, h_dn = self._inside_bounds(v, 10.0 * h0)
                fd1 = self._fd_columns(values, v, h_up, h_dn, suspect)  # (K, n_max, S)
                tol1 = _fd_tolerance(fd1, mask, f, h_up[:, suspect], h_dn[:, suspect])
                # a point refutes autograd when both differences agree with each other
                # and not with it: noisy differences (an adaptive ODE solver inside the
                # model) disagree with each other, and refute nothing
                off = (
                    off0[:, :, suspect]
                    & ~(np.abs(jac[:, :, suspect] - fd1) <= tol1)
                    & (np.abs(fd0[:, :, suspect] - fd1) <= tol0[:, :, suspect] + tol1)
                )
        except Exception:
            return  # no witness: autograd stands, as before
        if not (off.sum(axis=1) > allowed).any():  # (K, P)
            return
        self._autograd_refuted(free, jac, fd0, "central differences with two step sizes")

    def _fd_columns_stacked(self, values, v, h_up, h_dn) -> np.ndarray | None:
        """All P central-difference columns ``(K, n_max, P)`` from calls on stacked copies
        of the data sets (2 per column, at most ``_SCREEN_MAX_VALUES`` values a call);
        None where the model is looped or a stacked call fails or returns another shape."""
        if not self.vectorized:
            return None
        k, p = v.shape
        n_max = self.data.y.shape[1]
        per_call = max(1, _SCREEN_MAX_VALUES // (2 * k * n_max))  # columns per call
        use_torch = self.backend == "torch"
        jac = np.empty((p, k, n_max))
        try:
            for start in range(0, p, per_call):
                cols = np.arange(start, min(p, start + per_call))
                table = np.empty((2 * cols.size, k, p))  # (2C, K, P): copy, data set, param
                table[:] = v
                c = np.arange(cols.size)
                table[2 * c, :, cols] += h_up[:, cols].T
                table[2 * c + 1, :, cols] -= h_dn[:, cols].T
                params = self._stacked_params(values, table)
                grad_off = torch.no_grad() if use_torch else contextlib.nullcontext()
                with grad_off, np.errstate(all="ignore"):
                    if use_torch:
                        params = {n: torch.from_numpy(t) for n, t in params.items()}
                    x = self._stacked(2 * cols.size, use_torch)  # cached: the model gets a copy
                    out = self.model_fn(x.clone() if use_torch else x.copy(), **params)
                arr = _stacked_float(out.detach().cpu() if _is_tensor(out) else out)
                if arr is None or arr.shape != (2 * cols.size * k, n_max):
                    return None
                arr = arr.reshape(cols.size, 2, k, n_max)
                width = (h_up[:, cols] + h_dn[:, cols]).T  # (C, K)
                jac[cols] = (arr[:, 0] - arr[:, 1]) / width[:, :, None]
        except Exception:
            return None
        return np.ascontiguousarray(jac.transpose(1, 2, 0))

    def _autograd_refuted(self, free: list[str], jac: np.ndarray, fd: np.ndarray, who: str):
        """Raise the error naming the parameter, data set and point where autograd is off."""
        mask = self.data.mask[:, :, None]
        scale = np.max(np.abs(np.where(mask, fd, 0.0)), axis=(0, 1))  # (P,)
        with np.errstate(invalid="ignore"):
            gap = np.where(mask, np.abs(jac - fd), 0.0)  # (K, n_max, P)
        gap = np.where(np.isnan(gap), np.inf, gap)  # autograd's NaN is a culprit too
        err = np.max(gap, axis=(0, 1)) / np.maximum(scale, 1e-300)
        j = int(np.argmax(err))
        i, point = (int(a) for a in np.unravel_index(np.argmax(gap[:, :, j]), gap.shape[:2]))
        raise _AutogradError(
            f"model_fn's autograd derivative with respect to {free[j]!r} is wrong: on "
            f"{self._where(i)} at point {point} it is {jac[i, point, j]:.10g}, where "
            f"{who} agree on {fd[i, point, j]:.10g} (off by "
            f"{err[j]:.3g} of the column's largest entry); a torch.autograd.Function with a "
            f"wrong backward, or a .detach()/.data on the path of {free[j]!r}? Fix the backward "
            f"(torch.autograd.gradcheck checks it), or write model_fn with NumPy operations "
            f"(differentiated without autograd)"
        )

    def _stacked(self, reps: int, torch_x: bool) -> Any:
        """x ``(reps·K, n_max)``: the padded x repeated ``reps`` times (cached)."""
        key = (reps, torch_x)
        if key not in self._tiled:
            x = np.tile(self.data.x_padded, (reps, 1))
            self._tiled[key] = torch.from_numpy(x) if torch_x else x
        return self._tiled[key]

    def _stacked_params(self, values: dict[str, np.ndarray], table: np.ndarray) -> dict:
        """Parameters ``(R·K, 1)`` for R stacked copies: free ones from ``table`` (R, K, P)."""
        reps, k, _ = table.shape
        free = self.pmap.free_names
        out = {n: table[:, :, j].reshape(reps * k, 1) for j, n in enumerate(free)}
        for n in self.pmap.fixed_names:
            out[n] = np.tile(values[n], reps)[:, None]
        return out

    def _jac_complex_step(self, values: dict[str, np.ndarray], free: list[str]):
        """All P columns of the Jacobian by the complex step, in one call (NumPy or torch).

        Copy j of the data sets carries parameter j + i·h: for a model built
        of analytic operations, ``Im f(p + i·h) / h`` is the derivative to
        machine precision (no difference is taken, so h can be 1e-30·|p|).
        One forward call instead of autograd's forward and P + 1 backward
        passes (3-6x cheaper on the NIST models), and exact where central
        differences are not. The first Jacobian is also computed by autograd
        (torch) or central differences (NumPy) and the complex step is kept
        only if they agree; a model with a non-analytic operation (abs, a
        comparison of parameters) raises or disagrees there, and keeps the
        other way. None when the call fails.
        """
        p = len(free)
        k, n_max = self.data.y.shape
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        scale = np.where(np.abs(v) > 0, np.abs(v), self._fd_zero_scale)
        # at least the smallest normal float: 1e-30·|v| underflowed to 0 for a parameter
        # near 1e-299, and imag / 0 warned "invalid value in divide" (stop 47)
        h = np.maximum(1e-30 * scale, np.finfo(float).tiny)  # (K, P)
        table = np.empty((p, k, p), dtype=complex)  # (copy, data set, parameter)
        table[:] = v
        ar = np.arange(p)
        table[ar, :, ar] += 1j * h.T
        params = self._stacked_params(values, table)
        use_torch = self.backend == "torch"
        try:
            grad_off = torch.no_grad() if use_torch else contextlib.nullcontext()
            with grad_off, np.errstate(all="ignore"), warnings.catch_warnings():
                # a model that casts to float drops the imaginary part (NumPy's ComplexWarning,
                # torch's UserWarning): any warning here means "not usable", never the user's
                warnings.simplefilter("error")
                if use_torch:
                    params = {n: torch.from_numpy(t) for n, t in params.items()}
                out = self.model_fn(self._stacked(p, use_torch), **params)
            if use_torch:
                if not _is_tensor(out):
                    return None
                out = out.resolve_conj().numpy()
            out = np.asarray(_unmasked(out))
            if out.shape != (p * k, n_max) or not np.iscomplexobj(out):
                return None
            cols = out.imag.reshape(p, k, n_max) / h.T[:, :, None]
        except Exception:
            return None
        return np.ascontiguousarray(cols.transpose(1, 2, 0))

    def _jac_fd(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The Jacobian of a NumPy model: complex step where it is verified, else differences.

        A small vectorised problem first tries the complex step (exact, one
        call; kept only if the first Jacobian agrees with central differences).
        Central differences are one-sided where a bound is within one step. A small vectorised problem (2P·K·n_max values at most
        ``_STACK_MAX_VALUES``) is called once on 2P stacked copies of the data
        sets (copy 2j with parameter j stepped up, copy 2j+1 stepped down)
        instead of 2P times; the first such Jacobian is checked against the
        one-call-per-step version (first and last columns), and the stacked
        call is dropped for good if they differ.
        """
        free = self.pmap.free_names
        p = len(free)
        small = 2 * p * self.data.y.size <= _STACK_MAX_VALUES
        exact = None
        if self.vectorized and small and self._complex_ok is not False:
            exact = self._jac_complex_step(values, free)
            if self._complex_ok and exact is not None:
                return exact
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        h0 = fd_step(v, self._fd_zero_scale)
        h_up, h_dn = self._inside_bounds(v, h0)
        jac = self._jac_central(values, v, h_up, h_dn, small)
        jac = self._recover_lost_columns(values, v, jac, h0, h_up + h_dn)
        if self.vectorized and small and self._complex_ok is None:
            # central differences are good to ~1e-10 relative: agreement to 1e-6 is a match,
            # beyond what rounding of the differenced values explains (stop 41: an offset
            # started at 0 under a model near 1e14 has a difference lost in rounding, a
            # column of 0; the exact complex step was refused for it, the offset never
            # moved, and the fit reported it "does not change the model")
            self._complex_ok = exact is not None and _same_jacobian(
                exact, jac, rtol=1e-6, noise=self._fd_noise(values, h_up, h_dn)
            )
        return jac

    def _recover_lost_columns(
        self,
        values: dict[str, np.ndarray],
        v: np.ndarray,
        jac: np.ndarray,
        h0: np.ndarray,
        width: np.ndarray,
    ) -> np.ndarray:
        """Difference again, with other steps, a column lost on every point of a data set.

        A column is lost when it is 0, or below the rounding of the model's size at the
        start, on every point of a data set. A parameter at 0 is stepped by ``eps^(1/3)``
        times its start's magnitude (or 1).
        Under a model near 1e14 that step of an offset is lost in rounding; across a peak
        1e-9 wide, a center stepped by 6e-6 lands in the flat tails on both sides. Either
        way the column was 0, no solver moved the parameter, and the fit came back
        success=True at its start value with a warning that it "does not change the model"
        (stop 41). Such a column is tried with the steps ``_LOST_STEP_FACTORS`` times the
        first, in turn, and kept where its differences stand above rounding: a parameter
        the model does not read stays 0. ``h0``: the first steps (``(K, P)``); ``width``:
        their ``h_up + h_dn`` inside the bounds, as the caller differenced with.
        """
        mask = self.data.mask[:, :, None]  # (K, n_max, 1)
        # below rounding of the model's size at the start (free to read), or exactly 0
        start = getattr(self, "start_model", None)  # None while __init__ runs
        start = np.zeros(self.data.y.shape) if start is None else start
        size = np.max(np.abs(np.where(self.data.mask, start, 0.0)), axis=1)  # (K,)
        width = np.maximum(width, 1e-300)  # (K, P): the first steps' width, up plus down
        floor = 2 * _FD_ROUNDING_ULPS * np.finfo(float).eps * size[:, None] / width  # (K, P)
        lost = ~np.any((np.abs(jac) > floor[:, None, :]) & mask, axis=1)  # (K, P)
        if not lost.any():
            return jac
        f = None
        jac = jac.copy()
        for factor in _LOST_STEP_FACTORS:
            columns = np.flatnonzero(lost.any(axis=0))
            if not columns.size:
                break
            h = np.where(lost, _representable(v, h0 * factor), h0)
            h_up, h_dn = self._inside_bounds(v, h)
            try:
                with np.errstate(all="ignore"):
                    cols = self._fd_columns(values, v, h_up, h_dn, columns)
                    if f is None:
                        f = np.abs(self._predict_values(values))  # (K, n_max)
            except Exception:
                continue  # this step left the model's domain: the next one may not
            width = np.maximum(h_up + h_dn, 1e-300)[:, columns]  # (K, C)
            noise = 2 * _FD_ROUNDING_ULPS * np.finfo(float).eps * f[:, :, None] / width[:, None]
            real = mask & np.isfinite(cols)
            seen = np.all(real | ~mask, axis=1) & np.any(real & (np.abs(cols) > noise), axis=1)
            ks, cs = np.nonzero(lost[:, columns] & seen)  # (data set, column) pairs found
            jac[ks, :, columns[cs]] = np.where(self.data.mask[ks], cols[ks, :, cs], 0.0)
            lost[ks, columns[cs]] = False
        return jac

    def _fd_noise(self, values: dict[str, np.ndarray], h_up, h_dn) -> np.ndarray:
        """``(K, n_max, P)`` the error rounding can put in a central difference with steps
        ``h_up``, ``h_dn`` (``(K, P)``): ``_FD_ROUNDING_ULPS`` ulps of each value, over the
        width of the step."""
        with np.errstate(all="ignore"):
            f = np.abs(self._predict_values(values))  # (K, n_max)
            width = np.maximum(h_up + h_dn, 1e-300)  # (K, P)
            noise = 2 * _FD_ROUNDING_ULPS * np.finfo(float).eps * f[:, :, None] / width[:, None]
        return np.where(np.isfinite(noise), noise, 0.0)

    def _fd_floored(self, values: dict[str, np.ndarray], free: list[str]) -> np.ndarray:
        """Central differences with steps relative to ``max(|v|, |start|)``, one column at a time."""
        v = np.stack([values[n] for n in free], axis=1)  # (K, P)
        h = _representable(v, _FD_STEP * np.maximum(np.abs(v), self._fd_zero_scale))
        return self._fd_columns(values, v, *self._inside_bounds(v, h), range(len(free)))

    def _inside_bounds(self, v: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K, P)`` up and down steps no longer than ``h`` that stay inside the bounds."""
        return np.minimum(h, self._upper - v), np.minimum(h, v - self._lower)

    def _jac_central(self, values, v, h_up, h_dn, small: bool) -> np.ndarray:
        """Central differences: one stacked call when small and verified, else 2P calls."""
        p = v.shape[1]
        if self.vectorized and small and self._stacked_ok is not False:
            stacked = self._jac_fd_stacked(values, v, h_up, h_dn)
            if self._stacked_ok:
                return stacked
            if self._stacked_ok is None and stacked is not None:
                # check once, on the first and last columns (a model that treats stacked
                # copies differently shows it in every column)
                cols = sorted({0, p - 1})
                ok = _same_jacobian(
                    stacked[:, :, cols], self._fd_columns(values, v, h_up, h_dn, cols)
                )
                self._stacked_ok = ok
                if ok:
                    return stacked
            self._stacked_ok = False
        return self._fd_columns(values, v, h_up, h_dn, range(p))

    def _fd_columns(self, values, v, h_up, h_dn, columns) -> np.ndarray:
        """Finite-difference columns ``(K, n_max, len(columns))``, two model calls each."""
        free = self.pmap.free_names
        columns = list(columns)
        jac = np.zeros((*self.data.y.shape, len(columns)))
        for c, j in enumerate(columns):
            up = dict(values)
            up[free[j]] = v[:, j] + h_up[:, j]
            dn = dict(values)
            dn[free[j]] = v[:, j] - h_dn[:, j]
            diff = self._predict_values(up) - self._predict_values(dn)  # NumPy backend
            jac[:, :, c] = diff / (h_up[:, j] + h_dn[:, j])[:, None]
        return jac

    def _jac_fd_stacked(
        self, values: dict[str, np.ndarray], v: np.ndarray, h_up: np.ndarray, h_dn: np.ndarray
    ) -> np.ndarray | None:
        k, p = v.shape
        n_max = self.data.y.shape[1]
        table = np.empty((2 * p, k, p))  # (2P, K, P): copy, data set, parameter
        table[:] = v
        ar = np.arange(p)
        table[2 * ar, :, ar] += h_up.T
        table[2 * ar + 1, :, ar] -= h_dn.T
        try:
            with np.errstate(all="ignore"):
                out = self.model_fn(
                    self._stacked(2 * p, False), **self._stacked_params(values, table)
                )
            arr = _stacked_float(out)
        except Exception:
            return None
        if arr is None or arr.shape != (2 * p * k, n_max):
            return None
        arr = arr.reshape(p, 2, k, n_max)
        width = (h_up + h_dn).T  # (P, K)
        cols = (arr[:, 0] - arr[:, 1]) / width[:, :, None]  # (P, K, n_max)
        return np.ascontiguousarray(cols.transpose(1, 2, 0))


def _fd_tolerance(fd: np.ndarray, mask: np.ndarray, f: np.ndarray, h_up, h_dn) -> np.ndarray:
    """``(K, n_max, C)`` how far autograd may sit from central differences ``fd`` (C columns,
    steps ``h_up``/``h_dn`` ``(K, C)``, ``|model|`` ``f`` ``(K, n_max)``): 1e-5 of each
    column's largest entry plus what rounding can put in the difference."""
    scale = np.max(np.abs(np.where(mask, fd, 0.0)), axis=(0, 1))  # (C,)
    width = np.maximum(h_up + h_dn, 1e-300)  # (K, C)
    noise = 2 * _FD_ROUNDING_ULPS * np.finfo(float).eps * f[:, :, None] / width[:, None]
    return 1e-5 * scale + np.where(np.isfinite(noise), noise, 0.0) + 1e-300


def _same_jacobian(
    a: np.ndarray, b: np.ndarray, rtol: float = 1e-6, noise: np.ndarray | None = None
) -> bool:
    """Two Jacobians ``(K, n, P)`` agree to ``rtol`` of each column's largest entry, plus
    ``noise`` (``(K, n, P)``: what rounding can put in ``b``'s entries) where given."""
    scale = np.max(np.abs(b), axis=(0, 1), keepdims=True)
    tol = rtol * scale + 1e-300 if noise is None else rtol * scale + 1e-300 + noise
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(a - b) <= tol) or np.array_equal(a, b, equal_nan=True))


def fd_step(v: np.ndarray, zero_scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Central-difference step for parameter values ``v``: relative, ``eps^(1/3)·|v|``.

    A step relative to the value keeps the truncation and rounding errors
    balanced at any magnitude (a floor of 1, as in ``max(|v|, 1)``, makes the
    step of a 2e-6 parameter three times the parameter). A value of exactly 0
    uses ``zero_scale`` instead of ``|v|``. The step is rounded so that
    ``v + h`` is exactly representable.

    Args:
        v: parameter values.
        zero_scale: the scale for a value of 0 (e.g. the start value's magnitude).

    Returns:
        Positive steps, the shape of ``v``.

    Example:
        >>> import numpy as np
        >>> (fd_step(np.array([2e-6, 2e6, 0.0])) / [2e-6, 2e6, 1.0]).round(8).tolist()
        [6.06e-06, 6.06e-06, 6.06e-06]
    """
    v = np.asarray(v, dtype=float)
    scale = np.where(np.abs(v) > 0, np.abs(v), zero_scale)
    # the floor keeps the step a normal float; a floor of 1e-290 stepped k = 1e-299 by
    # 6e-296, 6,000 times itself, and exp(-k·x) at x near 1e299 overflowed: a false
    # "derivative is -inf, not differentiable" refusal (stop 47)
    return _representable(v, _FD_STEP * np.maximum(scale, _FD_SCALE_FLOOR))


def _representable(v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``h`` rounded so that ``v + h`` is exactly representable (never below ``h / 2``)."""
    return np.maximum((v + h) - v, h * 0.5)


def _jvp_columns(
    fn: Callable[[dict[str, Any]], Any], params: dict[str, Any], free: list[str]
) -> np.ndarray:
    """Derivative of ``fn(params)`` along each free parameter: ``(..., P)``.

    Forward-mode products ``J·1`` by the double-backward trick: ``Jᵀu`` is
    linear in a dummy cotangent ``u``, and its gradient with respect to ``u``
    is ``J·1``. This uses plain reverse-mode autograd, which avoids the
    seconds-long first call of ``torch.func.jvp`` (it scripts its
    decompositions); ``torch.func.jvp`` is the fallback for models whose ops
    have no double backward.
    """
    leaves = {n: p.detach().clone().requires_grad_(n in free) for n, p in params.items()}
    try:
        with torch.enable_grad():
            out = fn(leaves)
            if not _is_tensor(out):
                raise TypeError(f"a torch model_fn must return a tensor, got {type(out).__name__}")
            u = torch.zeros_like(out, requires_grad=True)
            grads = torch.autograd.grad(
                out, [leaves[n] for n in free], grad_outputs=u, create_graph=True, allow_unused=True
            )
            cols = []
            for gr in grads:
                if gr is None or not gr.requires_grad:
                    cols.append(np.zeros(out.shape))
                    continue
                (col,) = torch.autograd.grad(
                    gr, u, grad_outputs=torch.ones_like(gr), retain_graph=True, allow_unused=True
                )
                cols.append(np.zeros(out.shape) if col is None else _float64(col))
        return np.stack(cols, axis=-1)
    except RuntimeError:
        pass
    names = list(params)
    primals = tuple(params[n] for n in names)

    def f(*args):
        return fn(dict(zip(names, args)))

    cols = []
    for name in free:
        tangents = tuple(
            torch.ones_like(p) if n == name else torch.zeros_like(p) for n, p in zip(names, primals)
        )
        with warnings.catch_warnings():
            # torch's first forward-mode call scripts its jvp decompositions with the
            # deprecated torch.jit.script; that warning is torch's, not the user's.
            warnings.simplefilter("ignore", DeprecationWarning)
            _, dout = torch.func.jvp(f, primals, tangents)
        cols.append(_float64(dout))
    return np.stack(cols, axis=-1)
