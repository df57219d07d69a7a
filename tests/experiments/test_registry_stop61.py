"""A seed is any one integer: a 0-d torch tensor as a NumPy integer (stop 61)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.experiments.registry import Result, check_seed
from tying.experiments.runner import run_experiment


@pytest.mark.parametrize(
    "seed",
    [3, np.int64(3), np.uint8(3), np.array(3), torch.tensor(3), torch.tensor(3, dtype=torch.uint8)],
)
def test_one_integer_of_any_library_is_a_seed(seed):
    value = check_seed(seed)  # torch.tensor(3) was refused where np.int64(3) was taken
    assert value == 3 and type(value) is int


@pytest.mark.parametrize(
    "seed",
    [
        torch.tensor(True),
        np.array(True),
        np.True_,
        True,
        torch.tensor(3.0),
        3.0,
        torch.tensor([3]),
        np.array([3]),
        "3",
        None,
    ],
)
def test_what_is_not_one_integer_is_refused_by_name(seed):
    with pytest.raises(
        TypeError, match=r"seed must be an integer in 0\.\.4294967295, got .*; pass an int"
    ):
        check_seed(seed)


def test_a_negative_tensor_seed_names_the_range():
    with pytest.raises(ValueError, match=r"got -1; seeds are not negative"):
        check_seed(torch.tensor(-1))


def test_run_experiment_takes_a_tensor_seed_as_its_int(temp_experiment):
    temp_experiment("stop61-seed", lambda size, seed: Result(passed=True, measured={"seed": seed}))
    rec = run_experiment("stop61-seed", seed=torch.tensor(3))
    assert rec.seed == 3 and type(rec.seed) is int
    assert rec.measured == {"seed": 3}  # the experiment got the int, as for seed=3
