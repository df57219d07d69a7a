"""Per-example gradients called under ``torch.no_grad()`` or ``torch.inference_mode()`` (stop 38).

Ghost clipping records each use through autograd: under a caller's ``torch.no_grad()`` no
use was recorded, so ``ghost_norms`` returned zeros, the clipped sum was 0 and a
``DPSGD(mode="ghost")`` step applied the noise alone, with no error. ``mode="vmap"``
(``torch.func.grad``) ignores an outer ``no_grad`` and was right. Under
``torch.inference_mode()`` the ghost way gave zeros too, and ``mode="vmap"`` failed with
torch's "element 0 of tensors does not require grad"; both are refused by name now.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.train.models import TinyLM, ce, loop_grads, mlp, seq_ce
from tying.train import DPSGD, GhostClipping, ghost_norms, per_example_grads, private_grad

CONTEXTS = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "grad_off": lambda: torch.set_grad_enabled(False),
}


def _ref_norms(model, loss_fn, x, y):
    g = loop_grads(model, loss_fn, x, y)
    return torch.cat([v.reshape(len(y), -1) for v in g.values()], 1).norm(dim=1)


def _batch(seed=0, B=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (B,), generator=g
    )


def test_ghost_norms_under_no_grad_are_the_per_example_norms_not_zeros():
    model = mlp()
    x, y = _batch()
    want = _ref_norms(model, ce, x, y)
    with torch.no_grad():
        got = ghost_norms(model, ce, x, y)  # was tensor([0., 0., 0., 0., 0.])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_a_ghost_dp_step_under_no_grad_moves_the_model_as_outside_it():
    x, y = _batch()
    moved = []
    for ctx in (contextlib.nullcontext, torch.no_grad):
        model = mlp()
        dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.5), noise_multiplier=0.0,
                   max_grad_norm=0.3, sample_rate=0.5, mode="ghost")  # fmt: skip
        with ctx():
            dp.step(ce, x, y)
        moved.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    start = torch.cat([p.detach().reshape(-1) for p in mlp().parameters()])
    assert float((moved[1] - start).norm()) > 1e-3  # was: no move at all (sigma = 0)
    torch.testing.assert_close(moved[1], moved[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "call, who",
    [
        (lambda m, x, y: ghost_norms(m, ce, x, y), "ghost clipping"),
        (lambda m, x, y: GhostClipping(m).clip(ce, x, y, 1.0), "ghost clipping"),
        (lambda m, x, y: per_example_grads(m, ce, x, y), "per-example gradients"),
        (
            lambda m, x, y: private_grad(m, ce, x, y, max_grad_norm=1.0, noise_multiplier=0.0),
            "per-example gradients",
        ),
    ],
)
def test_inference_mode_is_refused_by_name(call, who):
    model = mlp()
    x, y = _batch()
    with (
        torch.inference_mode(),
        pytest.raises(
            ValueError,
            match=rf"{who}: called under torch\.inference_mode\(\), where autograd records "
            r"nothing.*torch\.no_grad\(\) is fine",
        ),
    ):
        call(model, x, y)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_dp_step_under_inference_mode_is_refused_and_changes_nothing(mode):
    model = mlp()
    x, y = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.5), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.5, mode=mode)  # fmt: skip
    with torch.inference_mode(), pytest.raises(ValueError, match=r"torch\.inference_mode\(\)"):
        dp.step(ce, x, y)
    assert dp.steps == 0 and dp.history == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    ctx=st.sampled_from(sorted(CONTEXTS)),
    mode=st.sampled_from(["vmap", "ghost"]),
    tied=st.booleans(),
    seed=st.integers(0, 1000),
    B=st.integers(1, 5),
)
def test_property_every_way_gives_the_loop_norms_whatever_the_grad_mode(ctx, mode, tied, seed, B):
    """Under any grad mode the caller is in, both ways give a float64 loop's norms (a tied
    LM too: both uses of the embedding in every example's norm)."""
    if tied:
        model, loss_fn = TinyLM(seed=seed), seq_ce
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randint(0, 7, (B, 4), generator=g), torch.randint(0, 7, (B, 4), generator=g)
    else:
        model, loss_fn = mlp(seed), ce
        x, y = _batch(seed, B)
    want = _ref_norms(model, loss_fn, x, y)
    with CONTEXTS[ctx]():
        got = private_grad(model, loss_fn, x, y, max_grad_norm=1.0, noise_multiplier=0.0, mode=mode)
    torch.testing.assert_close(got.norms.double(), want, rtol=1e-9, atol=1e-12)
