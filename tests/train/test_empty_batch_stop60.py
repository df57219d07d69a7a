"""An empty batch (Poisson sampling draws one) through the public per-example functions
(stop 60).

``DPSGD.step`` and ``private_grad`` took an empty batch (noise alone), but the functions
under them crashed inside torch: ``per_example_grads`` on a model with an embedding
("cannot reshape tensor of 0 elements into shape [0, 1, 7, 1, -1]" in cross_entropy under
vmap), ``ghost_norms`` / ``GhostClipping.norms`` / ``.clip`` on any model ("... into
shape [0, -1, 4]"), and ``per_example_norms`` of the empty gradients ("... [0, -1]").
Each now returns its empty result: no example, no gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.train.models import TiedAE, TinyLM, ce, mlp, mse
from tying.train import GhostClipping, ghost_norms, per_example_grads, per_example_norms


def tok(logits, y):  # (B, T, V), (B, T) -> (B, T): rows summed per example
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")


def _empty(kind: str):
    if kind == "tied_lm":
        x = torch.zeros(0, 5, dtype=torch.long)
        return TinyLM(), tok, x, x
    if kind == "tied_ae":
        x = torch.zeros(0, 6, dtype=torch.float64)
        return TiedAE(), mse, x, x
    return mlp(), ce, torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long)


KINDS = ["tied_lm", "tied_ae", "mlp"]


@pytest.mark.parametrize("kind", KINDS)
def test_per_example_grads_and_norms_of_an_empty_batch_are_empty(kind):
    model, loss, x, y = _empty(kind)
    got = per_example_grads(model, loss, x, y)
    want = {n: p.shape for n, p in model.named_parameters()}
    assert {n: g.shape[1:] for n, g in got.items()} == want
    assert all(g.shape[0] == 0 and g.dtype == torch.float64 for g in got.values())
    norms = per_example_norms(got)
    assert norms.shape == (0,)


@pytest.mark.parametrize("kind", KINDS)
def test_ghost_norms_and_clip_of_an_empty_batch(kind):
    model, loss, x, y = _empty(kind)
    assert ghost_norms(model, loss, x, y).shape == (0,)
    res = GhostClipping(model).clip(loss, x, y, 1.0)
    assert res.norms.shape == (0,) and res.losses.shape == (0,)
    for name, p in model.named_parameters():
        assert res.grads[name].shape == p.shape
        assert not res.grads[name].any()


def test_per_example_norms_of_an_empty_batch_keep_other_shapes():
    grads = {"w": torch.zeros(0, 3, 4), "b": torch.zeros(0, 3), "s": torch.zeros(0)}
    assert per_example_norms(grads).shape == (0,)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_an_empty_batch_keeps_the_model_s_dtype(mode):
    # a plain torch.zeros(0) gave float32 norms and losses for a float64 model (a batch
    # of two gives float64): torch.cat of the steps' losses mixed dtypes (stop 60 review)
    from tying.train import DPSGD, private_grad

    model = torch.nn.Linear(3, 2).double()
    loss = lambda out, y: F.cross_entropy(out, y, reduction="none")  # noqa: E731
    x, y = torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    pg = private_grad(
        model, loss, x, y, max_grad_norm=1.0, noise_multiplier=0.0, denominator=1.0, mode=mode
    )
    assert pg.norms.dtype == pg.losses.dtype == torch.float64
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(model, opt, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, mode=mode)
    assert dp.step(loss, x, y, n_data=40).losses.dtype == torch.float64
