"""X given as a pandas DataFrame of nullable dtypes (``Float64``, ``Int64``): read as numbers.

``np.asarray`` reads a DataFrame of pandas' nullable (extension) numeric dtypes as
Python objects, while it reads one such column (a Series) as float64 or int64, and
hmmlearn (through scikit-learn's ``check_array``) reads both as numbers. Such a frame
was refused as "got dtype object" (stop 61 left it); :func:`as_array` reads it as its
columns read, a missing value (``pd.NA``) as NaN, which the finiteness check then
names by sequence and position. Text and object columns keep their refusal (they may
hold strings that a cast would parse). pandas is never imported here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_array", "is_missing"]

_INT64_MAX = np.iinfo(np.int64).max


def as_array(X: object, arr: np.ndarray | None = None) -> np.ndarray:
    """``np.asarray(X)``, with a DataFrame of numeric nullable dtypes read as numbers.

    Args:
        X: the observations as given.
        arr: ``np.asarray(X)`` when the caller has it (the models call this only for
            an object array, so plain numeric ``X`` costs nothing more).

    Returns:
        ``np.asarray(X)``; for a DataFrame whose columns are all numeric (nullable
        ``Int*``/``UInt*``/``Float*`` or NumPy numbers, at least one nullable), the
        int64 array of an all-integer frame without missing values, else the float64
        array with ``pd.NA`` as NaN (as ``np.asarray`` reads one such column).

    Example:
        >>> as_array([[0.5], [1.0]]).dtype
        dtype('float64')
    """
    arr = np.asarray(X) if arr is None else arr
    if arr.dtype.kind != "O" or arr.ndim != 2:
        return arr
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "to_numpy") or isinstance(dtypes, np.dtype):
        return arr
    try:
        dtypes = list(dtypes)
    except TypeError:
        return arr
    kinds = {getattr(d, "kind", "O") for d in dtypes}
    if not dtypes or not kinds <= set("iuf") or all(isinstance(d, np.dtype) for d in dtypes):
        return arr  # text, objects, bools or categories: refused by name as before
    try:
        missing = bool(np.asarray(X.isna()).any())
        if kinds <= set("iu") and not missing:
            # each column's largest value (exact: a column keeps its dtype), not every cell
            tops = [X.iloc[:, j].max() for j in range(X.shape[1])] if len(X) else []
            if all(int(v) <= _INT64_MAX for v in tops):
                return X.to_numpy(dtype=np.int64)
            return arr  # a UInt64 past int64: refused by value as before
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, AttributeError):  # not pandas after all
        return arr


def is_missing(value: object) -> bool:
    """Whether ``value`` is pandas' missing-value marker ``pd.NA`` (or ``pd.NaT``).

    Example:
        >>> is_missing(None), is_missing(0.5)
        (False, False)
    """
    return type(value).__name__ in ("NAType", "NaTType")
