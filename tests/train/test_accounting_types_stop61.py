"""Stop 61: the accountants name the fix for a number given as a tensor, an array or a
float count of steps (they said only "must be a real number" / "must be an int >= 0").
Each piece of advice is followed here and gives the accountant's answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.train import epsilon, noise_for_epsilon

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

WANT = epsilon(0.01, 1.0, 100, 1e-5)


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        ((torch.tensor(0.01), 1.0, 100, 1e-5), r"sample_rate=value.item\(\)"),
        ((0.01, np.array([1.0]), 100, 1e-5), r"noise_multiplier=value.item\(\)"),
        ((0.01, 1.0, 100, torch.tensor(1e-5)), r"delta=value.item\(\)"),
        ((0.01, 1.0, torch.tensor(100), 1e-5), r"steps=value.item\(\)"),
        ((0.01, 1.0, torch.tensor(100.0), 1e-5), r"steps=int\(value.item\(\)\) \(Opacus' int"),
    ],
)
def test_a_one_element_tensor_or_array_is_told_the_conversion_that_runs(args, fix):
    with pytest.raises(ValueError, match=fix):
        epsilon(*args)
    # the advice: .item() (int() of it for a float count of steps)
    cast = [a.item() if hasattr(a, "item") else a for a in args]
    cast[2] = int(cast[2])
    assert epsilon(*cast) == pytest.approx(WANT, rel=1e-6)


def test_a_float_count_of_steps_is_told_how_opacus_counts_steps_from_epochs():
    epochs, q = 1.0, 0.01  # steps = epochs / q, a float
    with pytest.raises(ValueError, match=r"got 100.0; .*steps = int\(epochs / sample_rate\)"):
        epsilon(q, 1.0, epochs / q, 1e-5)
    assert epsilon(q, 1.0, int(epochs / q), 1e-5) == pytest.approx(WANT, rel=1e-6)
    with pytest.raises(ValueError, match=r"steps = int\(epochs / sample_rate\)"):
        noise_for_epsilon(2.0, 1e-5, q, epochs / q)


def test_a_tensor_of_several_values_gets_no_conversion_advice():
    with pytest.raises(ValueError, match=r"got Tensor tensor\(\[1., 1.\]\)$"):
        epsilon(0.01, torch.ones(2), 100, 1e-5)
