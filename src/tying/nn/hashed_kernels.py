"""Lookup kernels of the hashed embeddings: a fused CPU path (numba) and a pure-torch path.

Both compute the same numbers (tests compare them); they differ in cost:

- the torch path builds the ``(n, D)`` bucket index and sign tensors and gathers
  through autograd; it runs anywhere (GPU, ``torch.compile(fullgraph=True)``);
- the fused path (when ``numba`` is importable, the tensors are on the CPU and not
  under ``torch.compile``) hashes, gathers and pools in one loop, and its backward is
  one scatter-add into the ``B`` stored values: no ``(n, D)`` index is ever stored and
  the pooled ``EmbeddingBag`` never materialises its ``(n, D)`` rows.

With ``sparse=True`` (:class:`FusedKeepLookup`, :class:`SparseGather`) the forward
keeps the indices it read and the backward returns a sparse COO gradient of the
stored values, as ``nn.Embedding(sparse=True)`` does: the scatter then happens in the
optimizer step. Aligned blocks (``aligned=True``) are rows of a ``(B/Z, Z)`` table, so
their sparse gradient is ``n·D/Z`` rows of ``Z`` values; per-entry tables give ``n·D``
single values.

Set ``TYING_NO_NUMBA=1`` to force the torch path.

Example:
    >>> import torch
    >>> from tying.nn import HashedEmbedding
    >>> emb = HashedEmbedding(1000, 8, buckets=64, mode="block", block=4)
    >>> ids = torch.tensor([1, 999])
    >>> fused = emb(ids)                     # fused kernels when numba is installed
    >>> import unittest.mock
    >>> with unittest.mock.patch("tying.nn.hashed_embedding.fused_available", lambda w: False):
    ...     plain = emb(ids)                 # the torch path
    >>> torch.equal(fused, plain)
    True
"""

from __future__ import annotations

import functools
import os

import torch

from tying.nn._sparse import sparse_coo


@functools.cache
def _nb():
    """The numba kernels module (compiled on first use), or None when numba is unavailable."""
    if os.environ.get("TYING_NO_NUMBA"):
        return None
    try:
        from tying.nn import _hashed_numba
    except ImportError:
        return None
    return _hashed_numba


def fused_available(w: torch.Tensor) -> bool:
    """Whether the fused CPU kernels serve this stored tensor (else the torch path)."""
    return (
        w.device.type == "cpu"
        and w.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        # a traced graph records the numba kernels as Python ops it cannot save, and the
        # pooled one failed to trace ("unordered_map::at"): trace the torch path (stop 52)
        and not torch.jit.is_tracing()
        and _nb() is not None
    )


def _items(n: int, bags, fac, dtype):
    """Per-item output row and weight (numpy) for the kernels; ``bags=None``: one row each."""
    import numpy as np

    rows = np.arange(n, dtype=np.int64) if bags is None else bags.numpy()
    f = np.ones(n, dtype=np.float32 if dtype == torch.float32 else np.float64)
    return rows, f if fac is None else fac.to(dtype).numpy()


def _differentiable_grad(plain, g: torch.Tensor, shape, dtype) -> torch.Tensor:
    """The stored values' gradient ``Jᵀg`` through the torch path, as a graph of ``g``.

    ``create_graph=True`` (a gradient penalty, a MAML meta-gradient): the kernels' scatter
    is a numba loop that autograd cannot record. The lookup is linear in the stored
    values, so ``J`` does not depend on them and a zero leaf stands in for them: the
    gradient depends on ``g`` only, which this graph keeps (stop 34).
    """
    leaf = torch.zeros(shape, dtype=dtype, device=g.device, requires_grad=True)
    (gw,) = torch.autograd.grad(plain(leaf), leaf, g, create_graph=True)
    return gw


class FusedLookup(torch.autograd.Function):
    """Hashed lookup (entry or block mode), optionally pooled into bags, in one fused loop.

    ``fac`` weighs each item (per-sample weight × 1/bag size); it is data, not trained.
    The backward recomputes the hashes (one per entry or block) and scatter-adds
    straight into the ``B`` stored values. ``plain(w)`` is the same lookup in torch ops:
    the backward under ``create_graph=True`` and the forward-mode ``jvp`` run it.
    """

    @staticmethod
    def forward(ctx, w, ids, coef, c1, c2, signed, Z, nbags, bags, fac, plain):
        k = _nb()
        n = ids.shape[0]
        D = c1.shape[0] * max(Z, 1)  # Z = 0: entry mode, one term per column
        rows, f = _items(n, bags, fac, w.dtype)
        pooled = bags is not None
        out = torch.zeros(nbags, D, dtype=w.dtype) if pooled else torch.empty(n, D, dtype=w.dtype)
        hashes = (ids.numpy(), coef.numpy(), c1.numpy(), c2.numpy(), bool(signed))
        wn = w.detach().numpy()
        if Z == 0:  # entry mode: the backward re-hashes (as cheap as reading saved codes)
            k.entry_fwd(wn, *hashes, f, rows, out.numpy(), pooled)
            off = sf = None
        else:  # one hash per block; the offsets are kept for the backward (n·D/Z values)
            off = torch.empty(n, c1.shape[0], dtype=torch.int64)
            sf = torch.empty(n, c1.shape[0], dtype=w.dtype)
            k.block_hash_fwd(wn, *hashes, f, Z, rows, out.numpy(), pooled, off.numpy(), sf.numpy())
        ctx.save_for_backward(ids, coef, c1, c2, off, sf)
        ctx.args = (signed, Z, w.shape[0], w.dtype, bags, fac)
        ctx.plain = plain
        return out

    @staticmethod
    def jvp(ctx, w_t, *_):
        return ctx.plain(w_t)  # linear in w: the tangent's lookup

    @staticmethod
    def backward(ctx, g):
        signed, Z, B, dtype, bags, fac = ctx.args
        if torch.is_grad_enabled() and g.requires_grad:  # create_graph=True
            return _differentiable_grad(ctx.plain, g, (B,), dtype), *(None,) * 10
        k = _nb()
        ids, coef, c1, c2, off, sf = ctx.saved_tensors
        rows, f = _items(ids.shape[0], bags, fac, dtype)
        gw = torch.zeros(B, dtype=dtype)
        hashes = (ids.numpy(), coef.numpy(), c1.numpy(), c2.numpy(), bool(signed))
        g = g.contiguous().to(dtype).numpy()
        if Z == 0:
            k.entry_bwd(*hashes, f, rows, g, gw.numpy())
        else:
            k.block_bwd(off.numpy(), sf.numpy(), Z, rows, g, gw.numpy())
        return gw, *(None,) * 10


def _sparse(idx: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """An uncoalesced sparse COO gradient, as ``nn.Embedding(sparse=True)`` returns."""
    return sparse_coo(
        idx.reshape(1, -1), values, tuple(shape), check_invariants=False, is_coalesced=False
    )


class SparseGather(torch.autograd.Function):
    """``w[idx]`` whose gradient is sparse: ``idx`` and the incoming values, nothing scattered.

    The torch path of per-entry ``sparse=True`` (``F.embedding`` serves 2-D tables).
    """

    @staticmethod
    def forward(ctx, w, idx):
        ctx.save_for_backward(idx)
        ctx.shape = w.shape
        return w[idx]

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        shape = ctx.shape
        return _sparse(idx, g.reshape(-1, *shape[1:]), shape), None


class FusedKeepLookup(torch.autograd.Function):
    """Fused lookup that keeps the indices it read: per-entry ``sparse=True`` and aligned blocks.

    ``Z = 0``: per-entry mode, ``w`` (B,), keeps the ``(n, D)`` buckets (the backward
    re-hashes the signs). ``Z > 0``: aligned blocks, ``w`` (B/Z, Z), keeps the
    ``(n, D/Z)`` block rows and their ``(D/Z, n)`` sign × item weight (block-major:
    see ``aligned_hash``). The backward is a sparse COO
    gradient when ``sparse``: the incoming gradient signed and weighed (one pass), or
    the incoming gradient itself for an unsigned, unpooled lookup (no pass, as
    ``nn.Embedding(sparse=True)``); else (aligned blocks only) the dense scatter-add.
    ``plain`` as for :class:`FusedLookup`.
    """

    @staticmethod
    def forward(ctx, w, ids, coef, c1, c2, signed, Z, nbags, bags, fac, sparse, plain):
        k = _nb()
        n, C = ids.shape[0], c1.shape[0]
        D = C * max(Z, 1)
        rows, f = _items(n, bags, fac, w.dtype)
        pooled = bags is not None
        out = torch.zeros(nbags, D, dtype=w.dtype) if pooled else torch.empty(n, D, dtype=w.dtype)
        args = (ids.numpy(), coef.numpy(), c1.numpy(), c2.numpy(), bool(signed), f, rows)
        idx = torch.empty(n, C, dtype=torch.int64)
        if Z == 0:
            k.entry_keep_fwd(w.detach().numpy(), *args, out.numpy(), pooled, idx.numpy())
            sf = None
        else:
            sf = torch.empty(C, n, dtype=w.dtype)
            k.aligned_fwd(w.detach().numpy(), *args, out.numpy(), pooled, idx.numpy(), sf.numpy())
        ctx.save_for_backward(idx, sf, ids, coef, c2)
        ctx.args = (Z, w.shape, w.dtype, bags, fac, signed, sparse)
        ctx.plain = plain
        return out

    @staticmethod
    def jvp(ctx, w_t, *_):
        return ctx.plain(w_t)

    @staticmethod
    def backward(ctx, g):
        Z, shape, dtype, bags, fac, signed, sparse = ctx.args
        if torch.is_grad_enabled() and g.requires_grad:  # create_graph=True
            return _differentiable_grad(ctx.plain, g, shape, dtype), *(None,) * 11
        k = _nb()
        idx, sf, ids, coef, c2 = ctx.saved_tensors
        n, C = idx.shape
        g = g.to(dtype)
        if sparse and not signed and bags is None and fac is None:  # the gradient as it is
            return _sparse(idx, g.reshape(n * C, *shape[1:]), shape), *(None,) * 11
        rows, f = _items(n, bags, fac, dtype)
        g = g.contiguous().numpy()
        if sparse:
            vals = torch.empty(n, C, max(Z, 1), dtype=dtype)
            if Z == 0:
                hashes = (ids.numpy(), coef.numpy(), c2.numpy(), bool(signed), f, rows)
                k.entry_sparse_values(*hashes, g, vals.view(n, C).numpy())
            else:
                k.sparse_values(sf.numpy(), Z, rows, g, vals.numpy())
            gw = _sparse(idx, vals.reshape(n * C, *shape[1:]), shape)
        else:  # aligned blocks, dense gradient: the scatter-add of the circular kernel
            gw = torch.zeros(shape, dtype=dtype)
            sf = sf.t().contiguous()
            k.block_bwd((idx * Z).numpy(), sf.numpy(), Z, rows, g, gw.view(-1).numpy())
        return gw, *(None,) * 11
