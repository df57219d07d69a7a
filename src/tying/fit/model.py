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

How the Jacobian is taken (complex step, central differences with relative steps,
autograd) is :mod:`tying.fit.derivatives`; what a call needs and may raise (torch
loaded lazily, :class:`ModelError`) is :mod:`tying.fit.model_call`.

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
from collections.abc import Callable
from typing import Any

import numpy as np

from tying.fit.datasets import StackedData
from tying.fit.derivatives import Derivatives, fd_step
from tying.fit.model_call import (
    _WRITES_X,
    ModelError,
    NonFiniteModel,
    _agrees,
    _DtypeError,
    _is_tensor,
    _no_grad,
    _rows_agree,
    _ShapeError,
    _unmasked,
    _writes_x,
    torch,
)
from tying.fit.roles import ParameterMap

__all__ = ["BACKENDS", "ModelError", "ModelEvaluator", "fd_step"]

BACKENDS = ("auto", "numpy", "torch")
_N_SAMPLED = 8  # data sets of the most common length checked against single calls


def _columns_kept(x_shape: tuple, out_shape: tuple) -> str:
    """Advice for a model that kept x's columns: x given 2-D (a column, a DataFrame).

    ``a * x + b`` on x of shape (n, 1) returns (n, 1): the refusal named the expected
    shape but not that x's column caused it, nor the fix (stop 59).
    """
    if len(x_shape) != 2 or len(out_shape) != 2 or out_shape[0] != x_shape[0]:
        return ""
    one = x_shape[1] == 1
    return (
        f"; x has shape {x_shape} ({'one column' if one else 'a column per variable'}), and "
        f"arithmetic on x keeps its columns: read x[:, 0]"
        + (", x[:, 1], ..." if not one else "")
        + " in model_fn"
        + (
            ", or give x 1-D (x.ravel(); df['name'].to_numpy() for a one-column DataFrame)"
            if one
            else ""
        )
    )


class ModelEvaluator(Derivatives):
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
        self.nonfinite_where = ""  # the data set and point of the first (set with the theta)
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
        self._dtype_error: Exception | None = None  # integer/text values of the batched call
        if vectorized is not False:
            self.why_not_vectorized = self._check_vectorized(theta0)
            self.vectorized = not self.why_not_vectorized
            if vectorized is True and self._dtype_error is not None:
                raise self._dtype_error  # named by its dtype, not as the batched call's (stop 55)
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
        out = _unmasked(out)  # a masked value is undefined: NaN, not the value under it
        tensor = _is_tensor(out)
        if tensor:
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
        kind = getattr(out, "dtype", None)
        if isinstance(kind, np.dtype) and kind.kind in "bUSVMmiu":
            # a cast read booleans as 0/1 (a comparison returned in place of values),
            # parsed strings and counted dates in their unit, without a word (stop 52);
            # integers come from a round or cast of float64 x and parameters, flat between
            # integers: every derivative 0 or a jump, and the fit stopped where it started
            # (success=False) or short of the minimum, with advice that did not fit (stop 54)
            where = self._where(i) if i is not None else "the call on all data sets at once"
            fix = (
                ": a model rounded or cast to integers is flat between integers, so its "
                "derivatives are 0 and a fit cannot move; return the values before the round "
                + ("or .long()/.int(), as float64" if tensor else "or astype(int)")
                + ", or scale y instead"
                if kind.kind in "iu"
                else f"; return the model's values ({'torch' if tensor else 'np'}.where(cond, "
                "a, b) for a switch, not cond itself)"
            )
            raise _DtypeError(
                f"model_fn returned {'a torch tensor of ' if tensor else ''}{kind} values for "
                f"{where}, expected real numbers (one float per point of x){fix}"
            )
        arr = np.asarray(out, dtype=float)
        if i is not None:
            n = int(self.data.lengths[i])
            if arr.shape != (n,):
                # a constant (lmfit's ConstantModel) or a reduction returns one value:
                # lmfit broadcasts it against y, and the refusal named no fix (stop 55)
                one = arr.size == 1 and n > 1
                raise _ShapeError(
                    f"model_fn returned shape {arr.shape} for {self._where(i)}, expected "
                    f"({n},): one value per point of x"
                    + (
                        "; a model that does not vary with x must still return one value "
                        "per point: return "
                        + ("c + 0 * x" if self.data.xs[i].ndim == 1 else "np.full(len(x), c)")
                        if one
                        else _columns_kept(np.shape(self.data.xs[i]), arr.shape)
                    )
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
        except Exception as err:
            out, torch_error = None, f"{type(err).__name__}: {err}"
        else:
            if _is_tensor(out) and not (out.is_floating_point() or out.is_complex()):
                # an integer or boolean tensor carries no gradient by its dtype: "returned
                # Tensor with no gradient" named neither the dtype nor the fix (stop 55)
                self._as_array(out, 0)  # raises _DtypeError naming the dtype and the fix
            torch_error = (
                f"returned a {str(out.dtype).removeprefix('torch.')} tensor with no gradient "
                f"(requires_grad is False): compute it from the parameters with torch "
                f"operations, without .detach(), .item(), .numpy() or torch.tensor(parameter)"
                if _is_tensor(out)
                else f"returned {type(out).__name__}, not a tensor that depends on the parameters"
            )
        by_name = isinstance(numpy_exc, IndexError) and "only integers, slices" in str(numpy_exc)
        raise ValueError(
            f"model_fn fails on {self._where(0)} at the starting values. With torch "
            f"tensors: {torch_error}. With NumPy arrays: {numpy_error}"
            + (
                # x['t'] of a DataFrame x: its values arrive, not its labels (stop 61)
                "; if model_fn reads x by a column name: x reaches it as an array (a pandas "
                "DataFrame's values, columns in their order), so read x[:, 0], x[:, 1], ..."
                if by_name
                else ""
            )
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
        except _DtypeError as err:
            # integers or text: a call per data set returns them too, so "pass vectorized=
            # 'auto' or False" (the advice under vectorized=True) led to the same refusal
            self._dtype_error = err
            return f"{err}"
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
            raise NonFiniteModel(
                f"model_fn returned NaN/inf for {self._where(i)} {when} (first at point {j}); "
                f"check the starting values and bounds",
                bad,
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
                # which data set and point: the note named the parameters only (stop 52)
                i, j = (int(v[0]) for v in np.nonzero(~np.isfinite(out) & self.data.mask))
                self.nonfinite_where = f"{self._where(i)}, point {j}"
        return out

    def _predict_values(self, values: dict[str, np.ndarray]) -> np.ndarray:
        use_torch = self.backend == "torch"
        grad_off = torch.no_grad() if use_torch else contextlib.nullcontext()
        if self.vectorized:
            with grad_off:
                out = self._as_array(self._call_batched(self._batched_params(values)), None)
            if out.shape != self.data.y.shape:
                # checked at the start only: a shape that changed mid-fit raised NumPy's
                # "boolean index did not match" (or "too many indices" for a scalar),
                # naming no call and no shape (stop 52)
                raise _ShapeError(
                    f"model_fn returned shape {out.shape} from the call on all data sets at "
                    f"once (x of shape {self.data.y.shape}), expected {self.data.y.shape}: "
                    f"one value per point, as it returned at the starting values; make its "
                    f"output shape follow x's on every call, or pass vectorized=False"
                )
            return out
        out = np.zeros(self.data.y.shape)
        with grad_off:
            for i in range(self.data.n_datasets):
                n = int(self.data.lengths[i])
                out[i, :n] = self._as_array(
                    self._call_one(i, self._params_one(values, i, use_torch), use_torch), i
                )
        return out
