"""A DPSGD loop over fixed-size shuffled batches with a short last one does not warn
(review of stop 56: it warned 'pass n_data', and n_data then refused the short batch)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from tying.train import DPSGD, poisson_batches


def _ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _dp(model):
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                 max_grad_norm=1.0, sample_rate=0.25, generator=torch.Generator().manual_seed(0))  # fmt: skip


def test_fixed_batches_with_a_short_last_one_do_not_warn():
    X, Y = torch.randn(1010, 4), torch.randint(0, 2, (1010,))
    dp = _dp(torch.nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):  # two passes: 250 x 4, 10, 250, ...
            perm = torch.randperm(1010)
            for s in range(0, 1010, 250):
                dp.step(_ce, X[perm[s : s + 250]], Y[perm[s : s + 250]])
    with pytest.raises(ValueError, match="this batch holds 10 rows"):  # why n_data is no fix
        dp.step(_ce, X[:10], Y[:10], n_data=1010)


def test_poisson_batches_without_n_data_still_warn_once():
    X, Y = torch.randn(400, 4), torch.randint(0, 2, (400,))
    dp = _dp(torch.nn.Linear(4, 2))
    batches = poisson_batches(400, 0.05, steps=8, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match=r"divides each batch by its own size") as rec:
        for idx in batches:
            dp.step(_ce, X[idx], Y[idx])
    assert sum("own size" in str(w.message) for w in rec) == 1
