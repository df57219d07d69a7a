"""grad_sample_module: a tied use in a module in eval mode is refused, as Opacus refuses one (stop 39).

Opacus' hooks skip a module in eval mode; for a module that owns its parameters Opacus then
refuses the backward ("No activations detected"). A tied use (``lm_head`` reading
``embed.weight``) owns nothing, so it was skipped with no error: ``embed.weight.grad_sample``
lacked that use (2.24 off a per-example loop on TinyLM) while ``.grad`` held it, and Opacus'
``DPOptimizer`` clipped and noised the wrong vector.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.train.models import (
    Albert,
    BagTied,
    EmbedFromLinear,
    TiedAE,
    TinyLM,
    ce,
    loop_grads,
    mse,
    seq_ce,
)
from tying.core.errors import TieError
from tying.train import grad_sample_module

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _batch():
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 7, (5, 6), generator=g), torch.randint(0, 7, (5, 6), generator=g)


def test_a_tied_use_in_eval_mode_is_refused_at_the_backward_naming_it():
    model = TinyLM()
    gsm = grad_sample_module(model, loss_reduction="sum")
    model.lm_head.eval()
    tok, tgt = _batch()
    loss = seq_ce(gsm(tok), tgt).sum()
    with pytest.raises(
        TieError,
        match=r"lm_head is in eval mode .*lm_head\.weight \(reads embed\.weight\).*model\.train\(\)",
    ):
        loss.backward()
    gsm._close()


def test_an_eval_forward_without_backward_is_allowed_and_training_after_it_is_exact():
    model = TinyLM()
    want = loop_grads(TinyLM(), seq_ce, *_batch())
    gsm = grad_sample_module(model, loss_reduction="sum")
    tok, tgt = _batch()
    model.eval()
    seq_ce(gsm(tok), tgt).sum()  # a validation loss with gradients on, never backpropagated
    model.train()
    seq_ce(gsm(tok), tgt).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[n], rtol=1e-9, atol=1e-12)
    gsm._close()


def _x6(seed):
    return torch.randn(6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (factory, loss, batch, the modules whose tied use reads another module's tensor)
CASES = {
    "tiny_lm": (TinyLM, seq_ce, _batch, ["lm_head"]),
    "albert": (
        Albert,
        ce,
        lambda: (_x6(1), torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(2))),
        ["layers.1", "layers.2"],
    ),
    "bag_tied": (BagTied, ce, lambda: (_batch()[0], _batch()[1][:, 0] % 3), ["bag"]),
    "embed_from_linear": (
        EmbedFromLinear,
        ce,
        lambda: (_batch()[0], _batch()[1][:, 0] % 3),
        ["embed"],
    ),
    "tied_ae": (TiedAE, mse, lambda: (_x6(3),) * 2, ["dec"]),
}


@settings(derandomize=True, deadline=None, max_examples=20)
@given(
    case=st.sampled_from(sorted(CASES)),
    users_off=st.lists(st.booleans(), min_size=2, max_size=2).filter(any),
    others_off=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_property_any_eval_mode_pattern_is_refused_or_exact(case, users_off, others_off):
    """Whatever modules are put in eval mode (a tied use, and any of the others), each
    physical parameter's grad_sample is the per-example loop's gradient (every use
    counted), or the backward raises."""
    make, loss_fn, batch, users = CASES[case]
    x, y = batch()
    model = make()
    want = loop_grads(make(), loss_fn, x, y)
    gsm = grad_sample_module(model, loss_reduction="sum")
    mods = dict(model.named_modules())
    others = [p for p, m in mods.items() if p and not any(True for _ in m.children())]
    others = [p for p in others if p not in users]
    for path, off in [*zip(users, users_off), *zip(others, others_off)]:
        mods[path].train(not off)
    try:
        loss_fn(gsm(x), y).sum().backward()
    except ValueError:  # TieError (a tied use) or Opacus' own (a module owning parameters)
        gsm._close()
        return
    got = {n: p.grad_sample for n, p in model.named_parameters()}
    gsm._close()
    for n, g in got.items():
        torch.testing.assert_close(g, want[n], rtol=1e-9, atol=1e-12)
