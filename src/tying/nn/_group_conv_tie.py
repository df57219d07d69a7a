"""The group conv's expanded bank and its gradient by two numba loops (issue 19, stop 23).

The general path builds the bank with one ``index_select`` of the stacked physical
blocks; its backward is ``index_add_`` into a zero-filled buffer. On the CPU both are
scalar loops: 0.4–0.8 ns (gather) and about 1 ns (scatter) per bank entry, most of
the tie's cost on a large bank (C4 64 fields: 590k entries, 0.8 ms a step). The bank
has a structure the flat index hides: every output channel reads its own slice of
the physical blocks through the same pattern, and every physical entry is read
exactly ``|G|`` times. So one table of one output channel's pattern serves them all,
and the backward is a gather of the ``|G|`` uses plus a sum (no scatter, no zero
fill), both vectorised loops (:mod:`tying.nn._group_conv_kernels`).

The tables are derived from the layer's gather index (itself read from the tied
slots, the reference) and checked against it entry by entry; a layer whose index
does not have this structure keeps the general path. Results equal the general
path's bit for bit: the forward copies, and the backward adds each entry's uses in
the order ``index_add_`` does, from ``0.0``.

The path serves eager CPU calls in float32/float64 on contiguous blocks, with numba
installed, outside ``torch.func`` transforms; everything else (``torch.compile``,
``vmap``, other dtypes and devices) takes the general path. Double backward
(``create_graph=True``) and forward-mode AD run the general path's operations
inside this function, so they work as before.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

__all__ = ["Tables", "kernels", "tables_for", "tie_bank"]

#: Below this many bank entries the call's own cost (an autograd.Function and two
#: numba calls: about 10 µs warm, but 60-90 µs inside a training step, where its Python
#: runs cold after the convolution) is more than the loops save. Measured at stop 23,
#: step minus anchor, gather -> loops: 36,864 entries +181-191 -> +242-282 µs, 147,456
#: about even (+399 -> +364, +364 -> +358), 589,824 +1,507-1,876 -> +819-1,147 µs.
MIN_BANK = 131072

_DTYPES = (torch.float32, torch.float64)


@functools.cache
def kernels():
    """The numba kernels module (compiled on first use, cached on disk), or None (no
    numba, or ``NUMBA_DISABLE_JIT``: the loops in Python would take seconds a call)."""
    try:
        from tying.nn import _group_conv_kernels
    except ImportError:
        return None
    import numba

    return None if numba.config.DISABLE_JIT else _group_conv_kernels


class Tables(NamedTuple):
    """One layer's bank pattern (CPU, int32), checked against its gather index."""

    fwd: object  # numpy (|G|, M): physical offset of each entry of output channel 0
    uses: object  # numpy (n_src, |G|, step): each physical entry's uses, in bank order
    index: torch.Tensor  # the flat gather index: the general path, for double backward/jvp
    c_out: int
    step: int  # one output channel of one physical block: C_in·k²
    block: int  # one physical block: C_out·C_in·k²
    n_src: int
    bank_shape: tuple
    grad_shape: tuple  # (n_src, C_out, C_in, k, k): the physical blocks stacked


def tables_for(index: torch.Tensor, c_out: int, c_in: int, k: int, n_src: int) -> Tables | None:
    """The tables of the gather ``index`` (shape ``(C_out·|G|, C_in·o_in, k, k)``), or
    None when the index does not have the per-channel structure (the general path)."""
    step, block = c_in * k * k, c_out * c_in * k * k
    n = index.numel()
    if n < MIN_BANK or n_src * block >= 2**31 or n % c_out:
        return None
    idx = index.reshape(c_out, -1).long()  # (C_out, |G|·M)
    first = idx[0]
    co = torch.arange(c_out, device="cpu").unsqueeze(1) * step
    if not torch.equal(idx, first.unsqueeze(0) + co):
        return None
    if not bool(((first % block) < step).all()) or not bool((first // block < n_src).all()):
        return None  # a channel would read outside its own slice of a block
    # each physical entry (src, r) of channel 0 must be read the same number of times
    phys = (first // block) * step + first % block  # (src, r) -> src·step + r
    counts = torch.bincount(phys, minlength=n_src * step)
    n_use = int(counts[0])
    if counts.numel() != n_src * step or not bool((counts == n_use).all()):
        return None
    n_g = index.shape[0] // c_out
    fwd = first.view(n_g, -1).to(torch.int32)
    order = torch.argsort(phys, stable=True)  # positions by entry, ascending within one
    uses = order.view(n_src, step, n_use).permute(0, 2, 1).contiguous().to(torch.int32)
    return Tables(
        fwd.numpy(),
        uses.numpy(),
        index.reshape(-1).to(torch.int32),
        c_out,
        step,
        block,
        n_src,
        tuple(index.shape),
        (n_src, c_out, c_in, k, k),
    )


def usable(physical: list[torch.Tensor]) -> bool:
    """Whether the loops may serve these blocks now (else the general path)."""
    p = physical[0]
    return (
        p.device.type == "cpu"
        and p.dtype in _DTYPES
        and not torch._C._are_functorch_transforms_active()
        and all(
            q.is_contiguous() and type(q) in (torch.Tensor, torch.nn.Parameter) for q in physical
        )
        and kernels() is not None
    )


class _TieBank(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tables, *physical: torch.Tensor) -> torch.Tensor:
        ctx.t = t
        stacked = torch.stack(physical) if len(physical) > 1 else physical[0].detach()
        bank = torch.empty(t.bank_shape, dtype=stacked.dtype, device=stacked.device)
        kernels().gather(stacked.view(-1).numpy(), t.fwd, t.c_out, t.step, bank.view(-1).numpy())
        return bank

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t: Tables = ctx.t
        if torch.is_grad_enabled():  # create_graph: the general path's differentiable op
            flat = grad.new_zeros(t.n_src * t.block).index_add(0, t.index, grad.reshape(-1))
            return (None, *flat.view(t.grad_shape).unbind(0))
        # as few Python lines as can be: right after the convolution's backward every
        # line runs cold, several times its warm cost (issue 19)
        out = torch.empty(t.grad_shape, dtype=grad.dtype, device=grad.device)
        kernels().scatter_sum(
            grad.contiguous().view(-1).numpy(), t.uses, t.c_out, t.block, out.view(-1).numpy()
        )
        return (None, *out.unbind(0))

    @staticmethod
    def jvp(ctx, _t, *tangents: torch.Tensor) -> torch.Tensor:
        t: Tables = ctx.t
        stacked = torch.stack(tangents) if len(tangents) > 1 else tangents[0]
        return torch.index_select(stacked.reshape(-1), 0, t.index).view(t.bank_shape)


def tie_bank(t: Tables, physical: list[torch.Tensor]) -> torch.Tensor:
    """The expanded bank of ``physical`` by the loops (call :func:`usable` first)."""
    return _TieBank.apply(t, *physical)
