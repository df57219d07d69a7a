"""ALBERT-style stacks via a Plan (B8) and the encoder-decoder K/V ties (B10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying
from tying.nn import EncoderDecoder, Stack, TransformerBlock, albert_plan, share_layers


def _norm_params(block: TransformerBlock) -> int:
    return sum(p.numel() for n, p in block.named_parameters() if n.startswith("norm"))


def test_albert_stack_counts_and_free_norms():
    torch.manual_seed(0)
    depth = 5
    stack = Stack(TransformerBlock(16, 4, d_ff=32) for _ in range(depth))
    block = sum(p.numel() for p in stack.layers[0].parameters())
    share_layers(stack, free=("norm*",))
    c = tying.count(stack)
    assert c.logical == depth * block
    assert c.physical == block + (depth - 1) * _norm_params(stack.layers[0])
    assert stack.layers[3].mlp[0].weight is stack.layers[0].mlp[0].weight
    assert stack.layers[3].norm1.weight is not stack.layers[0].norm1.weight
    # optimizer state exists once per physical tensor
    opt = torch.optim.Adam(stack.parameters(), lr=1e-2)
    stack(torch.randn(2, 3, 16)).pow(2).mean().backward()
    opt.step()
    state = sum(s["exp_avg"].numel() for s in opt.state.values())
    assert state == c.physical
    assert stack.layers[4].self_attn.k_proj.weight is stack.layers[0].self_attn.k_proj.weight


def test_tied_stack_equals_one_layer_applied_depth_times():
    torch.manual_seed(1)
    stack = Stack(TransformerBlock(16, 2) for _ in range(4))
    share_layers(stack)
    x = torch.randn(2, 6, 16)
    y = x
    for _ in range(4):
        y = stack.layers[0](y)
    torch.testing.assert_close(stack(x), y)
    assert tying.count(stack).ratio == pytest.approx(4.0)


def test_albert_plan_is_data_and_reapplying_is_a_noop():
    plan = albert_plan("encoder.layers", free=("norm*",))
    assert [r.kind for r in plan.rules] == ["share", "free"]
    model = nn.Module()
    model.encoder = Stack(TransformerBlock(8, 2) for _ in range(3))
    assert plan.apply(model).changed
    assert not plan.apply(model).changed


def test_free_given_as_one_str_is_one_pattern():
    # stop 32: free="norm*" was read letter by letter ("pattern 'layers.*.n' matches no
    # parameter"), and a '*' among the letters freed every parameter
    assert repr(albert_plan(free="norm*")) == repr(albert_plan(free=("norm*",)))
    stack = Stack(TransformerBlock(8, 2) for _ in range(3))
    share_layers(stack, free="norm*")
    assert stack.layers[2].norm1.weight is not stack.layers[0].norm1.weight
    assert stack.layers[2].mlp[0].weight is stack.layers[0].mlp[0].weight


def test_albert_plan_on_a_wrong_path_names_it():
    stack = Stack(TransformerBlock(8, 2) for _ in range(2))
    with pytest.raises(tying.TieError, match=r"pattern 'blocks\.\*' matches no parameter"):
        share_layers(stack, "blocks")


def test_block_memory_errors():
    enc, dec = TransformerBlock(8, 2), TransformerBlock(8, 2, cross=True)
    with pytest.raises(ValueError, match=r"has no cross-attention; build it with cross=True"):
        enc(torch.randn(1, 3, 8), memory=torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match=r"needs memory="):
        dec(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match=r"at least one layer"):
        Stack([])


def test_block_and_encoder_decoder_sizes_are_checked():
    # stop 31: d_ff=0 built an MLP with no hidden unit, layers=True one layer per stack
    with pytest.raises(ValueError, match=r"d_ff must be a positive int .*got 0"):
        TransformerBlock(8, 2, d_ff=0)
    for name in ("vocab", "layers", "max_len"):
        sizes = {"vocab": 11, "d_model": 8, "n_heads": 2, "layers": 2, "max_len": 7, name: True}
        with pytest.raises(ValueError, match=rf"EncoderDecoder: {name} must be a positive int"):
            EncoderDecoder(**sizes)
    with pytest.raises(ValueError, match=r"max_len must be a positive int, got 0"):
        EncoderDecoder(vocab=11, d_model=8, n_heads=2, layers=2, max_len=0)


@pytest.mark.parametrize("d_model", [-1, 0, 2.0, True])
def test_a_width_that_is_not_a_positive_int_is_named(d_model):
    # stop 37: d_model=-1 died in LayerNorm's / nn.Embedding's torch.empty ("Trying to
    # create tensor with negative dimension"), naming neither the layer nor the argument
    with pytest.raises(
        ValueError, match=rf"TransformerBlock: d_model must be a positive int, got {d_model!r}"
    ):
        TransformerBlock(d_model, 2)
    with pytest.raises(
        ValueError, match=rf"EncoderDecoder: d_model must be a positive int, got {d_model!r}"
    ):
        EncoderDecoder(vocab=11, d_model=d_model, n_heads=2, layers=2, max_len=7)


def test_encoder_decoder_kv_plan_can_tie_queries_too():
    model = EncoderDecoder(vocab=11, d_model=16, n_heads=2, layers=1, max_len=8)
    before = tying.count(model).physical
    model.kv_plan(parts=("q_proj", "k_proj", "v_proj")).apply(model)
    assert before - tying.count(model).physical == 3 * 2 * (16 * 16 + 16)  # Q, K, V of 2 modules
    enc, cross = model.encoder.layers[0].self_attn, model.decoder.layers[0].cross_attn
    assert cross.q_proj.weight is enc.q_proj.weight
    assert cross.out_proj.weight is not enc.out_proj.weight
    with pytest.raises(ValueError, match="parts must be among"):
        model.kv_plan(parts=("w_proj",))


@pytest.mark.parametrize("across_layers, ties", [(False, 2 * 2 * 2), (True, 2 * 5)])
def test_encoder_decoder_kv_plan(across_layers, ties):
    torch.manual_seed(2)
    model = EncoderDecoder(vocab=11, d_model=16, n_heads=2, layers=2, max_len=8)
    assert model.head.weight is model.embed.weight
    proj = 16 * 16 + 16  # one K or V projection with bias
    before = tying.count(model).physical
    model.kv_plan(across_layers=across_layers).apply(model)
    assert before - tying.count(model).physical == ties * proj
    dec1 = model.decoder.layers[1]
    owner = model.encoder.layers[0 if across_layers else 1].self_attn
    assert dec1.cross_attn.k_proj.weight is owner.k_proj.weight
    assert dec1.self_attn.v_proj.weight is owner.v_proj.weight
    assert dec1.cross_attn.q_proj.weight is not owner.q_proj.weight
    src, tgt = torch.randint(11, (3, 8)), torch.randint(11, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 11)
    # the decoder is causal: a later target token cannot change an earlier logit
    tgt2 = tgt.clone()
    tgt2[:, -1] = (tgt[:, -1] + 1) % 11
    torch.testing.assert_close(model(src, tgt2)[:, :-1], logits[:, :-1])


def test_encoder_decoder_shape_errors():
    model = EncoderDecoder(vocab=5, d_model=8, n_heads=2, layers=1, max_len=4)
    with pytest.raises(
        ValueError, match=r"source tokens of shape \(batch, seq ≤ 4\), got \(2, 6\)"
    ):
        model(torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


def test_tied_stack_saves_and_loads(tmp_path):
    torch.manual_seed(3)
    stack = Stack(TransformerBlock(8, 2) for _ in range(3))
    share_layers(stack, free=("norm*",))
    tying.save(stack, tmp_path / "s.safetensors")
    other = Stack(TransformerBlock(8, 2) for _ in range(3))
    share_layers(other, free=("norm*",))
    tying.load(other, tmp_path / "s.safetensors")
    x = torch.randn(1, 4, 8)
    torch.testing.assert_close(other(x), stack(x))


def test_reset_parameters_of_a_tied_stack_keeps_the_tie():
    torch.manual_seed(4)
    stack = Stack(TransformerBlock(8, 2) for _ in range(3))
    share_layers(stack)
    before = stack.layers[0].mlp[0].weight.detach().clone()
    for layer in stack.layers:
        layer.reset_parameters()
    assert stack.layers[2].mlp[0].weight is stack.layers[0].mlp[0].weight
    assert not torch.equal(stack.layers[0].mlp[0].weight, before)
    assert tying.verify(stack) > 0


def test_block_reset_keeps_xavier_attention():
    block = TransformerBlock(64, 4)
    block.reset_parameters()
    assert (
        float(block.self_attn.q_proj.bias.detach().abs().max()) == 0.0
    )  # Xavier scheme, zero bias
