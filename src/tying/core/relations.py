"""Relations: how a tied slot's logical value is computed from its source.

A relation maps the *source* value (the physical parameter, or another slot's
logical value) to the *logical* value a model reads. ``Same`` installs the very
same ``nn.Parameter``; every other relation computes a view in the forward
pass, so one physical tensor is stored and trained.

Used without a source (``tying.share("conv.weight", relation=tying.Mirrored())``)
a relation re-parametrises the slot itself: a new, smaller physical parameter
is created from the current value with :meth:`Relation.right_inverse`.

Example:
    >>> import torch, tying
    >>> w = torch.arange(6.0).reshape(2, 3)
    >>> tying.Transposed()(w, shape=(3, 2)).shape
    torch.Size([3, 2])
    >>> tying.Mirrored()(torch.tensor([1.0, 2.0]), shape=(3,))
    tensor([1., 2., 1.])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import torch

Shape = tuple[int, ...]


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


@dataclasses.dataclass(frozen=True)
class Relation:
    """Base class. Subclasses implement :meth:`__call__` and :meth:`source_shape`."""

    kind: ClassVar[str] = "Relation"

    def source_shape(self, logical: Shape) -> Shape:
        """The source shape this relation needs to produce a ``logical``-shaped value.

        Raises:
            ValueError: when no source shape can produce ``logical``.
        """
        raise NotImplementedError

    def check(self, source: Shape, logical: Shape) -> None:
        """Raise ValueError unless ``source`` maps to ``logical`` under this relation."""
        need = self.source_shape(logical)
        if tuple(source) != tuple(need):
            raise ValueError(
                f"{self!r} maps a source of shape {tuple(need)} to {tuple(logical)}, "
                f"got a source of shape {tuple(source)}"
            )

    def extras(self, logical: Shape, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Learnable parameters this relation owns (e.g. ``Scaled``'s scale)."""
        return {}

    def right_inverse(self, logical: torch.Tensor) -> torch.Tensor:
        """A source value that reproduces ``logical`` as closely as this relation can."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-parametrise a slot by itself")

    def __call__(self, source: torch.Tensor, *, shape: Shape, **extras: torch.Tensor):
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-able description; :func:`relation_from_spec` inverts it."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            "type": self.kind,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        }


@dataclasses.dataclass(frozen=True)
class Same(Relation):
    """The very same ``nn.Parameter`` object: zero overhead, gradients summed by autograd."""

    kind: ClassVar[str] = "Same"

    def source_shape(self, logical: Shape) -> Shape:
        return tuple(logical)

    def right_inverse(self, logical: torch.Tensor) -> torch.Tensor:
        return logical

    def __call__(self, source, *, shape, **extras):
        return source


@dataclasses.dataclass(frozen=True)
class Transposed(Relation):
    """The source with two dims swapped (default the first two): ``W_dec = W_encᵀ``."""

    kind: ClassVar[str] = "Transposed"
    dims: tuple[int, int] = (0, 1)

    def source_shape(self, logical: Shape) -> Shape:
        if len(logical) < 2:
            raise ValueError(
                f"Transposed needs a tensor of at least 2 dims, got shape {tuple(logical)}"
            )
        a, b = (_norm_dim(d, len(logical)) for d in self.dims)
        out = list(logical)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def right_inverse(self, logical):
        return logical.transpose(*self.dims)

    def __call__(self, source, *, shape, **extras):
        return source.transpose(*self.dims)


@dataclasses.dataclass(frozen=True)
class Rotated(Relation):
    """The source rotated by ``k`` quarter turns in the plane of ``dims`` (exact: rot90)."""

    kind: ClassVar[str] = "Rotated"
    k: int = 1
    dims: tuple[int, int] = (-2, -1)

    def source_shape(self, logical: Shape) -> Shape:
        if len(logical) < 2:
            raise ValueError(
                f"Rotated needs a tensor of at least 2 dims, got shape {tuple(logical)}"
            )
        if self.k % 2 == 0:
            return tuple(logical)
        a, b = (_norm_dim(d, len(logical)) for d in self.dims)
        out = list(logical)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def right_inverse(self, logical):
        return torch.rot90(logical, -self.k, self.dims)

    def __call__(self, source, *, shape, **extras):
        return torch.rot90(source, self.k, self.dims)


@dataclasses.dataclass(frozen=True)
class Flipped(Relation):
    """The source reversed along ``dims`` (a mirror image)."""

    kind: ClassVar[str] = "Flipped"
    dims: tuple[int, ...] = (-1,)

    def source_shape(self, logical: Shape) -> Shape:
        for d in self.dims:
            if not -len(logical) <= d < len(logical):
                raise ValueError(
                    f"Flipped dims {self.dims} out of range for shape {tuple(logical)}"
                )
        return tuple(logical)

    def right_inverse(self, logical):
        return torch.flip(logical, self.dims)

    def __call__(self, source, *, shape, **extras):
        return torch.flip(source, self.dims)


@dataclasses.dataclass(frozen=True)
class Mirrored(Relation):
    """A palindrome along ``dim``: ``w[i] == w[n-1-i]``, stored as ``ceil(n/2)`` values."""

    kind: ClassVar[str] = "Mirrored"
    dim: int = -1

    def source_shape(self, logical: Shape) -> Shape:
        if not logical:
            raise ValueError("Mirrored needs a tensor of at least 1 dim, got a scalar")
        d = _norm_dim(self.dim, len(logical))
        out = list(logical)
        out[d] = math.ceil(logical[d] / 2)
        return tuple(out)

    def right_inverse(self, logical):
        d = _norm_dim(self.dim, logical.ndim)
        m = math.ceil(logical.shape[d] / 2)
        front = logical.narrow(d, 0, m)
        back = torch.flip(logical, (d,)).narrow(d, 0, m)
        return (front + back) / 2

    def __call__(self, source, *, shape, **extras):
        d = _norm_dim(self.dim, source.ndim)
        n = shape[d]
        tail = torch.flip(source.narrow(d, 0, n // 2), (d,))
        return torch.cat([source, tail], dim=d)


@dataclasses.dataclass(frozen=True)
class Scaled(Relation):
    """A learnable scalar times the source (the scalar starts at ``init``)."""

    kind: ClassVar[str] = "Scaled"
    init: float = 1.0

    def source_shape(self, logical: Shape) -> Shape:
        return tuple(logical)

    def extras(self, logical, like):
        return {"scale": torch.full((), float(self.init), dtype=like.dtype, device=like.device)}

    def right_inverse(self, logical):
        if self.init == 0:
            raise ValueError("Scaled(init=0) cannot re-parametrise a slot: the source would be inf")
        return logical / self.init

    def __call__(self, source, *, shape, scale, **extras):
        return scale * source


_P = 2**31 - 1  # a Mersenne prime: (a*i + b) mod P is a universal hash for i < P


@dataclasses.dataclass(frozen=True)
class Hashed(Relation):
    """HashedNets: entry ``i`` of the logical tensor reads bucket ``h(i)`` (times a ±1 sign).

    Only ``buckets`` values are stored. ``h(i) = ((a·i + b) mod P) mod B`` with ``a, b``
    drawn from ``seed``; the sign hash uses a second pair.
    """

    kind: ClassVar[str] = "Hashed"
    buckets: int = 1024
    seed: int = 0
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.buckets, int) or self.buckets < 1:
            raise ValueError(f"Hashed(buckets=...) must be a positive int, got {self.buckets!r}")
        # drawn once, so that the forward pass is pure torch (torch.compile fullgraph)
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "_coeffs", tuple(int(v) for v in rng.integers(1, _P, size=4)))

    def source_shape(self, logical: Shape) -> Shape:
        if math.prod(logical) >= _P:
            raise ValueError(
                f"Hashed supports fewer than 2**31-1 entries, got shape {tuple(logical)}"
            )
        return (self.buckets,)

    def index_and_sign(self, numel: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bucket index (and ±1 sign, or None) of each of the first ``numel`` entries."""
        return self.hash(torch.arange(numel, device=device, dtype=torch.int64))

    def hash(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bucket index (and ±1 sign, or None) of flat positions ``i`` (int64, any shape).

        Lets a layer hash only the entries it reads (e.g. the rows of an embedding
        lookup) instead of materialising the whole logical tensor.
        """
        a1, b1, a2, b2 = self._coeffs
        idx = ((i * a1 + b1) % _P) % self.buckets
        if not self.signed:
            return idx, None
        sign = (((i * a2 + b2) % _P) % 2) * 2 - 1
        return idx, sign

    def right_inverse(self, logical):
        idx, sign = self.index_and_sign(logical.numel(), logical.device)
        flat = logical.reshape(-1)
        if sign is not None:
            flat = flat * sign.to(flat.dtype)
        total = torch.zeros(self.buckets, dtype=flat.dtype, device=flat.device).index_add_(
            0, idx, flat
        )
        count = torch.zeros(self.buckets, dtype=flat.dtype, device=flat.device).index_add_(
            0, idx, torch.ones_like(flat)
        )
        return total / count.clamp_min(1)

    def __call__(self, source, *, shape, **extras):
        numel = math.prod(shape)
        idx, sign = self.index_and_sign(numel, source.device)
        out = source[idx]
        if sign is not None:
            out = out * sign.to(out.dtype)
        return out.reshape(shape)


RELATIONS: dict[str, type[Relation]] = {
    cls.kind: cls for cls in (Same, Transposed, Rotated, Flipped, Mirrored, Scaled, Hashed)
}


def relation_from_spec(spec: dict[str, Any]) -> Relation:
    """Rebuild a relation from :meth:`Relation.spec`.

    Raises:
        ValueError: for an unknown relation type, naming the known ones.
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in RELATIONS:
        raise ValueError(f"unknown relation type {kind!r}; known: {sorted(RELATIONS)}")
    fields = {f.name: f for f in dataclasses.fields(RELATIONS[kind])}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in fields}
    return RELATIONS[kind](**kwargs)
