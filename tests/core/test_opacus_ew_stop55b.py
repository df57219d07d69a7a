"""Opacus' ``grad_sample_mode="ew"`` on a Plan-tied model, and Opacus' refused
construction, both through Opacus' own classes (stop 55, second core pass).

- torch's Expanded Weights (``call_for_per_sample_grads``, which Opacus runs for
  ``grad_sample_mode="ew"``) swaps every parameter for an ``ExpandedWeight``; a tied read
  of one failed inside torch with "Expanded Weights encountered but cannot handle
  function __get__", naming no tie and no route. It is now a TieError naming the tie,
  the mode and ``tying.train.grad_sample_module`` / ``DPSGD``; caught on the failure's
  path only (a tied read pays nothing).
- ``opacus.GradSampleModule(model)`` refused (core's deepcopy guard, in Opacus'
  functorch fallback for a tied layer) left the half-built wrapper's hooks and
  parameter marks on the user's model: its forward then met Opacus' hooks of a wrapper
  no one held. They are taken off; the model is exactly as before.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning"),
]


class AE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(6, 3), nn.Linear(3, 6)

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x)))


def _tied(relation):
    torch.manual_seed(0)
    model = AE()
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=relation)]).apply(model)
    return model


_EW = (
    r"dec\.weight reads enc\.weight through a tie \({rel}.*torch's Expanded Weights "
    r"\(torch\.nn\.utils\._per_sample_grad\.call_for_per_sample_grads, which Opacus' "
    r"grad_sample_mode='ew' runs\) replaced enc\.weight by an ExpandedWeight.*"
    r"tying\.train\.grad_sample_module\(model\).*tying\.train\.DPSGD"
)


@pytest.mark.parametrize("route", ["opacus", "torch"])
def test_expanded_weights_on_a_tie_is_refused_naming_the_tie_and_the_route(route):
    model = _tied(tying.Transposed())
    x = torch.randn(4, 6)
    if route == "opacus":
        from opacus.grad_sample import GradSampleModuleExpandedWeights

        run = GradSampleModuleExpandedWeights(model, loss_reduction="sum")
    else:
        from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

        run = call_for_per_sample_grads(model, batch_size=4, loss_reduction="sum")
    with pytest.raises(tying.TieError, match=_EW.format(rel=r"Transposed")) as info:
        run(x)
    assert "cannot handle function" in str(info.value.__cause__)  # torch's, kept as the cause


def test_expanded_weights_through_make_private_is_refused_by_name():
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6))
    tying.Plan([tying.share("2.weight", like="0.weight")]).apply(model)
    data = torch.utils.data.TensorDataset(torch.randn(4, 6))
    gsm, _, _ = opacus.PrivacyEngine().make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=torch.utils.data.DataLoader(data, batch_size=4),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ew",
    )
    same = _EW.replace("dec", "2").replace("enc", "0").format(rel=r"Same\(\)")
    with pytest.raises(tying.TieError, match=same):
        gsm(torch.randn(4, 6))


def _state(model):
    return (
        {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in model.named_modules()
        },
        {n: sorted(p.__dict__) for n, p in model.named_parameters()},
        sorted(k for k in model.__dict__ if not k.startswith("_")),
    )


@pytest.mark.parametrize("via", ["GradSampleModule", "make_private"])
def test_a_refused_opacus_construction_leaves_the_model_as_it_was(monkeypatch, via):
    model = _tied(tying.Transposed())
    # a fresh process: the tied class is in no sampler registry, so Opacus deep-copies it
    samplers = dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    samplers.pop(type(model.dec), None)
    monkeypatch.setattr(opacus.GradSampleModule, "GRAD_SAMPLERS", samplers)
    x = torch.randn(4, 6)
    want, before = model(x).detach(), _state(model)
    with pytest.raises(
        tying.TieError,
        match=r"Opacus \(opacus\..*\) deep-copies 'dec'.*dec\.weight reads enc\.weight.*"
        r"tying\.train\.grad_sample_module\(model\).*on this model \(Opacus' hooks and "
        r"parameter marks were taken off it: it is as it was\)",
    ):
        if via == "GradSampleModule":
            opacus.GradSampleModule(model)
        else:
            opacus.PrivacyEngine().make_private(
                module=model,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                data_loader=torch.utils.data.DataLoader(
                    torch.utils.data.TensorDataset(x), batch_size=4
                ),
                noise_multiplier=1.0,
                max_grad_norm=1.0,
            )
    assert _state(model) == before
    out = model(x)  # a plain forward and backward, no Opacus hook left to fire
    out.sum().backward()
    assert torch.equal(out.detach(), want)
    assert tying.verify(model) == 1


def test_an_opacus_wrapper_that_cannot_be_cleaned_keeps_the_old_advice(monkeypatch):
    model = _tied(tying.Transposed())
    samplers = dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    samplers.pop(type(model.dec), None)
    monkeypatch.setattr(opacus.GradSampleModule, "GRAD_SAMPLERS", samplers)

    def broken(self):
        raise RuntimeError("an Opacus whose cleanup differs")

    monkeypatch.setattr(opacus.GradSampleModule, "cleanup", broken)
    with pytest.raises(
        tying.TieError, match=r"on a freshly built model: Opacus may already have put its hooks"
    ):
        opacus.GradSampleModule(model)


def test_a_wrapper_the_user_holds_is_never_cleaned_behind_their_back(monkeypatch):
    """Only a constructor's half-built wrapper is released: a held one re-adding its hooks
    (which deep-copies the tied layer) keeps its state, and the message the old advice."""
    model = _tied(tying.Transposed())
    samplers = dict(opacus.GradSampleModule.GRAD_SAMPLERS)
    samplers[type(model.dec)] = samplers[nn.Linear]  # built with no copy of dec
    monkeypatch.setattr(opacus.GradSampleModule, "GRAD_SAMPLERS", samplers)
    gsm = opacus.GradSampleModule(model)
    gsm.remove_hooks()
    samplers.pop(type(model.dec))
    with pytest.raises(tying.TieError, match=r"on a freshly built model: Opacus may already"):
        gsm.add_hooks()
    assert all(hasattr(p, "_forward_counter") for p in model.parameters())  # still its own
    gsm._close()
