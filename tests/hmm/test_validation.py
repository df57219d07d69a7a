"""tying.hmm.validation: the checks and broadcasting of values given to an HMM estimator."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm.validation import _broadcast, _stochastic


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    keep=st.lists(st.booleans(), min_size=3, max_size=3),
    n_lead=st.integers(0, 1),
)
def test_broadcast_gives_broadcast_tos_values_and_refusals(shape, keep, n_lead):
    # the M-steps' fast broadcast of priors: the same values and dtype as np.broadcast_to,
    # a fresh writable array, and the same refusal (ValueError) where broadcast_to refuses
    src = tuple(n if k else 1 for n, k in zip(shape, keep[: len(shape)], strict=False))
    src = (1,) * n_lead + src  # a leading 1 more than the target has: broadcast_to refuses
    value = np.arange(float(np.prod(src))).reshape(src) + 0.5
    try:
        want = np.broadcast_to(value, tuple(shape))
    except ValueError:
        # NumPy's own refusals: "could not be broadcast" or "more dimensions than allowed"
        with pytest.raises(ValueError, match="broadcast|more dimensions"):
            _broadcast(value, tuple(shape))
        return
    got = _broadcast(value, tuple(shape))
    assert got.dtype == want.dtype and got.flags.writeable
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="broadcast"):
        _broadcast(np.zeros(5), (2, 3))


def _stochastic_reference(name, value, shape):
    """``_stochastic`` before its three-comparison fast path (stop 19's checks)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities, got {arr}")
    sums = arr.sum(-1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        rows = np.flatnonzero(~np.isclose(np.atleast_1d(sums), 1.0, rtol=0, atol=1e-8))
        raise ValueError(
            f"{name} must sum to 1 along its last axis; row(s) {rows.tolist()} sum to "
            f"{np.atleast_1d(sums)[rows].tolist()}; normalise it"
        )
    return arr


_ENTRY = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, -0.0, -1e-300, np.nan, np.inf, -np.inf, 1e308, 5e-9]),
    st.floats(-0.1, 1.1),
)


@settings(max_examples=300, deadline=None)
@given(
    K=st.integers(1, 4),
    matrix=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 15), _ENTRY), max_size=3),
    nudge=st.sampled_from([0.0, 5e-9, -5e-9, 2e-8, -2e-8]),
)
def test_stochastic_accepts_and_refuses_exactly_what_its_reference_does(K, matrix, edits, nudge):
    """The fast path (three comparisons) and the reference's checks agree on every value:
    the same array back, or the same error; near the 1e-8 tolerance, NaN, inf, -0."""
    shape = (K, K) if matrix else (K,)
    arr = np.random.default_rng(K).dirichlet(np.ones(K), size=shape[:-1] or None)
    arr = np.array(arr, dtype=np.float64).reshape(shape)
    flat = arr.reshape(-1)
    flat[0] += nudge
    for i, v in edits:
        flat[i % flat.size] = v
    try:
        with np.errstate(all="ignore"):
            want = _stochastic_reference("p", arr, shape)
    except ValueError as err:
        with pytest.raises(ValueError, match=rf"^{re.escape(str(err))}$"):
            _stochastic("p", arr, shape)
        return
    got = _stochastic("p", arr, shape)
    assert np.array_equal(got, want)


def test_stochastic_rows_whose_sum_overflows_are_refused_by_name_not_by_a_warning():
    """Finite entries whose sum overflows: the 'sum to 1' error (stop 19's check summed a
    second time outside ``errstate``, and pytest turned NumPy's overflow warning into the
    error instead)."""
    with pytest.raises(ValueError, match=r"p must sum to 1 along its last axis; row\(s\) \[0\]"):
        _stochastic("p", np.array([1e308, 1e308]), (2,))
