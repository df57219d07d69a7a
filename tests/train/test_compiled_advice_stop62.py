"""Stop 62: ``module.compile()`` under Opacus' hooks and ghost clipping, with advice that runs.

- ``grad_sample_module`` on a model compiled in place (``model.compile()``), tied or not,
  failed at its first forward inside dynamo (``InternalTorchDynamoError: 'dict' object has
  no attribute 'node'`` untied or hand-tied, a ``RecursionError`` with a ``Same`` tie),
  naming neither the cause nor a fix. It is refused up front; the advice runs.
- A compiled layer under ghost clipping, or a ``Same``-tied compiled layer under the
  hooks, was refused with the advice ``del module.forward`` (an AttributeError when
  followed) or none at all: the refusals now give ``._compiled_call_impl = None``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tying.core.errors import TieError
from tying.train import grad_sample_module, private_grad
from tying.train._vetting import undo_overrides

pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


class _LM(nn.Module):
    def __init__(self, tie: str = "none"):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 11, bias=False)
        if tie == "hand":
            self.head.weight = self.emb.weight
        elif tie == "same":
            tying.Plan(
                [tying.share("head.weight", like="emb.weight", relation=tying.Same())]
            ).apply(self)

    def forward(self, x):
        return self.head(torch.tanh(self.mid(self.emb(x))))


X = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(2))


def _token_loss(out, y):
    return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)


def _loop(model) -> torch.Tensor:
    want = []
    for b in range(len(X)):
        model.zero_grad()
        _token_loss(model(X[b : b + 1]), Y[b : b + 1]).sum().backward()
        want.append(model.emb.weight.grad.clone())
    model.zero_grad()
    return torch.stack(want)


def _hooks_grads(model) -> torch.Tensor:
    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        _token_loss(gsm(X), Y).sum().backward()
        return model.emb.weight.grad_sample.clone()
    finally:
        gsm._close()


@pytest.mark.parametrize("tie", ["none", "hand", "same"])
def test_a_model_compiled_in_place_is_refused_and_the_advice_runs(tie):
    model = _LM(tie)
    want = _loop(copy.deepcopy(model))
    model.compile(backend="eager")
    with pytest.raises(
        ValueError,
        match=r"compiled in place \(model.compile\(\)\).*model._compiled_call_impl = None",
    ):
        grad_sample_module(model, loss_reduction="sum")  # was: dynamo's error at forward
    assert not model.emb._forward_hooks and not hasattr(model.emb.weight, "grad_sample")
    model._compiled_call_impl = None  # the advice
    torch.testing.assert_close(_hooks_grads(model), want, rtol=1e-5, atol=1e-6)


def test_a_same_tied_compiled_layer_under_the_hooks_is_told_how_to_undo_it():
    model = _LM("same")
    want = _loop(copy.deepcopy(model))
    model.head.compile(backend="eager")
    with pytest.raises(
        TieError, match=r"remove it \(model.get_submodule\('head'\)._compiled_call_impl = None"
    ):
        grad_sample_module(model, loss_reduction="sum")
    model.get_submodule("head")._compiled_call_impl = None  # the advice
    torch.testing.assert_close(_hooks_grads(model), want, rtol=1e-5, atol=1e-6)


def test_ghost_clipping_of_a_compiled_layer_is_told_code_that_runs():
    model = _LM("hand")
    want = private_grad(model, _token_loss, X, Y, max_grad_norm=0.1, noise_multiplier=0.0)
    model.mid.compile(backend="eager")
    with pytest.raises(
        ValueError, match=r"\(model.get_submodule\('mid'\)._compiled_call_impl = None"
    ):
        private_grad(
            model, _token_loss, X, Y, max_grad_norm=0.1, noise_multiplier=0.0, mode="ghost"
        )
    model.get_submodule("mid")._compiled_call_impl = None  # the advice (del .forward raised)
    got = private_grad(
        model, _token_loss, X, Y, max_grad_norm=0.1, noise_multiplier=0.0, mode="ghost"
    )
    for name, g in want.grads.items():
        torch.testing.assert_close(got.grads[name], g, rtol=1e-5, atol=1e-7)


def test_undo_overrides_gives_one_statement_per_override():
    lin = nn.Linear(2, 2)
    assert undo_overrides(lin, "a.b") == ""
    lin.forward = lin.forward
    lin.compile(backend="eager")
    assert undo_overrides(lin, "a.b") == (
        "del model.get_submodule('a.b').forward; "
        "model.get_submodule('a.b')._compiled_call_impl = None (undoes its .compile())"
    )
    assert undo_overrides(lin, "").startswith("del model.forward;")
    model = nn.Sequential(nn.Identity(), nn.Sequential(lin))
    del model.get_submodule("1.0").forward  # the statements run
    model.get_submodule("1.0")._compiled_call_impl = None
    assert undo_overrides(lin, "1.0") == ""
