"""max_abs_diff, largest and smallest on integers past int64, devices, tables (stop 62)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.experiments.common import largest, max_abs_diff, smallest, still_gaining


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [
        (np.array([2**63 - 1]), np.array([-(2**63)]), 2.0**64 - 1),  # read 1.0: int64 wrapped
        (np.array([2**64 - 1], dtype=np.uint64), np.array([2**64 - 2], dtype=np.uint64), 1.0),
        (np.array([3, 2**62]), np.array([1, -(2**62)]), 2.0**63),
        (np.array([3, 5]), np.array([1, 9]), 4.0),
        (np.array([0], dtype=np.uint8), np.array([255], dtype=np.uint8), 255.0),
    ],
)
def test_integer_differences_are_exact(a, b, diff):
    assert max_abs_diff(a, b) == diff
    assert max_abs_diff(torch.from_numpy(a), torch.from_numpy(b)) == diff


@pytest.mark.parametrize("which", ["a", "b"])
def test_a_meta_tensor_is_named(which):
    real, meta = torch.ones(2), torch.ones(2, device="meta")
    a, b = (meta, real) if which == "a" else (real, meta)
    with pytest.raises(ValueError, match=f"got {which} on the meta device .* holds no values"):
        max_abs_diff(a, b)


def test_integers_past_int64_are_real_numbers():
    # refused as "needs real numbers, got object values such as 18446744073709551616"
    assert largest([1, 2**64]) == 2.0**64
    assert smallest([True, -(2**70)]) == -(2.0**70)
    assert largest([10**400, 1]) == float("inf")
    with pytest.raises(TypeError, match="needs real numbers, got object values such as None"):
        largest([None, 1.0])


def test_a_table_of_numbers_is_named_as_one():
    # said "got 2 in shape (1, 2); a check over no measurements would decide nothing"
    with pytest.raises(ValueError, match=r"largest\(\) needs a flat sequence .* shape \(1, 2\)"):
        largest(np.array([[1.0, 2.0]]))
    assert largest(np.ravel(np.array([[1.0, 2.0]]))) == 2.0  # the advice, followed


@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([1.0, 2.5], requires_grad=True),  # "Can't call numpy() on Tensor that..."
        [torch.tensor(1.0, requires_grad=True), torch.tensor(2.5, requires_grad=True)],
        torch.tensor([1.0, 2.5], dtype=torch.bfloat16),  # "Got unsupported ScalarType BFloat16"
        [torch.tensor(1.0, dtype=torch.bfloat16), 2.5],
    ],
)
def test_losses_kept_as_tensors_are_read(values):
    assert largest(values) == 2.5 and smallest(values) == 1.0


def test_losses_with_grad_still_gaining():
    losses = [torch.tensor(x, requires_grad=True) for x in (5.0, 4.0, 3.0, 2.0, 1.0)]
    assert still_gaining(losses) is True


def test_tensor_values_are_exact_and_nan_kept():
    assert largest([np.float32(0.1), 0.05]) == float(np.float32(0.1))  # what max gives
    assert np.isnan(largest([torch.tensor(0.0), torch.tensor(float("nan"))]))


@pytest.mark.parametrize("one", [3.0, np.float64(3.0), torch.tensor(3.0)])
def test_one_number_is_named(one):
    # said "'float' object is not iterable" / "iteration over a 0-d tensor"
    with pytest.raises(TypeError, match=r"got one number .*; pass a list: largest\(\[value\]\)"):
        largest(one)
    assert largest([one]) == 3.0  # the advice, followed


def test_a_meta_tensor_of_losses_is_named():
    with pytest.raises(ValueError, match="meta device .* holds no values to compare"):
        largest(torch.ones(2, device="meta"))


def test_max_abs_diff_of_a_list_of_tensors_with_grad():
    # "Can't call numpy() on Tensor that requires grad"
    got = [torch.tensor(1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)]
    assert max_abs_diff(got, [1.0, 2.5]) == 0.5


def test_max_abs_diff_of_a_sparse_tensor():
    # "Could not run 'aten::max' with arguments from the 'SparseCPU' backend"
    assert max_abs_diff(torch.tensor([1, 2]).to_sparse(), torch.tensor([1, 3])) == 1.0


@pytest.mark.parametrize(
    "values",
    [
        np.ma.masked_invalid([0.1, np.nan, np.inf]),  # read 0.1: the NaN and inf left out
        np.ma.array([1e-9, 5.0], mask=[False, True]),  # read 1e-09
        np.ma.masked_all(3),
    ],
)
def test_a_masked_entry_is_no_measurement_to_skip(values):
    assert np.isnan(largest(values)) and np.isnan(smallest(values))


def test_a_masked_last_loss_is_still_gaining():
    # the tail's masked loss was left out: False, where a NaN loss counts as gaining
    losses = np.ma.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], mask=[0, 0, 0, 0, 0, 1])
    assert still_gaining(losses) is True


@pytest.mark.parametrize(
    "table",
    [
        torch.ones(2, 2, requires_grad=True) * 1,  # np.ravel: "Can't call numpy() on Tensor..."
        torch.ones(2, 2, dtype=torch.bfloat16),  # np.ravel: "unsupported ScalarType BFloat16"
    ],
)
def test_the_advice_for_a_table_of_tensors_runs(table):
    with pytest.raises(ValueError, match=r"flat sequence .* \(values\.flatten\(\), or one row\)"):
        largest(table)
    assert largest(table.flatten()) == 1.0  # the advice, followed
