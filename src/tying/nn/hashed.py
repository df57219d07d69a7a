"""HashedNets layers: a large logical weight matrix stored in ``B`` hash buckets.

Claim C8 (``hashednets``): entry ``(i, j)`` of a ``V × D`` matrix reads bucket
``h(i·D + j)`` times a ±1 sign hash; only the ``B ≪ V·D`` buckets are stored and
trained, and every logical weight that hashes to a bucket shares its value. Small
``B`` means more collisions ("interference") and a worse model.

Both layers tie their ``weight`` slot with a :class:`tying.Plan` using
:class:`tying.Hashed`, so ``tying.count`` reports the logical ``V·D`` against the
physical ``B`` and ``tying.save`` stores the buckets only. Memory is O(B):

- the dense weight is created on the ``meta`` device (no storage) before the plan
  replaces it by ``weight_physical`` of shape ``(B,)``;
- :class:`HashedEmbedding` hashes only the rows it looks up
  (``Hashed.hash(flat_positions)``): a batch of ``n`` indices costs ``n·D`` hashes,
  never a ``V × D`` index;
- :class:`HashedLinear` must multiply by its whole ``(out, in)`` matrix, so its
  forward materialises it for the matmul (transient, like the dense layer's weight);
  what it stores and trains is ``B`` numbers.

Reading ``layer.weight`` materialises the logical matrix (for inspection and export).

Example:
    >>> import torch, tying
    >>> emb = HashedEmbedding(50_000, 64, buckets=4096)
    >>> emb(torch.tensor([[1, 49_999]])).shape
    torch.Size([1, 2, 64])
    >>> c = tying.count(emb); (c.logical, c.physical)
    (3200000, 4096)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Hashed, Plan, share

__all__ = ["HashedEmbedding", "HashedLinear"]


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _hash_weight(module: nn.Module, shape: tuple[int, int], relation: Hashed, device, dtype):
    """Tie ``module.weight`` (logical ``shape``) to ``relation.buckets`` stored values.

    The logical weight only ever exists on the meta device, so no ``V × D`` storage
    is allocated; the physical buckets are then created for real.
    """
    if math.prod(shape) >= 2**31 - 1:
        raise ValueError(
            f"{type(module).__name__}: the logical weight {shape} has {math.prod(shape):,} "
            f"entries; tying.Hashed supports fewer than 2**31-1; split the layer"
        )
    module.weight = nn.Parameter(torch.empty(shape, device="meta", dtype=dtype))
    Plan([share("weight", relation=relation)]).apply(module)
    module._parameters["weight_physical"] = nn.Parameter(
        torch.empty(relation.buckets, device=device, dtype=dtype)
    )


class HashedEmbedding(nn.Module):
    """An embedding table of ``V × D`` logical entries stored in ``buckets`` values (claim C8).

    Entry ``(i, j)`` is ``sign(i·D + j) · weight_physical[h(i·D + j)]`` with the
    hashes of ``tying.Hashed(buckets, seed, signed)``. A lookup hashes only the
    rows it reads, so memory is O(B + batch·D).

    Args:
        num_embeddings: logical rows ``V``.
        embedding_dim: columns ``D``.
        buckets: stored values ``B`` (need not be below ``V·D``; collisions still happen).
        seed: picks the hash functions.
        signed: multiply by a ±1 sign hash (unbiased inner products, as in HashedNets).
        device, dtype: of the stored buckets.

    Shape:
        integer indices of any shape ``(*)`` → ``(*, D)``.

    Raises:
        ValueError: for non-positive sizes, or ``V·D ≥ 2**31-1``.
        TypeError: for non-integer indices.
        IndexError: for an index outside ``[0, V)``.

    Example:
        >>> emb = HashedEmbedding(10, 4, buckets=8)
        >>> idx = torch.tensor([3, 7])
        >>> torch.equal(emb(idx), emb.weight[idx])   # the lookup equals the logical table's rows
        True
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        buckets: int,
        *,
        seed: int = 0,
        signed: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.num_embeddings = _positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("embedding_dim", embedding_dim)
        self.relation = Hashed(_positive_int("buckets", buckets), seed, signed)
        _hash_weight(self, (num_embeddings, embedding_dim), self.relation, device, dtype)
        self.reset_parameters()

    @property
    def buckets(self) -> int:
        return self.relation.buckets

    def fan_in(self) -> int:
        """1: each output entry reads one stored value (claim B15)."""
        return 1

    def memory_ratio(self) -> float:
        """Stored / logical entries: ``B / (V·D)``."""
        return self.buckets / (self.num_embeddings * self.embedding_dim)

    def reset_parameters(self) -> None:
        """Buckets ~ N(0, 1), like ``nn.Embedding``: every logical entry then is N(0, 1)."""
        with torch.no_grad():
            self.weight_physical.normal_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"HashedEmbedding expects int64/int32 indices, got {idx.dtype}")
        if not torch.compiler.is_compiling() and idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.num_embeddings:
                raise IndexError(
                    f"HashedEmbedding: indices must be in [0, {self.num_embeddings}), got "
                    f"min {lo}, max {hi}"
                )
        cols = torch.arange(self.embedding_dim, device=idx.device, dtype=torch.int64)
        flat = idx.to(torch.int64).unsqueeze(-1) * self.embedding_dim + cols  # (*, D)
        bucket, sign = self.relation.hash(flat)
        out = self.weight_physical[bucket]  # (*, D)
        return out if sign is None else out * sign.to(out.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, buckets={self.buckets}, "
            f"seed={self.relation.seed}, signed={self.relation.signed}"
        )


class HashedLinear(nn.Module):
    """A linear layer whose ``(out, in)`` weight is stored in ``buckets`` values (claim C8).

    Args:
        in_features, out_features: as for :class:`torch.nn.Linear`.
        buckets: stored weight values ``B``.
        seed: picks the hash functions.
        signed: multiply by a ±1 sign hash.
        bias: a dense (unhashed) bias of ``out_features``.
        device, dtype: of the parameters.

    Shape:
        ``(*, in)`` → ``(*, out)``.

    Raises:
        ValueError: for non-positive sizes, ``in·out ≥ 2**31-1``, or an input whose
            last dim is not ``in_features``.

    Example:
        >>> import tying
        >>> layer = HashedLinear(300, 100, buckets=1000, bias=False)
        >>> layer(torch.randn(5, 300)).shape
        torch.Size([5, 100])
        >>> tying.count(layer).ratio
        30.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        buckets: int,
        *,
        seed: int = 0,
        signed: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.relation = Hashed(_positive_int("buckets", buckets), seed, signed)
        _hash_weight(self, (out_features, in_features), self.relation, device, dtype)
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    @property
    def buckets(self) -> int:
        return self.relation.buckets

    def fan_in(self) -> int:
        """``in_features``: the inputs of one output unit, however many share a bucket."""
        return self.in_features

    def memory_ratio(self) -> float:
        """Stored / logical weight entries: ``B / (in·out)``."""
        return self.buckets / (self.in_features * self.out_features)

    def reset_parameters(self) -> None:
        """Buckets and bias ~ U(±1/√in_features), the rule of ``nn.Linear``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_physical.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"HashedLinear expected (*, {self.in_features}), got shape {tuple(x.shape)}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"buckets={self.buckets}, seed={self.relation.seed}, bias={self.bias is not None}"
        )
