"""Ghost clipping with tied weights: norms and clipped sums equal the explicit per-example ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tests.train.models import BagTied, TinyLM, cases, ce, loop_grads, mse, seq_ce
from tying.train import GhostClipping, ghost_norms, per_example_norms
from tying.train import ghost as ghost_module

CASES = cases()
IDS = [c[0] for c in CASES]
TIED = {"albert", "tied_ae", "tiny_lm", "tiny_lm_pad", "bag_tied", "embed_from_linear", "twice"}


@pytest.mark.parametrize("strategy", ["gram", "materialize", "auto"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ghost_norms_equal_explicit_norms(case, strategy):
    name, model, loss_fn, x, y = case
    want = per_example_norms(loop_grads(model, loss_fn, x, y))
    got = GhostClipping(model, strategy=strategy).norms(loss_fn, x, y)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ghost_clipped_sum_equals_explicit(case):
    name, model, loss_fn, x, y = case
    grads = loop_grads(model, loss_fn, x, y)
    norms = per_example_norms(grads)
    C = float(norms.median())  # about half the examples get clipped
    c = (C / (norms + 1e-6)).clamp(max=1.0)
    res = GhostClipping(model).clip(loss_fn, x, y, C)
    assert set(res.grads) == set(grads)
    for n, g in grads.items():
        torch.testing.assert_close(
            res.grads[n], torch.tensordot(c, g, dims=1), rtol=1e-6, atol=1e-12
        )
    torch.testing.assert_close(res.losses, loss_fn(model(x), y).detach())


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[0] in TIED], ids=sorted(TIED, key=IDS.index)
)
def test_dropping_cross_terms_is_wrong_for_tied_weights(case):
    name, model, loss_fn, x, y = case
    want = per_example_norms(loop_grads(model, loss_fn, x, y))
    naive = ghost_norms(model, loss_fn, x, y, cross_terms=False)
    assert ((naive - want).abs() / want).max() > 1e-3


def test_dropping_cross_terms_is_harmless_without_ties():
    name, model, loss_fn, x, y = CASES[0]
    torch.testing.assert_close(
        ghost_norms(model, loss_fn, x, y, cross_terms=False), ghost_norms(model, loss_fn, x, y)
    )


def test_cross_terms_can_make_the_norm_smaller_or_larger():
    # Not a bound either way: per-layer ghost norms are simply a different number.
    _, model, loss_fn, x, y = CASES[IDS.index("twice")]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    right = ghost_norms(model, loss_fn, x, x)
    naive = ghost_norms(model, loss_fn, x, x, cross_terms=False)
    assert (naive > right * (1 + 1e-6)).any() and (naive < right * (1 - 1e-6)).any()


def test_in_place_op_after_a_linear_layer_is_still_right():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(inplace=True), lin).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    want = per_example_norms(loop_grads(model, mse, x, x))
    torch.testing.assert_close(ghost_norms(model, mse, x, x), want, rtol=1e-6, atol=0)


def test_refuses_a_parameter_it_cannot_see():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"1\.weight \(not the weight/bias.*mode='vmap'"):
        GhostClipping(model)


def test_refuses_a_relation_it_does_not_handle():
    m = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
    tying.Plan([tying.share("b.weight", like="a.weight", relation=tying.Flipped())]).apply(m)
    with pytest.raises(ValueError, match=r"b\.weight is tied with Flipped.*Same and Transposed"):
        GhostClipping(m)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):
        return x @ self.weight


def test_refuses_a_linear_weight_also_read_by_another_module():
    m = nn.ModuleDict({"lin": nn.Linear(3, 3), "gate": Gate()})
    tying.Plan([tying.share("gate.weight", like="lin.weight")]).apply(m)
    with pytest.raises(ValueError, match=r"lin\.weight \(also read by gate\.weight, a Gate\)"):
        GhostClipping(m)


def test_refuses_losses_that_are_not_per_example():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"one loss per example, shape \(B,\).*reduction='none'"):
        ghost_norms(
            model, lambda out, y: (out - y).pow(2).mean(), torch.randn(4, 3), torch.randn(4, 2)
        )


def test_refuses_batch_second_inputs():
    model = nn.Linear(3, 2)

    def loss(out, y):  # out (T=5, B=4, 2): the layer saw the batch second
        return (out - y).pow(2).sum((0, 2))

    # stop 54: the loss's shape (4,) against y's 5 rows is refused first, by the rule
    # both modes share, naming the batch-first fix
    with pytest.raises(ValueError, match=r"got shape \(4,\).*keep the batch first"):
        ghost_norms(model, loss, torch.randn(5, 4, 3), torch.randn(5, 4, 2))


def test_strategy_is_checked():
    with pytest.raises(
        ValueError, match=r"strategy must be one of \('auto', 'gram', 'materialize'\)"
    ):
        GhostClipping(nn.Linear(2, 2), strategy="fast")


def test_frozen_parameters_are_left_out():
    model = TinyLM()
    model.mix.weight.requires_grad_(False)
    tok = torch.randint(0, 7, (3, 4))
    res = GhostClipping(model).clip(
        lambda o, y: torch.nn.functional.cross_entropy(o.transpose(1, 2), y, reduction="none").sum(
            1
        ),
        tok,
        tok,
        1.0,
    )
    assert "mix.weight" not in res.grads and "embed.weight" in res.grads


def test_ghost_step_keeps_the_tie():
    model = BagTied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tok = torch.randint(0, 7, (4, 5))
    res = GhostClipping(model).clip(
        lambda o, y: torch.nn.functional.cross_entropy(o, y, reduction="none"),
        tok,
        tok[:, 0] % 3,
        1.0,
    )
    params = dict(model.named_parameters())
    for n, g in res.grads.items():
        params[n].grad = g
    opt.step()
    tying.verify(model)
    torch.testing.assert_close(model.bag.weight, model.embed.weight.t())


@pytest.mark.parametrize("strategy", ["gram", "materialize"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flushing_subnormal_output_gradients_keeps_the_result(monkeypatch, strategy, dtype):
    # A tied LM head over the N(0, 1) embedding: wide logits, softmax probabilities far
    # below float32's normal range (subnormal products made the Gram 90x slower). The
    # flushed path must give the reference's norms and clipped sum (FLUSH_BELOW = 0).
    from tying.train import ghost

    model = TinyLM(vocab=300, d=48, seed=3).to(dtype)
    with torch.no_grad():
        model.embed.weight.mul_(1.5)  # wider logits: a fifth of the probabilities subnormal
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 300, (6, 5), generator=g), torch.randint(0, 300, (6, 5), generator=g)
    logits = model(x)
    tiny = torch.finfo(dtype).tiny
    p = logits.softmax(-1)
    if dtype is torch.float32:
        assert bool(((p > 0) & (p < tiny)).any())  # the case this is about is present
    flushed = GhostClipping(model, strategy=strategy).clip(seq_ce, x, y, 1.0)
    monkeypatch.setattr(ghost, "FLUSH_BELOW", 0.0)
    ref = GhostClipping(model, strategy=strategy).clip(seq_ce, x, y, 1.0)
    torch.testing.assert_close(flushed.norms, ref.norms, rtol=1e-6, atol=0)
    for name, want in ref.grads.items():
        # entries made only of flushed terms (rows of tokens with p ~ 1e-40) become 0:
        # relative to the tensor, far below float32 rounding
        diff = float((flushed.grads[name] - want).norm() / want.norm())
        assert diff <= 1e-12, (name, diff)


def test_the_flush_is_relative_so_a_uniformly_tiny_gradient_survives():
    from tying.train.ghost import _flush_tiny

    g = torch.tensor([[[3e-30, -1e-30, 1e-50]]], dtype=torch.float64)
    out = _flush_tiny(g)
    assert torch.equal(out, torch.tensor([[[3e-30, -1e-30, 0.0]]], dtype=torch.float64))
    for bad in (torch.zeros(1, 1, 3), torch.tensor([[[1.0, float("nan"), float("inf")]]])):
        assert torch.equal(_flush_tiny(bad).isnan(), bad.isnan())


@pytest.mark.parametrize("layout", ["permuted", "row-major", "expanded"])
def test_the_flush_writes_a_permuted_gradient_row_major_with_the_same_values(layout):
    # the gradient of logits transposed for the loss arrives permuted; the flushed copy
    # is written row-major (what the layer's backward and the clipped sum read), and
    # holds exactly the values a layout-keeping flush held
    from tying.train.ghost import _flush_tiny

    base = torch.randn(4, 9, 5)
    base[0, 0, 0], base[1, 2, 3] = 1e-30, -1e-25
    if layout == "permuted":
        g = base.transpose(1, 2)  # (4, 5, 9), strides (45, 1, 5)
    elif layout == "row-major":
        g = base.transpose(1, 2).contiguous()
    else:  # a loss summed over the last dim hands back a stride-0 gradient
        g = torch.tensor(0.5).expand(4, 5, 9)
    out = _flush_tiny(g)
    assert out.is_contiguous()
    want = g.clone()
    want[g.abs() < g.abs().max() * 2.0**-60] = 0.0
    assert torch.equal(out, want)


# --- what makes a use compute other than x Wᵀ + b (stop 18: norms 1.0 off, no error) ---


class _Doubled(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def _mlp_and_batch(first=nn.Linear):
    torch.manual_seed(0)
    model = nn.Sequential(first(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (5,), generator=g)


def _ce(out, y):
    return nn.functional.cross_entropy(out, y, reduction="none")


def test_refuses_a_subclass_whose_forward_is_its_own():
    model, x, y = _mlp_and_batch(_Doubled)
    with pytest.raises(ValueError, match=r"0 \(a _Doubled whose forward is not nn.Linear's"):
        GhostClipping(model).norms(_ce, x, y)


def _instance_forward(model):
    lin = model[0]
    lin.forward = lambda t: nn.functional.linear(t, 2 * lin.weight, lin.bias)
    return None


@pytest.mark.parametrize(
    "attach,match",
    [
        (_instance_forward, r"0 \(Linear\) has forward set on the instance"),
        (
            lambda m: m[0].register_forward_hook(lambda mod, i, o: 2 * o),
            r"0 \(Linear\) has a forward hook",
        ),
        (
            lambda m: torch.nn.modules.module.register_module_forward_hook(lambda mod, i, o: None),
            r"a global forward hook is registered",
        ),
        (
            lambda m: m[0].weight.register_hook(lambda g: 3 * g),
            r"parameter 0.weight has a gradient hook \(Tensor.register_hook\)",
        ),
    ],
    ids=["instance-forward", "forward-hook", "global-forward-hook", "parameter-hook"],
)
def test_refuses_what_is_attached_after_it_was_built(attach, match):
    model, x, y = _mlp_and_batch()
    ghost = GhostClipping(model)
    ghost.norms(_ce, x, y)
    handle = attach(model)
    try:
        with pytest.raises(ValueError, match=match):
            ghost.norms(_ce, x, y)
        with pytest.raises(ValueError, match=match):
            ghost.clip(_ce, x, y, 1.0)
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize(
    "attach",
    [
        lambda m: m[0].register_forward_pre_hook(lambda mod, i: (2 * i[0],)),
        lambda m: m[1].register_forward_hook(lambda mod, i, o: 2 * o),
        lambda m: m[2].register_full_backward_hook(lambda mod, gi, go: (3 * gi[0],)),
    ],
    ids=["pre-hook", "hook-on-another-module", "backward-hook"],
)
def test_hooks_autograd_carries_keep_the_norms_equal_a_per_example_loop(attach):
    model, x, y = _mlp_and_batch()
    attach(model)
    want = per_example_norms(loop_grads(model, _ce, x, y))
    torch.testing.assert_close(GhostClipping(model).norms(_ce, x, y), want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_low_precision_model_is_clipped_to_the_bound_in_float32(dtype):
    # norms and clipped sums were computed in the parameters' dtype: bfloat16 norms 0.66 %
    # off (a clipped example over C), and a float32 loss failed with a dtype error
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 5)).to(dtype)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 16, generator=g).to(dtype), torch.randint(0, 5, (8,), generator=g)

    def loss(out, t):
        return nn.functional.cross_entropy(out.float(), t, reduction="none")

    ghost = GhostClipping(model)
    norms = ghost.norms(loss, x, y)
    assert norms.dtype == torch.float32
    want = per_example_norms({n: v.double() for n, v in loop_grads(model, loss, x, y).items()})
    torch.testing.assert_close(norms.double(), want, rtol=2**-6, atol=0)  # bf16 gradients
    C = 0.5 * float(norms.min())  # every example is clipped
    for b in range(len(y)):  # one example: the clipped sum is that example, of norm C
        res = ghost.clip(loss, x[b : b + 1], y[b : b + 1], C)
        total = torch.cat([v.flatten() for v in res.grads.values()])
        assert total.dtype == torch.float32
        assert float(total.double().norm()) <= C * (1 + 1e-6)


def _broadcast_mse(out, y):  # out (B, 1) against y (B,): a (B, B) loss, row means mix examples
    return (out - y).pow(2).mean(1)


def _batch_centred(out, y):  # the target centred on the batch: every loss reads every target
    return (out.squeeze(1) - (y - y.mean())).pow(2)


@pytest.mark.parametrize("loss_fn", [_broadcast_mse, _batch_centred])
def test_refuses_a_loss_that_mixes_examples(loss_fn):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(6, 3), torch.randn(6)
    with pytest.raises(ValueError, match=r"loss_fn mixes examples.*y\.view_as\(out\)"):
        ghost_norms(model, loss_fn, x, y)
    ok = ghost_norms(model, lambda out, t: (out - t.view_as(out)).pow(2).sum(1), x, y)
    assert ok.shape == (6,)
    # and the DP step refuses it before changing anything
    w0 = model.weight.detach().clone()
    with pytest.raises(ValueError, match="loss_fn mixes examples"):
        GhostClipping(model).clip(loss_fn, x, y, 1.0)
    assert torch.equal(model.weight, w0)


# -- the clipped sum scales the smaller side (issue 19, token model) -------------------


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 5),
    T=st.integers(1, 4),
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    transposed_layout=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_weighted_outer_equals_the_reference(B, T, m, n, transposed_layout, seed):
    # whichever side c scales, Σ_b c_b L[b]ᵀ R[b] is the old form's to 1e-12 (float64),
    # also for an output gradient in the permuted layout a transposed loss leaves
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(B, m, T, generator=g, dtype=torch.float64).transpose(1, 2)
    L = L if transposed_layout else L.contiguous()
    R = torch.randn(B, T, n, generator=g, dtype=torch.float64)
    c = torch.rand(B, generator=g, dtype=torch.float64)
    for a, b, rows, cols in ((L, R, m, n), (R, L, n, m)):  # both sides the smaller one
        new = ghost_module._weighted_outer(a, b, c, rows, cols)
        ref = ghost_module._weighted_outer_reference(a, b, c, rows, cols)
        assert new.shape == ref.shape == (rows, cols)
        assert float((new - ref).norm()) <= 1e-12 * max(float(ref.norm()), 1e-300)


def test_ghost_clip_equals_the_explicit_clipped_sum_on_a_vocabulary_layer():
    # the token model's shape class: an output layer much wider than its input, so the
    # clipped sum scales the input side; checked against per-example gradients
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 50))
    model = model.double()
    x, y = torch.randint(0, 50, (6, 5)), torch.randint(0, 50, (6, 5))
    C = 0.5
    res = GhostClipping(model).clip(seq_ce, x, y, C)
    grads = loop_grads(model, seq_ce, x, y)
    norms = per_example_norms(grads)
    c = (C / (norms + 1e-6)).clamp(max=1.0)
    for name, g in grads.items():
        want = (c.view(-1, *[1] * (g.dim() - 1)) * g).sum(0)
        assert torch.allclose(res.grads[name], want, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_a_single_use_clipped_sum_equals_the_zero_filled_accumulator(dtype):
    # stop 22: a tensor with one use takes its weighted product as the sum; the old form
    # (zeros in the accumulator's dtype, += each use) is the reference, dtype included
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
    x = torch.randn(6, 5).to(dtype)
    y = torch.randint(0, 3, (6,))
    gc = GhostClipping(model)
    got = gc.clip(ce, x, y, 0.5)
    losses, uses = gc._record(ce, x, y)
    norms = ghost_module._norms(uses, 6, ghost_module._wide_dtype(losses.dtype), True, "auto")
    c = (0.5 / (norms + 1e-6)).clamp(max=1.0)
    for pid, name in gc._names.items():
        p = gc._params[pid]
        m, n = ghost_module._matrix_shape(p)
        total = torch.zeros(m, n, dtype=ghost_module._wide_dtype(p.dtype))
        for L, R in uses[pid]:
            total += ghost_module._weighted_outer(L, R, c, m, n)
        assert got.grads[name].dtype == total.dtype
        torch.testing.assert_close(got.grads[name], total.reshape(p.shape), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 6),
    m=st.integers(1, 7),
    n=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_property_a_single_row_use_takes_its_norm_from_the_two_vector_norms(B, m, n, seed):
    """stop 23: one use with one row per example skips the Gram matrices; the norm equals
    both the Gram path (T = 1 forced through it) and the materialised outer products."""
    from tying.train import ghost as g

    gen = torch.Generator().manual_seed(seed)
    L = torch.randn(B, 1, m, generator=gen, dtype=torch.float64)
    R = torch.randn(B, 1, n, generator=gen, dtype=torch.float64)
    fast = g._sq_norm([(L, R)], B, torch.float64, "auto")
    built = g._sq_norm([(L, R)], B, torch.float64, "materialize")
    gram = (g._gram(L, L, torch.float64) * g._gram(R, R, torch.float64)).sum((1, 2))
    torch.testing.assert_close(fast, gram, rtol=1e-13, atol=0)
    torch.testing.assert_close(fast, built, rtol=1e-13, atol=0)


def _flush_tiny_before_stop_23(g):
    """The flush as it was: max|g| from aminmax and two read-backs (the reference)."""
    if ghost_module.FLUSH_BELOW == 0.0 or not g.dtype.is_floating_point or g.numel() == 0:
        return g
    order = sorted(range(g.dim()), key=lambda i: -g.stride(i))
    dense = g.permute(order)
    if not dense.is_contiguous():
        dense = g.contiguous()
    lo, hi = torch.aminmax(dense.view(-1))
    top = max(-float(lo), float(hi))
    if not top > 0 or top == float("inf"):
        return g
    return torch.hardshrink(
        g, top * ghost_module.FLUSH_BELOW, out=torch.empty(g.shape, dtype=g.dtype)
    )


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    special=st.sampled_from([None, "nan", "inf", "-inf", "tiny", "zeros"]),
    permuted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_the_flush_is_bit_equal_to_the_old_one(shape, dtype, special, permuted, seed):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(*shape, generator=gen, dtype=torch.float64)
    flat = g.view(-1)
    pos = int(torch.randint(0, flat.numel(), (1,), generator=gen))
    if special == "zeros":
        g.zero_()
    elif special == "tiny":
        flat[pos] = 1e-300 if dtype == torch.float64 else 1e-40
    elif special is not None:
        flat[pos] = float(special)
    g = g.to(dtype)
    if permuted and g.dim() > 1:
        g = g.transpose(0, -1)
    got, want = ghost_module._flush_tiny(g), _flush_tiny_before_stop_23(g)
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


# ---- stop 30 review: what ghost clipping took for per-example when it was not --------
class _PosLM(nn.Module):
    """A learned positional embedding read with arange(T): its rows are positions."""

    def __init__(self, V=7, d=4, T=4):
        super().__init__()
        self.emb, self.pos, self.head = nn.Embedding(V, d), nn.Embedding(T, d), nn.Linear(d, V)

    def forward(self, tok):
        return self.head(torch.tanh(self.emb(tok) + self.pos(torch.arange(tok.shape[1]))))


def _tok_ce(o, y):
    return nn.functional.cross_entropy(o.transpose(1, 2), y, reduction="none").sum(1)


@pytest.mark.parametrize("B", [3, 4])
def test_a_use_whose_rows_only_happen_to_equal_the_batch_is_refused(B):
    """T == B: the positional embedding's 4 rows were taken for 4 examples, and row t got
    every example's gradient at position t (norms 3.95 for 3.98, no error). T != B was
    refused already; now both are, naming the module."""
    torch.manual_seed(0)
    m = _PosLM().double()
    x, y = torch.randint(0, 7, (B, 4)), torch.randint(0, 7, (B, 4))
    with pytest.raises(ValueError, match="pos .Embedding.|batch-first"):
        ghost_norms(m, _tok_ce, x, y)


class _Center(nn.Module):
    def forward(self, h):
        return h - h.mean(0, keepdim=True)


@pytest.mark.parametrize(
    "middle",
    [
        _Center(),
        nn.BatchNorm1d(4, affine=False),  # training mode: batch statistics
        nn.BatchNorm1d(4, affine=False, track_running_stats=False).eval(),  # still batch stats
    ],
)
def test_a_forward_that_mixes_examples_is_refused(middle):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), middle, nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3).double(), torch.randn(5, 2).double()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="the forward mixes examples"):
        ghost_norms(m, mse, x, y)
    # refused before the forward: a BatchNorm's running statistics are as they were
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_dropout_in_training_mode_is_not_taken_for_mixing():
    """The mixing probe runs both forwards under one random state, so dropout's masks
    agree; the norms equal the loop's under the same state."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).double()
    x, y = torch.randn(6, 3).double(), torch.randn(6, 2).double()
    assert ghost_norms(m, mse, x, y).shape == (6,)
    m.eval()
    torch.testing.assert_close(
        ghost_norms(m, mse, x, y), per_example_norms(loop_grads(m, mse, x, y))
    )


def test_a_loss_that_reads_the_next_example_is_refused():
    """Example b's loss read example b + 1 (no wrap-around): only the last example's
    change moves another loss, and the probe changed example 0 only (stop 30 review)."""

    def loss(o, y):
        nxt = torch.cat([((o[:-1] - o[1:]) ** 2).sum(1), o.new_zeros(1)])
        return ((o - y) ** 2).sum(1) + nxt

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3).double(), torch.randn(6, 2).double()
    with pytest.raises(ValueError, match="loss_fn mixes examples: giving example 5"):
        ghost_norms(m, loss, x, y)
