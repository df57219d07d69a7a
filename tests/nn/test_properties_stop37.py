"""Stop 37 property tests: random sizes, layouts and inputs for the layers other than the
group convs, each checked against an independent computation or a refusal by name.

Every draw ends in one of two outcomes: the layer's numbers equal a plain-torch reference
(a hand-written per-head softmax, ``nn.LSTM``, ``nn.EmbeddingBag`` on the materialised
table, a hand loop over one block), or a ``ValueError``/``TypeError`` naming the argument.
A third outcome (a load of another layer's sizes, a silently merged argument) fails here.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.nn import (
    Attention,
    HashedEmbedding,
    HashedEmbeddingBag,
    HashedLinear,
    PeriodicFeatures,
    Stack,
    TiedGateLSTM,
    TiedResidualNet,
    TransformerBlock,
    share_layers,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _reference_attention(att: Attention, x, ctx, mask):
    """softmax(QKᵀ/√d + mask) V per head, K/V head ``h // (H / heads)`` read by query head h."""
    b, t, _ = x.shape
    s = ctx.shape[1]
    h, dh = att.n_heads, att.d_head
    q = F.linear(x, att.q_proj.weight, att.q_proj.bias).view(b, t, h, dh).transpose(1, 2)
    k = F.linear(ctx, att.k_proj.weight, att.k_proj.bias).view(b, s, att.kv_heads, dh)
    v = F.linear(ctx, att.v_proj.weight, att.v_proj.bias).view(b, s, att.v_heads, dh)
    k = k.transpose(1, 2).repeat_interleave(h // att.kv_heads, 1)  # (B, H, S, dh)
    v = v.transpose(1, 2).repeat_interleave(h // att.v_heads, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, S)
    allowed = torch.ones(t, s, dtype=torch.bool)
    if att.causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num() @ v
    return F.linear(
        out.transpose(1, 2).reshape(b, t, h * dh), att.out_proj.weight, att.out_proj.bias
    )


@st.composite
def _attention_case(draw):
    n_heads = draw(st.integers(1, 4))
    kv_heads = draw(st.sampled_from(_divisors(n_heads)))
    v_heads = draw(st.sampled_from(_divisors(n_heads)))
    d_head = draw(st.integers(1, 4))
    cross = draw(st.booleans())
    return {
        "n_heads": n_heads,
        "kv_heads": kv_heads,
        "v_heads": v_heads,
        "d_head": d_head,
        "d_model": draw(st.integers(1, 6)),
        "d_context": draw(st.integers(1, 6)) if cross else None,
        "causal": draw(st.booleans()) and not cross,
        "bias": draw(st.booleans()),
        "batch": draw(st.integers(0, 3)),
        "t": draw(st.integers(1, 4)),
        "s": draw(st.integers(1, 4)) if cross else None,
        "masked": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@FAST
@given(_attention_case())
def test_attention_equals_a_per_head_softmax(case):
    """Any head layout (MHA/GQA/MQA/shared-V, d_head ≠ d_model/H), self or cross, causal or
    not, batch 0-3, T and S 1-4, a key-padding mask, a non-contiguous input: float64 to 1e-12."""
    torch.manual_seed(case["seed"])
    att = Attention(
        case["d_model"],
        case["n_heads"],
        kv_heads=case["kv_heads"],
        v_heads=case["v_heads"],
        d_head=case["d_head"],
        d_context=case["d_context"],
        bias=case["bias"],
        causal=case["causal"],
        dtype=torch.float64,
    )
    b, t = case["batch"], case["t"]
    x = torch.randn(b, t, 2 * case["d_model"], dtype=torch.float64)[..., ::2]  # non-contiguous
    ctx = None
    s = t
    if case["d_context"] is not None:
        s = case["s"]
        ctx = torch.randn(b, s, case["d_context"], dtype=torch.float64)
    mask = None
    if case["masked"]:
        mask = torch.rand(b, 1, 1, s) > 0.3
        mask[..., 0] = True  # every query keeps a key (a fully masked row reads zeros)
    out = att(x, ctx, attn_mask=mask)
    ref = _reference_attention(att, x, x if ctx is None else ctx, mask)
    assert out.dtype == torch.float64 and out.shape == (b, t, case["d_model"])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


_SIZE_VALUES = st.sampled_from([-1, 0, 1, 2, 3, 4, 2.0, 2.5, True, False, None, "2"])


@FAST
@given(d_model=_SIZE_VALUES, n_heads=_SIZE_VALUES, kv_heads=_SIZE_VALUES, d_ff=_SIZE_VALUES)
def test_block_arguments_build_as_given_or_are_refused_by_name(d_model, n_heads, kv_heads, d_ff):
    """Any mix of sizes: a block whose attributes are exactly the ints given, or an error that
    names the argument; never torch's "negative dimension", never a bool read as 1."""
    try:
        block = TransformerBlock(d_model, n_heads, kv_heads=kv_heads, d_ff=d_ff)
    except (ValueError, TypeError) as err:
        message = str(err)
        assert message.startswith(("TransformerBlock:", "Attention:")), message
        assert any(f"{n}" in message for n in ("d_model", "n_heads", "kv_heads", "d_ff"))
        return
    for value in (d_model, n_heads, kv_heads, d_ff):
        assert value is None or (type(value) is int and value >= 1)
    att = block.self_attn
    assert (att.d_model, att.n_heads) == (d_model, n_heads)
    assert att.kv_heads == (n_heads if kv_heads is None else kv_heads)
    assert block.mlp[0].out_features == (4 * d_model if d_ff is None else d_ff)


@FAST
@given(
    depth=st.integers(1, 4),
    width=st.sampled_from([4, 6, 8]),
    batch=st.integers(0, 2),
    t=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_a_shared_stack_equals_its_first_block_applied_depth_times(depth, width, batch, t, seed):
    """ALBERT: after share_layers (no free norms) the stack is block 0 applied ``depth`` times;
    still so after an optimizer step."""
    torch.manual_seed(seed)
    stack = Stack(TransformerBlock(width, 2, kv_heads=1) for _ in range(depth)).double()
    share_layers(stack)
    x = torch.randn(batch, t, width, dtype=torch.float64)
    for _ in range(2):
        ref = x
        for _ in range(depth):
            ref = stack.layers[0](ref)
        torch.testing.assert_close(stack(x), ref, rtol=0, atol=0)
        opt = torch.optim.SGD(stack.parameters(), lr=0.1)
        stack(torch.randn(2, t, width, dtype=torch.float64)).square().mean().backward()
        opt.step()
    assert tying.count(stack).physical == tying.count(stack.layers[0]).physical


@FAST
@given(
    input_size=st.integers(1, 4),
    hidden=st.integers(1, 4),
    batch=st.integers(0, 3),
    t=st.integers(0, 4),
    batch_first=st.booleans(),
    with_state=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_an_untied_gate_lstm_equals_nn_lstm(
    input_size, hidden, batch, t, batch_first, with_state, seed
):
    """``TiedGateLSTM(tie_gates=False)`` with nn.LSTM's weights (gate order i, f, g, o): the same
    outputs and final state in float64 for batch 0-3, T 0-4, both layouts."""
    torch.manual_seed(seed)
    ours = TiedGateLSTM(input_size, hidden, tie_gates=False, batch_first=batch_first).double()
    ref = nn.LSTM(input_size, hidden, batch_first=batch_first).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.cat([getattr(ours, f"weight_ih_{g}") for g in "ifgo"]))
        ref.weight_hh_l0.copy_(ours.weight_hh)
        ref.bias_ih_l0.copy_(ours.bias)
        ref.bias_hh_l0.zero_()
    shape = (batch, t, input_size) if batch_first else (t, batch, input_size)
    x = torch.randn(*shape, dtype=torch.float64)
    state = None
    if with_state:
        state = tuple(torch.randn(batch, hidden, dtype=torch.float64) for _ in range(2))
    out, (h, c) = ours(x, state)
    if t == 0:  # nn.LSTM refuses an empty sequence; ours passes the state through
        assert out.numel() == 0
        if state is not None:
            assert torch.equal(h, state[0]) and torch.equal(c, state[1])
            assert h is not state[0] and c is not state[1]  # copies (stop 49)
        return
    r_out, (r_h, r_c) = ref(x, None if state is None else tuple(s[None] for s in state))
    torch.testing.assert_close(out, r_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, r_h[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, r_c[0], rtol=1e-12, atol=1e-12)


def _saved(module):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _hashed(kind: str, a: int, b: int, buckets: int, seed: int):
    if kind == "linear":
        return HashedLinear(a, b, buckets, seed=seed, bias=False)
    if kind == "bag":
        return HashedEmbeddingBag(a, b, buckets, seed=seed, mode="block", block=1)
    return HashedEmbedding(a, b, buckets, seed=seed)


@FAST
@given(
    kind=st.sampled_from(["linear", "embedding", "bag"]),
    saved=st.tuples(st.integers(2, 8), st.integers(2, 8), st.integers(0, 1)),
    other=st.tuples(st.integers(2, 8), st.integers(2, 8), st.integers(0, 1)),
)
def test_a_hashed_state_dict_loads_only_into_the_same_sizes_and_hash(kind, saved, other):
    """A hashed layer's state dict holds ``buckets`` values whatever its sizes: it loads into a
    layer of the same sizes and seed (and then computes the same weight) or is refused by name
    (other sizes: stop 37; another seed: stop 31); never read as other rows."""
    torch.manual_seed(0)
    buckets = 4  # the same stored shape for every draw: only the records can tell them apart
    source = _hashed(kind, *saved[:2], buckets, saved[2])
    target = _hashed(kind, *other[:2], buckets, other[2])
    before = target.weight_physical.detach().clone()
    try:
        target.load_state_dict(_saved(source))
    except ValueError as err:
        if saved[:2] != other[:2]:
            assert "saved from a layer of other sizes" in str(err)
        else:
            assert saved[2] != other[2] and f"seed={saved[2]} (this layer: {other[2]})" in str(err)
        assert torch.equal(target.weight_physical, before)  # the refused load changed nothing
        return
    assert saved == other
    assert torch.equal(target.weight, source.weight)


@FAST
@given(
    v=st.integers(1, 12),
    d=st.sampled_from([1, 2, 4]),
    mode=st.sampled_from(["entry", "block"]),
    pooling=st.sampled_from(["sum", "mean"]),  # the layer has no "max"
    bags=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_a_hashed_bag_equals_nn_embedding_bag_on_its_table(v, d, mode, pooling, bags, seed):
    """Ragged bags (empty ones included) through offsets: ``nn.EmbeddingBag`` on the
    materialised ``weight`` gives the same values in float64."""
    torch.manual_seed(seed)
    # at most V·D in every mode: more buckets than entries is refused (block mode: stop 58)
    buckets = min(v * d, 5 if mode == "entry" else 4)
    kw = {"block": 1} if mode == "block" else {}
    bag = HashedEmbeddingBag(v, d, buckets, mode=mode, pooling=pooling, dtype=torch.float64, **kw)
    ids = torch.randint(0, v, (sum(bags),))
    offsets = torch.tensor([0, *bags[:-1]]).cumsum(0)
    out = bag(ids, offsets)
    ref = F.embedding_bag(ids, bag.weight, offsets, mode=pooling)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@FAST
@given(
    width=st.integers(1, 4),
    dims=st.lists(st.integers(-5, 5), min_size=0, max_size=4),
    harmonics=st.integers(1, 3),
)
def test_periodic_features_take_distinct_columns_or_refuse(width, dims, harmonics):
    """``periodic_dims`` in range and distinct (counting -1 as the last column): sin/cos
    features by hand; anything else (a column twice, out of range, empty) refused by name."""
    period = 2.0
    columns = [c % width for c in dims if -width <= c < width]
    valid = bool(dims) and len(columns) == len(dims) and len(set(columns)) == len(dims)
    try:
        feats = PeriodicFeatures(width, period, periodic_dims=dims, harmonics=harmonics)
    except ValueError as err:
        assert not valid and "periodic_dims" in str(err)
        return
    assert valid
    x = torch.rand(5, width, dtype=torch.float64)
    omega = 2 * math.pi * torch.arange(1, harmonics + 1, dtype=torch.float64) / period
    periodic = sorted(columns)
    other = [c for c in range(width) if c not in periodic]
    angles = x[:, periodic, None] * omega  # (N, P, harmonics)
    expected_width = len(other) + 2 * harmonics * len(periodic)
    out = feats(x)
    assert out.shape == (5, expected_width)
    # per periodic column (ascending): sin of its harmonics, then cos; then the other columns
    want = [f(angles[:, i]) for i in range(len(periodic)) for f in (torch.sin, torch.cos)]
    want = torch.cat([*want, x[:, other]], 1)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "embedding"])
def test_the_hashed_property_covers_a_reshape_that_keeps_the_flat_weight(kind):
    """The case the property exists for (stop 37): (12, 2) and (8, 3) hold the same flat
    weight, so the old load succeeded with the rows reshaped."""
    source = _hashed(kind, 12, 2, 4, 0)
    target = _hashed(kind, 8, 3, 4, 0)
    with pytest.raises(ValueError, match="saved from a layer of other sizes"):
        target.load_state_dict(_saved(source))


@FAST
@given(
    depth=st.sampled_from([1, 2, 4, 8, 16, 17, 32, 64, 128, 129, 256]),
    t1=st.sampled_from([0.5, 1.0, 2.0]),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_a_half_precision_residual_net_is_accurate_or_refused(depth, t1, dtype, seed):
    """A float16/bfloat16 ``TiedResidualNet``: within a quarter of its move of the float64
    stack, or refused by name (stop 37: deep stacks lost every update, no error)."""
    torch.manual_seed(seed)
    net = TiedResidualNet(3, 8, depth, t1=t1).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    ref = net(x)
    half = net.to(dtype)
    try:
        out = half(x.to(dtype))
    except ValueError as err:
        assert "cannot add up steps of h = t1/depth" in str(err)
        assert net.h < 8 * torch.finfo(dtype).eps
        return
    move = (ref - x).abs().max()
    slack = 4 * torch.finfo(dtype).eps * ref.abs().max()
    assert (out.double() - ref).abs().max() <= 0.25 * move + slack
