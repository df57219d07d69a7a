"""Many sequences of different lengths as one batch: validation and padded layout.

Observations arrive the scikit-learn/hmmlearn way: all sequences concatenated
in ``X`` with their ``lengths``. The recursions run over time, vectorised over
sequences and states, so they want a **time-major padded** layout
``(T_max, n_sequences, ...)``. Sequences are sorted by length, longest first:
at time ``t`` the sequences still running are then a prefix ``[:n_active[t]]``
of the batch, and the recursions slice that prefix instead of masking, so
padding costs memory but no arithmetic.

Example:
    >>> import numpy as np
    >>> b = SequenceBatch.from_lengths([2, 3])
    >>> b.order.tolist(), b.n_active.tolist()
    ([1, 0], [2, 2, 1])
    >>> b.pad(np.arange(5.0)).tolist()   # (T_max, n_sequences)
    [[2.0, 0.0], [3.0, 1.0], [4.0, 0.0]]
"""

from __future__ import annotations

import functools

import numpy as np

from tying.hmm.frames import is_missing

__all__ = [
    "SequenceBatch",
    "check_lengths",
    "check_observations",
    "check_recursion_inputs",
    "check_squares",
    "refuse_undefined_emissions",
    "check_unmasked",
]


#: no sequence is this long; a larger float or uint64 length would not cast to int64
_MAX_LENGTH = 2**62


def n_rows(X: np.ndarray) -> int:
    """The number of rows of an observation array, refusing a scalar.

    A scalar ``X`` was read as 0 rows and refused as "X has no rows", which it has not:
    it is no array of observations.

    Args:
        X: the observations as an array.

    Returns:
        ``len(X)``.

    Raises:
        ValueError: for a 0-d ``X``, naming its value and the fix.

    Example:
        >>> n_rows(np.zeros((3, 2)))
        3
        >>> n_rows(np.asarray(0.5))
        Traceback (most recent call last):
        ...
        ValueError: X must be an array of observations, one row per time step, got the scalar 0.5; give [[0.5]] for one observation of one feature (or [0.5] for one symbol)
    """
    if X.ndim == 0:
        raise ValueError(_scalar_x_message(X.item()))
    return X.shape[0]


def _scalar_x_message(v: object) -> str:
    """Why a value NumPy reads as 0-d is no ``X``, and the fix that works for it.

    ``[[v]]`` is advice only for a number: a SciPy sparse matrix (``np.asarray`` wraps it
    as one object), a string, None or a dict were told to nest themselves in a list,
    which fails again (stop 61)."""
    head = "X must be an array of observations, one row per time step, got"
    if hasattr(v, "toarray") and hasattr(v, "nnz"):  # scipy.sparse matrix or array
        return (
            f"{head} a SciPy sparse {type(v).__name__} of shape {getattr(v, 'shape', '?')}; "
            f"the models read dense observations: pass X.toarray()"
        )
    if isinstance(v, (bool, int, float, np.number)):
        return (
            f"{head} the scalar {v!r}; give [[{v!r}]] for one observation of one feature "
            f"(or [{v!r}] for one symbol)"
        )
    fix = "pass an array of numbers, (n_samples, n_features), or (n_samples,) symbols"
    if isinstance(v, str):
        fix += (
            "; a string's characters as symbols are coded as integers first: "
            "labels, codes = np.unique(list(X), return_inverse=True), then use codes"
        )
    return f"{head} {_short_repr(v)} (a {type(v).__name__}); {fix}"


def _short_repr(v: object, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_lengths(lengths: object, n_samples: int) -> np.ndarray:
    """Validate ``lengths`` against ``n_samples`` rows of ``X``.

    Args:
        lengths: positive integers summing to ``n_samples``, or None (one sequence).
        n_samples: number of rows of ``X``.

    Returns:
        An int64 array of lengths.

    Raises:
        ValueError: on a non-positive length, or lengths not summing to ``n_samples``.
        TypeError: on non-integer lengths.

    Example:
        >>> check_lengths([3, 2], 5).tolist()
        [3, 2]
    """
    if lengths is None:
        if n_samples == 0:
            raise ValueError("X has no rows; give at least one observation")
        return np.array([n_samples], dtype=np.int64)
    _refuse_bool_entries(lengths)
    _refuse_masked_lengths(lengths)
    arr = np.asarray(lengths)
    if arr.ndim == 1 and arr.size == 0:  # "got shape (0,)" named neither the cause nor the fix
        if n_samples == 0:
            raise ValueError(
                "lengths is empty (no sequences) and X has no rows; give at least one "
                "sequence of at least one observation"
            )
        raise ValueError(
            f"lengths is empty (no sequences) but X has {n_samples} rows; lengths must "
            f"partition X with one positive entry per sequence, e.g. lengths=[{n_samples}] "
            f"or lengths=None for a single sequence"
        )
    if arr.ndim == 0 and arr.dtype == object:  # a generator, set, dict: "got shape ()" said
        raise TypeError(  # nothing of what was given (a set's order is not the sequences')
            f"lengths must be a list or 1-d array of sequence lengths, in the order of "
            f"the sequences in X, got a {type(lengths).__name__}; pass a list, e.g. "
            f"lengths=[len(s) for s in seqs]"
        )
    if arr.ndim == 0:
        raise ValueError(
            f"lengths must be a 1-d list of sequence lengths, got the scalar {lengths!r}; "
            f"for one sequence pass lengths=None or lengths=[n_samples]"
        )
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-d list of sequence lengths, got shape {arr.shape}")
    if arr.dtype.kind == "O":  # e.g. a pandas object column: Python ints, as hmmlearn takes
        arr = _object_lengths(arr, n_samples)
    # dtype kinds: np.issubdtype's answers without its cost ("m": timedelta64 is an integer)
    if arr.dtype.kind not in "ium":
        if not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers, got {arr.dtype} values {arr[:5]}")
    if arr.dtype.kind in "fu":  # inf, 1e30 or a uint64 past 2**63 do not cast to int64
        lo, hi = arr.min().item(), arr.max().item()  # Python numbers: no float16 overflow
        if hi >= _MAX_LENGTH or lo <= -_MAX_LENGTH:
            i = int(np.argmax(arr) if hi >= _MAX_LENGTH else np.argmin(arr))
            raise ValueError(
                f"lengths[{i}] = {arr[i]} is not a sequence length (X has {n_samples} "
                f"rows); lengths must partition X (one entry per sequence)"
            )
    arr = arr.astype(np.int64)
    if arr.min() <= 0:  # the position only for the error
        bad = np.flatnonzero(arr <= 0)
        raise ValueError(
            f"lengths[{bad[0]}] = {arr[bad[0]]}: every sequence needs at least one "
            f"observation; drop empty sequences"
        )
    # the int64 sum wraps: four lengths of 2**62 (+5) summed to 5 and, taken for a
    # partition of 5 rows, crashed the compiled kernels; any length past n_samples means
    # the exact sum is not n_samples either
    if int(arr.sum()) != n_samples or (len(arr) > 1 and arr.max() > n_samples):
        raise ValueError(
            f"lengths sum to {sum(arr.tolist())} but X has {n_samples} rows; "
            f"lengths must partition X (one entry per sequence)"
        )
    return arr


def _refuse_bool_entries(lengths: object, who: str = "") -> None:
    """Refuse a list or tuple of lengths holding a bool among numbers.

    ``np.asarray([True, 6])`` is ``[1, 6]``: the bool became a length of 1 and the fit
    ran on sequences the caller never meant, with no error (stop 40). A bool array is
    refused by its dtype; a list hides it, so its entries are looked at here.
    """
    if not isinstance(lengths, list | tuple):
        return
    bools = [i for i, v in enumerate(lengths) if isinstance(v, bool | np.bool_)]
    # all bools: a bool array, refused by its dtype with the general message
    if bools and len(bools) < len(lengths):
        i = bools[0]
        raise TypeError(
            f"{who}lengths[{i}] = {lengths[i]!r} is a bool, not a sequence length; lengths "
            f"must be integers (one per sequence), e.g. lengths=[3, 6]; a mask of rows is not "
            f"a lengths argument"
        )


def _refuse_masked_lengths(lengths: object, who: str = "") -> None:
    """Refuse a masked array of lengths that masks an entry: ``np.asarray`` drops the mask,
    so a masked length was read as the number under it, with no error (as masked ``X``
    was before :func:`check_unmasked`)."""
    if isinstance(lengths, np.ma.MaskedArray) and np.ma.getmaskarray(lengths).any():
        i = int(np.flatnonzero(np.ma.getmaskarray(lengths).ravel())[0])
        raise ValueError(
            f"{who}lengths[{i}] is masked; a masked length has no value (the mask would be "
            f"dropped and the number under it read); give every sequence's length as a "
            f"plain list or array of ints"
        )


def _object_lengths(arr: np.ndarray, n_samples: int) -> np.ndarray:
    """An object array of lengths as int64 when every entry is an integer (not a bool);
    refused by entry otherwise (stop 38: integer object arrays were refused, hmmlearn
    takes them)."""
    for i, v in enumerate(arr):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise TypeError(
                f"lengths must be integers, got lengths[{i}] = {v!r} ({type(v).__name__}) in "
                f"an object array; pass a list or array of ints"
            )
        if not -_MAX_LENGTH < int(v) < _MAX_LENGTH:
            raise ValueError(
                f"lengths[{i}] = {v} is not a sequence length (X has {n_samples} rows); "
                f"lengths must partition X (one entry per sequence)"
            )
    return np.array([int(v) for v in arr], dtype=np.int64)


def _checked_batch_lengths(arr: np.ndarray) -> np.ndarray:
    """Lengths given to :class:`SequenceBatch` directly that are not integers already:
    :func:`check_lengths`' checks by entry (non-integral, bool, out of range), against
    their own exact sum (there is no X to partition here)."""
    try:
        total = sum(int(v) for v in arr.ravel().tolist())
    except (TypeError, ValueError, OverflowError):  # non-integral or non-finite: refused
        total = 0  # by check_lengths before it reads the total
    try:
        return check_lengths(arr, total)
    except (TypeError, ValueError) as err:
        raise type(err)(
            f"SequenceBatch: {err}; a batch takes integer sequence lengths (build it with "
            f"SequenceBatch.from_lengths(lengths, n_samples), which checks them against X)"
        ) from None


def check_unmasked(X: object, lengths: np.ndarray | None = None) -> None:
    """Refuse a masked array that masks an entry: ``np.asarray`` drops the mask.

    The models read every value of ``X``; a masked value (a missing observation) would be
    scored, fitted and decoded as the number under the mask, with no error (stop 33, second
    round). A masked array with nothing masked is plain data and passes.

    Args:
        X: the observations as given (any array-like).
        lengths: validated lengths, used to name the sequence of the first masked value.

    Raises:
        ValueError: naming the first masked entry's sequence, position and row, and the fix.

    Example:
        >>> X = np.ma.masked_array([[0.0], [1.0], [2.0]], mask=[[False], [True], [False]])
        >>> check_unmasked(X, np.array([2, 1]))
        Traceback (most recent call last):
        ...
        ValueError: X is a masked array with a masked value at sequence 0, position 1 (row 1 of X), which would be read as the value under the mask; drop the masked rows (X[~np.ma.getmaskarray(X).any(axis=1)], with lengths to match) or fill them (X.filled(...))
    """
    if not isinstance(X, np.ma.MaskedArray):
        return
    mask = np.ma.getmaskarray(X)
    if not mask.any():
        return
    rows = mask.reshape(len(mask), -1).any(axis=1) if mask.ndim else mask.reshape(1)
    row = int(np.flatnonzero(rows)[0])
    seq, pos = _locate(row, lengths)
    raise ValueError(
        f"X is a masked array with a masked value at sequence {seq}, position {pos} "
        f"(row {row} of X), which would be read as the value under the mask; drop the "
        f"masked rows (X[~np.ma.getmaskarray(X).any(axis=1)], with lengths to match) or "
        f"fill them (X.filled(...))"
    )


def check_observations(
    X: object, lengths: np.ndarray | None = None, *, ndim: int = 2, column_sums: bool = False
):
    """Validate an observation array: its shape, and that it is finite.

    Args:
        X: array-like of shape ``(n_samples, n_features)`` (``ndim=2``) or
            ``(n_samples,)`` / ``(n_samples, 1)`` symbols (``ndim=1``).
        lengths: validated lengths, used to name the sequence of a bad value.
        ndim: 2 for feature vectors, 1 for symbols.
        column_sums: (``ndim=2``) also return ``np.ones(n_samples) @ X`` of the returned
            float64 ``X``: the pass that sums the columns is also the finiteness check
            (a fit's centre; one pass over ``X`` instead of two).

    Returns:
        ``X`` as a float64 (``ndim=2``) or int64 (``ndim=1``) array; with
        ``column_sums``, the pair ``(X, sums)``.

    Raises:
        ValueError: on the wrong shape, a NaN/inf or a masked value (:func:`check_unmasked`),
            naming the sequence and position.

    Example:
        >>> check_observations([[0.0], [float("nan")]], np.array([1, 1]))
        Traceback (most recent call last):
        ...
        ValueError: X contains nan at sequence 1, position 0 (row 1 of X); remove or impute non-finite values first
    """
    check_unmasked(X, lengths)
    arr = np.asarray(X)
    if arr.ndim == 0 and arr.dtype == object:  # a sparse matrix, None, a dict: named
        raise ValueError(_scalar_x_message(arr.item()))
    if ndim == 1:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            # a list of equal-length sequences stacks into (n_seqs, T): name the layout
            raise ValueError(
                f"X must hold one symbol per row, shape (n_samples,) or (n_samples, 1); "
                f"got shape {arr.shape}; for several sequences, concatenate them and give "
                f"their lengths: np.concatenate(seqs), lengths=[len(s) for s in seqs]; for "
                f"one sequence laid out as a row, X.reshape(-1, 1)"
            )
    else:
        if arr.ndim == 1:
            raise ValueError(
                f"X must be 2-d (n_samples, n_features), got shape {arr.shape}; "
                f"use X.reshape(-1, 1) for one feature"
            )
        if arr.ndim != 2:
            raise ValueError(
                f"X must be 2-d (n_samples, n_features), got shape {arr.shape}; for "
                f"several sequences, concatenate them and give their lengths: "
                f"np.concatenate(seqs), lengths=[len(s) for s in seqs]"
            )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {arr.dtype}{_numeric_fix(arr, ndim)}")
    if ndim == 2 and arr.dtype.kind == "f" and arr.dtype.itemsize > 8 and arr.size:
        _check_float64_range(arr, lengths)  # the cast made 1e400 inf, with a RuntimeWarning
    sums = None
    if column_sums and ndim == 2:  # the sums are of the float64 X this returns
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: the full check decides
            sums = _ones(len(arr)) @ arr
    # a finite sum means every value is finite (NaN and inf propagate through a sum; only
    # an overflow of finite values makes it inf, and then the full check below runs):
    # one pass and no (n_samples, D) mask for valid data
    if arr.dtype.kind == "f":
        if sums is not None:  # each column's sum carries its NaN or inf
            total = sums
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                total = np.add.reduce(arr, axis=None)
    if arr.dtype.kind == "f" and not np.isfinite(total).all():
        finite = np.isfinite(arr)
        if not finite.all():
            row = int(np.flatnonzero(~finite.reshape(len(arr), -1).all(axis=1))[0])
            value = arr[row] if arr.ndim == 1 else arr[row][~finite[row]][0]
            seq, pos = _locate(row, lengths)
            raise ValueError(
                f"X contains {value} at sequence {seq}, position {pos} (row {row} of X); "
                f"remove or impute non-finite values first"
            )
    if ndim == 1:
        if arr.dtype.kind == "f":
            if not np.all(arr == np.round(arr)):
                row = int(np.flatnonzero(arr != np.round(arr))[0])
                seq, pos = _locate(row, lengths)
                raise ValueError(
                    f"X holds symbols (integers 0..n_symbols-1), got {arr[row]!s} at sequence "
                    f"{seq}, position {pos} (row {row} of X)"
                )
        top = 2.0**63 if arr.dtype.kind == "f" else np.iinfo(np.int64).max + 1
        # compared as Python numbers: 2.0**63 cast to float16 X overflows (a RuntimeWarning)
        if arr.dtype.kind in "fu" and arr.size and arr.max().item() >= top:
            # no int64 holds it: the cast would wrap it (or make it -2**63) and the error
            # would name another value; it is no symbol of any model
            row = int(np.argmax(arr))
            seq, pos = _locate(row, lengths)
            raise ValueError(
                f"X holds symbols (integers 0..n_symbols-1), got {arr[row]!s} at sequence "
                f"{seq}, position {pos} (row {row} of X)"
            )
        if arr.dtype.kind == "f" and arr.size and arr.min().item() < -(2.0**63):
            row = int(np.argmin(arr))
            seq, pos = _locate(row, lengths)
            raise ValueError(
                f"X holds symbols (integers 0..n_symbols-1), got {arr[row]!s} at sequence "
                f"{seq}, position {pos} (row {row} of X)"
            )
        return arr.astype(np.int64)
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    return (arr, sums) if sums is not None else arr


def _check_float64_range(arr: np.ndarray, lengths: np.ndarray | None) -> None:
    """Refuse a finite long-double value past float64's range (the models compute in
    float64): the cast turned it into inf, with NumPy's overflow warning (an error under
    ``-W error``), and the refusal named inf rather than the value given. NaN and inf
    are left to the finiteness check."""
    past = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float64).max)
    if not past.any():
        return
    flat = int(np.flatnonzero(past.reshape(-1))[0])
    row = flat // (arr.size // len(arr))
    value = arr.reshape(-1)[flat]
    seq, pos = _locate(row, lengths)
    raise ValueError(
        f"X holds {value!s} at sequence {seq}, position {pos} (row {row} of X): past "
        f"float64's range ({np.finfo(np.float64).max:g}), which the models compute in; "
        f"rescale X (e.g. divide each feature by its standard deviation)"
    )


def check_squares(X: np.ndarray, lengths: np.ndarray | None = None) -> None:
    """Refuse a float64 ``X`` whose squares overflow (Gaussian densities need them).

    Past about 1.3e154 a value's square is inf, and a Gaussian log-density of it is
    -inf or NaN: a score of -inf, posteriors of NaN and a Viterbi path of state 0,
    with no error (stop 25 review). One dot product over ``X`` screens (it is inf only
    when some square, or the sum of all of them, overflows); only then is the largest
    value found, and ``X`` refused when its square overflows.

    Args:
        X: finite float64 observations, ``(n_samples, n_features)``.
        lengths: validated lengths, to name the sequence of the offending value.

    Raises:
        ValueError: naming the largest value, its sequence and position, and the fix.

    Example:
        >>> check_squares(np.array([[1.0], [2e160]]), np.array([1, 1]))
        Traceback (most recent call last):
        ...
        ValueError: X holds 2e+160 at sequence 1, position 0 (row 1 of X): values this large overflow float64 when squared, so Gaussian log-densities cannot be computed; rescale X (e.g. divide each feature by its standard deviation)
    """
    flat = X.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.dot(flat, flat))
    if np.isfinite(total):
        return
    big = np.abs(X).reshape(len(X), -1).max(axis=1)
    row = int(np.argmax(big))
    with np.errstate(over="ignore"):
        if np.isfinite(big[row] * big[row]):  # only the sum overflowed: every square is
            return  # finite, and so are the densities (no false refusal)
    seq, pos = _locate(row, lengths)
    raise ValueError(
        f"X holds {big[row]:g} at sequence {seq}, position {pos} (row {row} of X): values "
        f"this large overflow float64 when squared, so Gaussian log-densities cannot be "
        f"computed; rescale X (e.g. divide each feature by its standard deviation)"
    )


#: the kept read-only vector of ones the column sums multiply by (a fresh ``np.ones(n)``
#: of a fit's rows cost 40-50 us, cold, 2026-12-02), for up to this many rows
_ONES_MAX = 1 << 18
_ONES = [np.ones(0)]


def check_recursion_inputs(who: str, startprob, transmat, log_emission, batch) -> None:
    """Refuse arrays whose shapes do not fit each other or ``batch`` (stop 37).

    The compiled recursions index ``log_emission`` by the batch's row offsets and
    ``K = len(transmat)`` states: a ``log_emission`` with fewer rows than the batch
    covers, or fewer columns than there are states, was read past its end (numbers from
    other memory, with no error), and one with more rows was silently cut to the batch.

    Args:
        who: the calling function, for the message.
        startprob, transmat, log_emission: as given to it.
        batch: its :class:`SequenceBatch`.

    Raises:
        ValueError: naming the array, its shape and the shape it must have; or naming
            the row of ``startprob`` / ``transmat`` that is not a probability
            distribution (non-finite, negative, or not summing to 1; stop 38).

    Example:
        >>> check_recursion_inputs("viterbi", np.ones(2) / 2, np.eye(2), np.zeros((4, 2)),
        ...                        SequenceBatch.from_lengths([3, 3]))
        Traceback (most recent call last):
        ...
        ValueError: viterbi: log_emission has shape (4, 2) but the batch covers 6 rows (lengths [3 3]) of 2 states: expected (6, 2); build the batch from the same X (SequenceBatch.from_lengths(lengths, len(X)))
    """
    sp, A, lb = np.shape(startprob), np.shape(transmat), np.shape(log_emission)
    K = A[0] if len(A) else 0
    if len(A) != 2 or A != (K, K) or K == 0:
        raise ValueError(f"{who}: transmat must be square (K, K) with K >= 1, got shape {A}")
    if sp != (K,):
        raise ValueError(
            f"{who}: startprob has shape {sp} but transmat has {K} states: expected ({K},)"
        )
    for name, rows in (("startprob", np.reshape(startprob, (1, K))), ("transmat", transmat)):
        problem = _not_a_distribution(np.asarray(rows, dtype=np.float64))
        if problem:
            where = name if name == "startprob" else f"{name} row {problem[0]}"
            raise ValueError(
                f"{who}: {where} {problem[1]}, so it is not a probability distribution and "
                f"the results would not be a likelihood; "
                f"pass probabilities that are finite, >= 0 and sum to 1 "
                f"(e.g. p / p.sum(axis=-1, keepdims=True))"
            )
    if not isinstance(batch, SequenceBatch):  # None or a list of lengths: an AttributeError
        raise TypeError(
            f"{who}: batch must be a SequenceBatch, got {type(batch).__name__}; build it "
            f"with SequenceBatch.from_lengths(lengths, len(X))"
        )
    lengths = batch.lengths
    if lengths.ndim != 1 or lengths.size == 0 or lengths.min() <= 0:
        raise ValueError(
            f"{who}: the batch's lengths must be positive, got {lengths[:5]}; build it "
            f"with SequenceBatch.from_lengths, which checks them"
        )
    if lb != (batch.n_samples, K):
        raise ValueError(
            f"{who}: log_emission has shape {lb} but the batch covers {batch.n_samples} "
            f"rows (lengths {lengths[:5]}) of {K} states: expected ({batch.n_samples}, {K}); "
            f"build the batch from the same X (SequenceBatch.from_lengths(lengths, len(X)))"
        )


def refuse_undefined_emissions(who: str, log_emission, batch, log_prob: np.ndarray) -> None:
    """Refuse a ``log_emission`` holding NaN or +inf, once the recursion has run.

    Such an entry is no log-density, so a sequence holding it has no likelihood; the
    recursions' log-space fallback read a NaN as a state of probability 0, which gave
    log p(x) = -inf (a sequence no path can emit) with no error, and Viterbi returned a
    path with a NaN score. Every such entry of a state the sequence can reach leaves
    ``log_prob`` non-finite, so ``log_emission`` is searched only when a sequence's
    result is (free for valid input: the E-step of every fit goes through here).

    Args:
        who: the calling function, for the message.
        log_emission: ``(n_samples, K)``, as given to it.
        batch: its :class:`SequenceBatch`.
        log_prob: ``(n_sequences,)`` the recursion's per-sequence result.

    Raises:
        ValueError: naming the first NaN or +inf entry: its row, sequence, position
            and state.

    Example:
        >>> lb = np.array([[0.0, -1.0], [np.nan, 0.0]])
        >>> refuse_undefined_emissions("viterbi", lb, SequenceBatch.from_lengths([2]),
        ...                            np.array([np.nan]))
        Traceback (most recent call last):
        ...
        ValueError: viterbi: log_emission[1, 0] is nan (sequence 0, position 1, state 0), which is no log-density, so the sequence has no likelihood; a log-density is a number or -inf (probability 0): fix what computed it (a log of a negative number, inf - inf)
    """
    if np.isfinite(log_prob).all():
        return
    lb = np.asarray(log_emission, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        undefined = ~(lb < np.inf) & ~np.isneginf(lb)  # NaN or +inf
    if not undefined.any():  # only sequences of probability 0 (-inf): a valid answer
        return
    row, k = (int(i) for i in np.argwhere(undefined)[0])
    seq, pos = _locate(row, batch.lengths)
    raise ValueError(
        f"{who}: log_emission[{row}, {k}] is {lb[row, k]} (sequence {seq}, position {pos}, "
        f"state {k}), which is no log-density, so the sequence has no likelihood; a "
        f"log-density is a number or -inf (probability 0): fix what computed it (a log "
        f"of a negative number, inf - inf)"
    )


def _not_a_distribution(rows: np.ndarray) -> tuple[int, str] | None:
    """The first row of ``rows`` that is not a distribution, and why; None when all are.

    A row must be finite, have no negative entry and sum to 1 with hmmlearn's tolerance
    (``np.allclose``: 1e-5 relative, 1e-8 absolute), so that what hmmlearn accepts is
    accepted here too (stop 38: the public recursions read any numbers as probabilities).

    Example:
        >>> _not_a_distribution(np.array([[0.5, 0.5], [0.2, 0.7]]))
        (1, 'sums to 0.9')
    """
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        return i, f"holds {rows[i][~np.isfinite(rows[i])][0]}"
    negative = (rows < 0).any(axis=1)
    if negative.any():
        i = int(np.argmax(negative))
        return i, f"holds {rows[i].min():.6g}, below 0"
    sums = rows.sum(axis=1)
    off = ~np.isclose(sums, 1.0, rtol=1e-5, atol=1e-8)
    if off.any():
        i = int(np.argmax(off))
        return i, f"sums to {sums[i]:.6g}"
    return None


def _ones(n: int) -> np.ndarray:
    """``n`` ones (read-only): a slice of the kept vector, or a new one past ``_ONES_MAX``.

    Example:
        >>> _ones(3).tolist(), _ones(3).flags.writeable
        ([1.0, 1.0, 1.0], False)
    """
    if n > _ONES_MAX:
        return np.ones(n)
    ones = _ONES[0]
    if len(ones) < n:  # another thread may grow it too: either vector is all ones
        ones = np.ones(min(max(n, 2 * len(ones)), _ONES_MAX))
        ones.flags.writeable = False
        _ONES[0] = ones
    return ones[:n]


def _numeric_fix(arr: np.ndarray, ndim: int = 2) -> str:
    """The way to numbers for an X that is not numeric: the bare dtype named no fix.

    Text that is no number (symbols given as labels, ``"a"``) is not told to cast to
    float, which fails there: it is told to code the labels as integers. A missing value
    (``pd.NA`` in an object column) is named as missing, not told to recode it as a
    label (``np.unique`` fails on it; stop 62).
    """
    if arr.dtype.kind == "c":
        return "; complex values are no observations: if the imaginary parts are 0, pass X.real"
    if arr.dtype.kind in "OUS":  # text or Python objects (a pandas column, a CSV read as text)
        label = _first_label(arr)
        if label is not None and not is_missing(label[1]):
            # labels with a missing value after them (a "string" column with pd.NA): the
            # np.unique advice fails there ("boolean value of NA is ambiguous", or "'<' not
            # supported" for None and NaN among strings), so the missing value is named
            label = _first_missing(arr) or label
        if label is not None and _is_gap(label[1]):
            row, value = label
            return (
                f"; X[{row}] holds {value!s}, a missing value: remove those rows (with "
                f"lengths to match) or impute them first"
            )
        if label is not None:
            row, value = label
            codes = "labels, codes = np.unique(X, return_inverse=True), then fit/score codes"
            if ndim == 1:
                return (
                    f"; X[{row}] = {value!r} is not a number: symbols given as labels are "
                    f"coded as integers 0..n_symbols-1 first, e.g. {codes} (and code new "
                    f"data with np.searchsorted(labels, X_new))"
                )
            return (
                f"; X[{row}] holds {value!r}, which is not a number: remove or impute it, "
                f"or, for labels (categories), use a CategoricalHMM on integer codes: {codes}"
            )
        return (
            "; convert it to numbers first, e.g. np.asarray(X, dtype=float) (missing values "
            "such as None must be removed or imputed before)"
        )
    return ""


def _first_label(arr: np.ndarray) -> tuple[int, object] | None:
    """(row, value) of the first entry that float() cannot read, or None (None and NaN
    read as NaN, which the finiteness check names by position)."""
    try:
        np.asarray(arr, dtype=np.float64)
        return None
    except (ValueError, TypeError):
        pass
    flat = arr.reshape(len(arr), -1) if arr.ndim else arr.reshape(1, 1)
    for row, values in enumerate(flat):
        for value in values:
            try:
                float(value if value is not None else "nan")
            except (ValueError, TypeError):
                return row, value.item() if isinstance(value, np.generic) else value
    return None


def _first_missing(arr: np.ndarray) -> tuple[int, object] | None:
    """(row, value) of the first missing value (``pd.NA``, ``pd.NaT``, ``None`` or NaN) of
    an object array, or None."""
    flat = arr.reshape(len(arr), -1) if arr.ndim else arr.reshape(1, 1)
    for row, values in enumerate(flat):
        for value in values:
            if _is_gap(value):
                return row, value
    return None


def _is_gap(value: object) -> bool:
    """Whether ``value`` marks a missing entry: ``pd.NA``/``pd.NaT``, ``None`` or NaN."""
    return value is None or is_missing(value) or (isinstance(value, float) and value != value)


def _locate(row: int, lengths: np.ndarray | None) -> tuple[int, int]:
    if lengths is None:
        return 0, row
    ends = np.cumsum(lengths)
    seq = int(np.searchsorted(ends, row, side="right"))
    return seq, row - (int(ends[seq - 1]) if seq else 0)


class SequenceBatch:
    """The padded, time-major, longest-first layout of a set of sequences.

    Args:
        lengths: sequence lengths (in the caller's order), positive integers; lengths
            of another dtype are checked by entry (``[2.7]`` is refused, not cut to 2).
            :meth:`from_lengths` also checks them against the rows of ``X``.

    Attributes:
        lengths: lengths in the caller's order.
        order: batch slot -> caller's sequence index (longest first).
        sorted_lengths: ``lengths[order]``.
        n_active: ``(T_max,)``; at time ``t`` slots ``[:n_active[t]]`` are running.
        starts: offset of each sequence (caller's order) in the concatenated ``X``.
        t_index, b_index: for every row of ``X``, its (time, slot) in the padded layout.
    """

    def __init__(self, lengths: np.ndarray):
        _refuse_bool_entries(lengths, "SequenceBatch: ")
        _refuse_masked_lengths(lengths, "SequenceBatch: ")
        arr = np.asarray(lengths)
        if arr.dtype.kind != "i":  # the models pass checked int64; SequenceBatch([2.7]) was
            arr = _checked_batch_lengths(arr)  # cut to [2] by the cast, with no error
        self.lengths = arr.astype(np.int64, copy=False)
        self.n_sequences = len(self.lengths)
        ends = np.cumsum(self.lengths)
        self.starts = np.empty_like(ends)  # 0, then the running ends (no list concatenate)
        self.starts[:1] = 0
        self.starts[1:] = ends[:-1]
        self.n_samples = int(ends[-1])

    # the sorted layout, made on first use: the compiled E-step reads lengths and starts
    # only, and the sort and search cost a fit's setup 0.03-0.07 ms (cold, 2026-12-02)
    @functools.cached_property
    def _neg_sorted(self) -> np.ndarray:
        return -self.lengths[self.order]

    @functools.cached_property
    def order(self) -> np.ndarray:
        """Batch slot -> caller's sequence index (longest first; ties in caller order)."""
        return np.argsort(-self.lengths, kind="stable")

    @functools.cached_property
    def sorted_lengths(self) -> np.ndarray:
        """``lengths[order]``."""
        return -self._neg_sorted

    @functools.cached_property
    def t_max(self) -> int:
        """The longest sequence's length."""
        return int(-self._neg_sorted[0])

    @functools.cached_property
    def n_active(self) -> np.ndarray:
        """``(t_max,)``: n_active[t] = #sequences longer than t (a prefix: sorted)."""
        return self._neg_sorted.searchsorted(np.arange(0, -self.t_max, -1), side="left")

    @functools.cached_property
    def t_index(self) -> np.ndarray:
        """For every row of ``X``, its time step in the padded layout (made on first use:
        the compiled E-step never pads, and two row-long arrays cost a fit ~0.4 ms)."""
        seq = np.repeat(np.arange(self.n_sequences), self.lengths)
        return np.arange(self.n_samples) - self.starts[seq]

    @functools.cached_property
    def b_index(self) -> np.ndarray:
        """For every row of ``X``, its slot (sorted sequence) in the padded layout."""
        slot_of = np.empty(self.n_sequences, dtype=np.int64)
        slot_of[self.order] = np.arange(self.n_sequences)
        return np.repeat(slot_of, self.lengths)

    @classmethod
    def from_lengths(cls, lengths: object, n_samples: int | None = None) -> SequenceBatch:
        """Validate ``lengths`` (against ``n_samples`` when given) and build the layout.

        Example:
            >>> SequenceBatch.from_lengths([4, 1]).n_active.tolist()
            [2, 1, 1, 1]
        """
        _refuse_bool_entries(lengths, "SequenceBatch: ")
        _refuse_masked_lengths(lengths, "SequenceBatch: ")
        arr = np.asarray(lengths)
        total = int(arr.sum()) if n_samples is None else n_samples
        return cls(check_lengths(arr, total))

    @property
    def padding_fraction(self) -> float:
        """Share of the padded layout that is padding (0 for equal lengths)."""
        return 1.0 - self.n_samples / (self.t_max * self.n_sequences)

    @property
    def rectangular(self) -> bool:
        """Equal lengths (no padding): pad and unpad are transposes, not scatters."""
        return bool(np.all(self.lengths == self.t_max))

    def pad(self, flat: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter per-row values ``(n_samples, ...)`` into ``(T_max, n_sequences, ...)``."""
        flat = np.asarray(flat)
        if self.rectangular:  # the stable sort keeps equal lengths in the caller's order
            # equal lengths in the caller's order: a transpose, no scatter
            out = flat.reshape((self.n_sequences, self.t_max) + flat.shape[1:])
            return np.ascontiguousarray(np.swapaxes(out, 0, 1))
        out = np.full((self.t_max, self.n_sequences) + flat.shape[1:], fill, dtype=flat.dtype)
        out[self.t_index, self.b_index] = flat
        return out

    def unpad(self, padded: np.ndarray) -> np.ndarray:
        """Gather ``(T_max, n_sequences, ...)`` back to per-row ``(n_samples, ...)``."""
        if self.rectangular:
            return np.swapaxes(padded, 0, 1).reshape((self.n_samples,) + padded.shape[2:])
        return padded[self.t_index, self.b_index]

    def per_sequence(self, values: np.ndarray) -> np.ndarray:
        """Reorder per-slot values ``(n_sequences, ...)`` to the caller's sequence order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out
