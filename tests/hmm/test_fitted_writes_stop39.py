"""Stop 39: ufuncs writing into a fitted parameter (``out=m.means_``) follow NumPy.

A write into a fitted attribute through a ufunc's ``out=`` was computed into a fresh
array and then assigned whole. Two things NumPy does with ``out`` were lost:

- ``where=``: the entries the mask skips keep the output's values in NumPy; the fresh
  array left them uninitialised, and that memory was assigned to the model (means of
  6.9e-310, or a refusal quoting rows that sum to 5e246);
- casting: ``x += 1j`` on a float array is refused by NumPy's ``same_kind`` rule; the
  model took the real part, with only a ComplexWarning.

Each ``test_`` that is not marked as a guard failed on the code before its fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import CategoricalHMM, GaussianHMM

MEANS = [[0.0, 10.0], [3.0, 30.0], [-2.0, 7.0]]


def _gaussian(ties=None):
    means = np.array(MEANS)
    if ties is not None:
        means[1] = means[0]
    return GaussianHMM.from_params(
        np.full(3, 1 / 3), np.full((3, 3), 1 / 3), means, np.ones((3, 2)), ties=ties
    )


def _numpy(values, apply):
    """What NumPy leaves in a plain array of ``values`` after ``apply`` writes into it."""
    plain = np.array(values, dtype=np.float64)
    apply(plain)
    return plain


def test_a_where_mask_keeps_the_entries_it_skips():
    mask = np.array([[True, False], [False, True], [True, True]])

    def apply(a):
        np.add(a, 1.0, out=a, where=mask)

    for _ in range(20):  # uninitialised memory differs from call to call
        m = _gaussian()
        x = m.means_
        apply(x)
        np.testing.assert_array_equal(m.means_, _numpy(MEANS, apply))
        np.testing.assert_array_equal(m.means_, [[1.0, 10.0], [3.0, 31.0], [-1.0, 8.0]])


def test_a_where_mask_on_probabilities_leaves_the_skipped_rows_valid():
    m = CategoricalHMM.from_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.2, 0.8]])
    x = m.emissionprob_
    np.multiply(x, 1.0, out=x, where=np.array([[True, True], [False, False]]))
    np.testing.assert_array_equal(m.emissionprob_, [[0.5, 0.5], [0.2, 0.8]])
    t = m.transmat_
    np.maximum(t, 0.0, out=t, where=np.array([True, False]))  # broadcast over rows
    np.testing.assert_array_equal(m.transmat_, [[0.9, 0.1], [0.2, 0.8]])


def test_an_in_place_complex_operation_is_refused_as_numpy_refuses_it():
    m = _gaussian()
    x = m.means_
    with pytest.raises(TypeError, match=r"Cannot cast ufunc 'add' output .*complex128.*float64"):
        x += 1j
    np.testing.assert_array_equal(m.means_, MEANS)
    with pytest.raises(TypeError, match=r"Cannot cast ufunc 'multiply' output"):
        np.multiply(m.means_, np.array([1.0, 2.0j]), out=m.means_)
    np.testing.assert_array_equal(m.means_, MEANS)


def test_a_masked_write_to_one_tied_state_holds_for_its_group():
    m = _gaussian(ties={"means": [[0, 1]]})
    x = m.means_
    np.add(x, 5.0, out=x, where=np.array([[True], [False], [False]]))
    np.testing.assert_array_equal(m.means_, [[5.0, 15.0], [5.0, 15.0], [-2.0, 7.0]])


def test_guard_reductions_and_accumulations_into_a_parameter_equal_numpys():
    cases = [
        lambda a: np.add.reduce(np.array(MEANS), axis=0, out=a[0]),
        lambda a: np.cumsum(np.array(MEANS), axis=0, out=a),
        lambda a: np.mean(np.array(MEANS), axis=0, out=a[2]),
        lambda a: np.add.at(a, ([0, 0, 2], [1, 1, 0]), 1.0),
        lambda a: np.matmul(np.eye(3)[::-1], a, out=a),
    ]
    for apply in cases:
        m = _gaussian()
        x = m.means_
        apply(x)
        np.testing.assert_array_equal(m.means_, _numpy(MEANS, apply))


_UFUNCS = [np.add, np.subtract, np.multiply, np.maximum, np.minimum, np.fmin]


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    ufunc=st.sampled_from(_UFUNCS),
    mask=st.lists(st.booleans(), min_size=6, max_size=6),
    other=st.floats(-5, 5, allow_nan=False),
    view=st.sampled_from(["whole", "row", "column", "reversed"]),
)
def test_property_an_out_write_leaves_the_model_as_numpy_leaves_an_array(ufunc, mask, other, view):
    """Any elementwise ufunc, any where mask, into the attribute or a view of it: the
    model holds what NumPy leaves in a plain array given the same call."""
    where = np.array(mask).reshape(3, 2)
    pick = {
        "whole": lambda a: a,
        "row": lambda a: a[1],
        "column": lambda a: a[:, 0],
        "reversed": lambda a: a[::-1],
    }[view]

    def apply(a):
        target = pick(a)
        ufunc(target, other, out=target, where=pick(where))

    m = _gaussian()
    apply(m.means_)
    np.testing.assert_array_equal(m.means_, _numpy(MEANS, apply))
