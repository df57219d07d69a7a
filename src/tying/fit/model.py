"""The model function: evaluated on every data set, and differentiated, as fast as it allows.

``model_fn(x, **params)`` returns the model at the points ``x`` of one data
set. It may be written with NumPy or with torch. The Jacobian is exact by
the **complex step** (one call with parameter j + i·h on copy j of the data
sets) wherever that is verified, once, to agree with the reference way:
central finite differences for a NumPy model, autograd for a torch one
(one forward and P+1 backward passes, P = fitted parameters per data set),
which is used otherwise. ``backend="auto"`` tells them apart by calling the
model once with NumPy arrays: a model that only uses arithmetic works either
way and is evaluated in NumPy, the cheaper per call.

The fast path: a model written with elementwise, broadcasting operations
can be called **once for all data sets**: ``x`` of shape ``(K, n_max)`` and
every parameter of shape ``(K, 1)``. ``vectorized="auto"`` tries that call
and checks it against per-data-set calls: one data set of every distinct
length (padding is the one thing a batched call sees that a single call does
not) and a sample of the others. When the shapes or the values disagree (a
model that reduces over x, say) it falls back to a loop over data sets, and
says why in :attr:`ModelEvaluator.why_not_vectorized`. Data sets of different
lengths are padded with their last x, so they do not prevent the fast path.
After a vectorised fit, :meth:`ModelEvaluator.loop_mismatch` compares the
batched model with per-data-set calls on every data set at the solution.

Finite differences take a relative step ``eps^(1/3)·|v|`` per parameter
(``eps^(1/3)`` times the start value's magnitude, or 1, for a parameter at 0),
so a parameter of 2e-6 is differenced as accurately as one of 2e6. A column that
such a step leaves 0 on every point of a data set (lost in rounding under a model near
1e14, or stepped into the flat tails of a peak 1e-9 wide) is differenced again with
shorter, then longer steps.

Example:
    >>> import numpy as np
    >>> from tying.fit.datasets import stack
    >>> from tying.fit.roles import ParameterMap
    >>> from tying.fit.model import ModelEvaluator
    >>> data = stack([(np.arange(4.0), np.zeros(4)), (np.arange(3.0), np.zeros(3))])
    >>> pmap = ParameterMap(["rate"], data.metadata, shared=["rate"], init={"rate": 0.0})
    >>> ev = ModelEvaluator(lambda x, rate: np.exp(-rate * x), data, pmap)
    >>> ev.backend, ev.vectorized        # np.exp rejects torch tensors: a NumPy model
    ('numpy', True)
    >>> ev.predict(pmap.x0)[1, :3].tolist()
    [1.0, 1.0, 1.0]
    >>> ev.jacobian(pmap.x0)[0, :, 0].round(6).tolist()    # d/drate exp(-rate x) = -x
    [0.0, -1.0, -2.0, -3.0]
    >>> ModelEvaluator(lambda x, rate: 1 / (1 + rate * x), data, pmap).backend
    'numpy'
    >>> ModelEvaluator(lambda x, rate: torch.exp(-rate * x), data, pmap).backend
    'torch'
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.fit.datasets import StackedData
from tying.fit.roles import ParameterMap


class _LazyTorch:
    """torch, imported on first use: a NumPy model's fit never imports it (DESIGN.md)."""

    def __getattr__(self, name: str) -> Any:
        import torch as real

        return getattr(real, name)


torch = _LazyTorch()


def _no_grad() -> contextlib.AbstractContextManager:
    """``torch.no_grad()`` when torch is loaded; nothing to switch off otherwise."""
    real = sys.modules.get("torch")
    return contextlib.nullcontext() if real is None else real.no_grad()


def _is_tensor(x: object) -> bool:
    real = sys.modules.get("torch")  # a torch tensor implies torch is imported
    return real is not None and isinstance(x, real.Tensor)


BACKENDS = ("auto", "numpy", "torch")
_FD_STEP = np.finfo(float).eps ** (1 / 3)  # the optimal relative step of central differences
_FD_SCALE_FLOOR = np.finfo(float).tiny / _FD_STEP  # the smallest scale with a normal step
#: ulps of rounding allowed in each model value a central difference subtracts: the part
#: of a difference that rounding can account for is no evidence against the complex step
_FD_ROUNDING_ULPS = 16.0
#: a difference column that is 0 on every point of a data set is tried again with steps
#: these times the first, in turn: shorter first (a center at 0 stepped by 6e-6 across a
#: peak 1e-9 wide sees its flat tails), then longer (a step lost in rounding of 1e14)
_LOST_STEP_FACTORS = (1e-4, 1e-8, 1e-12, 1e4, 1e8, 1e12)
_N_SAMPLED = 8  # data sets of the most common length checked against single calls
# one stacked call (finite differences, complex step) while it stays this small (values):
# it saves per-call overhead on one small data set (every NIST problem is below 3,400);
# beyond, separate real calls measured faster (K=50 x 100 points: 6 ms vs 8.6 ms per fit)
_STACK_MAX_VALUES = 8_192


def _rows_agree(batched: np.ndarray, ones: np.ndarray, mask: np.ndarray, rtol: float):
    """Per row (data set): whether the batched values match the single-call values
    ``ones`` where ``mask`` holds, to ``rtol``, with an absolute floor of ``rtol`` times
    the row's largest finite single-call value."""
    finite = np.where(np.isfinite(ones) & mask, np.abs(ones), 0.0)
    atol = rtol * finite.max(axis=-1, keepdims=True) + 1e-300
    with np.errstate(invalid="ignore"):
        close = np.isclose(batched, ones, rtol=rtol, atol=atol, equal_nan=True)
    return (close | ~mask).all(axis=-1)


def _agrees(batched: np.ndarray, one: np.ndarray, rtol: float) -> bool:
    """Whether a data set's batched values match its single-call values ``one``, to ``rtol``."""
    return bool(_rows_agree(batched, one, np.ones(one.shape, dtype=bool), rtol))


#: the x model_fn gets is read-only: a model that writes into it would change the data
_WRITES_X = (
    "model_fn writes into its x argument ({}); x is read-only so that no call can change "
    "the data (an in-place x -= c changed the caller's array and every later call's x); "
    "compute on a new array: x = x - c, or x = x.copy() first"
)


def _writes_x(err: Exception) -> bool:
    return isinstance(err, ValueError) and "read-only" in str(err)


class ModelError(RuntimeError):
    """``model_fn`` raised during a fit; the message names the data set and the parameter values."""


class _ShapeError(ValueError):
    """A model output of the wrong shape or kind (already names the data set)."""


class ModelEvaluator:
    """Evaluates ``model_fn`` on all data sets and takes its Jacobian.

    Args:
        model_fn: ``model_fn(x, **params)``, NumPy or torch.
        data: the stacked data sets.
        pmap: the parameter map (gives each data set's logical parameters).
        backend: ``"auto"``, ``"numpy"`` (finite differences) or ``"torch"`` (autograd).
        vectorized: ``"auto"``, True (require the all-data-sets call) or False (loop).

    Raises:
        ValueError: an unknown backend; a model that fails on a data set, returns
            the wrong shape or NaN/inf at the starting values (naming the data set);
            ``vectorized=True`` when the all-data-sets call does not match.
        ModelError: (from :meth:`predict` and :meth:`jacobian`) a model that
            raises during the fit, naming the data set and the parameter values.
    """

    def __init__(
        self,
        model_fn: Callable[..., Any],
        data: StackedData,
        pmap: ParameterMap,
        backend: str = "auto",
        vectorized: bool | str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if vectorized not in ("auto", True, False):
            raise ValueError(f"vectorized must be 'auto', True or False, got {vectorized!r}")
        self.model_fn = model_fn
        self.data = data
        self.pmap = pmap
        self.nfev = 0
        self.njev = 0
        # trial points where model_fn gave NaN or inf (the solvers treat them as a wall)
        self.n_nonfinite = 0
        self.nonfinite_theta: np.ndarray | None = None
        free = [pmap.index[0, j] for j in range(len(pmap.free_names))]
        self._lower = pmap.lower[free]  # (P,) bounds of each free logical parameter
        self._upper = pmap.upper[free]
        # (K, P) finite-difference scale of a parameter whose value is exactly 0:
        # the magnitude of its start value, or 1 when it starts at 0 too
        start = np.abs(pmap.x0[pmap.index])
        self._fd_zero_scale = np.where(start > 0, start, 1.0)
        self._xt = None
        self._tiled: dict[tuple[int, bool], Any] = {}
        # whether one stacked call gives the whole Jacobian (None: not yet checked)
        self._stacked_ok: bool | None = None
        # whether the complex step gives a torch model's Jacobian (None: not yet checked)
        self._complex_ok: bool | None = None
        self.why_not_complex_step = ""
        theta0 = pmap.x0
        self.backend = self._detect_backend(theta0) if backend == "auto" else backend
        if self.backend == "torch":
            # copies: torch cannot share a read-only array (see ``check_x_intact``)
            self._xt = [torch.tensor(x, dtype=torch.float64) for x in data.xs]
        self.why_not_vectorized = ""
        self.vectorized = False
        if vectorized is not False:
            self.why_not_vectorized = self._check_vectorized(theta0)
            self.vectorized = not self.why_not_vectorized
            if vectorized is True and not self.vectorized:
                raise ValueError(
                    f"vectorized=True, but model_fn cannot be evaluated on all data sets at "
                    f"once: {self.why_not_vectorized}; pass vectorized='auto' or False"
                )
        # the dtype of model_fn's values when below float64 ("" otherwise): set by _as_array
        self.low_precision = ""
        start = self.predict(theta0)
        self._check_finite(start, "at the starting values")
        self.start_model = start  # (K, n_max) model values at the starting values

    # -- calling the model ----------------------------------------------------

    def _where(self, i: int) -> str:
        return f"dataset {self.data.names[i]!r} (index {i})"

    def _call_one(self, i: int, params: dict[str, Any], torch_inputs: bool) -> Any:
        x = self._xt[i] if torch_inputs and self._xt is not None else self.data.xs[i]
        if torch_inputs and not _is_tensor(x):
            x = torch.tensor(x, dtype=torch.float64)
        with np.errstate(all="ignore"):  # non-finite values are checked, not warned about
            return self.model_fn(x, **params)

    def _params_one(self, values: dict[str, np.ndarray], i: int, torch_inputs: bool) -> dict:
        if torch_inputs:
            return {n: torch.tensor(float(v[i]), dtype=torch.float64) for n, v in values.items()}
        return {n: float(v[i]) for n, v in values.items()}

    def _as_array(self, out: Any, i: int | None) -> np.ndarray:
        low = ""
        if _is_tensor(out):
            out = out.detach().cpu()
            if out.dtype == torch.bfloat16:  # NumPy has no bfloat16
                low, out = "bfloat16", out.float()
            out = out.numpy()
        kind = getattr(out, "dtype", None)
        if not low and isinstance(kind, np.dtype) and kind.kind in "fc":
            low = kind.name if kind.itemsize < 8 * (1 + (kind.kind == "c")) else ""
        if low:
            # float32/float16 values: the fit, its derivatives and its errors carry their
            # precision, not float64's (stop 34: NIST Hahn1 in float32 read values 60 %
            # off and standard errors 80 % off with success=True and no word)
            self.low_precision = low
        if np.iscomplexobj(out):
            # at real parameters a complex value is a model outside its real domain
            # (np.emath.sqrt of a negative): casting dropped the imaginary part with only a
            # ComplexWarning, and the fit "converged" on the real parts (stop 18)
            imag = np.imag(out)
            if np.any(imag != 0):
                row = (
                    0
                    if i is not None or np.ndim(imag) < 2
                    else int(np.flatnonzero(np.any(imag != 0, axis=-1))[0])
                )
                where = self._where(i if i is not None else row)
                ratio = float(np.max(np.abs(imag)) / max(float(np.max(np.abs(out))), 1e-300))
                # an FFT convolution leaves 1e-17 of imaginary rounding: that model is real,
                # and the advice about a real domain misled it (stop 39)
                rounding = (
                    f" (max |imag| / max |value| = {ratio:.1e}: rounding, as np.fft leaves; "
                    f"return the real part, np.fft.ifft(...).real or np.fft.irfft)"
                    if ratio < 1e-12
                    else ""
                )
                raise _ShapeError(
                    f"model_fn returned complex values with a non-zero imaginary part for "
                    f"{where} at real parameters{rounding}; a fit needs real model values: "
                    f"keep the model in its real domain (bounds=, np.sqrt instead of "
                    f"np.emath.sqrt); for complex data, fit z.real and z.imag as two data "
                    f"sets (see the error for a complex y)"
                )
            out = np.real(out)
        arr = np.asarray(out, dtype=float)
        if i is not None:
            n = int(self.data.lengths[i])
            if arr.shape != (n,):
                raise _ShapeError(
                    f"model_fn returned shape {arr.shape} for {self._where(i)}, expected "
                    f"({n},): one value per point of x"
                )
        return arr

    def _detect_backend(self, theta: np.ndarray) -> str:
        """ "numpy" for a model that computes with NumPy arrays, else "torch".

        NumPy is tried first: a model written with NumPy (or with plain
        arithmetic, which works either way) is evaluated in NumPy, cheaper per
        call, and still gets exact derivatives by the complex step where its
        operations allow (see :meth:`_jac_fd`). A model written with torch
        rejects NumPy arrays (or returns a tensor) and gets autograd.
        """
        values = self.pmap.logical(theta)
        numpy_exc: Exception | None = None
        try:
            out = self._call_one(0, self._params_one(values, 0, False), torch_inputs=False)
            if not _is_tensor(out):
                return "numpy"
            numpy_error = "returned a torch tensor"
        except Exception as err:  # a torch model rejects NumPy arrays: try torch next
            if _writes_x(err):
                why = _WRITES_X.format(f"{type(err).__name__}: {err}")
                raise ValueError(f"{self._where(0)}: {why}") from err
            numpy_error = f"{type(err).__name__}: {err}"
            numpy_exc = err
        params = {
            n: torch.tensor(float(v[0]), dtype=torch.float64, requires_grad=True)
            for n, v in values.items()
        }
        try:
            out = self._call_one(0, params, torch_inputs=True)
            if _is_tensor(out) and out.requires_grad:
                return "torch"
            torch_error = f"returned {type(out).__name__} with no gradient"
        except Exception as err:
            torch_error = f"{type(err).__name__}: {err}"
        raise ValueError(
            f"model_fn fails on {self._where(0)} at the starting values. With torch "
            f"tensors: {torch_error}. With NumPy arrays: {numpy_error}"
        ) from numpy_exc

    def _batched_params(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        # copies, as lmfit passes floats: a view of the fixed values (or of an array that
        # the finite-difference calls share) let a model that updates a parameter in place
        # (c -= 1.0) shift it for every later call: fit, Jacobian and reported fixed value
        # silently wrong (stop 39)
        if self.backend == "torch":
            return {n: torch.from_numpy(np.array(v)[:, None]) for n, v in values.items()}
        return {n: np.array(v)[:, None] for n, v in values.items()}

    def _call_batched(self, params: dict[str, Any]) -> Any:
        x = self.data.x_padded
        if self.backend == "torch":
            if getattr(self, "_xpad_t", None) is None:
                self._xpad_t = torch.tensor(x)  # a copy: x_padded is read-only
            x = self._xpad_t
        with np.errstate(all="ignore"):
            return self.model_fn(x, **params)  # (K, n_max)

    def _check_vectorized(self, theta: np.ndarray) -> str:
        """Why the all-data-sets call cannot be used ("" when it can)."""
        if self.data.x_padded is None:
            return "some x is not 1-D"
        values = self.pmap.logical(theta)
        try:
            out = self._call_batched(self._batched_params(values))
            batched = self._as_array(out, None)
        except Exception as err:
            return f"the call with x of shape (K, n) and parameters of shape (K, 1) raised {type(err).__name__}: {err}"
        shape = self.data.y.shape
        if batched.shape != shape:
            return f"it returned shape {batched.shape} for x of shape {shape}"
        for i in self._checked_datasets():
            n = int(self.data.lengths[i])
            if not _agrees(batched[i, :n], self._call_alone(values, i), rtol=1e-9):
                return f"its values for {self._where(i)} differ from a call on that data set alone"
        return ""

    def _checked_datasets(self) -> list[int]:
        """The data sets whose batched values are compared with single calls.

        Every padded one (shorter than the longest: a batched call sees padding
        only there, and a model that reduces over x, a row mean say, differs
        there), plus evenly spaced samples of the rest.
        """
        lengths = self.data.lengths
        k = len(lengths)
        padded = np.flatnonzero(lengths < lengths.max())
        sample = np.linspace(0, k - 1, min(k, _N_SAMPLED)).astype(int)
        return sorted(set(padded.tolist()) | set(sample.tolist()))

    def _call_alone(self, values: dict[str, np.ndarray], i: int) -> np.ndarray:
        """``model_fn`` on data set ``i`` alone: its ``(lengths[i],)`` values, no autograd."""
        use_torch = self.backend == "torch"
        with _no_grad():
            return self._as_array(
                self._call_one(i, self._params_one(values, i, use_torch), use_torch), i
            )

    def x_changed(self) -> str:
        """Where ``model_fn`` changed its x in place, or "" (checked once per fit).

        The NumPy x it gets is read-only (an in-place ``x -= c`` raises); torch cannot hold
        a read-only tensor, so the cached torch copies (and the tiled x of the complex
        step) are compared with the data here: a model that shifts its x in place made
        every later call read a shifted x, and the fit was of other data (stop 35 review).
        """
        seen = [(i, t, self.data.xs[i]) for i, t in enumerate(self._xt or [])]
        if getattr(self, "_xpad_t", None) is not None:
            seen += [(None, self._xpad_t, self.data.x_padded)]
        for (reps, _), t in self._tiled.items():
            seen += [(None, t, np.tile(self.data.x_padded, (reps, 1)))]
        for i, got, want in seen:
            got = got.detach().cpu().numpy() if _is_tensor(got) else np.asarray(got)
            if np.array_equal(got, want):
                continue
            at = tuple(int(v) for v in np.argwhere(got != want)[0])
            if i is None:  # a padded or tiled (R·K, n_max) x: row r is data set r mod K
                i, point = at[0] % self.data.n_datasets, at[1]
            else:
                point = at[0]
            return (
                f"model_fn changed its x argument in place ({self._where(i)}, point {point}: "
                f"x is {float(want[at]):.6g}, a call left {float(got[at]):.6g}), so every "
                f"later call read "
                f"another x and the fit is of other data; compute on a new array "
                f"(x = x - c, not x -= c, or x = x.clone() in torch)"
            )
        return ""

    def loop_mismatch(self, theta: np.ndarray, batched: np.ndarray) -> str:
        """Compare a batched model ``(K, n_max)`` with per-data-set calls.

        Every data set is compared (one call each, once per fit): a model can agree
        at the start and not where the fit ends, and it can differ on a data set of
        the common length that the check before the fit did not sample (a model
        written for one data set that reduces over x, ``x.max()`` say, sees every
        data set's x in the batched call: stop 30 review).

        Args:
            theta: the physical parameters ``batched`` was computed at.
            batched: the all-data-sets model values.

        Returns:
            "" when they agree (to 1e-7 relative), else which data set differs
            and its χ² both ways.
        """
        values = self.pmap.logical(theta)
        data = self.data
        # every single call first, then one comparison of all rows (_rows_agree: np.allclose
        # per data set was two thirds of this check at K = 1,000)
        ones = np.zeros_like(batched)
        for i in range(data.n_datasets):
            ones[i, : int(data.lengths[i])] = self._call_alone(values, i)
        for i in np.flatnonzero(~_rows_agree(batched, ones, data.mask, 1e-7))[:1].tolist():
            n = int(data.lengths[i])
            one = ones[i, :n]
            w, y = data.weight[i, :n], data.y[i, :n]
            chi2_b = float(np.sum(((batched[i, :n] - y) * w) ** 2))
            chi2_l = float(np.sum(((one - y) * w) ** 2))
            return (
                f"at the solution the all-data-sets call gives {self._where(i)} chi2 "
                f"{chi2_b:.6g}, a call on that data set alone {chi2_l:.6g}"
            )
        return ""

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
        if fast is not None and self.backend != "torch":
            # central differences are the weak witness near 0 (a step relative to 1e-16 is
            # lost in rounding): a second one, with steps no smaller than at the start
            reference = self._fd_floored(values, free)
            if _same_jacobian(fast, reference, rtol=rtol):
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

    def _failure(self, err: Exception, values: dict[str, np.ndarray]) -> ModelError:
        """A ModelError naming the data set on which ``model_fn`` raises, and its parameters."""
        use_torch = self.backend == "torch"
        culprit = None
        for i in range(self.data.n_datasets):
            try:
                with _no_grad():
                    self._call_one(i, self._params_one(values, i, use_torch), use_torch)
            except Exception as single:
                culprit, err = i, single
                break
        if culprit is None:
            where, culprit = "the call on all data sets at once (each data set alone works)", 0
        else:
            where = self._where(culprit)
        shown = ", ".join(f"{n}={float(v[culprit]):.10g}" for n, v in values.items())
        if _writes_x(err):
            return ModelError(f"{where}: " + _WRITES_X.format(f"{type(err).__name__}: {err}"))
        return ModelError(
            f"model_fn raised {type(err).__name__}: {err} during the fit, on {where}, at "
            f"{shown}; make model_fn defined wherever the fit may go, or keep it there "
            f"with bounds="
        )

    def _check_finite(self, values: np.ndarray, when: str) -> None:
        bad = ~np.isfinite(values) & self.data.mask
        if bad.any():
            i, j = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(
                f"model_fn returned NaN/inf for {self._where(i)} {when} (first at point {j}); "
                f"check the starting values and bounds"
            )

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Model values ``(K, n_max)`` at the physical parameters ``theta``.

        Raises:
            ValueError: a model returning the wrong shape for a data set.
        """
        self.nfev += 1
        values = self.pmap.logical(theta)
        try:
            out = self._predict_values(values)
        except (_ShapeError, ModelError):
            raise
        except Exception as err:
            raise self._failure(err, values) from err
        if not np.isfinite(out[self.data.mask]).all():  # counted: the fit reports it
            self.n_nonfinite += 1
            if self.nonfinite_theta is None:
                self.nonfinite_theta = np.array(theta, dtype=np.float64)
        return out

    def _predict_values(self, values: dict[str, np.ndarray]) -> np.ndarray:
        use_torch = self.backend == "torch"
        grad_off = torch.no_grad() if use_torch else contextlib.nullcontext()
        if self.vectorized:
            with grad_off:
                return self._as_array(self._call_batched(self._batched_params(values)), None)
        out = np.zeros(self.data.y.shape)
        with grad_off:
            for i in range(self.data.n_datasets):
                n = int(self.data.lengths[i])
                out[i, :n] = self._as_array(
                    self._call_one(i, self._params_one(values, i, use_torch), use_torch), i
                )
        return out

    # -- the Jacobian ---------------------------------------------------------

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d model / d (free logical parameters): ``(K, n_max, P)``, P = ``len(pmap.free_names)``."""
        self.njev += 1
        values = self.pmap.logical(theta)
        try:
            jac = self._jac_torch(values) if self.backend == "torch" else self._jac_fd(values)
        except (_ShapeError, ModelError):
            raise
        except Exception as err:
            raise self._failure(err, values) from err
        self._check_jacobian(jac, theta, values)
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
        raise (ValueError if at_start else ModelError)(message)

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
            jac[:] = _jvp_columns(self._call_batched, params, free)
            if self._complex_ok is None and small:
                # used from now on only if it matches autograd (to 1e-9 of each column)
                self._complex_ok = fast is not None and _same_jacobian(fast, jac, rtol=1e-9)
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
            out = np.asarray(out)
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


def _stacked_float(out: Any) -> np.ndarray | None:
    """A stacked call's values as float64; None where an imaginary part is not 0 (the
    per-column calls refuse it by name). Stop 51: a cast warned "discards the imaginary
    part" for a complex-typed real model, and took the real part of any other."""
    if np.iscomplexobj(out):
        if np.any(np.imag(out) != 0):
            return None
        out = np.real(out)
    return np.asarray(out, dtype=float)


def _float64(t: Any) -> np.ndarray:
    """A tensor as a NumPy float64 array (NumPy has no bfloat16; float64 is not copied)."""
    return t.detach().to(torch.float64).numpy()


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
