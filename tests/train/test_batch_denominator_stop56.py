"""What a DP step divides by, against Opacus' ``DPOptimizer`` (stop 56).

Opacus divides every step by the expected batch size (``PrivacyEngine.make_private``:
``int(len(dataset) * sample_rate)``), whatever the Poisson draw gave. ``DPSGD.step``
with ``n_data`` divides by ``sample_rate * n_data``; without it, by the batch's own size,
which on four Poisson batches of 1,000 examples at q = 0.0125 gave updates 0.57x to 1.5x
Opacus', with no word. Steps without ``n_data`` on batches of different sizes now warn,
once per ``DPSGD``; batches of one size (where the two agree) never do.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tying.train import DPSGD, poisson_batches

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")


def _ce(o, y):
    return F.cross_entropy(o, y, reduction="none")


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 2, (400,), generator=g)


def _dp(model, **kw):
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0,
                 max_grad_norm=1.0, sample_rate=0.05, **kw)  # fmt: skip


def _opacus_update(model, x, y, expected):
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    before = model.weight.detach().clone()
    gsm = GradSampleModule(model)
    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0,
                      max_grad_norm=1.0, expected_batch_size=expected)  # fmt: skip
    try:
        F.cross_entropy(gsm(x), y).backward()
        opt.step()
    finally:
        gsm._close()
    return model.weight.detach() - before


def test_steps_without_n_data_on_batches_of_different_sizes_warn_once():
    X, Y = _data()
    batches = list(poisson_batches(400, 0.05, steps=5, generator=torch.Generator().manual_seed(1)))
    sizes = [len(i) for i in batches]
    assert len(set(sizes)) > 1, sizes
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).double()
    dp = _dp(model)
    k = next(i for i, n in enumerate(sizes) if n != sizes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for idx in batches[:k]:  # one size so far
            dp.step(_ce, X[idx], Y[idx])
    with pytest.warns(UserWarning, match=r"without n_data divides each batch by its own size.*"
                      r"pass n_data=len\(dataset\)"):  # fmt: skip
        dp.step(_ce, X[batches[k]], Y[batches[k]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for idx in batches[k + 1 :]:  # once per DPSGD
            dp.step(_ce, X[idx], Y[idx])
        fixed = _dp(torch.nn.Linear(4, 2).double())
        for i in range(3):  # one size: the batch's own size is the expected one
            fixed.step(_ce, X[20 * i : 20 * i + 20], Y[20 * i : 20 * i + 20])
    assert dp.steps == 5 and fixed.steps == 3


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # Opacus' hook
def test_with_n_data_each_poisson_step_equals_opacus_and_without_it_does_not():
    X, Y = _data()
    batches = poisson_batches(400, 0.05, steps=3, generator=torch.Generator().manual_seed(1))
    for idx in batches:
        x, y = X[idx], Y[idx]
        torch.manual_seed(0)
        ref = torch.nn.Linear(4, 2).double()
        init = {k: v.clone() for k, v in ref.state_dict().items()}
        want = _opacus_update(ref, x, y, expected=20)  # int(400 * 0.05)
        for n_data in (400, None):
            model = torch.nn.Linear(4, 2).double()
            model.load_state_dict(init)
            with warnings.catch_warnings():  # one step per object: no warning
                warnings.simplefilter("error")
                _dp(model).step(_ce, x, y, n_data=n_data)
            got = model.weight.detach() - init["weight"]
            if n_data is not None:
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
            else:  # the batch's own size: off by 20 / len(idx)
                torch.testing.assert_close(got, want * 20 / len(idx), rtol=1e-10, atol=1e-14)
