"""Custom autograd.Functions in every per-example way (stop 52).

- ghost clipping walked a graph for custom Functions once per input signature and
  loss, so a Function the forward applies only on some steps went through unprobed
  (norms 1.27 off a per-example loop, no error);
- Opacus' hooks (``grad_sample_module``) took per-sample gradients through a Function
  whose backward mixes the examples (0.84 off the loop, no error);
- ``mode="vmap"`` failed on a Function without ``setup_context`` (or a vmap rule) with
  torch's message, which names neither the Function nor the module.

Anchor: a loop over the examples, one backward each (``tests.train.models.loop_grads``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.models import TinyLM, loop_grads, seq_ce
from tests.train.test_custom_backward_stop51 import BatchNormed, Reversed, sq_err
from tying.train import DPSGD, GhostClipping, grad_sample_module, per_example_grads

# Opacus hooks the first layer with a full backward hook; torch warns when its input
# needs no gradient (as in test_opacus_hooks.py)
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


class Sometimes(nn.Module):
    """Applies ``fn`` after the first layer only while ``use`` is set (a step flag)."""

    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fn, self.use = nn.Linear(4, 5), nn.Linear(5, 3), fn, False

    def forward(self, x):
        h = torch.tanh(self.a(x))  # (B, 5)
        return self.b(self.fn.apply(h) if self.use else h)


def _data(B=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 4, generator=g, dtype=torch.float64)
    return x, torch.randn(B, 3, generator=g, dtype=torch.float64)


def _model(fn):
    torch.manual_seed(0)
    return Sometimes(fn).double()


def _loop_norms(model, x, y):
    want = loop_grads(model, sq_err, x, y)
    return torch.cat([w.flatten(1) for w in want.values()], 1).norm(dim=1)


# -- ghost clipping: a Function used on some steps only ------------------------------


def test_ghost_probes_a_function_that_appears_on_a_later_step():
    model, (x, y) = _model(BatchNormed), _data()
    ghost = GhostClipping(model)
    torch.testing.assert_close(ghost.norms(sq_err, x, y), _loop_norms(model, x, y))
    model.use = True  # same inputs, same loss: the old code did not walk the graph again
    off = (_loop_norms(model, x, y) - _batch_norms(model, x, y)).detach().abs().max()
    assert float(off) > 1e-2  # what the old code returned is not the loop's
    with pytest.raises(ValueError, match=r"\(BatchNormedBackward\) mixes the examples"):
        ghost.norms(sq_err, x, y)


def _batch_norms(model, x, y):
    """Per-example norms read off one backward over the batch (what ghost clipping's
    formulas take), by hand."""
    hs = torch.tanh(model.a(x))
    h = BatchNormed.apply(hs)
    z = model.b(h)
    gz, ghs = torch.autograd.grad(sq_err(z, y).sum(), [z, hs])
    pre = ghs * (1 - hs.pow(2))
    parts = [gz[:, :, None] * h.detach()[:, None, :], gz, pre[:, :, None] * x[:, None, :], pre]
    return torch.cat([p.flatten(1) for p in parts], 1).norm(dim=1)


def test_dpsgd_ghost_refuses_the_later_step_and_changes_nothing():
    model, (x, y) = _model(BatchNormed), _data()
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        sample_rate=0.5,
        mode="ghost",
    )
    dp.step(sq_err, x, y)
    model.use = True
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"\(BatchNormedBackward\) mixes the examples"):
        dp.step(sq_err, x, y)
    assert dp.steps == 1 and all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


# -- Opacus' hooks -------------------------------------------------------------------

HOOKS_MIX = (
    r"grad_sample_module: the backward of the custom autograd.Function BatchNormed mixes "
    r"the examples of a batch: .* or use tying.train.DPSGD\(mode='vmap'\)"
)


def _hook_grads(gsm, model, x, y):
    for p in model.parameters():
        p.grad_sample = p.grad = None
    sq_err(gsm(x), y).sum().backward()
    return {n: p.grad_sample for n, p in model.named_parameters()}


def test_hooks_refuse_a_backward_that_mixes_examples():
    model, (x, _) = _model(BatchNormed), _data()
    model.use = True
    gsm = grad_sample_module(model, loss_reduction="sum")
    # old code: per-sample gradients 0.84 off the loop, no error
    with pytest.raises(ValueError, match=HOOKS_MIX):
        gsm(x)


def test_hooks_take_a_function_that_keeps_examples_apart():
    model, (x, y) = _model(Reversed), _data()
    model.use = True
    want = loop_grads(model, sq_err, x, y)
    got = _hook_grads(grad_sample_module(model, loss_reduction="sum"), model, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


def test_hooks_refuse_on_the_step_that_uses_it_and_leave_opacus_as_it_was():
    model, (x, y) = _model(BatchNormed), _data()
    want = loop_grads(model, sq_err, x, y)  # use is off: the plain model's gradients
    gsm = grad_sample_module(model, loss_reduction="sum")
    got = _hook_grads(gsm, model, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n])
    model.use = True
    with pytest.raises(ValueError, match=HOOKS_MIX):
        _hook_grads(gsm, model, x, y)
    assert all(p._forward_counter == 0 and p.grad is None for p in model.parameters())
    assert all(not getattr(m, "activations", None) for m in model.modules())
    model.use = False  # the next step is counted right: nothing of the refused one is left
    got = _hook_grads(gsm, model, x, y)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


# -- mode="vmap": a Function torch.func cannot run -----------------------------------


class OldStyle(torch.autograd.Function):
    """forward(ctx, x): no setup_context, so torch.func cannot run it."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class NoVmapRule(torch.autograd.Function):
    """setup_context, but neither a vmap staticmethod nor generate_vmap_rule."""

    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * 2


class Block(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.lin, self.fn = nn.Linear(5, 5), fn

    def forward(self, h):
        return self.lin(self.fn.apply(h))


class Deep(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.blocks, self.b = nn.Linear(4, 5), nn.ModuleList([Block(fn)]), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(self.blocks[0](torch.tanh(self.a(x))))


@pytest.mark.parametrize(
    ("fn", "lacks"), [(OldStyle, "setup_context staticmethod"), (NoVmapRule, "vmap rule")]
)
def test_vmap_names_the_function_and_the_module(fn, lacks):
    torch.manual_seed(0)
    model, (x, y) = Deep(fn).double(), _data()
    with pytest.raises(
        ValueError,
        match=rf"the custom autograd.Function {fn.__name__}, applied in the forward of "
        rf"blocks.0 \(Block\), has no {lacks}, .* or use mode='ghost'",
    ):
        per_example_grads(model, sq_err, x, y)


def test_vmap_names_the_loss_function_and_dpsgd_changes_nothing():
    torch.manual_seed(0)
    model, (x, y) = nn.Linear(4, 3).double(), _data()

    def loss(out, t):
        return (OldStyle.apply(out) - t).pow(2).sum(1)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(model, opt, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, mode="vmap")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Function OldStyle, applied in the loss function"):
        dp.step(loss, x, y)
    assert dp.steps == 0 and all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    # mode="ghost", which the message offers, takes it: the loop's norms
    norms = GhostClipping(model).norms(loss, x, y)
    want = loop_grads(model, loss, x, y)
    torch.testing.assert_close(
        norms, torch.cat([w.flatten(1) for w in want.values()], 1).norm(dim=1)
    )


class TiedLMWith(TinyLM):
    """The tied LM (lm_head reads embed.weight) with ``fn`` before the output layer."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, tokens):  # (B, T) -> (B, T, V)
        h = self.embed(tokens)
        h = h + torch.tanh(self.mix(h))
        return self.lm_head(self.fn.apply(h))


def test_hooks_on_a_tied_model_count_every_use_through_a_function_taken():
    # the probe's three backwards run through tying's tied-use hooks with Opacus' off:
    # they must add nothing, so the caller's backward still counts each use once
    g = torch.Generator().manual_seed(2)
    tok, tgt = torch.randint(0, 7, (4, 5), generator=g), torch.randint(0, 7, (4, 5), generator=g)
    model = TiedLMWith(Reversed)
    want = loop_grads(model, seq_ce, tok, tgt)
    gsm = grad_sample_module(model, loss_reduction="sum")
    seq_ce(gsm(tok), tgt).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, want[n])
    with pytest.raises(ValueError, match=r"Function BatchNormed mixes the examples"):
        grad_sample_module(TiedLMWith(BatchNormed), loss_reduction="sum")(tok)
