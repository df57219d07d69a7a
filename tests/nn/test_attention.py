"""Attention with K/V shared across heads (B9) and across modules (B10)."""

from __future__ import annotations

import math

import pytest
import torch

import tying
from tying.nn import Attention, kv_sharing_plan


def reference(attn: Attention, x, context=None, causal=None):
    """Attention written out by hand: explicit per-head loop, softmax and causal mask."""
    ctx = x if context is None else context
    causal = attn.causal if causal is None else causal
    q, k, v = attn.q_proj(x), attn.k_proj(ctx), attn.v_proj(ctx)
    d = attn.d_head
    outs = []
    for h in range(attn.n_heads):
        kh = h // (attn.n_heads // attn.kv_heads)  # GQA: query head h reads K/V group kh
        vh = h // (attn.n_heads // attn.v_heads)
        scores = q[..., h * d : (h + 1) * d] @ k[..., kh * d : (kh + 1) * d].transpose(-1, -2)
        scores = scores / math.sqrt(d)  # (B, T, S)
        if causal:
            t, s = scores.shape[-2:]
            scores = scores.masked_fill(~torch.ones(t, s, dtype=torch.bool).tril(), float("-inf"))
        outs.append(scores.softmax(-1) @ v[..., vh * d : (vh + 1) * d])
    return attn.out_proj(torch.cat(outs, dim=-1))


CONFIGS = {  # name: (kwargs, Attention.kind)
    "MHA": ({}, "MHA"),
    "GQA": ({"kv_heads": 2}, "GQA"),
    "MQA": ({"kv_heads": 1}, "MQA"),
    "shared-V": ({"v_heads": 1}, "shared-V"),
    "GQA K, MQA V": ({"kv_heads": 2, "v_heads": 1}, "GQA"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("causal", [False, True])
def test_matches_hand_written_reference(name, causal):
    torch.manual_seed(0)
    kwargs, kind = CONFIGS[name]
    attn = Attention(24, n_heads=4, causal=causal, **kwargs).double()
    assert attn.kind == kind
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(attn(x), reference(attn, x), rtol=1e-10, atol=1e-10)


def test_gqa_cross_attention_with_other_width_and_length():
    torch.manual_seed(1)
    attn = Attention(16, n_heads=8, kv_heads=4, d_context=10, d_head=3).double()
    x, mem = torch.randn(2, 5, 16).double(), torch.randn(2, 9, 10).double()
    out = attn(x, mem)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out, reference(attn, x, mem), rtol=1e-10, atol=1e-10)


def test_boolean_mask_is_honoured():
    torch.manual_seed(2)
    attn = Attention(8, n_heads=2, kv_heads=1).double()
    x = torch.randn(1, 4, 8).double()
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    torch.testing.assert_close(
        attn(x, attn_mask=mask), reference(attn, x, causal=True), rtol=1e-10, atol=1e-10
    )


def test_parameter_counts_follow_head_counts():
    d, h, dh = 64, 8, 8
    for kv, v, expected_kv_rows in [
        (8, 8, 64 + 64),
        (2, 2, 16 + 16),
        (1, 1, 8 + 8),
        (8, 1, 64 + 8),
    ]:
        attn = Attention(d, n_heads=h, kv_heads=kv, v_heads=v, bias=False)
        assert tying.count(attn).physical == 2 * d * h * dh + d * expected_kv_rows


def test_fan_in_and_init_do_not_depend_on_sharing():
    mha, mqa = Attention(32, 4), Attention(32, 4, kv_heads=1)
    assert tying.fan_in(mha) == tying.fan_in(mqa) == 32
    assert float(mqa.v_proj.bias.detach().abs().max()) == 0.0
    bound = math.sqrt(6 / (32 + 8))  # Xavier on the (8, 32) shared V projection
    assert float(mqa.v_proj.weight.detach().abs().max()) <= bound


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kv_heads": 3}, r"kv_heads must divide n_heads=4"),
        ({"v_heads": 0}, r"v_heads must divide n_heads=4"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_configuration_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Attention(16, 4, **kwargs)


def test_indivisible_width_needs_d_head():
    with pytest.raises(ValueError, match=r"d_model=10 is not divisible by n_heads=4; pass d_head="):
        Attention(10, 4)
    assert Attention(10, 4, d_head=3)(torch.randn(1, 2, 10)).shape == (1, 2, 10)


def test_bad_shapes_name_expected_and_got():
    attn = Attention(16, 4)
    with pytest.raises(
        ValueError, match=r"expected x of shape \(batch, seq, 16\), got \(2, 5, 8\)"
    ):
        attn(torch.randn(2, 5, 8))
    with pytest.raises(
        ValueError, match=r"expected context of shape \(2, seq, 16\), got \(3, 5, 16\)"
    ):
        attn(torch.randn(2, 5, 16), torch.randn(3, 5, 16))
    causal = Attention(16, 4, causal=True)
    with pytest.raises(ValueError, match=r"queries \(5\) and keys \(6\) differ in length"):
        causal(torch.randn(2, 5, 16), torch.randn(2, 6, 16))


def test_kv_sharing_plan_ties_and_survives_a_step():
    torch.manual_seed(3)
    model = torch.nn.ModuleDict(
        {
            "enc": Attention(16, 4, kv_heads=2),
            "dec": Attention(16, 4, kv_heads=2, causal=True),
            "cross": Attention(16, 4, kv_heads=2),
        }
    )
    before = tying.count(model)
    kv_sharing_plan(["dec", "cross"], like="enc").apply(model)
    after = tying.count(model)
    kv = 2 * (16 * 8 + 8)  # one K and one V projection (GQA, 2 heads of 4)
    assert before.physical - after.physical == 2 * kv
    assert after.logical == before.logical
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, m = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    loss = model["enc"](x).sum() + model["dec"](x).sum() + model["cross"](x, m).sum()
    loss.backward()
    opt.step()
    assert model["cross"].v_proj.weight is model["enc"].v_proj.weight
    assert model["dec"].k_proj.bias is model["enc"].k_proj.bias
    assert model["dec"].q_proj.weight is not model["enc"].q_proj.weight
    assert tying.verify(model) > 0


def test_kv_sharing_plan_errors():
    with pytest.raises(ValueError, match=r"parts must be among"):
        kv_sharing_plan("a", like="b", parts=("w_k",))
    with pytest.raises(ValueError, match=r"at least one target"):
        kv_sharing_plan([], like="b")
    model = torch.nn.ModuleDict({"enc": Attention(16, 4), "dec": Attention(16, 4, kv_heads=1)})
    with pytest.raises(tying.TieError, match=r"dec.k_proj.weight.*shape"):
        kv_sharing_plan("dec", like="enc").apply(model)


def test_compiles_with_aot_eager():
    torch.manual_seed(4)
    attn = Attention(16, 4, kv_heads=2, causal=True)
    x = torch.randn(2, 5, 16)
    compiled = torch.compile(attn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), attn(x))


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_causal_self_attention_stays_causal_under_a_padding_mask(name, kind):
    # stop 26: a padding mask replaced the causal rule, so query 0 read keys 1..5
    # (the future) with no error; now both rules hold, as in a hand-written reference
    torch.manual_seed(3)
    attn = Attention(24, n_heads=4, causal=True, **CONFIGS[name][0]).double()
    x = torch.randn(2, 6, 24, dtype=torch.float64)
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, ..., 4:] = False  # sequence 1 has two padding keys at the end
    mask = (
        keep
        if kind == "bool"
        else torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, float("-inf"))
    )
    out = attn(x, attn_mask=mask)
    torch.testing.assert_close(out[0], reference(attn, x[:1])[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[1, :4], reference(attn, x[1:, :4])[0], rtol=1e-10, atol=1e-10)
    # the future still cannot move the past: change the last token, the first outputs stay
    x2 = x.clone()
    x2[:, -1] += 1.0
    torch.testing.assert_close(attn(x2, attn_mask=mask)[:, :5], out[:, :5], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 5, 5),
        (1, 5, 5),
        (5, 5, 1),
        (5,),
        (2, 2, 5, 5, 1),
        (3, 1, 5, 5),
        (2, 3, 5, 5),
        (2, 1, 5, 4),
    ],
)
def test_a_mask_of_another_layout_is_refused(shape):
    # stop 26: a (B, T, S) mask with B == n_heads ran, read as one mask per head
    # (SDPA right-aligns it against (B, H, T, S)): 0.79 off the per-sequence result
    attn = Attention(8, n_heads=2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"attn_mask must be \(T, S\) = \(5, 5\)"):
        attn(x, attn_mask=torch.ones(shape, dtype=torch.bool))


def test_a_per_sequence_mask_as_documented_matches_the_reference():
    torch.manual_seed(4)
    attn = Attention(8, n_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[1, ..., 3:] = False
    out = attn(x, attn_mask=keep)
    torch.testing.assert_close(out[0], reference(attn, x[:1])[0], rtol=1e-10, atol=1e-10)
    # sequence 1 reads only its first three keys: attention onto a 3-token context
    torch.testing.assert_close(
        out[1], reference(attn, x[1:], context=x[1:, :3])[0], rtol=1e-10, atol=1e-10
    )


def test_an_empty_context_is_refused():
    # stop 26: SDPA over S = 0 keys returns zeros, so every query read out_proj's bias
    attn = Attention(8, n_heads=2)
    with pytest.raises(ValueError, match=r"context has no positions \(S = 0\)"):
        attn(torch.randn(2, 3, 8), torch.randn(2, 0, 8))
    assert attn(torch.randn(2, 0, 8)).shape == (2, 0, 8)  # no queries is fine


def _reloaded(state):
    """``state`` through torch.save / torch.load(weights_only=True), metadata and all."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_a_state_dict_of_another_head_layout_is_refused():
    # stop 32: GQA 8 heads / 2 K/V heads and 16 / 4 have projections of the same shapes;
    # the state dict loaded without an error and the rows were read as other heads
    torch.manual_seed(0)
    saved = Attention(64, 8, kv_heads=2)
    x = torch.randn(2, 5, 64)
    state = _reloaded(saved.state_dict())
    other = Attention(64, 16, kv_heads=4)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"n_heads=8 \(this layer: 16\), kv_heads=2 \(this layer: 4\)"
    ):
        other.load_state_dict(state)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())  # unchanged
    same = Attention(64, 8, kv_heads=2)
    same.load_state_dict(state)
    torch.testing.assert_close(same(x), saved(x), rtol=0, atol=0)
    Attention(64, 16, kv_heads=4).load_state_dict(dict(state))  # a plain dict: no record


def test_a_nested_attention_of_another_layout_names_its_path():
    from tying.nn import TransformerBlock

    state = TransformerBlock(16, 2).state_dict()
    with pytest.raises(ValueError, match=r"Attention at 'self_attn'.*d_head=8 \(this layer: 4\)"):
        TransformerBlock(16, 4).load_state_dict(state)


@pytest.mark.parametrize("arg", ["d_head", "d_context"])
@pytest.mark.parametrize("value", [True, 2.5, 0])
def test_d_head_and_d_context_must_be_positive_ints(arg, value):
    # stop 32: d_head=True built one-wide heads; 2.5 died in torch.empty
    with pytest.raises(ValueError, match=rf"{arg} must be a positive int, got {value!r}"):
        Attention(16, 4, **{arg: value})


def _plain_attention(a, x, causal):
    """The layer in plain ops (repeat K/V heads, softmax(QKᵀ/√d)V): the reference."""
    b, t, _ = x.shape
    q = a.q_proj(x).view(b, t, a.n_heads, a.d_head).transpose(1, 2)
    k = a.k_proj(x).view(b, t, a.kv_heads, a.d_head).transpose(1, 2)
    v = a.v_proj(x).view(b, t, a.v_heads, a.d_head).transpose(1, 2)
    k = k.repeat_interleave(a.n_heads // a.kv_heads, 1)
    v = v.repeat_interleave(a.n_heads // a.v_heads, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(a.d_head)
    if causal:
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return a.out_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("kv_heads", "causal"), [(4, False), (2, True), (1, False)])
def test_forward_mode_ad_and_jacfwd_match_plain_attention(kv_heads, causal):
    # stop 34: SDPA's CPU flash kernel has no forward derivative ("Trying to use forward
    # AD with _scaled_dot_product_flash_attention_for_cpu"); forward AD takes its math
    # backend, and the first-order results keep their bits
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    a = Attention(16, 4, kv_heads=kv_heads, causal=causal, dtype=torch.float64)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    t = torch.randn_like(x)
    plain = a(x)
    with fwAD.dual_level():
        dual = a(fwAD.make_dual(x, t))
        value, tangent = fwAD.unpack_dual(dual)
    assert torch.equal(a(x), plain)  # outside forward AD: the flash kernel, as before
    expected = torch.func.jvp(lambda x: _plain_attention(a, x, causal), (x,), (t,))[1]
    torch.testing.assert_close(value, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)
    jac = torch.func.jacfwd(a)(x)
    ref = torch.func.jacrev(lambda x: _plain_attention(a, x, causal))(x)
    torch.testing.assert_close(jac, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_an_integer_mask_is_refused_with_the_fix(dtype, causal):
    # stop 35: SDPA's "Expected attn_mask dtype to be bool or float", or in a causal layer
    # "value cannot be converted to type int64_t without overflow" from the causal fill
    attn = Attention(8, n_heads=2, causal=causal)
    x = torch.randn(2, 5, 8)
    keep = torch.ones(5, 5, dtype=dtype)
    with pytest.raises(
        TypeError, match=r"attn_mask must be boolean .* got torch\..*attn_mask\.bool\(\)"
    ):
        attn(x, attn_mask=keep)
    torch.testing.assert_close(attn(x, attn_mask=keep.bool()), attn(x))  # the fix runs


def _mha_twin(attn: Attention) -> torch.nn.MultiheadAttention:
    """``nn.MultiheadAttention`` holding ``attn``'s weights (MHA layout only)."""
    mha = torch.nn.MultiheadAttention(
        attn.d_model, attn.n_heads, batch_first=True, dtype=attn.q_proj.weight.dtype
    )
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    return mha.eval()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("additive", [False, True])
def test_a_key_padding_mask_of_one_query_row_matches_multihead_attention(causal, additive):
    # stop 36: (B, 1, 1, S), the key-padding layout of transformers' extended attention
    # masks, was refused with a fix for another layout; it is read by every query, as
    # nn.MultiheadAttention's key_padding_mask (True there = padded)
    torch.manual_seed(5)
    attn = Attention(16, n_heads=4, causal=causal).double().eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    padded = torch.zeros(3, 6, dtype=torch.bool)
    padded[0, 4:] = True
    padded[2, 2:] = True
    if additive:
        mask = torch.zeros(3, 6, dtype=torch.float64).masked_fill(padded, float("-inf"))
    else:
        mask = ~padded
    out = attn(x, attn_mask=mask[:, None, None, :])
    causal_mask = torch.ones(6, 6, dtype=torch.bool).triu(1) if causal else None
    ref = _mha_twin(attn)(
        x, x, x, key_padding_mask=padded, attn_mask=causal_mask, need_weights=False
    )[0]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # the same as the mask spelt out over the query axis, which ran before
    full = mask[:, None, None, :].expand(3, 1, 6, 6)
    torch.testing.assert_close(out, attn(x, attn_mask=full), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["GQA", "MQA", "GQA K, MQA V"])
def test_a_key_padding_mask_with_shared_heads_matches_the_reference(name):
    torch.manual_seed(6)
    attn = Attention(24, n_heads=4, **CONFIGS[name][0]).double()
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    keep = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    keep[1, ..., 3:] = False
    out = attn(x, attn_mask=keep)
    torch.testing.assert_close(out[0], reference(attn, x[:1])[0], rtol=1e-10, atol=1e-10)
    # sequence 1 reads only its first three keys: attention onto a 3-token context
    torch.testing.assert_close(out[1], reference(attn, x[1:], x[1:, :3])[0], rtol=1e-10, atol=1e-10)


def test_a_two_dimensional_key_padding_mask_is_refused_with_the_fix():
    attn = Attention(8, n_heads=2)
    x = torch.randn(3, 5, 8)
    with pytest.raises(
        ValueError, match=r"got \(3, 5\); .*key-padding \(B, S\) mask mask\[:, None, None, :\]"
    ):
        attn(x, attn_mask=torch.ones(3, 5, dtype=torch.bool))
