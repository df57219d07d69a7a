"""``mode="vmap"`` with a loss that is one number per example alone (stop 55).

Ghost clipping refuses a 0-d loss on the batch and a flat ``(B*T,)`` token loss;
``mode="vmap"`` applies an unrecognised loss to each example alone, where the same
function is that example's own loss. Kept (pinned since stop 36), because the result
equals a per-example loop of the same ``loss_fn`` (``tests.train.models.loop_grads``);
the docs said ``reduction="mean"`` gives "the same gradients" as ``"none"`` for every
loss, which holds for one value per example only: for D values it is the mean, a D-th.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.train.models import TinyLM, loop_grads, mlp
from tying.train import per_example_grads, private_grad

_G = torch.Generator().manual_seed(5)
_X = torch.randn(4, 6, generator=_G, dtype=torch.float64)
_Y = torch.randn(4, 3, generator=_G, dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_an_elementwise_loss_of_each_example_equals_the_loop(reduction):
    model = mlp()
    loss = lambda o, t: F.mse_loss(o, t, reduction=reduction)  # noqa: E731
    got = per_example_grads(model, loss, _X, _Y)
    want = loop_grads(model, loss, _X, _Y)
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, rtol=1e-9, atol=1e-12)
    if reduction == "mean":  # the mean over the example's own 3 outputs: a third of "sum"
        total = loop_grads(model, lambda o, t: F.mse_loss(o, t, reduction="sum"), _X, _Y)
        for n, g in total.items():
            torch.testing.assert_close(got[n] * 3, g, rtol=1e-9, atol=1e-12)


def test_a_0d_token_mean_of_each_example_equals_the_loop_after_clipping():
    model = TinyLM()
    tok = torch.randint(0, 7, (4, 5), generator=torch.Generator().manual_seed(6))
    mean = lambda o, t: F.cross_entropy(o.reshape(-1, o.shape[-1]), t.reshape(-1))  # noqa: E731
    C = 0.05
    rows = loop_grads(model, mean, tok, tok)
    flat = torch.cat([g.flatten(1) for g in rows.values()], 1)
    c = (C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
    assert (c < 1).any()  # clipping bites, so a wrong per-example norm would show
    pg = private_grad(model, mean, tok, tok, max_grad_norm=C, noise_multiplier=0.0)
    for n, g in rows.items():
        want = (c.view(-1, *[1] * (g.dim() - 1)) * g).mean(0)
        torch.testing.assert_close(pg.grads[n], want, rtol=1e-7, atol=1e-10)
