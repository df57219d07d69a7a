"""The watched expanded way (stop 22): any model, every parameter use checked as it is made."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.overrides import TorchFunctionMode

import tying.train.per_example as pex
from tests.train.models import ce, loop_grads
from tying.train import DPSGD, per_example_grads, private_grad


class Net(nn.Module):
    """What a reviewer writes: a class around Linear layers, activations as functions."""

    def __init__(self, widths=(6, 8, 3), act=torch.tanh):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = act

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class ReadsWeightTransposed(nn.Module):
    """A decoder that reads the encoder's weight through .t() and F.linear (a hand tie)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        h = torch.tanh(self.norm(self.enc(x)))
        return F.linear(h, self.enc.weight.t())  # (B, 6)


class PaddedLookup(nn.Module):
    """F.embedding with a padding_idx on its own weight: torch's batching rule for a
    batched weight masks the first example's padding row only (dp._EXPAND_SAFE)."""

    def __init__(self, catch=False):
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 4))
        self.head = nn.Linear(4, 3)
        self.catch = catch

    def forward(self, tok):
        if self.catch == "aten":  # the op itself, below torch.nn.functional
            h = torch.ops.aten.embedding(self.table, tok, 0)
        elif self.catch:
            try:
                h = F.embedding(tok, self.table, padding_idx=0)
            except BaseException:  # noqa: BLE001 - a model that swallows the stop
                h = F.embedding(tok, self.table.detach(), padding_idx=0)
        else:
            h = F.embedding(tok, self.table, padding_idx=0)
        return self.head(h.mean(1))


class IndexesAWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        return x @ self.lin.weight[:3].t()  # an indexing: not a call the watch knows


def _data(seed=2, B=7, tokens=False):
    g = torch.Generator().manual_seed(seed)
    if tokens:
        x = torch.randint(0, 7, (B, 5), generator=g)
        x[:, 0] = 0  # every example reads the padding row
    else:
        x = torch.randn(B, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (B,), generator=g)


def _check(model, x, y, loss_fn, way):
    pe = pex._PerExample(model)
    got, _ = pe(loss_fn, (x,), y)
    assert pe.last_way == way
    want = loop_grads(model, loss_fn, x, y)
    for n, g in zip(pe.names, got):
        torch.testing.assert_close(g, want[n], rtol=1e-10, atol=1e-12)
    return pe


@pytest.mark.parametrize(
    "build",
    [lambda: Net(), lambda: Net((6, 5, 5, 3), F.gelu), ReadsWeightTransposed],
    ids=["net", "net-gelu", "reads-weight-transposed"],
)
def test_a_model_of_any_class_takes_the_watched_way_and_equals_a_loop(build):
    torch.manual_seed(0)
    model = build().double()
    x, y = _data()
    loss_fn = ce
    if isinstance(model, ReadsWeightTransposed):
        y = torch.randn(7, 6, dtype=torch.float64)
        loss_fn = nn.MSELoss(reduction="none")
    pe = _check(model, x, y, loss_fn, "expanded-watched")
    assert pe.last_loss == "batched"


@pytest.mark.parametrize(
    "catch", [False, True, "aten"], ids=["plain", "the-model-catches-the-stop", "torch.ops"]
)
def test_a_parameter_use_the_watch_does_not_know_is_sent_to_vmap_grad(catch):
    torch.manual_seed(0)
    model = PaddedLookup(catch).double()
    x, y = _data(tokens=True)
    pe = _check(model, x, y, ce, "vmap-grad")
    assert pe._unverified
    pe(ce, (x,), y)  # remembered: no second stopped forward
    assert pe.last_way == "vmap-grad"


def test_the_watch_is_what_keeps_the_wrong_batching_rule_out(monkeypatch):
    # the planted defect: with F.embedding let through, the padding row of every
    # example but the first gets a gradient, so the watch is not decoration
    torch.manual_seed(0)
    model = PaddedLookup().double()
    x, y = _data(tokens=True)
    monkeypatch.setattr(pex, "_PARAM_CALLS", pex._PARAM_CALLS | {F.embedding})
    pe = pex._PerExample(model)
    got, _ = pe(ce, (x,), y)
    assert pe.last_way == "expanded-watched"
    want = loop_grads(model, ce, x, y)
    assert not torch.allclose(got[pe.names.index("table")], want["table"])


def test_an_indexed_parameter_is_sent_to_vmap_grad():
    torch.manual_seed(0)
    model = IndexesAWeight().double()
    x, y = _data()
    _check(model, x, y, ce, "vmap-grad")


def test_every_parameter_call_is_one_the_listed_modules_make():
    # _PARAM_CALLS may hold only calls whose batched-parameter rules the expanded way's
    # module types exercise (each held to a loop in test_dp.py)
    made = {
        nn.Linear: F.linear,
        nn.Conv1d: F.conv1d,
        nn.Conv2d: F.conv2d,
        nn.LayerNorm: F.layer_norm,
        nn.GroupNorm: F.group_norm,
    }
    assert set(made) <= pex._EXPAND_SAFE
    assert pex._PARAM_CALLS == set(made.values())
    # and each module's forward reads its parameters through that call (views and
    # metadata aside), as a torch function mode sees it
    inputs = {
        nn.Linear: (nn.Linear(3, 2), torch.randn(4, 3)),
        nn.Conv1d: (nn.Conv1d(2, 2, 3), torch.randn(1, 2, 5)),
        nn.Conv2d: (nn.Conv2d(2, 2, 3), torch.randn(1, 2, 5, 5)),
        nn.LayerNorm: (nn.LayerNorm(3), torch.randn(4, 3)),
        nn.GroupNorm: (nn.GroupNorm(2, 4), torch.randn(1, 4, 3)),
    }

    class Reads(TorchFunctionMode):
        def __init__(self, params):
            super().__init__()
            self.ids, self.calls = {id(p) for p in params}, set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if pex._reads(args, self.ids) or pex._reads(kwargs.values(), self.ids):
                self.calls.add(func)
            return func(*args, **kwargs)

    for kind, (module, x) in inputs.items():
        with Reads(module.parameters()) as reads:
            module(x)
        assert reads.calls - pex._VIEW_CALLS - pex._METADATA_CALLS == {made[kind]}, kind


def test_hooks_still_send_a_watched_model_to_vmap_grad():
    torch.manual_seed(0)
    model = Net().double()
    h = model.layers[0].register_forward_hook(lambda m, a, o: o * 2)
    x, y = _data()
    try:
        _check(model, x, y, ce, "vmap-grad")
    finally:
        h.remove()


def test_private_grad_of_a_watched_model_equals_vmap_grad(monkeypatch):
    torch.manual_seed(0)
    model = Net((6, 9, 9, 3)).double()
    x, y = _data(B=12)
    kw = dict(max_grad_norm=0.1, noise_multiplier=0.0, denominator=1.0)
    new = private_grad(model, ce, x, y, **kw)
    monkeypatch.setattr(pex, "EXPAND_MAX_ELEMENTS", 0)  # the reference: vmap(grad(...))
    old = private_grad(model, ce, x, y, **kw)
    for n in old.grads:
        torch.testing.assert_close(new.grads[n], old.grads[n], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new.norms, old.norms, rtol=1e-12, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=2, max_size=4),
    B=st.integers(1, 8),
    act=st.sampled_from([torch.tanh, torch.relu, F.silu]),
    seed=st.integers(0, 2**16),
)
def test_property_the_watched_way_equals_vmap_grad(widths, B, act, seed):
    torch.manual_seed(seed)
    model = Net(tuple(widths), act).double()
    x = torch.randn(B, widths[0], dtype=torch.float64)
    y = torch.randn(B, widths[-1], dtype=torch.float64)
    loss_fn = nn.SmoothL1Loss(reduction="none")
    pe = pex._PerExample(model)
    got, losses = pe(loss_fn, (x,), y)
    assert pe.last_way == "expanded-watched"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pex, "EXPAND_MAX_ELEMENTS", 0)  # the reference: vmap(grad(...))
        ref, ref_losses = pe(loss_fn, (x,), y)
    assert pe.last_way == "vmap-grad"
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-13, atol=0)


class _LinearFn(torch.autograd.Function):
    """A hand-written Linear as a custom autograd.Function, with a generated vmap rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x @ w.t()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x


class UsesAFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 6))

    def forward(self, x):
        return _LinearFn.apply(x, self.w)


def test_a_parameter_passed_to_a_custom_autograd_function_is_sent_to_vmap_grad():
    torch.manual_seed(0)
    model = UsesAFunction().double()
    x, y = _data()
    _check(model, x, y, ce, "vmap-grad")


class TwoInputs(nn.Module):
    """Two inputs, and a sequence dimension: (B, T, d) through Linear layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(3, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, x, z):  # (B, T, 6), (B, 3) -> (B, T, 4)
        return self.head(torch.tanh(self.a(x) + self.b(z).unsqueeze(1)))


@pytest.mark.parametrize("loss", ["sequence", "known-on-3d"])
def test_two_inputs_and_a_sequence_dimension_on_the_watched_way(loss):
    torch.manual_seed(0)
    model = TwoInputs().double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 7, 6, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    if loss == "sequence":  # transposes first: not a known call; rows kept apart (stop 23)
        y = torch.randint(0, 4, (5, 7), generator=g)

        def loss_fn(o, t):
            return F.cross_entropy(o.transpose(1, 2), t, reduction="none").sum(1)

    else:  # a known loss on (B, T, 4): summed per example, as the old way did
        y = torch.randn(5, 7, 4, generator=g, dtype=torch.float64)
        loss_fn = nn.MSELoss(reduction="none")
    pe = pex._PerExample(model)
    got, losses = pe(loss_fn, (x, z), y)
    assert pe.last_way == "expanded-watched"
    assert pe.last_loss == ("rows" if loss == "sequence" else "batched")
    names = pe.names
    want = {n: [] for n in names}
    want_losses = []
    for b in range(5):
        model.zero_grad(set_to_none=True)
        lb = loss_fn(model(x[b : b + 1], z[b : b + 1]), y[b : b + 1]).sum()
        lb.backward()
        want_losses.append(lb.detach())
        for n, p in model.named_parameters():
            want[n].append(p.grad.clone())
    for n, gr in zip(names, got):
        torch.testing.assert_close(gr, torch.stack(want[n]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses, torch.stack(want_losses), rtol=1e-12, atol=0)


class Recurrent(nn.Module):
    """A class of one's own around a torch recurrent layer (stop 22's known leftover)."""

    def __init__(self, layer):
        super().__init__()
        self.rnn = layer
        self.head = nn.Linear(5, 3)

    def forward(self, x):  # (B, T, 4) -> (B, 3)
        h, _ = self.rnn(x)
        return self.head(h[:, -1])


def _sequences(dtype):
    g = torch.Generator().manual_seed(6)
    return torch.randn(6, 7, 4, generator=g, dtype=dtype), torch.randint(0, 3, (6,), generator=g)


@pytest.mark.parametrize(
    "kind, dtype",
    [
        ("LSTM", torch.float64),
        ("GRU", torch.float32),
        ("GRU", torch.float64),
        ("RNN", torch.float64),
    ],
)
def test_a_recurrent_layer_that_vmap_cannot_run_is_refused_by_name(kind, dtype):
    """It used to fail with torch's "output with shape [1, 20] doesn't match the broadcast
    shape [6, 1, 20]", naming nothing; now the layer, the cause and the fix."""
    torch.manual_seed(0)
    model = Recurrent(getattr(nn, kind)(4, 5, batch_first=True)).to(dtype)
    x, y = _sequences(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    fix = f"opacus.layers.DP{kind}"
    with pytest.raises(ValueError, match=rf"rnn \({kind}\): per-example .* {fix} .* or freeze"):
        dp.step(ce, x, y)
    assert dp.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


class Cell(nn.Module):
    """A recurrent cell stepped over the sequence by hand."""

    def __init__(self, cell):
        super().__init__()
        self.cell, self.head = cell, nn.Linear(5, 3)

    def forward(self, x):  # (B, T, 4) -> (B, 3)
        h = None
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h[0] if isinstance(h, tuple) else h)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_recurrent_cell_that_vmap_cannot_run_is_refused_by_name(kind, dtype):
    """Stop 33: the cells failed with torch's "output with shape [1, 5] doesn't match the
    broadcast shape [6, 1, 5]" in every dtype, naming nothing (the full layers were named
    since stop 23)."""
    torch.manual_seed(0)
    model = Cell(getattr(nn, kind)(4, 5)).to(dtype)
    x, y = _sequences(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    fix = f"opacus.layers.dp_rnn.DP{kind}"
    with pytest.raises(ValueError, match=rf"cell \({kind}\): per-example .* {fix} .* or freeze"):
        dp.step(ce, x, y)
    assert dp.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kind", ["DPRNNCell", "DPGRUCell", "DPLSTMCell"])
def test_the_suggested_opacus_cells_equal_a_loop(kind):
    dp_rnn = pytest.importorskip("opacus.layers.dp_rnn")
    torch.manual_seed(0)
    model = Cell(getattr(dp_rnn, kind)(4, 5, bias=True)).double()
    x, y = _sequences(torch.float64)
    got = per_example_grads(model, ce, x, y)
    want = loop_grads(model, ce, x, y)
    for n, g in got.items():
        torch.testing.assert_close(g, want[n], rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's vmap fallback
def test_a_float32_lstm_that_vmap_runs_stays_equal_to_a_loop():
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM(4, 5, batch_first=True))
    x, y = _sequences(torch.float32)
    pe = pex._PerExample(model)
    got, _ = pe(ce, (x,), y)
    assert pe.last_way == "vmap-grad"
    want = loop_grads(model, ce, x, y)
    for n, g in zip(pe.names, got):  # float32: the loop's and vmap's sums differ in rounding
        torch.testing.assert_close(g, want[n], rtol=1e-4, atol=1e-6)
    assert any(n.startswith("rnn.") for n in pe.names)


@pytest.mark.parametrize("kind", ["DPLSTM", "DPGRU"])
def test_the_suggested_opacus_layers_equal_a_loop(kind):
    layers = pytest.importorskip("opacus.layers")
    torch.manual_seed(0)
    model = Recurrent(getattr(layers, kind)(4, 5, batch_first=True)).double()
    x, y = _sequences(torch.float64)
    _check(model, x, y, ce, "expanded-watched")


def _weighted_models():
    torch.manual_seed(0)
    return {
        "direct": nn.Sequential(nn.Linear(4, 3)).double(),  # the bmm forward
        "class": Net((4, 5, 3)).double(),  # the watched way
        "layernorm": nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)).double(),
        "dict_output": _DictOut().double(),  # vmap(grad(...)): the old way
    }


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.lin(x)}


@pytest.mark.parametrize("kind", ["direct", "class", "layernorm", "dict_output"])
def test_a_loss_broadcast_against_the_whole_batch_is_refused(kind):
    """Stop 36: per-example weights captured by the loss (``ce(out, y) * w``, w of shape
    (B,)) broadcast each example's one loss to (B,), and the sum gave it the gradient of
    its loss times w.sum(): 4.2x off a per-example loop, no error, in every way."""
    model = _weighted_models()[kind]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (6,), generator=g)
    w = torch.rand(6, generator=g, dtype=torch.float64)

    def logits(out):
        return out["logits"] if isinstance(out, dict) else out

    captured = lambda out, y: F.cross_entropy(logits(out), y, reduction="none") * w  # noqa: E731
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"loss_fn returned shape \(6,\) for one example.*in y"):
        per_example_grads(model, captured, x, labels)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    with pytest.raises(ValueError, match=r"loss_fn returned shape \(6,\) for one example"):
        dp.step(captured, x, labels, n_data=60)
    assert dp.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the fix the message names: the weights ride in y, row b with example b
    yw = torch.stack([labels.double(), w], 1)
    inside = lambda out, t: F.cross_entropy(logits(out), t[:, 0].long(), reduction="none") * t[:, 1]  # noqa: E731,E501
    got = per_example_grads(model, inside, x, yw)
    want = loop_grads(model, inside, x, yw)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)
    # a 0-d loss (reduction="mean") of one example stays legal, as before
    mean = lambda out, y: F.cross_entropy(logits(out), y)  # noqa: E731
    got = per_example_grads(model, mean, x, labels)
    want = loop_grads(model, mean, x, labels)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


class _ScaledByAttribute(nn.Module):
    """A per-example scale set as a plain attribute before the call, not passed as input."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.scale = None
        self.as_dict = as_dict

    def forward(self, x):
        out = self.norm(self.lin(x)) * self.scale  # (B, 3) * (B, 1)
        return {"pred": out} if self.as_dict else out


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_forward_broadcast_against_the_whole_batch_is_refused(as_dict):
    """Stop 36: a forward multiplying by a (B, 1) tensor kept on the model gave one
    example's batch of one the shape (B, 3); under a 0-d loss (F.mse_loss) every example
    got the whole batch's gradient, 56 % off a per-example loop, no error."""
    torch.manual_seed(0)
    model = _ScaledByAttribute(as_dict).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    model.scale = torch.rand(5, 1, generator=g, dtype=torch.float64) + 0.5

    def pred(out):
        return out["pred"] if isinstance(out, dict) else out

    mse = lambda out, t: F.mse_loss(pred(out), t)  # noqa: E731
    with pytest.raises(ValueError, match=r"forward returned shape \(5, 3\) for one example"):
        per_example_grads(model, mse, x, y)
    # the fix the message names: the scale as an input, batch first
    model.forward = lambda x, s: {"pred": model.norm(model.lin(x)) * s}
    got = per_example_grads(model, mse, (x, model.scale), y)
    want = {}
    for b in range(5):
        loss = mse(model(x[b : b + 1], model.scale[b : b + 1]), y[b : b + 1])
        for (name, _p), gr in zip(
            model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))
        ):
            want.setdefault(name, []).append(gr)
    for name, gs in want.items():
        torch.testing.assert_close(got[name], torch.stack(gs), rtol=1e-10, atol=1e-12)


def test_a_loss_with_one_row_per_token_stays_legal():
    """The stop 36 check refuses a loss with the batch's rows for one example only: a loss
    flattening an example's tokens (T rows, T != B) is summed per example as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 4), nn.Tanh(), nn.Linear(4, 7)).double()
    g = torch.Generator().manual_seed(3)
    tok, tgt = torch.randint(0, 7, (5, 3), generator=g), torch.randint(0, 7, (5, 3), generator=g)
    flat = lambda out, y: F.cross_entropy(out.reshape(-1, 7), y.reshape(-1), reduction="none")  # noqa: E731
    got = per_example_grads(model, flat, tok, tgt)
    want = loop_grads(model, flat, tok, tgt)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


_POSITION_LOSSES = {
    # weights by position in the batch: example b counts b + 1 times (1 alone)
    "arange": lambda out, y: (
        F.cross_entropy(out, y, reduction="none") * torch.arange(1, len(y) + 1, dtype=out.dtype)
    ),
    # a per-batch normalisation inside the loss: 1/B on the batch, 1 alone
    "batch_size": lambda out, y: F.cross_entropy(out, y, reduction="none") / y.shape[0],
    "linspace": lambda out, y: (
        F.cross_entropy(out, y, reduction="none")
        * torch.linspace(0.5, 1.5, len(y), dtype=out.dtype)
    ),
}


@pytest.mark.parametrize("loss", sorted(_POSITION_LOSSES))
@pytest.mark.parametrize("kind", ["direct", "class", "layernorm", "dict_output", "vmap_grad"])
def test_a_loss_that_reads_the_position_or_the_batch_size_is_refused(kind, loss, monkeypatch):
    """Stop 36: each example's loss is computed on a batch of one (position 0, size 1), so
    a loss weighting by torch.arange(len(y)) or dividing by y.shape[0] gave every example
    another loss than its row on the batch: 0.78 off the batch's per-example gradients
    (position weights), 5x (a division by B = 6), no error, in every way."""
    if kind == "vmap_grad":
        monkeypatch.setattr(pex, "EXPAND_MAX_ELEMENTS", 0)
    model = _weighted_models()["class" if kind == "vmap_grad" else kind]
    logits = (lambda o: o["logits"]) if kind == "dict_output" else (lambda o: o)
    fn = _POSITION_LOSSES[loss]
    wrapped = lambda out, y: fn(logits(out), y)  # noqa: E731
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (6,), generator=g)
    with pytest.raises(ValueError, match=r"loss_fn gives example \d the loss .* when applied "
                       r"to it alone but .* as row \d of the whole batch.*in y"):  # fmt: skip
        per_example_grads(model, wrapped, x, labels)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
               max_grad_norm=1.0, sample_rate=0.1)  # fmt: skip
    for _ in range(2):  # the second step takes the way cached after the first
        with pytest.raises(ValueError, match=r"reads an example's position or the batch size"):
            dp.step(wrapped, x, labels, n_data=60)
    assert dp.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the fix the message names: position weights ride in y, row b with example b
    w = fn(torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, dtype=torch.long))
    w = w / F.cross_entropy(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1).long())
    yw = torch.stack([labels.double(), w], 1)
    inside = lambda out, t: F.cross_entropy(logits(out), t[:, 0].long(), reduction="none") * t[:, 1]  # noqa: E731,E501
    got = per_example_grads(model, inside, x, yw)
    want = loop_grads(model, inside, x, yw)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)


def test_the_batch_loss_check_leaves_random_mean_and_mixing_losses_alone(monkeypatch):
    """What the stop 36 check does not refuse: a 0-d loss (nothing per example to
    compare), a loss that draws random numbers (two calls on the batch disagree), a batch
    of one, a loss that mixes examples by broadcasting (each example alone is what it
    means); and it puts the random state back, so a step draws what it drew before."""
    model = _weighted_models()["class"]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (6,), generator=g)
    mean = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    per_example_grads(model, mean, x, labels)

    def noisy(out, y):  # multiplicative noise on each example's loss
        return F.cross_entropy(out, y, reduction="none") * (1 + 0.1 * torch.rand(len(y)))

    states = []
    for check in (True, False):  # the check draws nothing from the step's random state
        if not check:
            monkeypatch.setattr(pex._PerExample, "_refuse_position_loss", lambda *a: None)
        torch.manual_seed(0)
        per_example_grads(model, noisy, x, labels)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)
    monkeypatch.undo()
    pos = _POSITION_LOSSES["arange"]
    per_example_grads(model, pos, x[:1], labels[:1])  # one example: nothing to compare
    yr = torch.randn(6, dtype=torch.float64, generator=g)

    def mixing(out, t):  # (B, 1) - (B,): (B, B) on the batch, right for each example alone
        return (out[:, :1] - t).pow(2).mean(1)

    got = per_example_grads(model, mixing, x, yr)
    want = loop_grads(model, mixing, x, yr)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12)
