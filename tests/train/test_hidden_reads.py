"""A trainable parameter read where the per-example ways cannot see it is refused.

Stop 23: a model that also read its weight through a plain list attribute got
per-example gradients 1.36 off a per-example loop with no error (every way, since
functional_call and the expanded copies swap registered slots only), and ghost clipping
gave norms 0.60 off on a tied output layer written ``F.linear(h, emb.weight)``. Each
test here fails on that code (wrong numbers, no error).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.train.models import ce as _ce
from tests.train.models import loop_grads as _loop
from tests.train.models import mse as _mse
from tying.train import DPSGD, GhostClipping
from tying.train import per_example as pe
from tying.train.dp import per_example_grads
from tying.train.row_watch import RowLosses


class _ListHeld(nn.Module):
    """Reads ``lin.weight`` a second time through a plain list (outside the swap)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self._held = [self.lin.weight]

    def forward(self, x):
        return F.linear(x, self._held[0]) + self.lin(x)


class _TiedHead(nn.Module):
    """An embedding reused as the output layer by ``F.linear``, outside any module."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return F.linear(torch.tanh(self.lin(self.emb(x))), self.emb.weight)


class _Registered(nn.Module):
    """The same reuse of ``lin.weight``, through the module: every way sees it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return F.linear(x, self.lin.weight) + self.lin(x)


def _assert_norms_of_a_loop(norms, model, loss_fn, x, y):
    """``norms`` equal the per-example gradient norms of a per-example loop."""
    ref = _loop(model, loss_fn, x, y)
    want = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in ref.values()))
    torch.testing.assert_close(norms, want, rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["expanded", "vmap-grad"])
def way(request, monkeypatch):
    if request.param == "vmap-grad":  # no expanded copies: torch.func.vmap(grad(...))
        monkeypatch.setattr(pe, "EXPAND_MAX_ELEMENTS", 0)
    return request.param


def test_a_weight_held_in_a_list_is_refused_by_name(way):
    torch.manual_seed(0)
    model = _ListHeld().double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    with pytest.raises(
        ValueError, match=r"trainable parameter lin\.weight is read by .*ParameterList"
    ):
        per_example_grads(model, _ce, x, y)


def test_a_penalty_on_a_weight_in_the_loss_is_refused(way):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))

    def penalised(o, t):
        return _ce(o, t) + 0.1 * model[0].weight.pow(2).sum()

    with pytest.raises(ValueError, match=r"trainable parameter 0\.weight .*weight_decay"):
        per_example_grads(model, penalised, x, y)


def test_the_same_reuse_through_the_module_equals_a_loop(way):
    torch.manual_seed(0)
    model = _Registered().double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    got = per_example_grads(model, _ce, x, y)
    ref = _loop(model, _ce, x, y)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-12)


def test_a_refused_dp_step_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = _ListHeld().double()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.1,
    )
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    with pytest.raises(ValueError, match=r"lin\.weight"):
        dp.step(_ce, x, y)
    assert dp.steps == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


def test_ghost_refuses_a_tied_output_layer_written_with_f_linear():
    torch.manual_seed(0)
    model = _TiedHead().double()
    x, y = torch.randint(0, 10, (5, 3)), torch.randint(0, 10, (5, 3))

    def loss(o, t):
        return F.cross_entropy(o.transpose(1, 2), t, reduction="none").sum(-1)

    with pytest.raises(ValueError, match=r"emb\.weight is read by linear outside the forward"):
        GhostClipping(model).norms(loss, x, y)
    # the same model in mode="vmap" is right: the refusal points there
    got = per_example_grads(model, loss, x, y)
    ref = _loop(model, loss, x, y)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-12)


def test_ghost_refuses_a_matmul_with_a_weight_and_a_penalty_in_the_loss():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()

    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x) + x @ self.lin.weight.T

    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    with pytest.raises(ValueError, match=r"lin\.weight is read by"):
        GhostClipping(MatMul()).norms(_ce, x, y)
    plain = nn.Sequential(lin)

    def penalised(o, t):
        return _ce(o, t) + 0.1 * lin.bias.square().sum()

    with pytest.raises(ValueError, match=r"0\.bias is read by"):
        GhostClipping(plain).norms(penalised, x, y)
    # the model alone is fine, and its hooks are gone after the refusals
    _assert_norms_of_a_loop(GhostClipping(plain).norms(_ce, x, y), plain, _ce, x, y)
    assert not lin._forward_hooks and not lin._forward_pre_hooks


def test_row_losses_leave_a_loss_reading_a_trainable_tensor_to_the_old_way():
    w = torch.randn(3, requires_grad=True)
    out, y = torch.randn(4, 3), torch.randn(4, 3)
    assert RowLosses()(lambda o, t: ((o - t) * w).square().sum(1), out, y) is None
    frozen = w.detach()
    got = RowLosses()(lambda o, t: ((o - t) * frozen).square().sum(1), out, y)
    torch.testing.assert_close(got, ((out - y) * frozen).square().sum(1))


def test_ghost_watches_a_hook_on_a_plain_module_and_lets_a_reused_layer_through():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4).double()
    model = nn.Sequential(lin, nn.Tanh(), lin)  # one layer used twice: no watch needed
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    _assert_norms_of_a_loop(GhostClipping(model).norms(_mse, x, y), model, _mse, x, y)
    # a forward hook on the Tanh that reads the weight makes the forward watched
    h = model[1].register_forward_hook(lambda m, a, o: o + 0.1 * lin.weight.sum())
    try:
        with pytest.raises(ValueError, match=r"0\.weight is read by"):
            GhostClipping(model).norms(_mse, x, y)
    finally:
        h.remove()


def test_known_losses_leave_a_trainable_class_weight_to_the_refusal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    w = model[0].bias  # a trainable tensor as the class weight: absurd, but refused
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))

    def weighted(o, t):
        return F.cross_entropy(o, t, weight=w, reduction="none")

    with pytest.raises(ValueError, match=r"0\.bias is read by"):
        per_example_grads(model, weighted, x, y)
    with pytest.raises(ValueError, match=r"0\.bias is read by"):
        GhostClipping(model).norms(weighted, x, y)


class _ViewKept(nn.Module):
    """Keeps a view of a weight made once, in ``__init__`` (found by the stop 23 review)."""

    def __init__(self, how: str):
        super().__init__()
        self.l, self.o = nn.Linear(4, 4), nn.Linear(4, 2)
        self.how = how
        self.kept = self.l.weight.t() if how == "view" else self.l.weight[:2]

    def forward(self, x):
        h = self.l(x)
        if self.how == "view":
            h = h + x @ self.kept
        else:
            h = h + F.pad(F.linear(x, self.kept), (0, 2))
        return self.o(torch.tanh(h))


@pytest.mark.parametrize("how", ["view", "slice"])
def test_a_view_of_a_weight_made_before_the_step_is_refused_in_both_modes(how, way):
    torch.manual_seed(0)
    model = _ViewKept(how).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"derived from trainable parameter\(s\) l\.weight"):
        per_example_grads(model, _mse, x, y)
    with pytest.raises(ValueError, match=r"made before the forward from trainable .* l\.weight"):
        GhostClipping(model).norms(_mse, x, y)


def test_a_view_of_a_weight_in_the_loss_and_a_loose_learnable_tensor_are_refused(way):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2)).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    wt = model[0].weight.t()

    def penalised(o, t):
        return _mse(o, t) + 0.1 * wt.pow(2).sum()

    with pytest.raises(ValueError, match=r"derived from trainable parameter\(s\) 0\.weight"):
        per_example_grads(model, penalised, x, y)
    with pytest.raises(ValueError, match=r"made before the forward .* 0\.weight"):
        GhostClipping(model).norms(penalised, x, y)
    temperature = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)  # not a parameter

    def tempered(o, t):
        return _mse(o / temperature, t)

    with pytest.raises(ValueError, match=r"requires grad but is no parameter of the model"):
        per_example_grads(model, tempered, x, y)


def test_metadata_reads_of_a_weight_in_a_forward_are_not_refused():
    torch.manual_seed(0)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 3)

        def forward(self, x):
            scale = 1.0 if self.l.weight.is_cuda else self.l.weight.numel() ** -0.5
            return self.l(x) * scale

    model = Scaled().double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    _assert_norms_of_a_loop(GhostClipping(model).norms(_ce, x, y), model, _ce, x, y)
    ref = _loop(model, _ce, x, y)
    got = per_example_grads(model, _ce, x, y)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-12)
