"""Validation names the bad sequence and position; the padded layout round-trips."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import SequenceBatch, check_lengths, check_observations


def test_lengths_must_partition_x():
    with pytest.raises(ValueError, match=r"lengths sum to 9 but X has 10 rows"):
        check_lengths([4, 5], 10)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0: every sequence needs"):
        check_lengths([10, 0], 10)
    with pytest.raises(TypeError, match="lengths must be integers"):
        check_lengths([4.5, 5.5], 10)
    assert check_lengths(None, 7).tolist() == [7]


@pytest.mark.parametrize("bad, word", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_values_name_sequence_and_position(bad, word):
    X = np.zeros((10, 2))
    X[7, 1] = bad
    with pytest.raises(
        ValueError, match=rf"X contains {word} at sequence 1, position 3 \(row 7 of X\)"
    ):
        check_observations(X, np.array([4, 6]))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"X must be 2-d .* use X.reshape\(-1, 1\)"):
        check_observations(np.zeros(5))
    with pytest.raises(ValueError, match="one symbol per row"):
        check_observations(np.zeros((5, 2)), ndim=1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_pad_unpad_round_trip_and_prefix_property(lengths):
    b = SequenceBatch.from_lengths(lengths)
    flat = np.arange(sum(lengths), dtype=float)
    padded = b.pad(flat, fill=-1.0)
    assert np.array_equal(b.unpad(padded), flat)
    # at time t the running sequences are exactly the first n_active[t] slots
    running = padded != -1.0
    for t in range(b.t_max):
        assert running[t, : b.n_active[t]].all() and not running[t, b.n_active[t] :].any()
    assert np.array_equal(b.per_sequence(b.sorted_lengths), np.asarray(lengths))


def test_finite_values_whose_sum_overflows_are_accepted_and_bad_ones_still_found():
    """The finiteness check adds X up first (one pass); a sum that overflows on finite
    values must not refuse them, and inf and -inf that cancel to NaN are still named."""
    X = np.full((6, 2), 1e308)
    assert check_observations(X, np.array([6])) is not None
    X[4, 0] = np.inf
    X[5, 1] = -np.inf
    with pytest.raises(ValueError, match=r"X contains inf at sequence 0, position 4"):
        check_observations(X, np.array([6]))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=12))
def test_row_indices_of_the_padded_layout_follow_each_row(lengths):
    """t_index/b_index (made on first use) put row ``r`` of sequence ``s`` at step ``r -
    start[s]`` and at the sequence's slot in the longest-first order."""
    batch = SequenceBatch.from_lengths(lengths)
    slot = {int(s): i for i, s in enumerate(batch.order)}
    want_t, want_b = [], []
    for s, n in enumerate(lengths):
        want_t += list(range(n))
        want_b += [slot[s]] * n
    assert batch.t_index.tolist() == want_t and batch.b_index.tolist() == want_b
    assert batch.n_samples == sum(lengths)


_BAD = st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.5])


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    D=st.integers(1, 5),
    dtype=st.sampled_from(["float64", "float32", "int64", "int16"]),
    order=st.sampled_from(["C", "F"]),
    bad=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), _BAD), max_size=3),
)
def test_column_sums_check_refuses_and_accepts_exactly_what_the_plain_check_does(
    n, D, dtype, order, bad
):
    """``column_sums=True`` (a fit's one pass over X) takes its finiteness verdict from the
    columns' sums: it refuses the same X with the same message (inf and -inf that cancel,
    sums that overflow on finite values), accepts the same X, returns the same float64 X,
    and its sums are ``np.ones(n) @ X``'s bits (``_column_means``' mat-vec)."""
    X = np.random.default_rng(n * 7 + D).normal(scale=1e3, size=(n, D))
    if dtype.startswith("float"):
        for r, c, v in bad:
            X[r % n, c % D] = v
    with np.errstate(over="ignore"):  # 1e308 as float32 is inf: another bad value
        X = np.asarray(X.astype(dtype), order=order)
    lengths = np.array([n])
    try:
        want = check_observations(X, lengths)
    except ValueError as err:
        with pytest.raises(ValueError, match=rf"^{re.escape(str(err))}$"):
            check_observations(X, lengths, column_sums=True)
        return
    got, sums = check_observations(X, lengths, column_sums=True)
    assert got.dtype == np.float64 and got.flags.c_contiguous and np.array_equal(got, want)
    with np.errstate(over="ignore"):
        assert np.array_equal(sums, np.ones(n) @ want)


def test_column_sums_that_overflow_on_finite_values_are_accepted():
    X = np.full((6, 2), 1e308)
    got, sums = check_observations(X, np.array([6]), column_sums=True)
    assert np.isinf(sums).all() and np.array_equal(got, X)
    X[4, 0], X[5, 0] = np.inf, -np.inf  # cancel to NaN in column 0's sum
    with pytest.raises(ValueError, match=r"X contains inf at sequence 0, position 4"):
        check_observations(X, np.array([6]), column_sums=True)


@settings(max_examples=200, deadline=None)
@given(
    n=st.one_of(st.integers(1, 70), st.integers(1, 300_000)),
    D=st.integers(1, 9),
    offset=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_column_sums_from_the_kept_ones_have_the_bits_of_fresh_ones(n, D, offset, seed):
    """The kept vector of ones (sliced, read-only; a fresh one past ``_ONES_MAX`` rows)
    gives BLAS's mat-vec the bits of ``np.ones(n) @ X``, for X starting at any offset
    (the alignment BLAS sees) and any D."""
    from tying.hmm import sequences

    data = np.random.default_rng(seed).normal(scale=1e4, size=(n + 1) * D + offset)
    X = data[offset : offset + n * D].reshape(n, D)
    want = np.ones(n) @ X
    assert np.array_equal(sequences._ones(n) @ X, want)
    _, sums = check_observations(X, np.array([n]), column_sums=True)
    assert np.array_equal(sums, want)


# ---------------------------------------------------------------- stop 22: the old code
def _check_lengths_before_stop22(lengths, n_samples):
    """``check_lengths`` as it was (the reference for the cheaper checks)."""
    if lengths is None:
        if n_samples == 0:
            raise ValueError("X has no rows; give at least one observation")
        return np.array([n_samples], dtype=np.int64)
    arr = np.asarray(lengths)
    if arr.ndim == 1 and arr.size == 0:  # stop 53: the cause and the fix, not "shape (0,)"
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
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-d list of sequence lengths, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers, got {arr.dtype} values {arr[:5]}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(
            f"lengths[{bad[0]}] = {arr[bad[0]]}: every sequence needs at least one "
            f"observation; drop empty sequences"
        )
    if int(arr.sum()) != n_samples:
        raise ValueError(
            f"lengths sum to {int(arr.sum())} but X has {n_samples} rows; "
            f"lengths must partition X (one entry per sequence)"
        )
    return arr


def _outcome(f, *args):
    try:
        out = f(*args)
    except (TypeError, ValueError) as err:
        return type(err), str(err)
    return out.dtype, out.tolist()


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.integers(-3, 50), min_size=0, max_size=12),
    dtype=st.sampled_from(
        [
            "int64",
            "int32",
            "uint8",
            "float64",
            "float16",
            "bool",
            "timedelta64[s]",
            "complex128",
            "object",
            "list",
        ]
    ),  # fmt: skip
    half=st.booleans(),
    n_delta=st.sampled_from([0, 0, 1, -1]),
)
def test_check_lengths_answers_as_before_on_any_input(values, dtype, half, n_delta):
    """Every accepted input gives the same int64 lengths, every refused one the same
    error type and text, as the checks before stop 22 (dtype kinds for issubdtype)."""
    if dtype == "list":
        lengths = values
    else:
        lengths = np.array(values).astype(dtype)
        if half and dtype.startswith("float") and len(values):
            lengths = lengths + 0.5
    n = int(np.sum(np.asarray(values, dtype=np.int64))) + n_delta
    # stop 38: an object array of ints answers as the same ints do (it was refused)
    reference = np.array(values, dtype=np.int64) if dtype == "object" and len(values) else lengths
    assert _outcome(check_lengths, lengths, n) == _outcome(
        _check_lengths_before_stop22, reference, n
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=40))
def test_a_batch_is_laid_out_as_before(lengths):
    """The cheaper constructor (one negation, no list concatenate) gives the old layout."""
    ref_len = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-ref_len, kind="stable")
    sorted_lengths = ref_len[order]
    want = {
        "order": order,
        "sorted_lengths": sorted_lengths,
        "n_active": np.searchsorted(-sorted_lengths, -np.arange(sorted_lengths[0]), side="left"),
        "starts": np.concatenate([[0], np.cumsum(ref_len)[:-1]]),
    }
    b = SequenceBatch(ref_len)
    for name, value in want.items():
        got = getattr(b, name)
        assert got.dtype == value.dtype and np.array_equal(got, value), name
    assert (b.t_max, b.n_samples, b.n_sequences) == (sorted_lengths[0], ref_len.sum(), len(ref_len))


def test_the_sorted_layout_is_made_only_when_read():
    """The compiled E-step reads lengths and starts only: the sort, the search and the
    padded layout are made on first use, and are then the old layout's."""
    b = SequenceBatch(np.array([3, 5, 1, 5]))
    assert b.starts.tolist() == [0, 3, 8, 9] and b.n_samples == 14
    assert not {"order", "sorted_lengths", "t_max", "n_active"} & set(vars(b))
    assert b.n_active.tolist() == [4, 3, 3, 2, 2] and b.order.tolist() == [1, 3, 0, 2]
    assert b.sorted_lengths.tolist() == [5, 5, 3, 1] and b.t_max == 5
    assert b.pad(np.arange(14.0))[:, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
