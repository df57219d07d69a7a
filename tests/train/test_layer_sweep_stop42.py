"""Every layer kind the per-example ways claim, in every mode, against a per-example loop.

The sweep (stop 42): each model kind below (float64) at batch sizes 1, 2 and 7, in
``mode="vmap"`` (:func:`~tying.train.per_example_grads`), ``mode="ghost"``
(:func:`~tying.train.ghost_norms`) and Opacus' hooks (:func:`~tying.train.
grad_sample_module`), gives each example's gradient (or norm) of a loop over the
examples with autograd to 1e-5, or refuses with a clear error; which pairs refuse is
pinned in :data:`REFUSED`, so that a way that starts to take a kind (or stops) is seen.
:func:`test_every_claimed_layer_type_is_swept` fails when a type that one of the ways
claims to support (its own lists, or Opacus' samplers) has no model here.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
from tests.train.models import BagTied, TiedAE, TinyLM, loop_grads
from tying.train import ghost_norms, per_example_grads

opacus = pytest.importorskip("opacus", reason="the privacy extra: pip install 'tying[privacy]'")

pytestmark = [
    # Opacus' hook on a first layer fed raw data; torch's note that vmap runs
    # EmbeddingBag by its slow fallback (a speed note, not a result)
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
]


class Head(nn.Module):
    """``body`` then a mean over the middle dimensions and a Linear to 3 classes."""

    def __init__(self, body: nn.Module, width: int, pool=lambda h: h.flatten(1)):
        super().__init__()
        self.body, self.out, self.pool = body, nn.Linear(width, 3), pool

    def forward(self, x):
        return self.out(torch.tanh(self.pool(self.body(x))))


class Recurrent(nn.Module):
    def __init__(self, cell: type):
        super().__init__()
        self.rnn, self.out = cell(4, 5, batch_first=True), nn.Linear(5, 3)

    def forward(self, x):  # (B, T, 4)
        h = self.rnn(x)[0]  # (B, T, 5)
        return self.out(h[:, -1])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att, self.out = nn.MultiheadAttention(4, 2, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):  # (B, T, 4)
        h = self.att(x, x, x, need_weights=False)[0]  # (B, T, 4)
        return self.out(h.mean(1))


class ConvLinearTie(nn.Module):
    """A Linear's weight also read as a kernel-size-1 convolution's (one tensor, two layer
    types, tied by hand)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):  # (B, T, 4)
        h = torch.tanh(self.lin(x))  # (B, T, 4)
        w = self.lin.weight.unsqueeze(-1)  # the Linear's weight as the kernel: (4, 4, 1)
        h = F.conv1d(h.transpose(1, 2), w).transpose(1, 2)  # (B, T, 4)
        return self.out(h.mean(1))


def _seq(B, g):
    return torch.randn(B, 5, 4, generator=g, dtype=torch.float64)


def _tokens(B, g):
    return torch.randint(0, 7, (B, 6), generator=g)


def _pad_tokens(B, g):
    t = _tokens(B, g)
    t[:, ::2] = 0  # the padding row is read
    return t


# name -> (model factory, input maker (B, generator) -> x); the loss is the squared error
# to a random target of the output's shape (sq_err)
LAYERS = {
    "linear": (lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)),
               lambda B, g: torch.randn(B, 4, generator=g, dtype=torch.float64)),
    "conv1d_groups_dilation": (
        lambda: Head(nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding=1), 6 * 6),
        lambda B, g: torch.randn(B, 4, 8, generator=g, dtype=torch.float64)),
    "conv2d_groups_dilation": (
        lambda: Head(nn.Conv2d(4, 4, 3, groups=4, dilation=(1, 2), stride=(2, 1)), 4 * 2 * 2),
        lambda B, g: torch.randn(B, 4, 5, 6, generator=g, dtype=torch.float64)),
    "conv3d": (lambda: Head(nn.Conv3d(2, 3, 2, groups=1), 3 * 8),
               lambda B, g: torch.randn(B, 2, 3, 3, 3, generator=g, dtype=torch.float64)),
    "embedding": (lambda: Head(nn.Embedding(7, 4), 4, lambda h: h.mean(1)), _tokens),
    "embedding_padding_idx": (
        lambda: Head(nn.Embedding(7, 4, padding_idx=0), 4, lambda h: h.mean(1)), _pad_tokens),
    "embedding_bag": (lambda: Head(nn.EmbeddingBag(7, 4, mode="mean"), 4), _tokens),
    "layer_norm": (lambda: Head(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), 4 * 5), _seq),
    "group_norm": (lambda: Head(nn.Sequential(nn.Conv1d(4, 4, 1), nn.GroupNorm(2, 4)), 4 * 8),
                   lambda B, g: torch.randn(B, 4, 8, generator=g, dtype=torch.float64)),
    "rms_norm": (lambda: Head(nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4)), 4 * 5), _seq),
    "instance_norm_affine": (
        lambda: Head(nn.InstanceNorm1d(4, affine=True), 4 * 8),
        lambda B, g: torch.randn(B, 4, 8, generator=g, dtype=torch.float64)),
    "lstm": (lambda: Recurrent(nn.LSTM), _seq),
    "gru": (lambda: Recurrent(nn.GRU), _seq),
    "multihead_attention": (Attention, _seq),
    "tied_lm_head": (TinyLM, _tokens),
    "tied_embedding_linear_transposed": (BagTied, _tokens),
    "tied_autoencoder_transposed": (
        TiedAE, lambda B, g: torch.randn(B, 6, generator=g, dtype=torch.float64)),
    "tied_conv_linear": (ConvLinearTie, _seq),
}  # fmt: skip

MODES = ("vmap", "ghost", "opacus")
BATCHES = (1, 2, 7)


def sq_err(out, y):
    return (out - y).pow(2).flatten(1).sum(1)


def _case(kind: str, B: int):
    make, inputs = LAYERS[kind]
    torch.manual_seed(0)
    model = make().double()
    g = torch.Generator().manual_seed(B)
    x = inputs(B, g)
    with torch.no_grad():
        y = torch.randn(model(x).shape, generator=g, dtype=torch.float64)
    return model, x, y


def _close(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference over the largest reference value (at least 1)."""
    return float((got - want).abs().max() / want.abs().max().clamp(min=1.0))


def _opacus_grads(model, x, y) -> dict[str, torch.Tensor]:
    from tying.train import grad_sample_module

    gsm = grad_sample_module(model, loss_reduction="sum")
    try:
        sq_err(gsm(x), y).sum().backward()
        return {n: p.grad_sample for n, p in model.named_parameters()}
    finally:
        gsm._close()


def outcome(kind: str, mode: str, B: int) -> tuple[str, object]:
    """``("ok", relative difference to the loop)`` or ``("refused", the error)``."""
    model, x, y = _case(kind, B)
    want = loop_grads(model, sq_err, x, y)
    try:
        if mode == "vmap":
            got = per_example_grads(model, sq_err, x, y)
            assert sorted(got) == sorted(want)
            return "ok", max(_close(got[n], want[n]) for n in want)
        if mode == "ghost":
            norms = ghost_norms(model, sq_err, x, y)
            ref = torch.cat([w.flatten(1) for w in want.values()], 1).norm(dim=1)
            return "ok", _close(norms, ref)
        got = _opacus_grads(model, x, y)
        return "ok", max(_close(got[n], want[n]) for n in want)
    except (ValueError, TypeError, tying.TieError, NotImplementedError) as err:
        return "refused", err


_GHOST_ONLY_LINEAR = r"ghost clipping cannot see every use of these trainable parameters: {}"
# (kind, mode) -> the refusal's message (a regex); every other pair must match the loop
REFUSED = {
    **{
        (kind, "ghost"): _GHOST_ONLY_LINEAR.format(name)
        for kind, name in [
            ("conv1d_groups_dilation", "body.weight"),
            ("conv2d_groups_dilation", "body.weight"),
            ("conv3d", "body.weight"),
            ("embedding_bag", "body.weight"),
            ("layer_norm", "body.1.weight"),
            ("group_norm", "body.0.weight"),
            ("rms_norm", "body.1.weight"),
            ("instance_norm_affine", "body.weight"),
            ("lstm", "rnn.weight_ih_l0"),
            ("gru", "rnn.weight_ih_l0"),
            ("multihead_attention", "att.in_proj_weight"),
        ]
    },
    ("tied_conv_linear", "ghost"): r"lin.weight is read by TensorBase.unsqueeze outside the",
    ("lstm", "vmap"): r"rnn \(LSTM\): per-example gradients through torch's fused recurrent",
    ("gru", "vmap"): r"rnn \(GRU\): per-example gradients through torch's fused recurrent",
    ("embedding_padding_idx", "opacus"): r"body is an Embedding with padding_idx=0",
    ("embedding_bag", "opacus"): r"body is an nn.EmbeddingBag \(mode='mean'\), and Opacus'",
    ("lstm", "opacus"): r"rnn is an nn.LSTM, whose fused recurrent kernel Opacus cannot",
    ("gru", "opacus"): r"rnn is an nn.GRU, whose fused recurrent kernel Opacus cannot",
    # stop 56: refused at the wrapping (Opacus' functorch way takes the query alone); it
    # was refused at the first forward, for reading att.out_proj.weight outside its forward
    ("multihead_attention", "opacus"): r"att \(MultiheadAttention\) needs the inputs query, "
    r"key, value.*DPMultiheadAttention",
    ("tied_conv_linear", "opacus"): r"lin.weight is read by TensorBase.unsqueeze",
}


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_each_layer_kind_in_each_mode_equals_a_per_example_loop_or_is_refused(kind, mode, B):
    verdict, got = outcome(kind, mode, B)
    if (kind, mode) in REFUSED:
        assert verdict == "refused", f"{kind} in mode {mode}: taken ({got:.2g} off the loop)"
        assert isinstance(got, (ValueError, TypeError, tying.TieError))
        assert re.search(REFUSED[kind, mode], str(got)), f"{kind} in mode {mode}: {got}"
    else:
        assert verdict == "ok", f"{kind} in mode {mode}: refused: {got}"
        assert got <= 1e-5, f"{kind} in mode {mode} at B={B}: {got:.3g} off the loop"


def test_a_refused_fused_recurrent_layer_leaves_the_model_unwrapped():
    from tying.train import grad_sample_module

    model, x, y = _case("lstm", 2)
    with pytest.raises(ValueError, match=r"swap it for opacus.layers.DPLSTM"):
        grad_sample_module(model)
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._backward_hooks))
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())


def _claimed_types() -> set[type]:
    """Every torch.nn type with parameters that a per-example way lists as its own."""
    from opacus import GradSampleModule

    from tying.train import ghost, opacus_hooks, per_example

    listed = {
        *per_example._EXPAND_SAFE,
        *ghost._SUPPORTED,
        *ghost._PLAIN,
        *opacus_hooks._SUPPORTED,
        *GradSampleModule.GRAD_SAMPLERS,
        nn.LSTM, nn.GRU, nn.MultiheadAttention,  # vmap's "any model": the layers people use
    }  # fmt: skip
    out = set()
    for t in listed:
        if not (isinstance(t, type) and issubclass(t, nn.Module)) or not t.__module__.startswith(
            "torch.nn"
        ):
            continue
        if any(True for _ in _instance(t).parameters()):
            out.add(t)
    return out


def _instance(t: type) -> nn.Module:
    try:
        return t()
    except TypeError:  # a layer with sizes: the smallest that builds
        for args in [(2, 2), (2,), (1, 2, 1), (2, 2, 1)]:
            try:
                return t(*args)
            except TypeError:
                continue
    raise AssertionError(f"no instance of {t.__name__} to inspect")


def test_every_claimed_layer_type_is_swept():
    swept = {type(m) for make, _ in LAYERS.values() for m in make().modules()}
    missing = sorted(t.__name__ for t in _claimed_types() - swept)
    assert not missing, f"layer types claimed by a per-example way but not swept: {missing}"


class Bags(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.bag, self.out = nn.EmbeddingBag(7, 4, mode=mode), nn.Linear(4, 3)

    def forward(self, tokens, offsets):  # bags given by offsets into one 1-D index
        return self.out(torch.tanh(self.bag(tokens, offsets)))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_opacus_embedding_bag_is_refused_where_its_sampler_is_off_the_loop(mode):
    """Opacus' EmbeddingBag sampler counts a repeated token once and skips mode='max':
    its per-sample gradients are off a per-example loop (the anchor's defect, shown
    here), so grad_sample_module refuses the layer and leaves the model unwrapped."""
    torch.manual_seed(0)
    model = Bags(mode).double()
    tokens, offsets = torch.tensor([1, 2, 3, 4, 5, 6, 0, 1, 1]), torch.tensor([0, 2, 5, 6])
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ends = [*offsets[1:].tolist(), len(tokens)]
    want = []  # each bag alone, one backward each
    for b, (s, e) in enumerate(zip(offsets.tolist(), ends)):
        model.zero_grad()
        sq_err(model(tokens[s:e], torch.tensor([0])), y[b : b + 1]).sum().backward()
        want.append(model.bag.weight.grad.clone())
    model.zero_grad(set_to_none=True)
    plain = opacus.GradSampleModule(Bags(mode).double(), loss_reduction="sum")
    plain._module.load_state_dict(model.state_dict())
    sq_err(plain(tokens, offsets), y).sum().backward()
    assert _close(plain._module.bag.weight.grad_sample, torch.stack(want)) > 1e-2
    plain._close()

    from tying.train import grad_sample_module

    with pytest.raises(ValueError, match=rf"bag is an nn.EmbeddingBag \(mode='{mode}'\).*"
                       r"counts a token repeated in one bag once"):  # fmt: skip
        grad_sample_module(model, loss_reduction="sum")
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
