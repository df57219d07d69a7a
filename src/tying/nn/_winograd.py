"""Winograd F(4×4, 3×3) convolution on the CPU: the opt-in ``algorithm="winograd"`` of the
group conv layers (issue 19).

A 3×3 correlation computes each 4×4 block of outputs from a 6×6 input tile ``d`` as
``Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` (Lavin & Gray 2016): 36 products per tile and channel
pair instead of 144, so 2.25× fewer multiplies than a direct convolution. Here:

- the kernel transform ``U = G g Gᵀ`` is one small matmul (``(36, 9) @ (9, C_out·C_in)``);
- the input tiles are transformed by numba kernels (:mod:`tying.nn._winograd_kernels`)
  into ``V (36, n, C_in)``, ``n`` tiles of a chunk;
- the 36 products are one batched matmul ``M = V Uᵀ`` ``(36, n, C_out)``;
- the output transform adds the bias and crops the last partial tiles.

The batch goes through these steps one chunk of whole images at a time (about 1 MB
of products, one image at the goal shape), so ``M`` is read back from cache, not
memory: at 8×64 channels×32² and ×33², chunks made the layer's fwd+bwd 7–12 % faster
than one pass over the whole batch (measured 2026-12-04, 1 thread). The backward is
the adjoint of each step, chunk by chunk: ``dM`` from the output gradient, then
``dU = Σ dMᵀ V`` over the chunks in order (weight) and ``dV = dM U`` (input, only when
asked), both mapped back through the transposed transforms. The forward keeps ``V``
(all chunks, one after the other) for the weight gradient; recomputing it in the
backward instead measured 3 % slower.

Round-off: the transforms' constants (up to 8 in ``A``, 5 in ``B``, 1/24 in ``G``) amplify
rounding, so float32 results are about ten times further from an exact result than a
direct convolution's (about 2e-6 against 2e-7 relative, norm-wise; see docs/nn.md).
float64 is exact to about 1e-15. The round-off is per tile: an output's error scales with
the largest input of its 6×6 tile, not of its 3×3 window, so one outlier spoils the
outputs beside it (a 1e6 pixel among N(0, 1) values: 0.2 off; direct: 8e-5 relative).

Non-finite values: a tile mixes all its 36 inputs, so an inf in one pixel would make
NaN where a direct convolution gives inf or a finite value. Whenever an output value
(or gradient) of this path is not finite, that call is recomputed by the direct
convolution, so NaN and inf land exactly where ``F.conv2d`` puts them.

The ops are ``torch.library`` custom ops (``tying::winograd_conv2d`` and its backward),
so ``torch.compile`` treats them as opaque calls and traces around them. They need
numba (``pip install 'tying[fast]'``); ``torch.func`` transforms (``vmap``,
``grad``) and double backward are not supported.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tying.nn._args import forward_ad_active, is_int

__all__ = ["available", "winograd_conv2d"]

# F(4, 3) in the usual form: y = Aᵀ[(G g) ⊙ (Bᵀ d)], the 1-D version of the 2-D rule.
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_DTYPES = (torch.float32, torch.float64)
_AUTOCAST_LOW = (torch.bfloat16, torch.float16)
_is_functorch = torch._C._functorch.is_functorch_wrapped_tensor  # as tying.core.slots
_FIX = "use algorithm='direct'"
# one chunk's products: about 1 MB, one L2 (1.5 MB, 3 MB and no chunks all measured
# slower at the goal shapes, 2026-12-04)
_CHUNK_BYTES = 1 << 20


@functools.cache
def _nb():
    """The numba kernels module (compiled on first use, cached on disk), or None."""
    try:
        from tying.nn import _winograd_kernels
    except ImportError:
        return None
    return _winograd_kernels


def available() -> bool:
    """Whether the Winograd kernels can run here (numba importable).

    Returns:
        True when numba imports.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _nb() is not None


def require_numba() -> None:
    if _nb() is None:
        raise ImportError(
            "algorithm='winograd' needs numba for its tile transforms: pip install "
            "'tying[fast]', or use algorithm='direct'"
        )


@functools.cache
def _kron_g(dtype: torch.dtype) -> Tensor:
    """``G ⊗ G`` (36, 9), computed in float64 and rounded once to ``dtype``."""
    g = torch.tensor(_G, dtype=torch.float64)
    return torch.kron(g, g).to(dtype)


@functools.cache
def _consts(dtype: torch.dtype):
    import numpy as np

    return np.array([2, 4, 5, 8, 0], dtype=np.float32 if dtype == torch.float32 else np.float64)


def _tiles(h: int, w: int, padding: int) -> tuple[int, int, int, int]:
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    return ho, wo, -(-ho // 4), -(-wo // 4)


def _memory_format(x: Tensor) -> torch.memory_format:
    # the rule F.conv2d follows on the CPU: channels-last in, channels-last out
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _weight_transform(weight: Tensor) -> Tensor:
    co, ci = weight.shape[:2]
    return (_kron_g(weight.dtype) @ weight.reshape(co * ci, 9).T).view(36, co, ci)


def check_args(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> None:
    """Refuse what the Winograd path does not serve, naming the setting and the fix."""
    if not is_int(padding, 0):
        raise ValueError(f"winograd_conv2d: padding must be a non-negative int, got {padding!r}")
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(
            f"algorithm='winograd' (F(4x4, 3x3)) serves 3x3 kernels only, got a weight of shape "
            f"{tuple(weight.shape)}; {_FIX}"
        )
    if x.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"winograd_conv2d: expected an input (B, {weight.shape[1]}, H, W) for a weight "
            f"{tuple(weight.shape)}, got shape {tuple(x.shape)}"
        )
    tensors = {"input": x, "weight": weight} | ({} if bias is None else {"bias": bias})
    for name, t in tensors.items():
        if t.device.type != "cpu":
            raise ValueError(
                f"algorithm='winograd' runs on the CPU only, got the {name} on {t.device}; {_FIX}"
            )
        if t.dtype not in _DTYPES:
            raise ValueError(
                f"algorithm='winograd' serves float32 and float64, got the {name} in {t.dtype}; "
                f"{_FIX}"
            )
        if t.dtype != x.dtype:
            raise ValueError(
                f"winograd_conv2d: the {name} is {t.dtype} but the input is {x.dtype}; give "
                f"them one dtype"
            )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"winograd_conv2d: expected a bias of shape ({weight.shape[0]},), got "
            f"{tuple(bias.shape)}"
        )
    ho, wo, _, _ = _tiles(x.shape[2], x.shape[3], padding)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"winograd_conv2d: an input of {x.shape[2]}x{x.shape[3]} with padding={padding} "
            f"is smaller than the 3x3 kernel; pad it or use a larger input"
        )


def _no_autocast(fn):
    """Run ``fn`` with CPU autocast off: under it the products would come back in bfloat16,
    which the tile kernels do not serve (the inputs were cast to float32 on the way in)."""

    @functools.wraps(fn)
    def wrapper(*args):
        if not torch.is_autocast_enabled("cpu"):
            return fn(*args)
        with torch.autocast("cpu", enabled=False):
            return fn(*args)

    return wrapper


def _chunk(b: int, t: int, co: int, itemsize: int) -> int:
    """Images per chunk: as many as keep a chunk's products ``(36, n, C_out)`` within
    ``_CHUNK_BYTES``; at least one, at most the batch."""
    return max(1, min(b, _CHUNK_BYTES // max(t * 36 * co * itemsize, 1)))


def _block(buf: Tensor, n0: int, n1: int, c: int) -> Tensor:
    """Tiles ``n0 .. n1`` of a chunk-blocked buffer: ``(36, n1 - n0, c)``, contiguous."""
    if n0 == 0 and 36 * c * n1 == buf.numel():  # the whole buffer: one view, no slice
        return buf.view(36, n1, c)
    return buf.view(-1)[36 * c * n0 : 36 * c * n1].view(36, n1 - n0, c)


@_no_autocast
def _forward_impl(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: int
) -> tuple[Tensor, Tensor]:
    """``(y, V)``: the output and the transformed input tiles the backward needs.

    The batch runs in chunks of whole images (:func:`_chunk`): each chunk's tiles are
    transformed, multiplied and transformed back while its products are still in cache.
    """
    nb = _nb()
    b, c, h, w = x.shape
    co = weight.shape[0]
    ho, wo, th, tw = _tiles(h, w, padding)
    k = _consts(x.dtype)
    t = th * tw  # tiles per image
    g = _chunk(b, t, co, x.element_size())
    # V, kept for the backward: (N, 36, C_in) in size; chunk by chunk (36, n, C_in) inside
    v = x.new_empty(b * t, 36, c)
    m = x.new_empty(g * t, 36, co)  # one chunk's products, (36, n, C_out) inside, reused
    ut = _weight_transform(weight.detach()).transpose(1, 2)  # (36, C_in, C_out)
    y = torch.empty(b, co, ho, wo, dtype=x.dtype, memory_format=_memory_format(x))
    bias_np = (torch.zeros(co, dtype=x.dtype) if bias is None else bias.detach()).numpy()
    x_np, y_np = x.detach().numpy(), y.numpy()
    ok = True
    for b0 in range(0, b, g):
        b1 = min(b, b0 + g)
        v_i = _block(v, b0 * t, b1 * t, c)  # (36, n, C_in)
        m_i = _block(m, 0, (b1 - b0) * t, co)  # (36, n, C_out)
        nb.in_fwd(x_np[b0:b1], padding, th, tw, v_i.numpy(), k)
        torch.bmm(v_i, ut, out=m_i)
        ok &= nb.out_fwd(m_i.numpy(), bias_np, th, tw, y_np[b0:b1], k)
    if not ok:
        # not finite somewhere: the direct convolution, so NaN and inf land where it puts them
        y = F.conv2d(
            x.detach(), weight.detach(), None if bias is None else bias.detach(), padding=padding
        ).contiguous(memory_format=_memory_format(x))
    return y, v


@_no_autocast
def _backward_impl(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    padding: int,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)``; the ones not asked for are empty tensors."""
    nb = _nb()
    dy = dy.detach().contiguous(memory_format=_memory_format(dy))  # channels-last stays
    x, weight = x.detach(), weight.detach()
    b, c, h, w = x.shape
    co = weight.shape[0]
    _, _, th, tw = _tiles(h, w, padding)
    k = _consts(x.dtype)
    t = th * tw
    empty = x.new_empty(0)
    dx = dw = db = empty
    ok = True
    if need_x or need_w:
        g = _chunk(b, t, co, x.element_size())  # the forward's chunks
        dm = x.new_empty(g * t, 36, co)  # one chunk's (36, n, C_out), reused
        dy_np = dy.numpy()
        if need_w:  # dU = Σ over chunks of dMᵀ V, (36, C_out, C_in)
            du = x.new_empty(36, co, c) if b else x.new_zeros(36, co, c)
        if need_x:
            u = _weight_transform(weight)  # (36, C_out, C_in)
            dx = torch.empty(b, c, h, w, dtype=x.dtype, memory_format=_memory_format(x))
            dx_np = dx.numpy()
        for b0 in range(0, b, g):
            b1 = min(b, b0 + g)
            dm_i = _block(dm, 0, (b1 - b0) * t, co)  # (36, n, C_out)
            nb.out_adj(dy_np[b0:b1], th, tw, dm_i.numpy(), k)
            if need_w:
                v_i = _block(v, b0 * t, b1 * t, c)  # (36, n, C_in)
                if b0 == 0:
                    torch.bmm(dm_i.transpose(1, 2), v_i, out=du)
                else:
                    du.baddbmm_(dm_i.transpose(1, 2), v_i)
            if need_x:
                dv = torch.bmm(dm_i, u)  # (36, n, C_in)
                ok &= nb.in_adj(dv.numpy(), padding, th, tw, dx_np[b0:b1], k)
        if need_w:
            # (9, C_out·C_in), then transposed: a third of du.view(36, -1).T @ G⊗G's time
            # here, and summed in one order (MKL's (G⊗G)ᵀ @ du is not: it changed the bits
            # between 1 and 2 threads)
            dw9 = x.new_empty(9, co * c)
            nb.kernel_adj(du.view(36, -1).numpy(), _kron_g(x.dtype).numpy(), dw9.numpy())
            dw = dw9.T.contiguous().view(weight.shape)
            # NaN or inf anywhere makes the sum so (an overflowing sum of finite values
            # only sends the call to the direct path); a third of isfinite().all()'s cost
            ok &= math.isfinite(float(dw.sum()))
    if not ok:  # not finite somewhere: the direct convolution's backward, NaN for NaN
        dx, dw, _ = torch.ops.aten.convolution_backward(
            dy, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1,
            [need_x, need_w, False],
        )  # fmt: skip
        # the layouts the custom op's fake promises
        dx = empty if dx is None else dx.contiguous(memory_format=_memory_format(x))
        dw = empty if dw is None else dw.contiguous()
    if need_b:
        db = dy.sum((0, 2, 3))
    return dx, dw, db


_NO_SECOND = (
    "algorithm='winograd' has no second derivative: a gradient taken through it with "
    "create_graph=True (a gradient penalty, a MAML meta-gradient, a Hessian) was "
    "differentiated again; refusing to differentiate twice, which would treat that "
    "gradient as a constant; use algorithm='direct' for double backward"
)


class _NoSecondDerivative(torch.autograd.Function):
    """A gradient of the Winograd path, joined to what it depends on, whose own gradient
    is an error (``once_differentiable``'s guard hangs off fresh leaves instead, so
    ``autograd.grad(..., params)`` and a gradient of ``dy``-free penalties never reached
    it: the second-order term was dropped without a word)."""

    @staticmethod
    def forward(ctx, value, *depends_on):
        return value.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(_NO_SECOND)


def _first_order_only(value: Tensor | None, *depends_on: Tensor) -> Tensor | None:
    deps = [t for t in depends_on if t.requires_grad]
    if value is None or not deps:
        return value  # a constant of everything that requires grad: right as it is
    return _NoSecondDerivative.apply(value, *deps)


class _WinogradFn(torch.autograd.Function):
    """The eager path: the same two functions as the custom ops, without their dispatch
    (about 50 µs a call, measured 2026-12-02, 1 thread)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        y, v = _forward_impl(x, weight, bias, padding)
        ctx.save_for_backward(x, weight, v)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        with torch.no_grad():
            dx, dw, db, _ = _autograd_backward(ctx, dy, None, _backward_impl)
        if torch.is_grad_enabled():  # create_graph=True: these may be differentiated again
            x, weight, _ = ctx.saved_tensors
            dx = _first_order_only(dx, dy, weight)
            dw = _first_order_only(dw, dy, x)
            db = _first_order_only(db, dy)
        return dx, dw, db, None


# -- the same as torch.library custom ops: opaque calls for torch.compile ------------------
@torch.library.custom_op("tying::winograd_conv2d", mutates_args=(), device_types="cpu")
def _forward_op(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: int
) -> tuple[Tensor, Tensor]:
    y, v = _forward_impl(x, weight, bias, padding)
    return y, v


@_forward_op.register_fake
def _forward_fake(x, weight, bias, padding):
    b, c, h, w = x.shape
    ho, wo, th, tw = _tiles(h, w, padding)
    y = x.new_empty(b, weight.shape[0], ho, wo).contiguous(memory_format=_memory_format(x))
    return y, x.new_empty(b * th * tw, 36, c)


@torch.library.custom_op("tying::winograd_conv2d_backward", mutates_args=(), device_types="cpu")
def _backward_op(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    v: Tensor,
    padding: int,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    dx, dw, db = _backward_impl(dy, x, weight, v, padding, need_x, need_w, need_b)
    # a custom op's outputs may not alias its inputs or each other
    return tuple(t.clone() if t.numel() == 0 else t for t in (dx, dw, db))


@_backward_op.register_fake
def _backward_fake(dy, x, weight, v, padding, need_x, need_w, need_b):
    dx = x.new_empty(x.shape).contiguous(memory_format=_memory_format(x)) if need_x else None
    dw = weight.new_empty(weight.shape) if need_w else None
    db = weight.new_empty(weight.shape[0]) if need_b else None
    return tuple(x.new_empty(0) if t is None else t for t in (dx, dw, db))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, padding = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.padding, ctx.has_bias = padding, bias is not None
    ctx.mark_non_differentiable(output[1])


def _autograd_backward(ctx, dy, _dv, backward=_backward_op):
    x, weight, v = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    dx, dw, db = backward(dy, x, weight, v, ctx.padding, need_x, need_w, need_b)
    return (dx if need_x else None), (dw if need_w else None), (db if need_b else None), None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def winograd_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, padding: int = 1
) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` for 3×3 kernels, by Winograd F(4×4, 3×3).

    Stride 1, dilation 1, one group, on the CPU, float32 or float64; the output follows
    the input's memory format (channels-last in, channels-last out). Under CPU
    ``torch.autocast`` it runs in float32 (bfloat16/float16 inputs are cast up, as
    ``torch.amp.custom_fwd(cast_inputs=torch.float32)`` does) and returns float32.

    Args:
        x: input ``(B, C_in, H, W)``.
        weight: kernels ``(C_out, C_in, 3, 3)``.
        bias: ``(C_out,)`` or None.
        padding: zero padding on every side (a non-negative int).

    Returns:
        ``(B, C_out, H + 2·padding − 2, W + 2·padding − 2)``.

    Raises:
        ValueError: for another kernel size, a device other than the CPU, a dtype other
            than float32/float64, mixed dtypes, an input smaller than the kernel, a
            call under a ``torch.func`` transform, or a forward-mode AD tangent.
        ImportError: when numba is not installed (``pip install 'tying[fast]'``).
        NotImplementedError: when a gradient taken with ``create_graph=True`` is
            differentiated again (no double backward; use ``algorithm='direct'``).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x, w = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
        >>> y = winograd_conv2d(x, w, None, padding=1)
        >>> torch.allclose(y, F.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)
        True
    """  # noqa: E501
    if torch.is_autocast_enabled("cpu"):
        # as torch.amp.custom_fwd(cast_inputs=torch.float32): autocast's low-precision
        # inputs run in float32 (the kernels serve no bfloat16); float64 stays float64
        x, weight, bias = (
            t if t is None or t.dtype not in _AUTOCAST_LOW else t.float() for t in (x, weight, bias)
        )
    check_args(x, weight, bias, padding)
    padding = int(padding)  # a NumPy int as the custom op's int argument
    if torch.compiler.is_compiling():  # the layer checked numba when it was built
        return _forward_op(x, weight, bias, padding)[0]
    if any(_is_functorch(t) for t in (x, weight, bias) if t is not None):
        raise ValueError(
            "algorithm='winograd' does not run under torch.func transforms (vmap, grad, "
            "jacrev, ...): its tile transforms are compiled loops outside PyTorch; use "
            "algorithm='direct' there"
        )
    if torch.autograd.forward_ad._current_level >= 0 and forward_ad_active(x, weight, bias):
        # torch's "You must implement the jvp function" named neither the layer nor the fix
        raise ValueError(
            "algorithm='winograd' has no forward-mode derivative (a tangent reached it in a "
            "torch.autograd.forward_ad.dual_level): its tile transforms are compiled loops "
            "outside PyTorch; use algorithm='direct' for forward-mode AD"
        )
    require_numba()
    return _WinogradFn.apply(x, weight, bias, padding)
