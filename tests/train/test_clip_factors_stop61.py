"""Stop 61: ``clip_factors`` refuses norms it would turn into wrong factors.

A NaN norm gave a NaN factor, an infinite one a factor of 0 (the example silently
dropped from the clipped sum), a negative one a negative factor (its gradient flipped:
``-0.5`` gave ``-2.0``), all with no error; a NumPy array or a list failed inside the
division (``'numpy.ndarray' object has no attribute 'clamp_'``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.train import clip_factors, per_example_grads, per_example_norms


@pytest.mark.parametrize(
    ("norms", "where"),
    [
        (torch.tensor([0.5, float("nan")]), r"norms\[1\] = nan"),
        (torch.tensor([float("inf"), 0.5]), r"norms\[0\] = inf"),
        (torch.tensor([0.5, -0.5]), r"norms\[1\] = -0.5"),  # was a factor of -2.0
    ],
)
def test_a_norm_that_is_not_finite_or_negative_is_refused_by_index(norms, where):
    with pytest.raises(ValueError, match=where + r" is not a finite number >= 0"):
        clip_factors(norms, 1.0)


@pytest.mark.parametrize("norms", [np.array([0.5, 4.0]), [0.5, 4.0]])
def test_norms_that_are_not_a_tensor_are_told_torch_as_tensor_which_runs(norms):
    with pytest.raises(TypeError, match=r"pass torch.as_tensor\(norms\)"):
        clip_factors(norms, 1.0)
    got = clip_factors(torch.as_tensor(norms), 1.0)  # the advice, followed
    torch.testing.assert_close(got, torch.tensor([1.0, 0.25], dtype=got.dtype), rtol=0, atol=1e-6)


def test_norms_from_per_example_norms_and_an_empty_batch_are_taken():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    norms = per_example_norms(per_example_grads(model, lambda o, t: (o - t).pow(2).sum(1), x, y))
    factors = clip_factors(norms, 0.1)
    assert factors.shape == (4,) and bool(((factors > 0) & (factors <= 1)).all())
    assert clip_factors(torch.zeros(0), 1.0).shape == (0,)
