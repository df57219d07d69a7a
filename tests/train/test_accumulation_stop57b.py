"""Gradient accumulation over two micro-batches (batch sizes 1 and 5, a Plan-tied model),
in every mode (stop 57b).

``DPSGD.step`` after a micro-batch's own ``backward`` dropped that micro-batch with no
error (its ``.grad`` overwritten by the step's clipped sum: the update was the second
micro-batch's alone); now refused by name, nothing changed. Opacus' hooks accumulate: two
backwards give one ``grad_sample`` entry per micro-batch, each equal to a per-example loop.
"""

from __future__ import annotations

import pytest
import torch

from tests.train.models import Albert, ce, loop_grads
from tying.train import DPSGD, grad_sample_module


def _micro_batches():
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(b, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (b,), generator=g),
        )
        for b in (1, 5)
    ]


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_dpsgd_refuses_a_step_after_a_micro_batchs_backward(mode):
    model = Albert()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(model, opt, noise_multiplier=0.0, max_grad_norm=0.7, sample_rate=0.1, mode=mode)
    (x1, y1), (x2, y2) = _micro_batches()
    ce(model(x1), y1).sum().backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"DPSGD.step: trainable parameter\(s\) \['inp.weight'"):
        dp.step(ce, x2, y2)
    assert dp.steps == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and torch.equal(p.grad, before[n][1]), n
    opt.zero_grad(set_to_none=False)  # zeros hold nothing: taken
    dp.step(ce, x2, y2)
    assert dp.steps == 1


# Opacus' hook on the first layer, fed raw data (a note, not a result)
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_opacus_hooks_accumulate_two_micro_batches_as_the_loop():
    pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
    model = Albert()
    batches = _micro_batches()
    want = [loop_grads(model, ce, x, y) for x, y in batches]
    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        for x, y in batches:
            ce(gsm(x), y).sum().backward()
        for n, p in model.named_parameters():
            assert len(p.grad_sample) == 2, n
            for got, ref in zip(p.grad_sample, want):
                assert torch.allclose(got, ref[n], atol=1e-10), n
            assert torch.allclose(p.grad, want[0][n].sum(0) + want[1][n].sum(0), atol=1e-10), n
    finally:
        gsm._close()
