"""Stop 40: a query row whose keys are all masked, and additive masks SDPA turns into NaN.

``Attention`` follows ``F.scaled_dot_product_attention``: a fully masked row's attention
output is 0 (so the layer returns ``out_proj.bias``) with a zero, finite gradient, as
``nn.MultiheadAttention(need_weights=False)``; with ``need_weights=True`` that returns NaN. ``Attention.unattended`` names those rows. A NaN or
+inf in an additive mask made SDPA return a NaN row with no error; it is refused now.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.nn import Attention, kv_sharing_plan

LAYOUTS = {"MHA": {}, "GQA": {"kv_heads": 2}, "MQA": {"kv_heads": 1}, "shared-V": {"v_heads": 1}}


def sdpa_anchor(attn: Attention, x, mask, context=None):
    """Plain PyTorch: the projections, SDPA over heads repeated by hand, the output projection."""
    ctx = x if context is None else context
    b, t, _ = x.shape
    d, h = attn.d_head, attn.n_heads

    def heads(y, n):  # (B, S, n·d) → (B, h, S, d), query head j reads group j // (h / n)
        y = y.view(b, y.shape[1], n, d).transpose(1, 2)
        return y.repeat_interleave(h // n, dim=1)

    q = heads(attn.q_proj(x), h)
    k, v = heads(attn.k_proj(ctx), attn.kv_heads), heads(attn.v_proj(ctx), attn.v_heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, T, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, h * d))


def left_padded(kind: str, dtype=torch.float64):
    """Sequence 0 has two padding positions in front; a causal layer masks its first two
    queries entirely (every key they may read is padding)."""
    keep = torch.tensor([[False, False, True, True, True], [True] * 5])  # (B, S)
    if kind == "bool":
        return keep[:, None, None, :]
    return torch.zeros(2, 1, 1, 5, dtype=dtype).masked_fill(~keep[:, None, None, :], float("-inf"))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["bool", "-inf"])
def test_a_fully_masked_row_reads_the_bias_as_sdpa_gives_zero_with_a_finite_gradient(layout, kind):
    torch.manual_seed(0)
    attn = Attention(16, n_heads=4, causal=True, **LAYOUTS[layout]).double()
    with torch.no_grad():
        attn.out_proj.bias.uniform_(-1, 1)  # a non-zero bias: the row is told apart from 0
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    mask = left_padded(kind)
    out = attn(x, attn_mask=mask)
    # the anchor: SDPA on the causal ∧ padding mask, written out in plain torch
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    full = mask & causal if kind == "bool" else mask.masked_fill(~causal, float("-inf"))
    torch.testing.assert_close(out, sdpa_anchor(attn, x, full), rtol=1e-12, atol=1e-12)
    for row in (0, 1):
        assert torch.equal(out[0, row], attn.out_proj.bias)
    assert not torch.equal(out[0, 2], attn.out_proj.bias)
    out.sum().backward()
    grads = [x.grad] + [p.grad for p in attn.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    # the padding positions are read by nobody, and their own queries attend to nothing
    assert torch.equal(x.grad[0, :2], torch.zeros(2, 16, dtype=torch.float64))
    assert attn.unattended(x, attn_mask=mask).all(1)[0].tolist() == [True, True] + [False] * 3


def test_equals_multihead_attention_sdpa_route_whose_weights_route_returns_nan_there():
    torch.manual_seed(1)
    attn = Attention(8, n_heads=2, causal=True).double()
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    with torch.no_grad():
        attn.out_proj.bias.uniform_(-1, 1)
        mha.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = left_padded("bool")
    future = ~torch.ones(5, 5, dtype=torch.bool).tril()
    kw = {"attn_mask": future, "key_padding_mask": ~mask[:, 0, 0]}
    sdpa_route, _ = mha(x, x, x, need_weights=False, **kw)
    weights_route, _ = mha(x, x, x, need_weights=True, **kw)
    out = attn(x, attn_mask=mask)
    dead = attn.unattended(x, attn_mask=mask).all(1)  # (B, T)
    assert dead.sum() == 2
    torch.testing.assert_close(out, sdpa_route, rtol=1e-12, atol=1e-12)  # bias rows included
    torch.testing.assert_close(out[~dead], weights_route[~dead], rtol=1e-12, atol=1e-12)
    assert weights_route[dead].isnan().all()  # its explicit softmax: 0/0
    assert torch.equal(out[dead], attn.out_proj.bias.expand(2, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("causal", [False, True])
def test_an_additive_mask_with_nan_or_plus_inf_is_refused_naming_the_entry(bad, causal):
    torch.manual_seed(2)
    attn = Attention(8, n_heads=2, causal=causal)
    x = torch.randn(1, 3, 8)
    mask = torch.zeros(3, 3)
    mask[2, 0] = bad
    # before stop 40: query row 2 came back NaN with no error
    with pytest.raises(ValueError, match=r"finite values or -inf .* at index \(2, 0\)"):
        attn(x, attn_mask=mask)
    with pytest.raises(ValueError, match=r"finite values or -inf"):
        attn.unattended(x, attn_mask=mask)
    # -inf (masked) and finfo.min (transformers' eager fill) are still taken
    for fill in (float("-inf"), torch.finfo(torch.float32).min):
        mask[2, 0] = fill
        assert attn(x, attn_mask=mask).isfinite().all()


def test_a_large_finite_fill_masks_nothing_and_averages_the_values_as_sdpa():
    torch.manual_seed(3)
    attn = Attention(8, n_heads=2).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    mask = torch.zeros(3, 3, dtype=torch.float64)
    mask[0] = torch.finfo(torch.float64).min  # row 0: every key "masked" the eager-HF way
    assert not attn.unattended(x, attn_mask=mask).any()
    torch.testing.assert_close(
        attn(x, attn_mask=mask), sdpa_anchor(attn, x, mask), rtol=1e-12, atol=1e-12
    )


def test_unattended_follows_forward_on_its_errors_and_without_a_mask():
    attn = Attention(8, n_heads=2, causal=True)
    x = torch.randn(2, 4, 8)
    assert not attn.unattended(x).any() and attn.unattended(x).shape == (2, 2, 4)
    with pytest.raises(ValueError, match=r"queries \(4\) and keys \(3\) differ"):
        attn.unattended(x, torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"attn_mask must be \(T, S\)"):
        attn.unattended(x, attn_mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask.bool"):
        attn.unattended(x, attn_mask=torch.ones(4, 4, dtype=torch.int64))


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 5),
    s=st.integers(1, 5),
    self_attn=st.booleans(),
    causal=st.booleans(),
    per_head=st.booleans(),
    per_query=st.booleans(),
    additive=st.booleans(),
    layout=st.sampled_from(list(LAYOUTS)),
    seed=st.integers(0, 2**16),
)
def test_property_unattended_is_where_sdpa_reads_nothing_and_no_row_is_nan(
    b, t, s, self_attn, causal, per_head, per_query, additive, layout, seed
):
    """Against SDPA itself: with values all 1, a head's row is 1 if it reads a key and 0 if
    it reads none. Whatever the mask, ``unattended`` says which, the layer's rows are the
    anchor's, rows masked in every head are the bias, and nothing is NaN, grads included."""
    s = t if self_attn else s
    g = torch.Generator().manual_seed(seed)
    attn = Attention(8, n_heads=4, causal=causal, **LAYOUTS[layout]).double()
    x = torch.randn(b, t, 8, dtype=torch.float64, generator=g, requires_grad=True)
    ctx = None if self_attn else torch.randn(b, s, 8, dtype=torch.float64, generator=g)
    keep = torch.rand(b, 4 if per_head else 1, t if per_query else 1, s, generator=g) < 0.4
    mask = (
        torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, float("-inf"))
        if additive
        else keep
    )
    full = keep  # with a context the mask replaces the causal rule
    if causal and self_attn:
        full = keep & torch.ones(t, t, dtype=torch.bool).tril()
    ones = torch.ones(b, 4, s, 1, dtype=torch.float64)
    reads = F.scaled_dot_product_attention(torch.zeros(b, 4, t, 1).double(), ones, ones, full)
    dead = attn.unattended(x, ctx, attn_mask=mask)
    assert torch.equal(dead, reads[..., 0] == 0)
    out = attn(x, ctx, attn_mask=mask)
    anchor_mask = (
        full if not additive else torch.zeros(full.shape).double().masked_fill(~full, -torch.inf)
    )
    torch.testing.assert_close(out, sdpa_anchor(attn, x, anchor_mask, ctx), rtol=1e-10, atol=1e-10)
    gone = dead.all(1)  # (B, T)
    assert torch.equal(out[gone], attn.out_proj.bias.expand(int(gone.sum()), 8))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's vmap fallback
def test_the_mask_check_stays_out_of_torch_func_and_compile():
    """The NaN/+inf check reads a value back; under vmap and torch.compile it is skipped
    (both would refuse the read), and the numbers are eager's."""
    torch.manual_seed(4)
    attn = Attention(8, n_heads=2).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    masks = torch.zeros(4, 3, 3, dtype=torch.float64)
    masks[1, 0] = float("-inf")  # row 0 of mask 1 fully masked
    masks[2, :, 1] = torch.finfo(torch.float64).min
    batched = torch.func.vmap(lambda m: attn(x, attn_mask=m))(masks)
    eager = torch.stack([attn(x, attn_mask=m) for m in masks])
    torch.testing.assert_close(batched, eager, rtol=1e-12, atol=1e-12)
    compiled = torch.compile(attn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, attn_mask=masks[1]), eager[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parts", ["v_proj", ("v_proj",), ["v_proj"]])
def test_kv_sharing_plan_takes_one_part_as_a_str(parts):
    # before stop 40 "v_proj" was iterated as letters and refused as not among the parts
    model = torch.nn.ModuleDict({"enc": Attention(16, 2), "dec": Attention(16, 2)})
    kv_sharing_plan("dec", like="enc", parts=parts).apply(model)
    assert model.dec.v_proj.weight is model.enc.v_proj.weight
    assert model.dec.k_proj.weight is not model.enc.k_proj.weight
    with pytest.raises(ValueError, match=r"parts must be among .* got \('w_proj',\)"):
        kv_sharing_plan("dec", like="enc", parts="w_proj")
