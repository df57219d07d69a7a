"""Checks on the values given to an HMM estimator, and their shaping.

The settings, priors and probability tables given to :class:`~tying.hmm.BaseHMM`,
its subclasses and :class:`~tying.hmm.PairHMM` are checked here, and a bad one is
refused with a message naming the argument (house rule 4): a positive integer, a
prior of finite (non-negative) numbers, a probability vector or row-stochastic
matrix; a prior is broadcast to its parameter's full shape by :func:`_broadcast`.
An E-step in which some sequence has probability 0 is refused by
:func:`_check_finite`, naming the sequence. A fit's random generator is made on its
first draw (:func:`_fit_rng`), except from a seed ``default_rng`` could refuse. They live apart from
:mod:`tying.hmm.base` (which imports them, so ``tying.hmm.base._stochastic``
and the others still resolve) because every HMM estimator shares them.
"""

from __future__ import annotations

import numpy as np

from tying.hmm.integer_args import as_integer


def _check_finite(log_likelihood: np.ndarray, it: int) -> None:
    """Refuse an E-step in which some sequence has probability 0 (naming it)."""
    if not np.all(np.isfinite(log_likelihood)):
        s = int(np.flatnonzero(~np.isfinite(log_likelihood))[0])
        raise ValueError(
            f"sequence {s} has probability 0 under the parameters of EM iteration {it} "
            f"(a symbol or transition no state allows); give it non-zero probability "
            f"in the start values or drop the sequence"
        )


def _real_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array, refusing what NumPy would silently coerce to one.

    ``np.asarray(value, dtype=np.float64)`` parses text (``"0.5"``) and drops the
    imaginary part of a complex number with only a ``ComplexWarning``, so a parameter,
    start value or prior of the wrong kind became a model with no error, while the same
    text in ``X`` is refused (stop 42). A float64 array comes back as it is.

    Args:
        name: the argument or attribute, for the message.
        value: an array-like of real numbers (bools, ints and floats; an object array of
            them).

    Returns:
        ``value`` as a float64 array (the same array when it already is one).

    Raises:
        TypeError: for text, bytes or complex values, naming ``name`` and the entry.

    Example:
        >>> _real_array("means_init", [[0], [1]]).dtype
        dtype('float64')
        >>> _real_array("means_init", ["0.5"])
        Traceback (most recent call last):
        ...
        TypeError: means_init must hold real numbers, got text (dtype <U3): '0.5' at index (0,); ...
    """
    if type(value) is np.ndarray and value.dtype == np.float64:
        return value
    arr = np.asarray(value)
    kind, bad = arr.dtype.kind, None
    if kind in "USc" and arr.size:
        # a complex array is named by its first entry with an imaginary part, if any
        first = np.flatnonzero(arr.imag)[:1] if kind == "c" else []
        idx = np.unravel_index(int(first[0]) if len(first) else 0, arr.shape)
        what = "complex values" if kind == "c" else "text"
        bad = (f"{what} (dtype {arr.dtype})", arr[idx], idx)
    elif kind == "O":
        v = arr.item() if arr.ndim == 0 else None
        if hasattr(v, "toarray") and hasattr(v, "nnz"):  # np.asarray wraps sparse as one
            # a sparse matrix is 2-d: a vector parameter (startprob_) needs its one row
            vector = (
                "; S.toarray().ravel() for a vector such as startprob_"
                if len(v.shape) == 2 and 1 in v.shape
                else ""
            )
            raise TypeError(  # object: NumPy said "setting an array element with a sequence"
                f"{name} must be a dense array of real numbers, got a SciPy sparse "
                f"{type(v).__name__} of shape {v.shape}; convert it first (S.toarray() for "
                f"a sparse S{vector})"
            )
        for idx, v in np.ndenumerate(arr):
            if isinstance(v, (str, bytes, complex, np.complexfloating)):
                bad = ("an object array", v, idx)
                break
    if bad is not None:
        what, v, idx = bad
        v = v.item() if isinstance(v, np.generic) else v  # '0.5', not np.str_('0.5')
        fix = (
            "take .real of an array whose imaginary parts are 0"
            if isinstance(v, (complex, np.complexfloating))
            else "give numbers (np.asarray(value, dtype=float) converts text you have checked)"
        )
        raise TypeError(
            f"{name} must hold real numbers, got {what}: {v!r} at index "
            f"{tuple(int(i) for i in idx)}; {fix}"
        )
    return np.asarray(arr, dtype=np.float64)


def _broadcast(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``np.broadcast_to(value, shape)``'s values in a fresh array, without its per-call
    cost (about 7 us, several times an M-step; 2026-12-01). Shapes that do not broadcast
    raise NumPy's ValueError, as ``np.broadcast_to`` does.

    Args:
        value: an array (a prior or a parameter).
        shape: the shape to broadcast it to.

    Returns:
        A new writable array of ``shape`` and ``value``'s dtype.

    Raises:
        ValueError: when ``value`` does not broadcast to ``shape``.

    Example:
        >>> _broadcast(np.asarray(2.0), (2, 3)).tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    value = np.asarray(value)
    if value.ndim > len(shape):  # assignment would drop leading 1s; broadcast_to refuses
        return np.broadcast_to(value, shape).copy()
    out = np.empty(shape, dtype=value.dtype)
    out[...] = value
    return out


def _positive_int(name: str, value) -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is an integer >= 1 (not
    bool; a 0-d integer array is one, as :func:`~tying.hmm.integer_args.as_integer` reads it)."""
    n = as_integer(value)
    if n is None or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def _check_n_threads(n_threads) -> None:
    """``n_threads`` is None (BLAS left alone) or an integer >= 1 (not bool).

    threadpoolctl took any value through ``int()``: 0 and -2 went to BLAS as they were,
    ``"2"`` and ``3.5`` were read as 2 and 3, ``True`` as 1 (stop 33, second round).
    """
    if n_threads is None:
        return
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
        raise ValueError(
            f"n_threads must be a positive number of BLAS threads or None (leave them as they "
            f"are), got {n_threads!r}; use n_threads=1 for one thread"
        )


def _check_tol(tol) -> None:
    """``tol`` is a real number, not NaN or +inf (``-inf`` runs all ``n_iter`` iterations).

    ``True`` was read as ``tol=1`` and a complex number lost its imaginary part inside
    the compiled loop (stop 35); both are refused as strings are.
    """
    real = isinstance(tol, (int, float, np.integer, np.floating))
    if isinstance(tol, (bool, np.bool_)) or not real:
        raise TypeError(
            f"tol must be a number, got {tol!r} ({type(tol).__name__}); pass a real number "
            f"like tol=1e-4, or tol=-np.inf to run all n_iter iterations"
        )
    if np.isnan(tol) or tol == np.inf:
        raise ValueError(f"tol must be a number (-inf runs all n_iter iterations), got {tol!r}")


def _check_seed(seed, name: str = "random_state") -> None:
    """``seed`` is one ``np.random.default_rng`` takes, and not a bool (``True`` was
    seed 1, silently; stop 35). A refused seed is named, with what would do."""
    if seed is None or isinstance(seed, np.random.Generator):
        return
    fix = f"pass None, an int >= 0 (e.g. {name}=0) or a numpy Generator"
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"{name} must be a seed, got {seed!r} (a bool); {fix}")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"{name} must be a seed, got {seed!r} (negative); {fix}")
        return
    try:
        np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a seed, got {seed!r} ({e}); {fix}") from None


def _check_prior(name: str, value, *, nonneg: bool) -> None:
    """A prior is None (default) or finite numbers (non-negative where required)."""
    if value is None:
        return
    if np.asarray(value).dtype == np.bool_:  # True read as the prior 1.0, with no error
        raise TypeError(
            f"{name} must be a number or an array of numbers, got {value!r} (bool); give "
            f"the prior's value itself (None leaves the default)"
        )
    generic = f"{name} must be a number or an array of numbers, got {value!r}"
    try:
        arr = _real_array(name, value)  # text and complex: refused by entry, not coerced
    except TypeError as e:
        if str(e).startswith(f"{name} must hold real numbers") or "SciPy sparse" in str(e):
            raise  # (a sparse prior was named by its multi-line repr, with no conversion)
        raise TypeError(generic) from None
    except ValueError:
        raise TypeError(generic) from None
    if not np.all(np.isfinite(arr)) or (nonneg and np.any(arr < 0)):
        need = "finite non-negative" if nonneg else "finite"
        raise ValueError(f"{name} must hold {need} numbers, got {value!r}")


def _shape_text(*axes: tuple[str, int | None]) -> str:
    """An expected shape written readably: its sizes, then what each axis is.

    A shape printed as a tuple of sizes and letters (``(3, 'D')``) says neither what
    ``'D'`` is nor which axis is which; this writes ``(3, 4) = (n_components, n_features)``,
    an axis whose size is not known yet by its name (``(3, n_features) = (n_components,
    n_features)``).

    Args:
        *axes: ``(name, size)`` per axis; ``size`` None when not known.

    Returns:
        The text.

    Example:
        >>> _shape_text(("n_components", 3), ("n_features", 4))
        '(3, 4) = (n_components, n_features)'
        >>> _shape_text(("n_components", 3), ("n_features", None))
        '(3, n_features) = (n_components, n_features)'
        >>> _shape_text(("n_components", 2))
        '(2,) = (n_components,)'
        >>> _shape_text(("n_features", None), ("n_features", None))
        '(n_features, n_features)'
    """

    def tup(items: list[str]) -> str:
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"

    names = [name for name, _ in axes]
    if all(size is None for _, size in axes):  # no size known: the names say it all
        return tup(names)
    sizes = [name if size is None else str(int(size)) for name, size in axes]
    return f"{tup(sizes)} = {tup(names)}"


def _stochastic(
    name: str, value, shape: tuple[int, ...], axes: tuple[str, ...] | None = None
) -> np.ndarray:
    """Validate a probability vector / row-stochastic matrix (``axes``: what each axis
    of ``shape`` is, for the message)."""
    arr = _real_array(name, value)
    if arr.shape != shape:
        want = _shape_text(*zip(axes, shape)) if axes else str(shape)
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    # the checks below in three comparisons (NaN fails >= 0; with no negatives an inf
    # makes its sum inf): np.allclose's own checks cost more than the rest of a start
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: refused below
        sums = arr.sum(-1)
    # min and max propagate NaN, so a NaN fails both tests (as >= and <= do): two
    # reductions instead of a boolean array and its all() each (2026-12-02)
    if arr.size and arr.min() >= 0 and np.abs(sums - 1.0).max() <= 1e-8:
        return arr
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities, got {arr}")
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        rows = np.flatnonzero(~np.isclose(np.atleast_1d(sums), 1.0, rtol=0, atol=1e-8))
        raise ValueError(
            f"{name} must sum to 1 along its last axis; row(s) {rows.tolist()} sum to "
            f"{np.atleast_1d(sums)[rows].tolist()}; normalise it"
        )
    return arr


class _LazyRng:
    """``np.random.default_rng(seed)`` made on the first draw: a fit whose start values are
    all given draws nothing, and ``default_rng(None)`` reads OS entropy (0.16 ms a fit on a
    loaded machine, 2026-12-02). Same seed, same draws in the same order: the same streams.
    Only seeds ``default_rng`` always accepts come here (``_fit_rng``): none goes unchecked."""

    __slots__ = ("_seed", "_rng")

    def __init__(self, seed):
        self._seed, self._rng = seed, None

    def __getattr__(self, name):
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


def _fit_rng(seed):
    """Lazy for None, a Generator or an int >= 0; any other seed is made (so checked) now."""
    ok_int = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0
    lazy = seed is None or ok_int or isinstance(seed, np.random.Generator)
    return _LazyRng(seed) if lazy else np.random.default_rng(seed)
