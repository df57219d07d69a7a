"""Calling ``model_fn``: torch loaded lazily, what a call may raise, how its values compare.

The pieces :class:`~tying.fit.model.ModelEvaluator` (calling the model) and its
Jacobian (:mod:`tying.fit.derivatives`) share: torch is imported on first use, so
a NumPy model's fit never imports it (DESIGN.md); the errors a call raises;
comparisons of a batched call's values with per-data-set calls.

Example:
    >>> import numpy as np
    >>> from tying.fit.model_call import _agrees
    >>> _agrees(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-12]), rtol=1e-9)
    True
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np


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


class NonFiniteModel(ValueError):
    """``model_fn`` or its derivative is NaN/inf at the starting values.

    ``bad`` is the ``(K, n_max)`` mask of those points. A prediction at new x (:mod:`tying.fit.uncertainty`) reads them to name
    the x where the model or its derivative is undefined: "check the starting values and
    bounds" / "start inside the domain" was its advice there, with the fitted values as
    the "starting values" (stop 58).
    """

    def __init__(self, message: str, bad: np.ndarray):
        super().__init__(message)
        self.bad = bad


class _ShapeError(ValueError):
    """A model output of the wrong shape or kind (already names the data set)."""


class _DtypeError(_ShapeError):
    """Model values of a dtype no call shape can fix (integers, booleans, text, dates)."""


def _unmasked(out: Any) -> Any:
    """``out`` with a masked array's masked values as NaN (what the model leaves undefined).

    ``np.asarray`` reads the values *under* the mask: ``np.ma.log(b * x)`` keeps its
    input ``b * x`` there, and the fit took those as model values, with no error (stop 52).
    As NaN they are refused at the start, naming the point, and a wall during the fit.

    Example:
        >>> _unmasked(np.ma.log(np.array([-1.0, 1.0]))).tolist()
        [nan, 0.0]
    """
    if not isinstance(out, np.ma.MaskedArray):
        return out
    data = np.ma.getdata(out)
    mask = np.ma.getmaskarray(out)
    if not mask.any():
        return data
    data = np.array(data, dtype=np.result_type(data.dtype, np.float64))
    data[mask] = np.nan
    return data


def _stacked_float(out: Any) -> np.ndarray | None:
    """A stacked call's values as float64; None where an imaginary part is not 0 (the
    per-column calls refuse it by name). Stop 51: a cast warned "discards the imaginary
    part" for a complex-typed real model, and took the real part of any other."""
    out = _unmasked(out)
    if np.iscomplexobj(out):
        if np.any(np.imag(out) != 0):
            return None
        out = np.real(out)
    return np.asarray(out, dtype=float)


def _float64(t: Any) -> np.ndarray:
    """A tensor as a NumPy float64 array (NumPy has no bfloat16; float64 is not copied)."""
    return t.detach().to(torch.float64).numpy()
