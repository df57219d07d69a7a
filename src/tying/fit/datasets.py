"""Data sets of a global fit: what one measurement is, checked once, stored padded.

A global fit reads many data sets of possibly different lengths. Each is a
:class:`Dataset` (x, y, optional σ, a metadata dict, a name). :func:`stack`
checks them all (finite values, matching lengths, positive σ) and stores them
as padded ``(K, n_max)`` arrays with a mask, so that every later step (model
evaluation, Jacobian, normal equations) is one array operation over all data
sets instead of a Python loop.

Example:
    >>> import numpy as np
    >>> from tying.fit.datasets import Dataset, stack
    >>> data = stack([(np.arange(3.0), np.ones(3)),
    ...               Dataset(np.arange(2.0), np.ones(2), sigma=0.5,
    ...                       metadata={"instrument": "xray"}, name="short")])
    >>> data.names, data.lengths.tolist(), data.weight[1].tolist()
    (['dataset 0', 'short'], [3, 2], [2.0, 2.0, 0.0])
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tying.fit.equality import ValueEquality

#: keywords other tools use for what :class:`Dataset` calls ``sigma``, ``metadata``, ``name``
_DATASET_ALIASES = {
    **dict.fromkeys(
        ("yerr", "err", "error", "errors", "dy", "std", "sd", "stderr", "uncertainty"), "sigma"
    ),
    **dict.fromkeys(("meta", "info", "attrs"), "metadata"),
    **dict.fromkeys(("label", "title"), "name"),
}


@dataclasses.dataclass(init=False, eq=False)  # == by value: equality.py
class Dataset(ValueEquality):
    """One measured data set.

    Args:
        x: the independent variable, one entry per point along the first axis
            (a 1-D array lets the model be evaluated on all data sets at once).
        y: the measured values, shape ``(n,)``.
        sigma: the standard deviation of each ``y`` (scalar or ``(n,)``); the
            residual is ``(y - model) / sigma`` (``result.residual(i)``). None means 1.
        metadata: facts about the measurement, e.g. ``{"instrument": "xray"}``;
            ``per_group`` roles group data sets by these keys. None means ``{}``.
        name: used in messages and tables; defaults to ``"dataset <i>"``.

    Raises:
        TypeError: a keyword other than these (lmfit's ``weights=w`` is ``sigma=1 / w``;
            the message names the keyword and the one to use), or a dict as ``sigma``
            (metadata given third, as the tuple form allows: pass ``metadata=``).

    Example:
        >>> import numpy as np
        >>> Dataset(np.linspace(0, 1, 5), np.zeros(5), metadata={"T": 300}).metadata
        {'T': 300}
        >>> Dataset(np.zeros(2), np.zeros(2), weights=np.ones(2))
        Traceback (most recent call last):
        ...
        TypeError: Dataset() got an unexpected keyword argument 'weights': lmfit's weights multiply the residual (weights = 1/sigma), and Dataset takes sigma, the standard deviation of y; pass sigma=1 / weights
    """

    x: Any
    y: Any
    sigma: Any
    metadata: Mapping[str, Any]
    name: str | None

    def __init__(
        self,
        x: Any,
        y: Any,
        sigma: Any = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        **unknown: Any,
    ):
        if unknown:
            # Python's bare "unexpected keyword argument 'weights'" named no fix, and
            # lmfit's weights (1/sigma) are the keyword users bring (stop 55)
            key = sorted(unknown, key=str)[0]
            valid = ["x", "y", "sigma", "metadata", "name"]
            if key.lower() in ("weights", "weight", "w", "wts"):
                fix = (
                    "lmfit's weights multiply the residual (weights = 1/sigma), and Dataset "
                    "takes sigma, the standard deviation of y; pass sigma=1 / weights"
                )
            else:
                close = _DATASET_ALIASES.get(key.lower()) or next(
                    iter(difflib.get_close_matches(key, valid, n=1)), None
                )
                fix = f"Dataset takes {', '.join(valid)}" + (
                    f"; did you mean {close}=?" if close else ""
                )
            raise TypeError(f"Dataset() got an unexpected keyword argument {key!r}: {fix}")
        if isinstance(sigma, Mapping):
            # the tuple form allows (x, y, metadata): positionally, Dataset's third
            # argument is sigma, and a dict there was refused as "sigma holds {...}"
            raise TypeError(
                f"Dataset's third argument is sigma, got a dict {dict(sigma)!r}; pass "
                f"metadata by name: Dataset(x, y, metadata={dict(sigma)!r})"
            )
        self.x = x
        self.y = y
        self.sigma = sigma
        self.metadata = {} if metadata is None else metadata
        self.name = name


@dataclasses.dataclass(eq=False)  # == by value: equality.py
class StackedData(ValueEquality):
    """All data sets, checked and padded to ``n_max`` points.

    Attributes:
        names: one name per data set.
        metadata: one metadata dict per data set.
        xs: the x of each data set as given (converted to float arrays).
        x_padded: ``(K, n_max)`` x, padded with each data set's last x, or None
            when some x is not 1-D (then the model is called per data set).
        y: ``(K, n_max)`` measured values, 0 where padded.
        weight: ``(K, n_max)`` 1/σ, 0 where padded (so padded points add nothing).
        mask: ``(K, n_max)`` True on real points.
        lengths: ``(K,)`` number of points per data set.
        sigma_given: ``(K,)`` whether each data set came with a sigma (its weight is 1
            otherwise); None in data stacked before stop 58.
    """

    names: list[str]
    metadata: list[dict[str, Any]]
    xs: list[np.ndarray]
    x_padded: np.ndarray | None
    y: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    sigma_given: np.ndarray | None = None

    @property
    def n_datasets(self) -> int:
        return len(self.names)

    @property
    def n_points(self) -> int:
        """Total number of data points (the ``ndata`` of χ² statistics)."""
        return int(self.lengths.sum())

    @property
    def equal_lengths(self) -> bool:
        return bool(np.all(self.lengths == self.lengths[0]))


def as_dataset(item: Any, index: int) -> Dataset:
    """Turn one entry of the user's list into a :class:`Dataset`.

    Accepted forms: a :class:`Dataset`; a dict with keys ``x``, ``y`` and
    optionally ``sigma``, ``metadata``, ``name``; a tuple ``(x, y)``,
    ``(x, y, sigma)``, ``(x, y, metadata)`` or ``(x, y, sigma, metadata)``.
    A tuple's third item is always σ, the standard deviation of y (scipy's
    ``curve_fit(sigma=...)``), never lmfit's ``weights`` (``1/σ``): pass those as
    ``Dataset(x, y, sigma=1 / w)`` or ``{"x": x, "y": y, "sigma": 1 / w}``. A fit whose
    weighted residuals grow as σ shrinks is flagged (:func:`sigma_misread`).

    Raises:
        TypeError: for any other form, naming the data set.

    Example:
        >>> as_dataset(([0.0, 1.0], [1.0, 2.0], {"run": 3}), 0).metadata
        {'run': 3}
    """
    if isinstance(item, Dataset):
        return item
    if isinstance(item, Mapping):
        unknown = set(item) - {"x", "y", "sigma", "metadata", "name"}
        if unknown or "x" not in item or "y" not in item:
            # lmfit's weights multiply the residual (weights = 1/sigma): read as sigma they
            # would invert every point's weight, so the name is the only guard
            hint = (
                "; lmfit's 'weights' multiply the residual, so pass 'sigma': 1 / weights"
                if {"weights", "weight", "w"} & unknown
                else ""
            )
            raise TypeError(
                f"dataset {index}: a dict data set needs keys 'x' and 'y' (optional 'sigma', "
                f"'metadata', 'name'), got keys {sorted(item, key=str)}{hint}"
            )
        return Dataset(
            item["x"], item["y"], item.get("sigma"), item.get("metadata") or {}, item.get("name")
        )
    if isinstance(item, tuple) and 2 <= len(item) <= 4:
        x, y, *rest = item
        metadata: Mapping[str, Any] = {}
        if rest and isinstance(rest[-1], Mapping):
            metadata = rest.pop()
        if len(rest) > 1:
            raise TypeError(
                f"dataset {index}: a tuple data set is (x, y), (x, y, sigma), (x, y, metadata) "
                f"or (x, y, sigma, metadata); got {len(item)} items with no metadata dict last"
            )
        return Dataset(x, y, rest[0] if rest else None, metadata)
    # GlobalFit(model, (x, y)) walked one data set's x and y as two data sets (stop 58)
    hint = (
        "; an array is one data set's x or y, not a data set: pass datasets=[(x, y)] for one"
        if isinstance(item, (np.ndarray, list)) or hasattr(item, "__array__")
        else ""
    )
    if isinstance(item, list) and _is_a_data_set(tuple(item)) and not isinstance(item[0], Mapping):
        # [x, y, sigma, metadata] rows (a list per data set) got the array hint above
        # (stop 58, second pass): the fix is the tuple
        hint = (
            f"; a list of {len(item)} items holding arrays reads as one data set written as "
            f"a list: pass it as a tuple, datasets=[tuple(d) for d in datasets]"
        )
    raise TypeError(
        f"dataset {index}: expected a tying.fit.Dataset, a dict with 'x' and 'y', or a tuple "
        f"(x, y[, sigma][, metadata]); got {type(item).__name__}{hint}"
    )


def _is_a_data_set(value: Any) -> bool:
    """Whether ``value`` is a data set in one of the forms ``as_dataset`` reads, not an x."""
    if isinstance(value, (Dataset, Mapping)):
        return True
    if not (isinstance(value, tuple) and 2 <= len(value) <= 4):
        return False
    try:  # (x, y, ...) holds arrays; an x given as a tuple holds numbers
        return np.ndim(value[0]) >= 1
    except ValueError:  # ragged: not a tuple of numbers either
        return True


def _not_a_list(datasets: Any) -> str:
    """The fix for ``datasets`` given as something other than a list of data sets.

    "wrap a single data set in a list" was the advice for every kind until stop 58; for a
    dict of data sets by name, a generator or a pandas table it failed when followed.
    """
    kind = type(datasets).__name__
    # data sets named "x" and "y" (two polarisations) are a dict of data sets, not one
    # whose x is a tuple: told [data], they failed as "y must be 1-D" (stop 58 review)
    if isinstance(datasets, Dataset) or (
        isinstance(datasets, Mapping)
        and "x" in datasets
        and "y" in datasets
        and not _is_a_data_set(datasets["x"])
    ):
        return "wrap a single data set in a list: [data]"
    if isinstance(datasets, Mapping):
        # the naming fix for the form of the dict's values: Dataset(*d, name=k) unpacked a
        # dict's keys as x and y ("x is not numeric (<U1)"), read a metadata dict third as
        # sigma, and could not unpack a Dataset (stop 58 review)
        first = next(iter(datasets.values()), None)
        if isinstance(first, Dataset):
            named = (
                "[tying.fit.Dataset(d.x, d.y, d.sigma, d.metadata, name=k) "
                "for k, d in data.items()]"
            )
            form = "d a tying.fit.Dataset"
        elif isinstance(first, Mapping):
            named = "[{**d, 'name': k} for k, d in data.items()]"
            form = "d a dict with 'x' and 'y'"
        elif isinstance(first, tuple) and len(first) > 2 and isinstance(first[-1], Mapping):
            named = "[tying.fit.Dataset(*d[:-1], metadata=d[-1], name=k) for k, d in data.items()]"
            form = "d an (x, y, metadata) or (x, y, sigma, metadata) tuple"
        else:
            named = "[tying.fit.Dataset(*d, name=k) for k, d in data.items()]"
            form = "d an (x, y) or (x, y, sigma) tuple"
        return (
            f"a dict of data sets by name is not read; pass list(data.values()), or name each "
            f"({form}): {named}"
        )
    if hasattr(datasets, "groupby") or hasattr(datasets, "ngroups"):
        return (
            "a pandas table is not split into data sets by itself; pass one (x, y) per group: "
            "[(g['x'].to_numpy(), g['y'].to_numpy()) for _, g in df.groupby('run')] (your "
            "column names)"
        )
    if isinstance(datasets, np.ndarray) or hasattr(datasets, "__array__"):
        return "an array is not read as data sets; pass a list of (x, y) tuples"
    if hasattr(datasets, "__iter__"):
        return f"a {kind} is not a list; pass list(...) of it"
    return "wrap a single data set in a list"


def _is_torch(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch)."""
    module = type(value).__module__ or ""
    return (module == "torch" or module.startswith("torch.")) and hasattr(value, "detach")


def _from_torch(where: str, label: str, value: Any, *, meta_fix: str | None = None) -> Any:
    """A torch tensor's values on the CPU (bfloat16/float16 widened exactly), else ``value``.

    ``np.asarray`` of a tensor raised torch's own errors, naming no data set: "Got
    unsupported ScalarType BFloat16" for bfloat16 data, "Can't call numpy() on Tensor that
    requires grad" for a tensor from a model, "can't convert meta device type tensor"
    (stop 38). The values are read as they are (a CUDA tensor is copied, ``requires_grad``
    does not change a value); a tensor on the meta device holds none and is refused.
    """
    if not _is_torch(value):
        return value
    if value.device.type == "meta":
        fix = meta_fix or (
            f"pass the measured data, e.g. the tensor before .to('meta') or "
            f"{label}.cpu().numpy() of a real one"
        )
        what = f"{where}: {label}" if where else label
        raise ValueError(
            f"{what} is a torch tensor on the 'meta' device, which holds no values "
            f"(shape {tuple(value.shape)}); {fix}"
        )
    value = value.detach().cpu()
    if value.is_floating_point() and value.element_size() < 4:
        import torch  # a torch tensor is here, so torch is installed

        value = value.to(torch.float64)  # bfloat16/float16 (and float8) are exact in float64
    return value.resolve_conj().resolve_neg() if value.is_complex() else value


def _as_float(where: str, label: str, value: Any) -> np.ndarray:
    """``value`` as a float array, refusing what a cast would silently change.

    ``np.asarray(..., dtype=float)`` reads a masked array's data *under* its mask (the
    fit then used the very points the user masked out, with no error), drops a complex
    value's imaginary part, turns booleans into 0/1 and parses strings.
    """
    if isinstance(value, np.ma.MaskedArray):
        masked = np.atleast_1d(np.ma.getmaskarray(value))  # a masked scalar σ: point 0
        if masked.any():
            first = int(np.flatnonzero(masked.reshape(len(masked), -1).any(axis=1))[0])
            raise ValueError(
                f"{where}: {label} is a masked array with {int(masked.sum())} masked "
                f"value(s), the first at point {first}; a fit reads the values under a mask, "
                f"so drop those points instead (keep = ~np.ma.getmaskarray({label}), then "
                f"x[keep], y[keep].data, ...)"
            )
        value = value.data
    value = _from_torch(where, label, value)
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged lists: NumPy's message named no data set
        raise ValueError(
            f"{where}: {label} is not a rectangular array ({err}); give one row per point, "
            f"each of the same length"
        ) from err
    kind = arr.dtype.kind
    if kind in "Mm":
        # a cast counts in the dtype's own unit (days for datetime64[D], ns for pandas'
        # datetime64[ns]): the fitted rates would be per that unit, without a word
        raise ValueError(
            f"{where}: {label} is {arr.dtype} (dates or durations), expected real numbers; "
            f"choose the unit yourself, e.g. ({label} - {label}[0]) / np.timedelta64(1, 's')"
        )
    if kind == "O":
        # an object array (a pandas column with a stray entry, a list of mixed items) was
        # cast element by element: strings parsed, booleans read as 0/1, a complex value
        # or a sequence raised a bare TypeError naming no data set (stop 32 review)
        flat = arr.ravel().tolist()
        for point, v in enumerate(flat):
            boolean = isinstance(v, (bool, np.bool_))
            if v is None or (isinstance(v, (numbers.Real, decimal.Decimal)) and not boolean):
                continue  # None reads as NaN, refused below by name
            if boolean and label == "x":  # as for a boolean x array
                continue
            raise ValueError(
                f"{where}: {label} holds {v!r} ({type(v).__name__}) at point "
                f"{point if arr.ndim <= 1 else np.unravel_index(point, arr.shape)}, expected "
                f"real numbers; convert {label} to a float array (np.asarray({label}, "
                f"dtype=float)) once you have checked its entries"
            )
    if kind == "c" or (kind == "b" and label != "x") or kind in "USV":
        what = {"c": "complex (the imaginary part would be dropped)", "b": "boolean"}.get(
            kind, f"not numeric ({arr.dtype})"
        )
        # stop 51: complex data (an impedance, a Fourier transform) were told to take
        # y.real, which fits half the data; lmfit fits real and imaginary parts together
        both = (
            "; to fit complex data, give its real and imaginary parts as two data sets "
            "sharing the parameters, (x, y.real) and (x, y.imag) with fixed={'part': [0, 1]}, "
            "and a model_fn returning np.where(part == 0, z.real, z.imag)"
            if kind == "c" and label == "y"
            else ""
        )
        raise ValueError(
            f"{where}: {label} is {what}, expected real numbers; convert it yourself "
            f"(e.g. {label}.real or {label}.astype(float)) if that is what you mean{both}"
        )
    return np.asarray(arr, dtype=float)


def _pandas_index(value: Any) -> Any:
    """The row index of a pandas Series or DataFrame (without importing pandas), else None."""
    module = type(value).__module__ or ""
    if module.split(".")[0] != "pandas" or type(value).__name__ not in ("Series", "DataFrame"):
        return None  # a pandas Index is its own labels: nothing to pair by
    return value.index


def _check_pandas_alignment(where: str, ds: Dataset) -> None:
    """Refuse pandas x, y and σ whose row labels differ: NumPy pairs them by position.

    pandas pairs two Series by label (``y - x`` aligns them); ``np.asarray`` drops the
    labels, so ``y.sort_values()`` or ``y.sample(frac=1)`` against an unsorted ``x``
    paired each x with another point's y and the fit returned a plausible wrong answer
    with no error (stop 53).
    """
    labelled = [
        (label, index)
        for label, value in (("x", ds.x), ("y", ds.y), ("sigma", ds.sigma))
        if (index := _pandas_index(value)) is not None
    ]
    label, index = labelled[0] if labelled else ("", None)
    for other, other_index in labelled[1:]:
        if not index.equals(other_index):
            raise ValueError(
                f"{where}: {label} and {other} are pandas objects with different row "
                f"indexes ({label}: {_head(index)}, {other}: {_head(other_index)}), so "
                f"their points would be paired by position, not by label; align them first "
                f"({other} = {other}.reindex({label}.index), dropping the rows that leaves "
                f"NaN), or pass {label}.to_numpy() and {other}.to_numpy() if position is "
                f"what you mean"
            )


def _head(index: Any) -> str:
    """The first few labels of an index, for a message."""
    labels = list(index[:4])
    return f"[{', '.join(map(repr, labels))}{', ...' if len(index) > 4 else ''}]"


def _bad_values(values: np.ndarray) -> str | None:
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    first = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0]
    return f"{int(bad.sum())} NaN/inf value(s), the first at point {first}"


def _omit_fix(label: str, x: np.ndarray, ds: Dataset) -> str:
    """The code that drops the points, as lmfit's ``nan_policy='omit'`` does (stop 61: the
    advice said "drop those points" with no way to do it). The mask tests every array
    given per point, so one pass drops them all; a list is indexed as an array."""
    given = [("x", ds.x), ("y", ds.y)]
    if ds.sigma is not None and np.ndim(ds.sigma) > 0:
        given.append(("sigma", ds.sigma))
    elif label == "sigma":  # one sigma for all points: it is the number that is wrong
        return "give a finite sigma (one number for every point), or one per point"
    tests = [
        "np.isfinite(x).reshape(len(x), -1).all(axis=1)"
        if n == "x" and x.ndim > 1
        else f"np.isfinite({n})"
        for n, _ in given
    ]
    keep = [
        f"np.asarray({n})[keep]" if isinstance(v, (list, tuple)) else f"{n}[keep]" for n, v in given
    ]
    if ds.sigma is not None and np.ndim(ds.sigma) == 0:
        # one sigma for every point stays: left out, (x[keep], y[keep]) fitted with sigma 1
        # (review 61: chi2 100x, errors 10x under scale_covar=False for sigma = 0.1)
        keep.append("sigma")
    if ds.metadata:
        keep.append("metadata")
    return (
        f"drop those points before fitting (lmfit's nan_policy='omit'): keep = "
        f"{' & '.join(tests)}, then pass ({', '.join(keep)})"
    )


def stack(datasets: Sequence[Any]) -> StackedData:
    """Check every data set and store them padded.

    Args:
        datasets: a non-empty sequence of data sets in any form
            :func:`as_dataset` accepts.

    Returns:
        A :class:`StackedData`.

    Raises:
        TypeError: a data set of an unknown form, a metadata that is not a dict, or a
            name that is not a str.
        ValueError: no data sets; NaN/inf in x, y or σ (naming the data set and
            the first bad point); a masked array with masked values; complex, boolean
            (y, σ) or text values; σ ≤ 0, or so small that 1/σ overflows;
            x and y of different lengths; an empty
            data set; two data sets with the same name; pandas x, y or σ with
            different row indexes (NumPy would pair their points by position).

    Example:
        >>> import numpy as np
        >>> stack([(np.zeros(2), np.array([1.0, np.nan]))])
        Traceback (most recent call last):
        ...
        ValueError: dataset 'dataset 0' (index 0): y has 1 NaN/inf value(s), the first at point 1; drop those points before fitting (lmfit's nan_policy='omit'): keep = np.isfinite(x) & np.isfinite(y), then pass (x[keep], y[keep])
    """
    if isinstance(datasets, (Dataset, Mapping)) or not isinstance(datasets, Sequence):
        raise TypeError(
            f"datasets must be a list of data sets, got {type(datasets).__name__}; "
            f"{_not_a_list(datasets)}"
        )
    if len(datasets) == 0:
        raise ValueError("datasets is empty; a global fit needs at least one data set")
    items = [as_dataset(item, i) for i, item in enumerate(datasets)]
    names, metas, xs, ys, ws = [], [], [], [], []
    given = np.array([ds.sigma is not None for ds in items])
    for i, ds in enumerate(items):
        if ds.name is not None and not isinstance(ds.name, str):
            # results look data sets up by name (a str) or by index (an int): a data set
            # named 3 was silently read as the one at index 3 (stop 31 review)
            raise TypeError(
                f"dataset {i}: name must be a str, got {ds.name!r} "
                f"({type(ds.name).__name__}); use name={str(ds.name)!r}"
            )
        name = ds.name if ds.name is not None else f"dataset {i}"
        where = f"dataset {name!r} (index {i})"
        if not isinstance(ds.metadata, Mapping):
            raise TypeError(f"{where}: metadata must be a dict, got {type(ds.metadata).__name__}")
        _check_pandas_alignment(where, ds)
        x = _as_float(where, "x", ds.x)
        y = _as_float(where, "y", ds.y)
        if y.ndim != 1:
            # lmfit's multi-data-set example keeps its data sets as rows of one (K, n) array:
            # flattening it (the old advice) makes one data set of K·n points
            column = y.ndim == 2 and y.shape[1] == 1
            raise ValueError(
                f"{where}: y must be 1-D (one value per point), got shape {y.shape}; "
                + (
                    "give an array of one value per point"
                    if y.ndim == 0
                    else "flatten the column: y.ravel()"
                    if column
                    else "for several data sets in the rows of one array pass one data set "
                    "per row: [(x, row) for row in y]"
                )
            )
        if len(y) == 0:
            raise ValueError(f"{where}: has no points")
        if x.ndim == 0 or len(x) != len(y):
            # x = [x1, x2] (lmfit's two independent variables, or np.vstack) puts the
            # variables in rows: the bare mismatch named no fix (stop 55)
            rows = x.ndim == 2 and x.shape[1] == len(y)
            raise ValueError(
                f"{where}: x has {x.shape[0] if x.ndim else 0} point(s) along its first axis "
                f"but y has {len(y)}; they must match"
                + (
                    f" (x has shape {x.shape}: {x.shape[0]} variables in rows?); put one "
                    f"point per row, x = np.column_stack([x1, x2, ...]), and read x[:, 0], "
                    f"x[:, 1], ... in model_fn"
                    if rows
                    else ""
                )
            )
        sigma = np.ones_like(y) if ds.sigma is None else _as_float(where, "sigma", ds.sigma)
        if sigma.ndim == 0:
            sigma = np.full_like(y, float(sigma))
        if sigma.shape != y.shape:
            # stop 59: the refusal named no fix; a column of one sigma per point, or one
            # number in an array of one, is what the caller meant
            if sigma.size == y.size:
                fix = "; the same values as one per point: np.ravel(sigma)"
            elif sigma.size == 1:
                fix = "; one sigma for every point is a number: float(np.ravel(sigma)[0])"
            elif sigma.shape == (y.size, y.size):
                # curve_fit reads an (n, n) sigma as the covariance of y: "give one sigma
                # per point" did not say which numbers those are (stop 59 review)
                fix = (
                    "; an (n, n) sigma is scipy curve_fit's covariance of y, which is not "
                    "read here: one sigma per point is np.sqrt(np.diag(sigma)) (the "
                    "correlations dropped)"
                )
            else:
                fix = f"; give one sigma per point of y ({y.size}) or one number for all"
            raise ValueError(
                f"{where}: sigma has shape {sigma.shape}, expected {y.shape} or (){fix}"
            )
        for label, values in (("x", x), ("y", y), ("sigma", sigma)):
            problem = _bad_values(values)
            if problem:
                raise ValueError(f"{where}: {label} has {problem}; {_omit_fix(label, x, ds)}")
        if np.any(sigma <= 0):
            first = int(np.flatnonzero(sigma <= 0)[0])
            raise ValueError(
                f"{where}: sigma must be > 0, got {sigma[first]} at point {first}; "
                f"drop the point or give it a positive uncertainty"
            )
        with np.errstate(over="ignore"):
            weight = 1.0 / sigma
        if not np.all(np.isfinite(weight)):
            # a subnormal sigma (below 1/float64 max, ~5.6e-309) gave an inf weight, then
            # NaN residuals where y = 0 and an error blaming the start or "underflow"
            first = int(np.flatnonzero(~np.isfinite(weight))[0])
            raise ValueError(
                f"{where}: sigma is {sigma[first]:.3g} at point {first}, so its weight "
                f"1/sigma overflows float64; sigma is the standard deviation of y (scipy "
                f"curve_fit's sigma, not lmfit's weights or a variance): check it, or rescale "
                f"y and sigma together to a scale near 1"
            )
        # our own read-only copy: model_fn gets it, and one that shifts x in place
        # (x -= c) changed the caller's array and every later call's x, without a word
        x = np.array(x, dtype=float)
        x.flags.writeable = False
        names.append(name)
        metas.append(dict(ds.metadata))
        xs.append(x)
        ys.append(y)
        ws.append(weight)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two data sets are named {dup!r}; names must be unique")
    lengths = np.array([len(y) for y in ys])
    k, n_max = len(ys), int(lengths.max())
    y_pad = np.zeros((k, n_max))
    w_pad = np.zeros((k, n_max))
    mask = np.arange(n_max)[None, :] < lengths[:, None]
    x_pad = np.zeros((k, n_max)) if all(x.ndim == 1 for x in xs) else None
    for i in range(k):
        n = lengths[i]
        y_pad[i, :n] = ys[i]
        w_pad[i, :n] = ws[i]
        if x_pad is not None:
            # Pad with the last x so that a model stays finite on padded points.
            x_pad[i, :n] = xs[i]
            x_pad[i, n:] = xs[i][-1]
    if x_pad is not None:
        x_pad.flags.writeable = False
    return StackedData(names, metas, xs, x_pad, y_pad, w_pad, mask, lengths, given)


#: a within-data-set slope of log|weighted residual| on log σ below this, ...
SIGMA_SLOPE = -0.5
#: ... and this many standard errors below 0, says the residuals are not noise of size σ
SIGMA_SLOPE_T = -5.0


def _slope_within(data: StackedData, r: np.ndarray) -> tuple[float, float] | None:
    """Slope of ``log|r|`` on ``log σ`` within each data set whose σ varies, and its t."""
    w = data.weight
    varies = np.ptp(np.where(data.mask, w, w[:, :1]), axis=1) > 1e-6 * np.max(w, axis=1)
    if not varies.any():  # a scalar σ per data set: nothing to compare
        return None
    rows = np.flatnonzero(varies)
    w, rr, mask = w[rows], r[rows], data.mask[rows]
    wy = np.where(mask, data.y[rows] * w, 0.0)
    if not np.linalg.norm(rr) > 1e-8 * np.linalg.norm(wy):
        return None
    use = mask & (rr != 0)
    n = use.sum(axis=1)
    keep = n >= 3
    if not keep.any():
        return None
    use, n = use[keep], n[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(use, -np.log(w[keep]), 0.0)
        a = np.where(use, np.log(np.abs(rr[keep])), 0.0)
    s = np.where(use, s - (s.sum(axis=1) / n)[:, None], 0.0)
    a = np.where(use, a - (a.sum(axis=1) / n)[:, None], 0.0)
    sxx, dof = float(np.sum(s * s)), int(n.sum()) - int(keep.sum()) - 1
    if not sxx > 0 or dof < 10:
        return None
    slope = float(np.sum(s * a)) / sxx
    spread = float(np.sum((a - slope * s) ** 2)) / dof
    return slope, (slope / np.sqrt(spread / sxx) if spread > 0 else -np.inf)


def _slope_between(data: StackedData, r: np.ndarray, n_local: int) -> tuple[float, float] | None:
    """Slope of each data set's log RMS weighted residual on its mean ``log σ``, and its t.

    For a σ that is one number per data set, which :func:`_slope_within` cannot read: with
    the right σ every data set's ``χ²_i / dof_i`` is near the same value; with weights in
    σ's place it grows as ``σ_given⁻⁴``. A weighted regression over the data sets (three
    or more), each log RMS weighted by its own ``2·dof_i`` (its variance is about
    ``1/(2·dof_i)``), with the scatter about the line taken when it exceeds that.
    """
    mask = data.mask
    if data.n_datasets < 3:
        return None
    wy = np.where(mask, data.y * data.weight, 0.0)
    if not np.linalg.norm(np.where(mask, r, 0.0)) > 1e-8 * np.linalg.norm(wy):
        return None
    with np.errstate(divide="ignore"):
        log_sigma = np.where(mask, -np.log(np.where(mask, data.weight, 1.0)), 0.0)
    s = log_sigma.sum(axis=1) / data.lengths  # (K,) each data set's mean log σ
    chi2 = np.sum(np.where(mask, r * r, 0.0), axis=1)  # (K,)
    dof = np.maximum(data.lengths - n_local, 1).astype(float)
    ok = chi2 > 0
    if ok.sum() < 3 or not np.ptp(s[ok]) > 1e-6:  # one σ for every data set: nothing to read
        return None
    s, a, wt = s[ok], 0.5 * np.log(chi2[ok] / dof[ok]), 2.0 * dof[ok]
    s = s - np.sum(wt * s) / np.sum(wt)
    a = a - np.sum(wt * a) / np.sum(wt)
    sxx = float(np.sum(wt * s * s))
    slope = float(np.sum(wt * s * a)) / sxx
    scatter = float(np.sum(wt * (a - slope * s) ** 2)) / (len(s) - 2) if len(s) > 2 else 1.0
    return slope, slope / np.sqrt(max(scatter, 1.0) / sxx)


def sigma_reading(
    data: StackedData, r: np.ndarray, n_local: int = 0
) -> tuple[float, float, str] | None:
    """The slope and t of ``log|r|`` on ``log σ`` that :func:`sigma_misread` names, and where.

    None when neither reading (within, then between the data sets) is below
    ``SIGMA_SLOPE`` and ``SIGMA_SLOPE_T``: the weighted residuals are noise of one size.
    """
    read = _slope_within(data, r)
    if read is not None and read[0] < SIGMA_SLOPE and read[1] < SIGMA_SLOPE_T:
        return read[0], read[1], "within the data sets"
    read = _slope_between(data, r, n_local)
    if read is not None and read[0] < SIGMA_SLOPE and read[1] < SIGMA_SLOPE_T:
        where = "between the data sets (each one's RMS weighted residual against its sigma)"
        return read[0], read[1], where
    return None


def sigma_misread(
    data: StackedData, r: np.ndarray, n_local: int = 0, as_weights: float | None = None
) -> str:
    """Say why σ looks misstated, or "": the weighted residuals shrink as σ grows.

    With the right σ the weighted residuals ``r = (model - y)/σ`` are noise of one size
    whatever σ; with lmfit's weights (``1/σ``) in σ's place they grow as ``σ_given⁻²``.
    A tuple ``(x, y, w)`` cannot tell the two apart, so this reads the slope of
    ``log|r|`` on ``log σ`` within each data set (a per-point σ that varies), and names it
    when it is below ``SIGMA_SLOPE`` and ``SIGMA_SLOPE_T`` standard errors below 0 (a right
    σ reads |t| < 2; lmfit weights in a Poisson peak fit -1.5 to -2.2, t < -11). Across
    three or more data sets with σ of different sizes (a scalar σ each: weights of
    ``1/0.02 ... 1/0.4`` as σ moved a shared rate 6.6 standard errors, success=True, stop
    36) it reads each data set's RMS weighted residual against its σ the same way
    (``n_local`` local parameters come off each data set's degrees of freedom). An exact
    fit (residuals at rounding level) is skipped: its residuals are not noise.

    ``as_weights`` is the slope the same data read when refitted with the third item
    taken as lmfit's weights (σ = 1/item), when that refit still reads one below
    ``SIGMA_SLOPE``: weights in σ's place read about 0 there (|slope| < 0.25 measured),
    a model that misses the points with small σ reads -0.9 to -1.4, and the two read
    alike (-0.6 to -2) on the fit as given. The advice then leads with the model, not
    with weights (stop 38: a shared rate that differs between three data sets got the
    weights advice in 14 to 38 of 40 fits, by how far the rates differ).

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 1, 200)
        >>> sigma = np.linspace(0.5, 2.0, 200)
        >>> data = stack([(x, np.zeros(200), sigma)])
        >>> noise = np.random.default_rng(0).normal(0, 1, 200)
        >>> sigma_misread(data, (noise / sigma)[None]) == ""
        True
        >>> sigma_misread(data, (noise / sigma**3)[None])[:37]
        'the weighted residuals grow as sigma^'
    """
    read = sigma_reading(data, r, n_local)
    if read is None:
        return ""
    slope, t, where = read
    if as_weights is not None:
        return (
            f"the weighted residuals grow as sigma^{slope:.2f} {where} (t = {t:.1f}): "
            f"they are largest where sigma is smallest, which noise of size sigma is not; "
            f"refitted with the third item read as lmfit's weights (sigma = 1/w) they still "
            f"grow as sigma^{as_weights:.2f}, so weights in sigma's place do not explain "
            f"them: the model most likely misses the points with small sigma (a parameter "
            f"shared that differs between the data sets, a missing term); look at "
            f"result.residual(i) against x there and fix the model, then sigma"
        )
    return (
        f"the weighted residuals grow as sigma^{slope:.2f} {where} (t = {t:.1f}): "
        f"they are largest where sigma is smallest, which noise of size sigma is not; if the "
        f"third item of a data set holds weights (lmfit's weights = 1/sigma), pass their "
        f"inverse as sigma: Dataset(x, y, sigma=1 / w) or {{'x': x, 'y': y, 'sigma': 1 / w}} "
        f"(a variance needs np.sqrt); otherwise sigma misstates the noise (an estimate from "
        f"a few replicates reads the same) or the model misses the points with small sigma"
    )
