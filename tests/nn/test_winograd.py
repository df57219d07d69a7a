"""Winograd F(4×4, 3×3) (tying.nn._winograd) against F.conv2d, and the layers' opt-in path.

float64 must equal the direct convolution to 1e-12 relative (forward and every
gradient); float32 stays within ``REL32`` of a float64 reference, norm-wise. That
bound is about 330 units of float32 round-off (2⁻²⁴): the transforms' constants
(row sums 10 in Bᵀ, 19 in Aᵀ) amplify each rounding, and the worst norm-wise error
measured over 31 shapes (batch 1–8, 1–256 channels, sides 1–65, padding 0–2, values
and gradients) was 3.6e-6, so the bound keeps a 5× margin; the direct float32
convolution reaches 2.3e-7 on its output.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tying
from tying.nn import GROUPS, GroupConv2d, LiftingConv2d, group_act
from tying.nn import _winograd as W

pytestmark = pytest.mark.skipif(not W.available(), reason="needs numba (tying[fast])")

F64 = torch.float64
REL32 = 2e-5
REL64 = 1e-12


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref.detach().double()).norm() / ref.detach().norm())


def _data(b, ci, co, h, w, dtype=F64, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, ci, h, w, generator=g, dtype=F64)
    wt = torch.randn(co, ci, 3, 3, generator=g, dtype=F64) / (3 * ci**0.5)
    bs = torch.randn(co, generator=g, dtype=F64) if bias else None
    return [None if t is None else t.to(dtype).requires_grad_() for t in (x, wt, bs)]


def _both(x, w, b, padding):
    """Winograd and the float64 direct reference: outputs and gradients for one upstream."""
    y = W.winograd_conv2d(x, w, b, padding)
    ref_in = [None if t is None else t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*ref_in, padding=padding)
    g = torch.randn(ref.shape, dtype=F64, generator=torch.Generator().manual_seed(7))
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, leaves, g.to(y.dtype))
    ref_grads = torch.autograd.grad(ref, [t for t in ref_in if t is not None], g)
    return [(y, ref), *zip(grads, ref_grads, strict=True)]


SHAPES = [  # (batch, C_in, C_out, H, W, padding): tile-aligned, odd, smaller than a tile
    (2, 3, 4, 9, 9, 1),
    (1, 1, 1, 1, 1, 1),
    (1, 1, 1, 2, 3, 1),
    (2, 5, 3, 7, 11, 0),
    (1, 2, 2, 5, 6, 2),
    (3, 8, 8, 33, 33, 1),
    (1, 4, 6, 32, 32, 1),
    (1, 3, 2, 3, 3, 0),
    (1, 16, 16, 65, 65, 1),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_float64_equals_the_direct_convolution_and_its_gradients(shape, bias):
    b, ci, co, h, w, p = shape
    for out, ref in _both(*_data(b, ci, co, h, w, bias=bias), p):
        assert _rel(out, ref) <= REL64


@pytest.mark.parametrize("shape", [(1, 2, 3, 5, 6, 1), (2, 1, 2, 4, 4, 0), (1, 2, 1, 1, 2, 2)])
def test_gradcheck_in_float64(shape):
    b, ci, co, h, w, p = shape
    x, wt, bs = _data(b, ci, co, h, w)
    assert torch.autograd.gradcheck(lambda *a: W.winograd_conv2d(*a, p), (x, wt, bs))


@pytest.mark.parametrize(
    "shape",
    [
        (8, 64, 64, 33, 33, 1),  # the benchmark shapes
        (8, 64, 64, 32, 32, 1),
        (1, 256, 256, 16, 16, 1),
        (1, 1, 1, 1, 1, 1),
        (1, 1, 1, 2, 2, 2),
        (1, 3, 5, 5, 7, 0),
        (1, 16, 16, 65, 65, 1),
        (2, 128, 32, 17, 17, 2),
        (1, 1, 256, 31, 31, 1),
        (3, 7, 9, 3, 3, 2),
    ],
)
def test_float32_stays_within_the_documented_bound(shape):
    b, ci, co, h, w, p = shape
    for out, ref in _both(*_data(b, ci, co, h, w, dtype=torch.float32), p):
        assert out.dtype == torch.float32
        assert _rel(out, ref) <= REL32


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    ci=st.integers(1, 9),
    co=st.integers(1, 9),
    h=st.integers(1, 21),
    w=st.integers(1, 21),
    p=st.integers(0, 3),
    f32=st.booleans(),
    bias=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_f_conv2d(b, ci, co, h, w, p, f32, bias, channels_last, seed):
    if h + 2 * p < 3 or w + 2 * p < 3:
        with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
            W.winograd_conv2d(*_data(b, ci, co, h, w, bias=bias), p)
        return
    x, wt, bs = _data(b, ci, co, h, w, dtype=torch.float32 if f32 else F64, seed=seed, bias=bias)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    pairs = _both(x, wt, bs, p)
    for out, ref in pairs:
        assert _rel(out, ref) <= (REL32 if f32 else REL64)
    y, dx = pairs[0][0], pairs[1][0]
    # channels-last in, channels-last out (as F.conv2d); a 1x1 input is both layouts at once
    # and F.conv2d returns it contiguous (hypothesis found h = w = 1)
    if channels_last and ci > 1 and co > 1 and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(0, 3, 8, 8, dtype=F64),  # an empty batch
        lambda: torch.randn(2, 3, 16, 16, dtype=F64)[..., ::2, ::2],  # strided
        lambda: torch.randn(2, 3, 1, 1, dtype=F64).expand(2, 3, 7, 9),  # zero strides
        lambda: torch.randn(2, 3, 9, 9, dtype=F64).transpose(2, 3),  # W before H in memory
    ],
    ids=["empty-batch", "strided", "expanded", "transposed"],
)
def test_unusual_input_layouts_match_f_conv2d(make):
    x = make().requires_grad_()
    w = torch.randn(4, 3, 3, 3, dtype=F64, requires_grad=True)
    b = torch.randn(4, dtype=F64, requires_grad=True)
    y, ref = W.winograd_conv2d(x, w, b, 1), F.conv2d(x, w, b, padding=1)
    assert y.shape == ref.shape
    g = torch.randn(ref.shape, dtype=F64).expand(ref.shape)
    for a, r in zip(
        [y, *torch.autograd.grad(y, (x, w, b), g)],
        [ref, *torch.autograd.grad(ref, (x, w, b), g)],
        strict=True,
    ):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    where=st.sampled_from(["input", "weight", "upstream"]),
    value=st.sampled_from([float("inf"), -float("inf"), float("nan"), 3e38]),
    n_bad=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    p=st.integers(0, 2),
)
def test_non_finite_values_land_where_the_direct_convolution_puts_them(
    where, value, n_bad, seed, p
):
    gen = torch.Generator().manual_seed(seed)
    x, w, b = (t.detach() for t in _data(2, 3, 4, 9, 10, dtype=torch.float32, seed=seed))
    g = torch.randn(2, 4, 7 + 2 * p, 8 + 2 * p, generator=gen)
    target = {"input": x, "weight": w, "upstream": g}[where]
    flat = target.view(-1)
    flat[torch.randint(0, flat.numel(), (n_bad,), generator=gen)] = value
    outs = []
    for fn in (lambda *a: W.winograd_conv2d(*a, p), lambda *a: F.conv2d(*a, padding=p)):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves)
        outs.append([y, *torch.autograd.grad(y, leaves, g)])
    for ours, direct in zip(*outs, strict=True):
        assert torch.equal(torch.isnan(ours), torch.isnan(direct))
        assert torch.equal(torch.isinf(ours), torch.isinf(direct))
        fin = torch.isfinite(direct)
        scale = direct[fin].abs().max() if fin.any() else 1.0
        assert ((ours[fin] - direct[fin]).abs() <= 1e-4 * scale + 1e-30).all()


@pytest.mark.parametrize("channels", [8, 13])  # all in blocks of eight; a remainder of 5
@pytest.mark.parametrize("where", ["input", "weight", "upstream"])
@pytest.mark.parametrize("channel", ["first", "last"])
def test_wide_layers_find_non_finite_values_in_every_channel_block(channels, where, channel):
    """The NCHW copies move eight channels at a time (``_winograd_kernels._CB``) and a
    remainder one by one: a non-finite value in either part must still send the call to
    the direct convolution (the test above uses 3 and 4 channels, below one block)."""
    gen = torch.Generator().manual_seed(channels)
    x, w, b = (t.detach() for t in _data(2, channels, channels, 9, 10, dtype=torch.float32))
    g = torch.randn(2, channels, 9, 10, generator=gen)
    c = 0 if channel == "first" else channels - 1
    if where == "input":
        x[1, c, 4, 7] = float("inf")
    elif where == "weight":
        w[c, c, 1, 2] = float("nan")
    else:
        g[0, c, 8, 9] = -float("inf")
    outs = []
    for fn in (lambda *a: W.winograd_conv2d(*a, 1), lambda *a: F.conv2d(*a, padding=1)):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves)
        outs.append([y, *torch.autograd.grad(y, leaves, g)])
    # the output (from the input or weight), or the input gradient (from the upstream), is hit
    assert not torch.isfinite(outs[1][1 if where == "upstream" else 0]).all()
    for ours, direct in zip(*outs, strict=True):
        assert torch.equal(torch.isnan(ours), torch.isnan(direct))
        assert torch.equal(torch.isinf(ours), torch.isinf(direct))


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _data(3, 16, 16, 19, 23, dtype=torch.float32)
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = W.winograd_conv2d(x, w, b, 1)
            runs.append([y, *torch.autograd.grad(y.square().sum(), (x, w, b))])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*runs, strict=True):
        assert torch.equal(one, two)


def test_refusals_name_the_setting_and_the_fix(monkeypatch):
    x, w, b = (t.detach() for t in _data(1, 2, 3, 6, 6, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"3x3 kernels only, got a weight of shape \(3, 2, 5, 5\)"):
        W.winograd_conv2d(x, torch.randn(3, 2, 5, 5), None, 2)
    with pytest.raises(ValueError, match="CPU only, got the input on meta; use algorithm='direct'"):
        W.winograd_conv2d(x.to("meta"), w, b, 1)
    with pytest.raises(ValueError, match="float32 and float64, got the input in torch.float16"):
        W.winograd_conv2d(x.half(), w.half(), None, 1)
    with pytest.raises(ValueError, match="the weight is torch.float64 but the input is"):
        W.winograd_conv2d(x, w.double(), None, 1)
    with pytest.raises(ValueError, match=r"expected an input \(B, 2, H, W\)"):
        W.winograd_conv2d(x[:, :1], w, None, 1)
    with pytest.raises(ValueError, match=r"expected a bias of shape \(3,\), got \(2,\)"):
        W.winograd_conv2d(x, w, b[:2], 1)
    with pytest.raises(ValueError, match="padding must be a non-negative int, got -1"):
        W.winograd_conv2d(x, w, b, -1)
    with pytest.raises(ValueError, match="an input of 1x6 with padding=0 is smaller"):
        W.winograd_conv2d(x[:, :, :1], w, b, 0)
    monkeypatch.setattr(W, "_nb", lambda: None)
    with pytest.raises(ImportError, match=r"pip install 'tying\[fast\]'"):
        W.winograd_conv2d(x, w, b, 1)
    with pytest.raises(ImportError, match="numba"):
        GroupConv2d(2, 2, 3, algorithm="winograd")


def test_torch_func_transforms_are_refused_by_name():
    m = GroupConv2d(2, 3, 3, algorithm="winograd")
    x = torch.randn(5, 1, 2, 4, 8, 8)
    with pytest.raises(ValueError, match="not run under torch.func transforms.*'direct' there"):
        torch.func.vmap(m)(x)
    params = {k: v.detach() for k, v in m.named_parameters()}
    with pytest.raises(ValueError, match="not run under torch.func transforms"):
        torch.func.grad(lambda p: torch.func.functional_call(m, p, (x[0],)).sum())(params)
    direct = GroupConv2d(2, 3, 3)
    direct.load_state_dict(params)
    y = torch.func.functional_call(m, params, (x[0],))  # no transform: runs
    assert _rel(y, direct(x[0])) <= REL32


def test_double_backward_is_refused():
    x, w, b = _data(1, 2, 2, 5, 5)
    (gx,) = torch.autograd.grad(W.winograd_conv2d(x, w, b, 1).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        gx.sum().backward()


def test_a_second_derivative_through_the_gradient_is_refused_not_dropped():
    # once_differentiable's guard hung off fresh leaves: a gradient penalty whose upstream
    # needs no grad, and autograd.grad of a MAML meta-loss, read the inner gradient as a
    # constant (a penalty's weight gradient 0.62 for the direct layer's 11946), no error
    direct, wino = _pair(LiftingConv2d, "C4", 2, 2)
    x = torch.randn(2, 2, 7, 7, dtype=F64, requires_grad=True)
    (gx,) = torch.autograd.grad(wino(x).sum(), x, create_graph=True)  # first order: runs
    (ref,) = torch.autograd.grad(direct(x).sum(), x)
    assert _rel(gx, ref) <= REL64
    with pytest.raises(NotImplementedError, match="no second derivative.*algorithm='direct'"):
        (wino(x).square().mean() + gx.square().sum()).backward()
    params = dict(wino.named_parameters())
    inner = torch.func.functional_call(wino, params, (x,)).square().mean()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads, strict=True)}
    outer = torch.func.functional_call(wino, fast, (x,)).pow(3).mean()
    with pytest.raises(NotImplementedError, match="refusing to differentiate twice"):
        torch.autograd.grad(outer, list(params.values()))
    # a gradient that depends on nothing requiring grad is a constant, and right as one
    xc = x.detach().requires_grad_()
    (gw,) = torch.autograd.grad(
        W.winograd_conv2d(xc, params["kernels.e"].detach(), None, 1).sum(), xc, create_graph=True
    )
    assert not gw.requires_grad


# -- the layers' opt-in path -------------------------------------------------------------
def _pair(layer_cls, group, ci, co, dtype=F64, **kw):
    torch.manual_seed(0)
    direct = layer_cls(ci, co, 3, group=group, dtype=dtype, **kw)
    wino = layer_cls(ci, co, 3, group=group, dtype=dtype, algorithm="winograd", **kw)
    wino.load_state_dict(direct.state_dict())
    return direct, wino


def test_the_algorithm_argument_is_validated():
    with pytest.raises(ValueError, match=r"algorithm must be one of \('direct', 'winograd'\)"):
        GroupConv2d(2, 2, 3, algorithm="fft")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        LiftingConv2d(2, 2, 3, algorithm=None)
    with pytest.raises(ValueError, match="kernel_size=3 only, got kernel_size=5; use algorithm="):
        GroupConv2d(2, 2, 5, algorithm="winograd")
    assert "algorithm='winograd'" in repr(GroupConv2d(2, 2, 3, algorithm="winograd"))
    assert "algorithm" not in repr(GroupConv2d(2, 2, 3))  # the default layer prints as before
    with pytest.raises(ValueError, match="float32 and float64, got the input in torch.bfloat16"):
        GroupConv2d(2, 2, 3, algorithm="winograd", dtype=torch.bfloat16)(
            torch.randn(1, 2, 4, 5, 5, dtype=torch.bfloat16)
        )


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("layer_cls", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("padding", [1, 0])
def test_layers_equal_the_direct_layer_and_its_kernel_gradient_in_float64(
    group, layer_cls, padding
):
    direct, wino = _pair(layer_cls, group, 2, 3, padding=padding)
    n = len(GROUPS[group])
    shape = (2, 2, 11, 10) if layer_cls is LiftingConv2d else (2, 2, n, 11, 10)
    x = torch.randn(*shape, dtype=F64)
    outs = []
    for m in (direct, wino):
        xr = x.clone().requires_grad_()
        y = m(xr)
        y.square().mean().backward()
        outs.append([y, xr.grad, *(p.grad for p in m.parameters())])
    for a, ref in zip(outs[1], outs[0], strict=True):
        assert _rel(a, ref) <= REL64


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_winograd_layers_are_equivariant_to_the_same_bound(group, dtype):
    torch.manual_seed(0)
    lift = LiftingConv2d(3, 8, 3, group=group, dtype=dtype, algorithm="winograd")
    conv = GroupConv2d(8, 8, 3, group=group, dtype=dtype, algorithm="winograd")
    x = torch.randn(2, 3, 17, 17, dtype=dtype)

    def f(z):
        return conv(lift(z).relu())

    bound = REL32 if dtype == torch.float32 else REL64
    for step in range(2):
        y = f(x)
        for a in GROUPS[group]:
            assert _rel(f(group_act(x, a, group)), group_act(y, a, group)) <= bound, (step, a)
        opt = torch.optim.SGD([*lift.parameters(), *conv.parameters()], lr=0.1)
        opt.zero_grad()
        f(x).square().mean().backward()
        opt.step()  # the tie holds after a step: still one kernel, still equivariant
    assert tying.verify(conv) > 0


def test_eval_cache_serves_the_winograd_path_and_follows_updates():
    direct, wino = _pair(GroupConv2d, "C4", 3, 2)
    x = torch.randn(2, 3, 4, 9, 9, dtype=F64)
    y_train = wino(x)
    wino.eval()
    with torch.no_grad():
        first = wino(x)
        assert "_bank_cache" in wino.__dict__
        torch.testing.assert_close(first, y_train, rtol=0, atol=0)
        wino.kernels.e_e.add_(1.0)
        direct.kernels.e_e.add_(1.0)
        assert _rel(wino(x), direct(x)) <= REL64


@pytest.mark.parametrize("layer", ["lift", "conv"])
def test_winograd_layers_follow_a_channels_last_input(layer):
    cls = LiftingConv2d if layer == "lift" else GroupConv2d
    direct, wino = _pair(cls, "C4", 3, 4)
    x = (
        torch.randn(2, 3, 9, 9, dtype=F64)
        if layer == "lift"
        else torch.randn(2, 12, 9, 9, dtype=F64)
    )
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if layer == "conv":
        x, x_cl = x.unflatten(1, (3, 4)), x_cl.unflatten(1, (3, 4))
    y_cl = wino(x_cl)
    assert y_cl.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    assert wino(x).is_contiguous()
    assert _rel(y_cl, direct(x)) <= REL64


def test_torch_compile_runs_the_winograd_path_as_an_opaque_op():
    direct, wino = _pair(GroupConv2d, "C4", 2, 3)
    x = torch.randn(2, 2, 4, 10, 10, dtype=F64)
    compiled = torch.compile(wino, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    assert _rel(y, direct(x)) <= REL64
    y.square().mean().backward()
    direct(x).square().mean().backward()
    assert _rel(wino.kernels.e_e.grad, direct.kernels.e_e.grad) <= REL64


def test_torch_compile_with_dynamic_shapes_follows_the_input_size():
    # the custom op's fake computes the output and tile shapes from symbolic sizes
    direct, wino = _pair(GroupConv2d, "C4", 2, 3, padding=0)
    compiled = torch.compile(wino, backend="aot_eager", fullgraph=True, dynamic=True)
    for shape in [(2, 2, 4, 10, 10), (1, 2, 4, 7, 13), (3, 2, 4, 3, 5)]:
        x = torch.randn(*shape, dtype=F64, requires_grad=True)
        y = compiled(x)
        assert y.shape == direct(x).shape
        assert _rel(y, direct(x)) <= REL64
        (gx,) = torch.autograd.grad(y.sum(), x)
        (gx_ref,) = torch.autograd.grad(direct(x).sum(), x)
        assert _rel(gx, gx_ref) <= REL64


def test_a_layer_pickled_before_the_algorithm_argument_runs_direct():
    layer = GroupConv2d(2, 3, 3)
    x = torch.randn(1, 2, 4, 6, 6)
    expected = layer(x)
    del layer.__dict__["_algorithm"]  # what unpickling an older layer leaves
    assert "algorithm" not in repr(layer)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_under_cpu_autocast_it_runs_in_float32(low):
    # it used to fail in the kernels (TypeError: unsupported ScalarType BFloat16), forward
    # and backward: autocast turned its float32 products into bfloat16
    x, w, b = _data(2, 3, 4, 9, 10, dtype=torch.float32)
    y0 = W.winograd_conv2d(x, w, b, 1)
    with torch.autocast("cpu", dtype=low):
        y = W.winograd_conv2d(x, w, b, 1)
        grads = torch.autograd.grad(y.square().sum(), (x, w, b))
        xl = x.detach().to(low).requires_grad_()  # what an autocast layer before it gives
        yl = W.winograd_conv2d(xl, w, b, 1)
        (gxl,) = torch.autograd.grad(yl.sum(), xl)
    assert y.dtype == torch.float32 and yl.dtype == torch.float32
    torch.testing.assert_close(y, y0, rtol=0, atol=0)
    for got, ref in zip(grads, torch.autograd.grad(y0.square().sum(), (x, w, b)), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert _rel(yl, F.conv2d(xl.double(), w.double(), b.double(), padding=1)) <= REL32
    assert gxl.dtype == low and gxl.shape == xl.shape
    # float64 is not autocast's to lower, here as in F.conv2d
    x64, w64, _ = _data(1, 3, 4, 6, 6)
    with torch.autocast("cpu", dtype=low):
        assert W.winograd_conv2d(x64, w64, None, 1).dtype == F64


def _tile_max(x: torch.Tensor, p: int) -> torch.Tensor:
    """Per output, the largest |input| (over channels) in the 6×6 tile it is computed from."""
    _, _, h, w = x.shape
    ho, wo, th, tw = W._tiles(h, w, p)
    a = F.pad(x.abs().amax(1, keepdim=True), (p, 4 * tw + 2 - w - p, p, 4 * th + 2 - h - p))
    m = F.max_pool2d(a, 6, 4)
    return m.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :ho, :wo]


@settings(max_examples=30, deadline=None)
@given(
    ci=st.integers(1, 12),
    h=st.integers(3, 19),
    w=st.integers(3, 19),
    p=st.integers(0, 2),
    outlier=st.sampled_from([None, 1e3, 1e6, 1e9]),
    seed=st.integers(0, 2**16),
)
def test_float32_round_off_is_bounded_per_tile(ci, h, w, p, outlier, seed):
    # docs/nn.md: an output's error scales with the largest input of its 6×6 tile (not of
    # its 3×3 window): |y - exact| <= 100 · 2⁻²⁴ · tile max · ‖w_co‖₁ (13.5 measured)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, ci, h, w, generator=gen)
    wt = torch.randn(5, ci, 3, 3, generator=gen)
    if outlier is not None:
        x.view(-1)[torch.randint(0, x.numel(), (2,), generator=gen)] = outlier
    y = W.winograd_conv2d(x, wt, None, p).double()
    exact = F.conv2d(x.double(), wt.double(), padding=p)
    bound = (
        100 * 2.0**-24 * _tile_max(x, p).double() * wt.abs().sum((1, 2, 3)).double()[:, None, None]
    )
    assert ((y - exact).abs() <= bound).all()


def test_assigning_the_algorithm_later_is_checked_as_the_argument_is():
    # a misspelt name used to be stored and the layer ran "direct" without a word
    layer = GroupConv2d(2, 3, 3, group="C4")
    with pytest.raises(
        ValueError, match=r"algorithm must be one of \('direct', 'winograd'\), got 'Winograd'"
    ):
        layer.algorithm = "Winograd"
    assert layer.algorithm == "direct"  # unchanged by the refused assignment
    with pytest.raises(ValueError, match="kernel_size=3 only, got kernel_size=5"):
        GroupConv2d(2, 3, 5).algorithm = "winograd"
    layer.algorithm = "winograd"
    wino = GroupConv2d(2, 3, 3, group="C4", algorithm="winograd")
    wino.load_state_dict(layer.state_dict())
    x = torch.randn(1, 2, 4, 9, 9)
    torch.testing.assert_close(layer(x), wino(x), rtol=0, atol=0)


@pytest.mark.parametrize("layer_cls", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("on", ["input", "weight"])
def test_forward_mode_ad_is_refused_by_name(layer_cls, on):
    # stop 36: a tangent reaching the Winograd call (a forward_ad.dual_level, the
    # documented way to get a JVP without torch.func) failed with torch's "You must
    # implement the jvp function", naming neither the layer nor the fix
    import torch.autograd.forward_ad as fwAD

    direct, wino = _pair(layer_cls, "C4", 2, 2)
    shape = (2, 2, 7, 7) if layer_cls is LiftingConv2d else (2, 2, 4, 7, 7)
    x = torch.randn(shape, dtype=F64)
    w = wino.kernels.e if layer_cls is LiftingConv2d else wino.kernels.e_e
    name = "kernels.e" if layer_cls is LiftingConv2d else "kernels.e_e"
    with fwAD.dual_level():
        with pytest.raises(ValueError, match="no forward-mode derivative.*algorithm='direct'"):
            if on == "input":
                wino(fwAD.make_dual(x, torch.ones_like(x)))
            else:
                dual = fwAD.make_dual(w.detach(), torch.ones_like(w))
                torch.func.functional_call(wino, {name: dual}, (x,), strict=False)
        # the fix runs: the direct layer's tangent
        tangent = fwAD.unpack_dual(direct(fwAD.make_dual(x, torch.ones_like(x)))).tangent
        assert tangent is not None
        # a dual level with no tangent on this call's tensors: the Winograd path runs
        assert _rel(wino(x), direct(x)) <= REL64
