"""C4/D4 group convs: exact equivariance, the tie's structure, counts, init, errors, compile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tying.core.slots import slots_of
from tying.nn import GROUPS, GroupConv2d, GroupPool, LiftingConv2d, group_act, group_elements

F64 = torch.float64


def _net(group, tied=True, seed=0):
    torch.manual_seed(seed)
    lift = LiftingConv2d(2, 3, 3, group=group, tied=tied, dtype=F64)
    conv = GroupConv2d(3, 4, 3, group=group, tied=tied, dtype=F64)
    return lift, conv


def _sgd(params, loss, lr=0.1):
    opt = torch.optim.SGD(list(params), lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_tied_layers_are_exactly_equivariant_before_and_after_training(group):
    lift, conv = _net(group)
    x = torch.randn(2, 2, 9, 9, dtype=F64)

    def f(z):
        return conv(lift(z).relu())

    for step in range(2):
        y = f(x)
        for a in GROUPS[group]:
            err = (f(group_act(x, a, group)) - group_act(y, a, group)).abs().max().item()
            assert err < 1e-12, (step, a, err)
        # the tie holds after an optimizer step: still equivariant, still one kernel
        _sgd([*lift.parameters(), *conv.parameters()], f(x).square().mean())
    assert tying.verify(conv) > 0


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_untied_layers_are_not_equivariant(group):
    lift, conv = _net(group, tied=False)
    x = torch.randn(2, 2, 9, 9, dtype=F64)
    y = conv(lift(x))
    err = (conv(lift(group_act(x, "r", group))) - group_act(y, "r", group)).abs().max().item()
    assert err > 0.1


def test_group_act_is_an_action_on_fields():
    y = torch.randn(1, 2, 8, 5, 5)
    # composing names: r·r = r2, m·m = e, r·m = rm (mirror first, then rotate)
    assert torch.equal(group_act(group_act(y, "r", "D4"), "r", "D4"), group_act(y, "r2", "D4"))
    assert torch.equal(group_act(group_act(y, "m", "D4"), "m", "D4"), y)
    assert torch.equal(group_act(group_act(y, "m", "D4"), "r", "D4"), group_act(y, "rm", "D4"))
    # on C4 fields the orientation axis shifts cyclically by one per quarter turn
    z = torch.randn(1, 1, 4, 3, 3)
    want = torch.rot90(torch.roll(z, 1, dims=2), 1, (-2, -1))
    assert torch.equal(group_act(z, "r", "C4"), want)


def test_c4_filter_bank_matches_the_hand_written_rule():
    lift, conv = _net("C4")
    names = group_elements("C4")
    # lifting: kernel of orientation s is rot90(W, s)
    w = lift.kernels.e
    want = torch.stack([torch.rot90(w, s, (-2, -1)) for s in range(4)], 1).flatten(0, 1)
    assert torch.equal(lift.filter_bank(), want)
    # group conv: K[s][:, :, t] = rot90(W[:, :, (t - s) mod 4], s)
    W = torch.stack([getattr(conv.kernels, f"e_{h}") for h in names], 2)  # (O, I, 4, k, k)
    bank = conv.filter_bank().view(conv.out_channels, 4, conv.in_channels, 4, 3, 3)
    for s in range(4):
        want_s = torch.rot90(torch.roll(W, s, dims=2), s, (-2, -1))
        assert torch.equal(bank[:, s], want_s)


@pytest.mark.parametrize("group,n", [("C4", 4), ("D4", 8)])
def test_counts_logical_bank_against_one_physical_kernel(group, n):
    cin, cout, k = 3, 5, 3
    lift = LiftingConv2d(cin, cout, k, group=group)
    conv = GroupConv2d(cin, cout, k, group=group)
    lc, gc = tying.count(lift), tying.count(conv)
    assert (lc.logical, lc.physical) == (n * (cout * cin * k * k + cout), cout * cin * k * k + cout)
    assert (gc.logical, gc.physical) == (
        n * n * cout * cin * k * k + n * cout,
        n * cout * cin * k * k + cout,
    )
    assert sum(p.numel() for p in conv.parameters()) == gc.physical
    untied = tying.count(GroupConv2d(cin, cout, k, group=group, tied=False))
    assert untied.logical == untied.physical == gc.logical


def test_gradient_of_the_kernel_is_the_sum_over_its_rotated_uses():
    torch.manual_seed(1)
    lift = LiftingConv2d(2, 3, 3, dtype=F64)
    free = LiftingConv2d(2, 3, 3, tied=False, dtype=F64)
    with torch.no_grad():
        for g in group_elements("C4"):
            getattr(free.kernels, g).copy_(getattr(lift.kernels, g))
            getattr(free.biases, g).copy_(lift.biases.e)
    x = torch.randn(2, 2, 7, 7, dtype=F64)
    w = torch.randn(2, 3, 4, 7, 7, dtype=F64)
    (lift(x) * w).sum().backward()
    (free(x) * w).sum().backward()
    per_use = sum(
        torch.rot90(getattr(free.kernels, g).grad, -s, (-2, -1))
        for s, g in enumerate(group_elements("C4"))
    )
    torch.testing.assert_close(lift.kernels.e.grad, per_use)
    bias_sum = sum(getattr(free.biases, g).grad for g in group_elements("C4"))
    torch.testing.assert_close(lift.biases.e.grad, bias_sum)


def test_fan_in_and_init_scale():
    conv = GroupConv2d(6, 8, 5, group="D4")
    assert tying.fan_in(conv) == 6 * 8 * 25  # one output unit's inputs, not × reuse
    assert tying.fan_in(LiftingConv2d(3, 4, 5)) == 3 * 25
    bound = 1 / math.sqrt(6 * 8 * 25)
    phys = torch.cat([p.flatten() for p in conv.kernels.parameters()])
    assert phys.abs().max() <= bound
    assert phys.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_pool_gives_rotation_invariant_features():
    lift, conv = _net("C4")
    pool = GroupPool("max")
    x = torch.randn(3, 2, 10, 10, dtype=F64)

    def feats(z):
        return pool(conv(lift(z).relu())).amax(dim=(-2, -1))  # (B, C)

    torch.testing.assert_close(feats(group_act(x, "r3", "C4")), feats(x), rtol=0, atol=1e-12)
    assert GroupPool("mean")(torch.ones(1, 2, 4, 3, 3)).shape == (1, 2, 3, 3)


def test_untie_save_load_and_deepcopy_keep_the_function(tmp_path):
    lift, conv = _net("D4")
    x = torch.randn(1, 2, 7, 7, dtype=F64)
    y = conv(lift(x))
    path = tmp_path / "g.safetensors"
    tying.save(conv, path)
    other = GroupConv2d(3, 4, 3, group="D4", dtype=F64)
    tying.load(other, path)
    torch.testing.assert_close(other(lift(x)), y, rtol=0, atol=0)
    twin = copy.deepcopy(conv)
    torch.testing.assert_close(twin(lift(x)), y, rtol=0, atol=0)
    tying.untie(conv)
    c = tying.count(conv)
    assert c.logical == c.physical
    torch.testing.assert_close(conv(lift(x)), y, rtol=0, atol=0)


def test_torch_compile_aot_eager_matches_eager():
    lift, conv = _net("C4")
    x = torch.randn(2, 2, 8, 8, dtype=F64)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    h = lift(x).detach()  # a leaf: dynamo warns when it inspects a non-leaf input's .grad
    torch.testing.assert_close(compiled(h), conv(h))
    compiled(h).sum().backward()
    assert conv.kernels.e_e.grad is not None


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match="even kernel_size=4 pads asymmetrically"):
        LiftingConv2d(1, 2, 4)
    assert LiftingConv2d(1, 2, 4, padding=0)(torch.randn(1, 1, 6, 6)).shape == (1, 2, 4, 3, 3)
    with pytest.raises(ValueError, match="group must be one of"):
        GroupConv2d(1, 2, 3, group="C8")
    with pytest.raises(ValueError, match="square kernels"):
        LiftingConv2d(1, 2, (3, 5))
    with pytest.raises(ValueError, match="padding must be 'same' or a non-negative int"):
        LiftingConv2d(1, 2, 3, padding=(1, 2))
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        GroupConv2d(0, 2, 3)
    with pytest.raises(ValueError, match=r"expected a field \(B, 2, 4, H, W\).*LiftingConv2d"):
        GroupConv2d(2, 2, 3)(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"expected an image batch \(B, 3, H, W\)"):
        LiftingConv2d(3, 2, 3)(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="element must be one of"):
        group_act(torch.randn(1, 1, 3, 3), "m", "C4")
    with pytest.raises(ValueError, match=r"needs \|C4\| = 4 orientations"):
        group_act(torch.randn(1, 1, 8, 3, 3), "r", "C4")
    with pytest.raises(ValueError, match="mode must be 'max' or 'mean'"):
        GroupPool("sum")
    with pytest.raises(tying.TieError, match="tied slot"):
        conv = GroupConv2d(1, 1, 3)
        conv.kernels.r_e = torch.nn.Parameter(torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer", ["lift", "conv"])
def test_one_gather_bank_equals_the_slot_bank_and_its_gradient(group, layer):
    """Issue 19: the bank is gathered from the physical kernel in one indexed op;
    it must be bit-identical to reading every tied slot, and so must its values'
    gradient (up to summation order)."""
    lift, conv = _net(group)
    m = lift if layer == "lift" else conv
    fast, slow = m._fast_bank(), m._slot_bank()
    assert torch.equal(fast, slow)
    weights = torch.randn_like(fast)
    physical = [getattr(m.kernels, key) for key in m._physical_keys()]
    g_fast = torch.autograd.grad((m._fast_bank() * weights).sum(), physical)
    g_slow = torch.autograd.grad((m._slot_bank() * weights).sum(), physical)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # after an optimizer step the gather still reads the tie
    _sgd(m.parameters(), (m._fast_bank() * weights).sum())
    assert torch.equal(m._fast_bank(), m._slot_bank())


def test_untied_group_conv_does_not_use_the_gather():
    _, conv = _net("C4")
    tying.untie(conv)
    with torch.no_grad():
        conv.kernels.r_e.add_(1.0)  # an untied block now differs from the rotated physical one
    assert not conv._tie_intact()
    torch.testing.assert_close(conv.filter_bank(), conv._slot_bank(), rtol=0, atol=0)


def test_eval_bank_cache_follows_in_place_updates():
    _, conv = _net("D4")
    conv.eval()
    x = torch.randn(1, 3, 8, 6, 6, dtype=F64)
    with torch.no_grad():
        first = conv(x)
        assert conv(x).equal(first)  # served from the cache
        conv.kernels.e_e.mul_(2.0)  # the version counter moves: the cache must not be used
        torch.testing.assert_close(
            conv(x),
            F.conv2d(x.flatten(1, 2), conv._slot_bank(), conv.bias_bank(), padding=1).unflatten(
                1, (4, 8)
            ),
        )
        assert not conv(x).equal(first)


def test_eval_cache_follows_a_write_through_data():
    """A write through ``.data`` (an EMA update, hand-loaded weights) moves no version
    counter: the eval-mode bank and bias must still follow it, not serve the old ones."""
    _, conv = _net("C4")
    conv.eval()
    x = torch.randn(1, 3, 4, 6, 6, dtype=F64)
    with torch.no_grad():
        first = conv(x)
        for p in conv.parameters():
            p.data.mul_(2.0)
        bias = torch.stack([conv.biases.e] * 4, dim=1).reshape(-1)
        want = F.conv2d(x.flatten(1, 2), conv._slot_bank(), bias, padding=1).unflatten(1, (4, 4))
        torch.testing.assert_close(conv(x), want, rtol=0, atol=0)
        torch.testing.assert_close(conv(x), 2.0 * first, rtol=1e-12, atol=1e-12)


def _c4_reference(conv, x):
    """The C4 layer's output from its bank and bias read slot by slot (no cache)."""
    bias = torch.stack([conv.biases.e] * 4, dim=1).reshape(-1)
    return F.conv2d(x.flatten(1, 2), conv._slot_bank(), bias, padding=1).unflatten(1, (4, 4))


def test_eval_bias_cache_follows_in_place_updates_and_train_mode():
    """The eval-mode cache covers the bias too (issue 19); it must never serve a stale bias."""
    _, conv = _net("C4")
    conv.eval()
    x = torch.randn(1, 3, 4, 6, 6, dtype=F64)

    with torch.no_grad():
        first = conv(x)
        assert conv._bias_bank() is conv._bias_bank()  # served from the cache
        conv.biases.e.add_(1.0)  # the version counter moves
        torch.testing.assert_close(conv(x), _c4_reference(conv, x), rtol=0, atol=0)
        assert not conv(x).equal(first)
    conv.train()  # training rebuilds every call and keeps the graph
    assert conv.bias_bank() is not conv.bias_bank()
    assert conv.bias_bank().requires_grad
    conv.load_state_dict({k: v + 1.0 for k, v in conv.state_dict().items()})
    conv.eval()
    with torch.no_grad():
        torch.testing.assert_close(conv(x), _c4_reference(conv, x), rtol=0, atol=0)


@pytest.mark.parametrize("layer", ["lift", "conv"])
def test_layers_follow_a_channels_last_input(layer):
    """The layer never converts memory format: a channels-last input gives a channels-last
    output (free for the next layer) with the same values, and equivariance holds."""
    lift, conv = _net("C4")
    m = lift if layer == "lift" else conv
    x = (
        torch.randn(2, 2, 9, 9, dtype=F64)
        if layer == "lift"
        else torch.randn(2, 3, 4, 9, 9, dtype=F64)
    )
    flat = x if layer == "lift" else x.flatten(1, 2)
    x_cl = flat.contiguous(memory_format=torch.channels_last)
    x_cl = x_cl if layer == "lift" else x_cl.unflatten(1, (3, 4))
    y, y_cl = m(x), m(x_cl)
    assert y_cl.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous()
    torch.testing.assert_close(y_cl, y, rtol=1e-12, atol=1e-12)
    # equivariance holds in that layout too
    torch.testing.assert_close(
        m(group_act(x_cl, "r", "C4")), group_act(y_cl, "r", "C4"), atol=1e-12, rtol=0
    )
    if layer == "conv":  # the next group conv reads the output without a copy
        nxt = GroupConv2d(4, 2, 3, dtype=F64)
        assert nxt(y_cl).flatten(1, 2).is_contiguous(memory_format=torch.channels_last)


def test_bias_bank_reads_every_slot_once_the_tie_is_gone():
    """The Same-tied bias is read from ``biases.e`` alone; after ``untie`` every slot counts."""
    _, conv = _net("C4")
    tied = conv.bias_bank().view(-1, 4)
    assert all(torch.equal(tied[:, g], conv.biases.e) for g in range(4))
    tying.untie(conv)
    with torch.no_grad():
        conv.biases.r.add_(1.0)
    untied = conv.bias_bank().view(-1, 4)
    torch.testing.assert_close(untied[:, 1], conv.biases.e + 1.0, rtol=0, atol=0)
    torch.testing.assert_close(untied[:, 0], conv.biases.e, rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    group=st.sampled_from(["C4", "D4"]),
    layer=st.sampled_from(["lift", "conv"]),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    k=st.integers(1, 5),
    bias=st.booleans(),
)
def test_gathered_bank_and_gradient_equal_the_slot_path_for_any_size(
    group, layer, cin, cout, k, bias
):
    """Property (issue 19): for any sizes, with or without bias, the one-gather bank
    (int32 index, moved once) equals the bank read slot by slot, its gradient equals
    the slot path's, and the forward (train and eval) equals ``F.conv2d`` on the slot
    bank; also after an optimizer step."""
    cls = LiftingConv2d if layer == "lift" else GroupConv2d
    torch.manual_seed(cin * 100 + cout * 10 + k)
    m = cls(cin, cout, k, group=group, padding=k // 2, bias=bias, dtype=F64)
    n = len(GROUPS[group])
    x = (
        torch.randn(2, cin, 7, 7, dtype=F64)
        if layer == "lift"
        else torch.randn(2, cin, n, 7, 7, dtype=F64)
    )
    flat = x if layer == "lift" else x.flatten(1, 2)
    physical = [getattr(m.kernels, key) for key in m._physical_keys()]
    for _ in range(2):
        assert torch.equal(m.filter_bank(), m._slot_bank())
        bias_ref = (  # read slot by slot, as the bank is
            None
            if m.biases is None
            else torch.stack([getattr(m.biases, g) for g in GROUPS[group]], 1).reshape(-1)
        )
        want = F.conv2d(flat, m._slot_bank(), bias_ref, padding=k // 2)
        torch.testing.assert_close(m(x).flatten(1, 2), want, rtol=0, atol=0)
        w = torch.randn_like(m._slot_bank())
        g_fast = torch.autograd.grad((m.filter_bank() * w).sum(), physical)
        g_slow = torch.autograd.grad((m._slot_bank() * w).sum(), physical)
        for a, b in zip(g_fast, g_slow):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        # eval mode without autograd serves bank and bias from one cache: the same values
        m.eval()
        with torch.no_grad():
            for _ in range(2):  # built, then served from the cache
                torch.testing.assert_close(m(x).flatten(1, 2), want, rtol=0, atol=0)
        m.train()
        _sgd(m.parameters(), m(x).square().mean())


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer", ["lift", "conv"])
def test_layers_without_bias_run_in_train_and_eval_mode(group, layer):
    """Regression: the one-check path read ``_modules["biases"]``, which a layer built
    with ``bias=False`` does not have (its ``biases`` is a plain None): every forward
    raised KeyError."""
    cls = LiftingConv2d if layer == "lift" else GroupConv2d
    m = cls(2, 3, 3, group=group, bias=False, dtype=F64)
    n = len(GROUPS[group])
    x = (
        torch.randn(2, 2, 7, 7, dtype=F64)
        if layer == "lift"
        else torch.randn(2, 2, n, 7, 7, dtype=F64)
    )
    flat = x if layer == "lift" else x.flatten(1, 2)
    want = F.conv2d(flat, m._slot_bank(), None, padding=1)
    assert m.bias_bank() is None
    torch.testing.assert_close(m(x).flatten(1, 2), want, rtol=0, atol=0)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x).flatten(1, 2), want, rtol=0, atol=0)


def test_eval_cache_of_bank_and_bias_follows_a_write_to_either_alone():
    """Bank and bias are cached together in eval mode (issue 19: one stamp, one
    comparison per call); a ``.data`` write to the bias alone, or to one kernel block
    alone, must still reach the next eval forward."""
    _, conv = _net("C4")
    conv.eval()
    x = torch.randn(2, 3, 4, 7, 7, dtype=F64)

    with torch.no_grad():
        conv(x)
        assert conv._filter_bank() is conv._filter_bank()  # served from the one cache
        conv.biases.e.data.add_(0.5)  # moves no version counter
        torch.testing.assert_close(conv(x), _c4_reference(conv, x), rtol=0, atol=0)
        conv.kernels.e_r2.data.mul_(-1.0)
        torch.testing.assert_close(conv(x), _c4_reference(conv, x), rtol=0, atol=0)
        want_bias = torch.stack([conv.biases.e] * 4, dim=1).reshape(-1)
        torch.testing.assert_close(conv.bias_bank(), want_bias, rtol=0, atol=0)


def test_torch_func_first_call_leaves_no_transform_tensor_behind():
    """Regression: an index cached lazily inside ``torch.func.grad`` was a transform
    wrapper; ``deepcopy`` of the layer then failed ("Cannot access storage of
    TensorWrapper"). Everything the layer keeps is made eagerly."""
    from torch.func import functional_call, grad, vmap

    _, conv = _net("C4")
    x = torch.randn(3, 3, 4, 7, 7, dtype=F64)
    params = {k: v.detach() for k, v in conv.named_parameters()}

    def loss(p, xb):
        return functional_call(conv, p, (xb,)).square().mean()

    g = grad(loss)(params, x)  # the layer's first forward runs under the transform
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x.unsqueeze(1))
    conv.zero_grad()
    loss(dict(conv.named_parameters()), x).backward()
    for name, p in conv.named_parameters():
        torch.testing.assert_close(g[name], p.grad)
        torch.testing.assert_close(per_sample[name].mean(0), p.grad)
    twin = copy.deepcopy(conv)
    torch.testing.assert_close(twin(x), conv(x), rtol=0, atol=0)


def test_gather_index_follows_the_parameters_device_and_dtype():
    _, conv = _net("D4")
    conv.float()  # _apply: the cached index is re-made on the parameters' device
    assert conv.__dict__["_bank_flat_index"].dtype == torch.int32
    assert conv.__dict__["_bank_flat_index"].device == conv.kernels.e_e.device
    assert torch.equal(conv.filter_bank(), conv._slot_bank())
    conv.to("meta")
    assert conv.__dict__["_bank_flat_index"].device.type == "meta"
    assert conv.filter_bank().device.type == "meta"


def test_eval_ensemble_under_vmap_is_not_cached_and_matches_each_model():
    """Regression: in eval mode without autograd the bank cache stamped each
    parameter's data pointer, which vmap's batched tensors do not have, so model
    ensembling (``stack_module_state`` + ``vmap(functional_call)``) raised."""
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    models = [GroupConv2d(2, 3, 3, dtype=F64).eval() for _ in range(3)]
    params, buffers = stack_module_state(models)
    x = torch.randn(2, 2, 4, 7, 7, dtype=F64)
    with torch.no_grad():
        out = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(params, buffers)
        want = torch.stack([m(x) for m in models])
    torch.testing.assert_close(out, want)
    with torch.no_grad():  # the plain eval path afterwards is not served a transform's bank
        torch.testing.assert_close(models[0](x), want[0], rtol=0, atol=0)


def _slot_reference(layer, x):
    """The layer's output computed slot by slot (no gather, no cache)."""
    bias = None
    if layer.biases is not None:
        bias = torch.stack([getattr(layer.biases, g) for g in layer.elements], 1).reshape(-1)
    x = x.flatten(1, 2) if x.ndim == 5 else x
    y = F.conv2d(x, layer._slot_bank(), bias, padding=layer.padding)
    return y.unflatten(1, (layer.out_channels, len(layer.elements)))


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("train", [True, False])
def test_a_layer_re_tied_by_another_plan_computes_that_plan(group, layer, train):
    # untie, then tie the same names with other relations: the parameter names are the
    # layer's own again, but the one-gather path (and the bias's Same-tie path) computed
    # the layer's own rotations, silently ignoring the plan
    conv = layer(2, 3, 3, group=group, bias=True).double().train(train)
    n = len(conv.elements)
    tying.untie(conv)
    physical = set(conv._physical_keys())
    plan = tying.Plan(
        [
            tying.share(f"kernels.{k}", like=f"kernels.{sorted(physical)[0]}")
            for k in conv.kernels._parameters
            if k not in physical
        ]
        + [
            tying.share(f"biases.{g}", like="biases.e", relation=tying.Flipped((0,)))
            for g in conv.elements[1:]
        ]
    )
    plan.apply(conv)
    assert set(conv.kernels._parameters) == physical and set(conv.biases._parameters) == {"e"}
    x = torch.randn(2, 2, 6, 6, dtype=F64)
    if layer is GroupConv2d:
        x = torch.randn(2, 2, n, 6, 6, dtype=F64)
    with torch.set_grad_enabled(train):
        torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)
    # applying the layer's own rules again brings the gather back, equal to the slots
    tying.untie(conv)
    tying.Plan(conv._rules()).apply(conv)
    assert conv._fast_ready()
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=1e-12, atol=1e-12)


def test_a_layer_without_its_tie_record_rebuilds_it():
    # a layer pickled before the record existed asks a fresh layer for it
    conv = GroupConv2d(2, 3, 3, group="D4")
    for key in [k for k in conv.__dict__ if k == "_own_ties" or k.startswith("_ties_seen")]:
        del conv.__dict__[key]
    assert conv._fast_ready()
    x = torch.randn(1, 2, 8, 5, 5)
    torch.testing.assert_close(conv(x), _slot_reference(conv, x))


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_bias_bank_alone_builds_no_filter_bank_in_training(group, monkeypatch):
    # bias_bank() on the fast path went through the shared (bank, bias) builder and
    # gathered the whole filter bank too, per call, then dropped it (a repeat that also
    # inflated the benchmark's "tie alone" row); and the reverse for filter_bank()
    conv = GroupConv2d(2, 3, 3, group=group).double()
    built = {"bank": 0, "bias": 0}
    fast_bank, fast_bias = conv._fast_bank, conv._fast_bias

    def count_bank(*args):
        built["bank"] += 1
        return fast_bank(*args)

    def count_bias(*args):
        built["bias"] += 1
        return fast_bias(*args)

    monkeypatch.setattr(conv, "_fast_bank", count_bank)
    monkeypatch.setattr(conv, "_fast_bias", count_bias)
    want_bias = torch.stack([conv.biases.e] * len(conv.elements), dim=1).reshape(-1)
    torch.testing.assert_close(conv.bias_bank(), want_bias, rtol=0, atol=0)
    assert built == {"bank": 0, "bias": 1}
    torch.testing.assert_close(conv.filter_bank(), conv._slot_bank(), rtol=0, atol=0)
    assert built == {"bank": 1, "bias": 1}


def test_a_compiled_layer_re_tied_by_another_plan_computes_that_plan():
    # the compiled call must not keep the one-gather path once the slots are another plan's
    conv = LiftingConv2d(2, 3, 3, group="C4").double()
    x = torch.randn(1, 2, 6, 6, dtype=F64)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), _slot_reference(conv, x))
    tying.untie(conv)
    rules = [tying.share(f"kernels.{g}", like="kernels.e") for g in conv.elements[1:]]
    rules += [r for r in conv._rules() if r.target.startswith("biases.")]  # the layer's own
    tying.Plan(rules).apply(conv)
    assert conv.kernels._parameters.keys() == {"e"} and conv.biases._parameters.keys() == {"e"}
    torch.testing.assert_close(compiled(x), _slot_reference(conv, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("kind", ["lifting", "group"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_a_layer_moved_to_channels_last_computes_what_the_contiguous_one_does(group, kind, train):
    # model.to(memory_format=torch.channels_last) made the stacked kernel blocks
    # non-contiguous, and the bank gather's view(-1) raised in every forward
    torch.manual_seed(0)
    if kind == "lifting":
        layer, x = LiftingConv2d(2, 3, 3, group=group), torch.randn(2, 2, 9, 9)
    else:
        n = 4 if group == "C4" else 8
        layer, x = GroupConv2d(2, 3, 3, group=group), torch.randn(2, 2, n, 7, 7)
    layer.train(train)
    moved = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    assert any(not p.is_contiguous() for p in moved.parameters())  # else nothing is tested
    out, ref = moved(x), layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    grads = dict(layer.named_parameters())
    for name, p in moved.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-6)
    assert tying.verify(moved) == tying.verify(layer)


def _stacked_bias_reference(bias, n):
    """The bias bank as the layer built it before stop 22: a ``|G|``-way stack."""
    return torch.stack([bias] * n, dim=1).view(-1)


@settings(max_examples=20, deadline=None)
@given(
    group=st.sampled_from(["C4", "D4"]),
    cout=st.integers(1, 9),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_bias_gather_and_its_gradient_keep_the_bits_of_the_old_stack(group, cout, dtype, seed):
    """Stop 22 (issue 19): the bias bank is one ``index_select`` instead of a ``|G|``-way
    stack; its values and its gradient (the ``|G|`` orientation gradients added in
    order) must equal the old stack's bit for bit, for any gradient."""
    torch.manual_seed(seed)
    conv = GroupConv2d(2, cout, 3, group=group, dtype=dtype)
    n = len(GROUPS[group])
    bias = conv.biases.e
    g = torch.randn(cout * n, dtype=dtype) * 10.0 ** torch.randint(-6, 6, (cout * n,))
    new = conv._fast_bias(bias)
    old = _stacked_bias_reference(bias, n)
    assert torch.equal(new, old)
    (g_new,) = torch.autograd.grad(new, bias, g)
    (g_old,) = torch.autograd.grad(old, bias, g)
    assert torch.equal(g_new, g_old)


def _general_path_step(layer, x):
    """Output and gradients through the per-call-checked path (``_banks``), the
    reference for the lean eager path."""
    bank, bias = layer._banks()
    flat = x.flatten(1, 2) if x.ndim == 5 else x
    y = F.conv2d(flat, bank, bias, padding=layer.padding)
    y = y.unflatten(1, (layer.out_channels, len(layer.elements)))
    grads = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    return y.detach(), grads


def _assert_lean_step_is_the_general_path(conv, x):
    """The lean eager step's output and gradients equal the general path's, bit for bit."""
    conv(x)
    assert conv.__dict__["_lean_seen"][3] is not None  # else the comparison checks nothing
    y = conv(x)
    grads = torch.autograd.grad(y.square().sum(), list(conv.parameters()))
    want_y, want_grads = _general_path_step(conv, x)
    assert torch.equal(y, want_y)
    for a, b in zip(grads, want_grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("bias", [True, False])
def test_lean_training_step_equals_the_general_path_bit_for_bit(group, layer, bias):
    """Stop 22: the eager training forward skips the per-call tie check; output and
    every parameter's gradient must be the general path's, bit for bit, also after an
    optimizer step."""
    torch.manual_seed(0)
    conv = layer(3, 4, 3, group=group, bias=bias)
    n = len(conv.elements)
    x = torch.randn(2, 3, 9, 9) if layer is LiftingConv2d else torch.randn(2, 3, n, 7, 7)
    for _ in range(2):
        _assert_lean_step_is_the_general_path(conv, x)
        _sgd(conv.parameters(), conv(x).square().mean())


def test_lean_path_asks_whether_the_tie_holds_only_when_the_slots_move(monkeypatch):
    conv = GroupConv2d(2, 3, 3, group="C4")
    x = torch.randn(1, 2, 4, 5, 5)
    calls = []
    ready = conv._fast_ready
    monkeypatch.setattr(conv, "_fast_ready", lambda: calls.append(1) or ready())
    for _ in range(3):
        conv(x).sum().backward()
    assert len(calls) == 1  # asked once, then kept with the slots dicts
    tying.untie(conv)
    conv(x)
    assert len(calls) >= 2  # the slots moved: asked again (and answered no)


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
def test_a_trained_layer_untied_re_tied_or_given_new_parameters_computes_its_slots(group, layer):
    """Regression guard for the kept answer (stop 22): after training steps on the lean
    path, untying, re-tying by another plan, assigning a new physical parameter or
    moving the layer must each reach the next training forward."""
    torch.manual_seed(1)
    conv = layer(2, 3, 3, group=group).double()
    n = len(conv.elements)
    x = torch.randn(2, 2, 6, 6, dtype=F64)
    if layer is GroupConv2d:
        x = torch.randn(2, 2, n, 6, 6, dtype=F64)
    for _ in range(2):
        _sgd(conv.parameters(), conv(x).square().mean())
    # a new physical parameter object behind the same name and count
    key = conv._physical_keys()[0]
    setattr(conv.kernels, key, torch.nn.Parameter(torch.randn_like(getattr(conv.kernels, key))))
    conv.biases.e = torch.nn.Parameter(torch.randn_like(conv.biases.e))
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)
    # moved to another dtype: the indices follow, the forward still reads the slots
    conv.float()
    xf = x.float()
    torch.testing.assert_close(conv(xf), _slot_reference(conv, xf), rtol=0, atol=0)
    conv.double()
    # untied, one block changed: the layer must read its slots
    tying.untie(conv)
    physical = sorted(conv._physical_keys())
    with torch.no_grad():  # a block the gather would read from a physical one
        next(p for k, p in conv.kernels._parameters.items() if k not in physical).add_(1.0)
        for p in conv.biases._parameters.values():
            p.add_(torch.rand(()))
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)
    # tied again by another plan under the same names and counts
    rules = [
        tying.share(f"kernels.{k}", like=f"kernels.{physical[0]}")
        for k in conv.kernels._parameters
        if k not in physical
    ]
    rules += [
        tying.share(f"biases.{g}", like="biases.e", relation=tying.Flipped((0,)))
        for g in conv.elements[1:]
    ]
    tying.Plan(rules).apply(conv)
    assert set(conv.kernels._parameters) == set(physical)
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)


@pytest.mark.parametrize("bank", ["kernels", "biases"])
def test_a_trained_layer_with_one_bank_untied_reads_that_banks_slots(bank):
    """The kept answer (stop 22) is re-asked when either bank alone moves: untying the
    kernels (or the biases) alone after training steps must reach the next forward."""
    torch.manual_seed(2)
    conv = GroupConv2d(2, 3, 3, group="C4").double()
    x = torch.randn(2, 2, 4, 6, 6, dtype=F64)
    for _ in range(2):
        _sgd(conv.parameters(), conv(x).square().mean())
    tying.untie(getattr(conv, bank))
    keep = {"e_e", "e_r", "e_r2", "e_r3"} if bank == "kernels" else {"e"}
    with torch.no_grad():
        for key, p in getattr(conv, bank)._parameters.items():
            if key not in keep:
                p.add_(1.0)
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    group=st.sampled_from(["C4", "D4"]),
    layer=st.sampled_from([LiftingConv2d, GroupConv2d]),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    k=st.integers(1, 4),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    channels_last=st.booleans(),
)
def test_lean_step_equals_the_general_path_for_any_size(
    group, layer, cin, cout, k, bias, dtype, channels_last
):
    """Property (stop 22): for any sizes, dtype and parameter layout, the lean eager
    training step gives the general path's output and gradients bit for bit."""
    torch.manual_seed(cin * 100 + cout * 10 + k)
    conv = layer(cin, cout, k, group=group, padding=k // 2, bias=bias, dtype=dtype)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    n = len(conv.elements)
    shape = (2, cin, 6, 6) if layer is LiftingConv2d else (2, cin, n, 6, 6)
    x = torch.randn(shape, dtype=dtype)
    _assert_lean_step_is_the_general_path(conv, x)


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_lifting_bank_from_its_one_block_equals_the_stacked_gather_bit_for_bit(group):
    """Stop 22: a lifting layer gathers from its one physical block without stacking it
    first; the bank and the block's gradient must equal the stacked gather's."""
    torch.manual_seed(3)
    lift = LiftingConv2d(2, 3, 3, group=group)
    (block,) = lift._physical_params()
    index, shape = lift._flat_index_on(block.device), lift.__dict__["_bank_shape"]
    old = torch.index_select(torch.stack([block]).reshape(-1), 0, index).view(shape)
    new = lift._fast_bank()
    assert torch.equal(new, old)
    g = torch.randn(shape)
    (g_old,) = torch.autograd.grad(old, block, g)
    (g_new,) = torch.autograd.grad(new, block, g)
    assert torch.equal(g_new, g_old)


@pytest.mark.parametrize("bank", ["kernels", "biases"])
def test_a_layer_re_tied_in_place_by_another_relation_reads_the_new_slots(bank):
    """Re-tied straight from the tied state, with no forward in between: the same names
    and the same parameter counts, so only the new slots dict tells the kept answer
    (stop 22) that the tie moved."""
    torch.manual_seed(3)
    conv = GroupConv2d(2, 3, 3, group="C4").double()
    x = torch.randn(2, 2, 4, 6, 6, dtype=F64)
    for _ in range(2):
        _sgd(conv.parameters(), conv(x).square().mean())
    counts = (len(conv.kernels._parameters), len(conv.biases._parameters))
    if bank == "biases":
        rules = [
            tying.share(f"biases.{g}", like="biases.e", relation=tying.Flipped((0,)))
            for g in conv.elements[1:]
        ]
    else:
        rules = [
            tying.share(f"kernels.{k}", like="kernels.e_e", relation=tying.Flipped((-1,)))
            for k in slots_of(conv.kernels)
        ]
    tying.Plan(rules).apply(conv)
    assert (len(conv.kernels._parameters), len(conv.biases._parameters)) == counts
    torch.testing.assert_close(conv(x), _slot_reference(conv, x), rtol=0, atol=0)


def _reparametrised_as_plain(layer, bank, key):
    """A fresh layer of ``layer``'s kind whose ``bank.key`` holds the reparametrised value now."""
    state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    for suffix in ("_orig", "_mask", "_u", "_v"):
        state.pop(f"{bank}.{key}{suffix}", None)
    state[f"{bank}.{key}"] = getattr(getattr(layer, bank), key).detach().clone()
    fresh = type(layer)(
        layer.in_channels, layer.out_channels, 3, group=layer.group, tied=layer.tied, dtype=F64
    )
    fresh.load_state_dict(state)
    return fresh


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("kind", ["lift", "group"])
@pytest.mark.parametrize("bank", ["kernels", "biases"])
def test_a_pruned_block_is_read_as_its_mask_times_the_trained_original(kind, bank, tied):
    # stop 35: the banks are read, never called, so prune's forward pre-hook never ran:
    # after an optimizer step the layer read the block as it was when pruned (a tied
    # layer mixed that stale block with fresh rotated copies: 0.8 off and no longer
    # equivariant), and a second training step failed on the freed graph
    from torch.nn.utils import prune

    torch.manual_seed(0)
    lift, conv = _net("C4", tied=tied)
    layer = lift if kind == "lift" else conv
    x = torch.randn(2, *((2,) if kind == "lift" else (3, 4)), 7, 7, dtype=F64)
    key = "e" if bank == "biases" or kind == "lift" else "e_r"
    prune.l1_unstructured(getattr(layer, bank), key, amount=0.5)
    for _ in range(3):  # the second step raised before
        _sgd(layer.parameters(), layer(x).square().mean(), lr=0.5)
    orig, mask = (
        getattr(layer, bank)._parameters[f"{key}_orig"],
        getattr(layer, bank)._buffers[f"{key}_mask"],
    )
    layer.eval()
    with torch.no_grad():
        got = layer(x)
    assert torch.equal(getattr(getattr(layer, bank), key), orig * mask)
    assert torch.equal(got, _reparametrised_as_plain(layer, bank, key).eval()(x).detach())
    if tied and kind == "group":
        torch.testing.assert_close(
            layer(group_act(x, "r", "C4")), group_act(got, "r", "C4"), rtol=1e-12, atol=1e-12
        )


def test_an_untied_bank_under_spectral_norm_reads_the_current_normalised_block():
    # stop 35: spectral_norm (like weight_norm) writes the block in a pre-hook of the bank;
    # unrun, the layer read the raw block as a constant and training never reached it
    torch.manual_seed(0)
    layer = GroupConv2d(2, 3, 3, tied=False, dtype=F64)
    torch.nn.utils.spectral_norm(layer.kernels, "e_r")
    before = layer.kernels.e_r_orig.detach().clone()
    x = torch.randn(2, 2, 4, 7, 7, dtype=F64)
    for _ in range(2):
        _sgd(layer.parameters(), layer(x).square().mean(), lr=0.5)
    assert not torch.equal(layer.kernels.e_r_orig, before)  # the gradient reached it
    layer.eval()
    with torch.no_grad():
        got = layer(x)
        plain = copy.deepcopy(layer)
        torch.nn.utils.remove_spectral_norm(plain.kernels, "e_r")  # computes W / sigma
        assert torch.equal(got, plain(x))
