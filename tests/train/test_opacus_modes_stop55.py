"""Opacus' other grad_sample modes through ``grad_sample_module``, and a failed wrapping
that leaves the model as it was (stop 55).

- ``grad_sample_module(model, grad_sample_mode="ew")`` failed inside Opacus with
  "unexpected keyword argument 'grad_sample_mode'"; every mode but ``"hooks"`` (and
  ``"functorch"``, Opacus' ``force_functorch=True``) is now refused by name before
  anything is registered.
- A wrapping that Opacus gave up halfway (a ``BatchNorm`` refused by its validate, a tied
  module copied under ``force_functorch=True``) left its hooks and parameter marks on the
  model: every later *plain* forward was refused as "a tie that Opacus' GradSampleModule
  cannot see", with no wrapper left to close.
Anchor: ``tests.train.models.loop_grads`` (one backward per example).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tests.train.models import TiedAE, loop_grads
from tying.train import grad_sample_module

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _state(model: nn.Module):
    """Every hook, module attribute and parameter attribute a wrapping could leave behind."""
    mods = {
        n: (
            sorted(m._forward_hooks),
            sorted(m._forward_pre_hooks),
            sorted(m._backward_hooks),
            sorted(m.__dict__),
            m._is_full_backward_hook,
        )
        for n, m in model.named_modules()
    }
    return mods, {n: sorted(p.__dict__) for n, p in model.named_parameters()}


class _NormedAE(nn.Module):
    """TiedAE with a BatchNorm between the tied layers (Opacus' validate refuses it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.bn, self.dec = nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 6)
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(self)
        self.double()

    def forward(self, x):
        return self.dec(self.bn(self.enc(x)))


@pytest.mark.parametrize("mode", ["ew", "ghost", "no_op", "bogus"])
def test_another_grad_sample_mode_is_refused_by_name_before_anything_changes(mode):
    model = TiedAE()
    before, samplers = _state(model), dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    with pytest.raises(
        ValueError,
        match=rf"grad_sample_module: grad_sample_mode='{mode}' is not a mode whose per-sample "
        r"gradients count a tied use.*leave grad_sample_mode out",
    ):
        grad_sample_module(model, grad_sample_mode=mode)
    assert _state(model) == before
    assert dict(opacus.GradSampleModule.GRAD_SAMPLERS) == samplers
    model(torch.randn(2, 6, dtype=torch.float64))  # a plain forward is not refused


def test_grad_sample_mode_hooks_is_the_default_and_equals_the_loop():
    model = TiedAE()
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gsm = grad_sample_module(model, grad_sample_mode="hooks", loss_reduction="sum")
    gsm(x).pow(2).sum().backward()
    want = loop_grads(TiedAE(), lambda o, y: o.pow(2).sum(1), x, torch.zeros(4))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (_NormedAE, {}, NotImplementedError, "buffers"),
        (
            TiedAE,
            {"force_functorch": True},
            ValueError,
            r"force_functorch=True .*but dec holds a tied slot beside parameters of its own",
        ),
        (TiedAE, {"grad_sample_mode": "functorch"}, ValueError, r"force_functorch=True"),
    ],
    ids=["batchnorm", "force_functorch", "functorch-mode"],
)
def test_a_failed_wrapping_leaves_the_model_exactly_as_it_was(make, kwargs, error, match):
    model = make()
    model.eval()  # BatchNorm: a plain forward of any batch size, buffers untouched
    before, samplers = _state(model), dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    with pytest.raises(error, match=match):
        grad_sample_module(model, **kwargs)
    assert _state(model) == before
    assert dict(opacus.GradSampleModule.GRAD_SAMPLERS) == samplers
    # the old code left Opacus' marks: this forward was refused as wrapped by Opacus
    out = model(torch.randn(3, 6, dtype=torch.float64))
    assert out.shape == (3, 6)


def _ln_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, bias=False), nn.Linear(4, 3)).double()


def test_a_layernorm_without_bias_is_refused_by_name_and_runs_under_functorch():
    """Opacus 1.6's LayerNorm sampler reads ``layer.bias.requires_grad``: the backward
    failed with "'NoneType' object has no attribute 'requires_grad'", naming no layer."""
    model = _ln_model()
    before = _state(model)
    with pytest.raises(ValueError, match=r"1 is a LayerNorm with bias=False.*force_functorch"):
        grad_sample_module(model)
    assert _state(model) == before
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = loop_grads(_ln_model(), lambda o, y: o.pow(2).sum(1), x, torch.zeros(5))
    gsm = grad_sample_module(model, loss_reduction="sum", force_functorch=True)
    gsm(x).pow(2).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[n], rtol=1e-9, atol=1e-12)


def test_wrapping_a_wrapped_model_again_is_refused_and_keeps_the_live_per_sample_grads():
    """Opacus' constructor reset every grad_sample to None (and every forward counter to
    0) before it found its own hooks there: the live wrapper's per-sample gradients were
    wiped by a call that failed."""
    model = TiedAE()
    gsm = grad_sample_module(model, loss_reduction="sum")
    gsm(torch.randn(3, 6, dtype=torch.float64)).pow(2).sum().backward()
    kept = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"wrapped by an Opacus GradSampleModule already.*_close"):
        grad_sample_module(model)
    for n, p in model.named_parameters():
        assert p.grad_sample is not None and torch.equal(p.grad_sample, kept[n])
    gsm._close()
    grad_sample_module(model)  # released: wraps again


@pytest.mark.parametrize("reduction", ["Mean", None])
def test_a_loss_reduction_opacus_does_not_know_is_refused_before_wrapping(reduction):
    """Opacus stored any value and raised at the first backward, after the forward."""
    model = TiedAE()
    before = _state(model)
    with pytest.raises(ValueError, match=r"loss_reduction must be 'mean' or 'sum'.*got"):
        grad_sample_module(model, loss_reduction=reduction)
    assert _state(model) == before
