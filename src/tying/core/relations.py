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
import numbers
from typing import Any, ClassVar

import numpy as np
import torch

from tying.core.errors import TieError

Shape = tuple[int, ...]


_HALF = (torch.float16, torch.bfloat16)  # too few bits to sum in: averaging relations upcast


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


# -- argument checks ------------------------------------------------------------------
# Every relation validates its arguments when it is built (types, values) and against
# the slot's shape when it is applied (dims in range, distinct after normalising), so a
# relation that would compute something else than declared never reaches a model.


def _as_int(rel: str, field: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TieError(
            f"{rel}: {field} must be an int, got {value!r} ({type(value).__name__}); {fix}"
        )
    return int(value)


def _as_dims(rel: str, value: Any, n: int | None, fix: str) -> tuple[int, ...]:
    """A tuple of distinct ints (exactly ``n`` of them, or at least one when ``n`` is None)."""
    if not isinstance(value, (tuple, list)):
        raise TieError(
            f"{rel}: dims must be a tuple of ints, got {value!r} ({type(value).__name__}); {fix}"
        )
    dims = tuple(_as_int(rel, "each of dims", d, fix) for d in value)
    if (n is not None and len(dims) != n) or not dims:
        want = f"exactly {n}" if n is not None else "at least one"
        raise TieError(f"{rel}: dims needs {want} dim(s), got {tuple(value)!r}; {fix}")
    if len(set(dims)) != len(dims):
        raise TieError(
            f"{rel}: dims {dims} repeats a dim, so the relation would not do what it says; {fix}"
        )
    return dims


def _dims_for(rel: Relation, dims: tuple[int, ...], logical: Shape) -> tuple[int, ...]:
    """``dims`` normalised against a slot of shape ``logical``: in range and distinct."""
    ndim = len(logical)
    for d in dims:
        if not -ndim <= d < ndim:
            raise TieError(
                f"{rel!r}: dim {d} is out of range for a slot of shape {tuple(logical)} "
                f"({ndim} dims, valid dims {-ndim}..{ndim - 1}); choose dims that exist"
            )
    out = tuple(_norm_dim(d, ndim) for d in dims)
    if len(set(out)) != len(out):
        raise TieError(
            f"{rel!r}: dims {dims} name the same dim of a slot of shape {tuple(logical)} "
            f"(normalised {out}); choose distinct dims"
        )
    return out


@dataclasses.dataclass(frozen=True)
class Relation:
    """Base class. Subclasses implement :meth:`__call__` and :meth:`source_shape`."""

    kind: ClassVar[str] = "Relation"

    def source_shape(self, logical: Shape) -> Shape:
        """The source shape this relation needs to produce a ``logical``-shaped value.

        Raises:
            TieError: when no source shape can produce ``logical`` (a ValueError).
        """
        raise NotImplementedError

    def check(self, source: Shape, logical: Shape) -> None:
        """Raise TieError unless ``source`` maps to ``logical`` under this relation."""
        need = self.source_shape(logical)
        if tuple(source) != tuple(need):
            raise TieError(
                f"{self!r} maps a source of shape {tuple(need)} to {tuple(logical)}, "
                f"got a source of shape {tuple(source)}"
            )

    def extras(self, logical: Shape, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Learnable parameters this relation owns (e.g. ``Scaled``'s scale)."""
        return {}

    def reads_as(self, other: Relation, logical: Shape) -> bool:
        """Whether ``other`` computes the same ``logical``-shaped slot from the same stored
        values (``tying.load`` keeps the model's tie then); equal relations by default.

        Example:
            >>> Transposed().reads_as(Transposed(), (2, 3)), Same().reads_as(Transposed(), (2, 3))
            (True, False)
        """
        return self == other

    def check_reparam(self) -> None:
        """Raise TieError when this relation cannot re-parametrise a slot by itself."""
        if type(self).right_inverse is Relation.right_inverse:
            raise TieError(f"{self!r} cannot re-parametrise a slot by itself; give like=")

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

    def __post_init__(self):
        fix = "e.g. Transposed(dims=(0, 1))"
        object.__setattr__(self, "dims", _as_dims("Transposed", self.dims, 2, fix))

    def source_shape(self, logical: Shape) -> Shape:
        if len(logical) < 2:
            raise TieError(
                f"Transposed needs a tensor of at least 2 dims, got shape {tuple(logical)}"
            )
        a, b = _dims_for(self, self.dims, logical)
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

    def __post_init__(self):
        fix = "e.g. Rotated(k=1, dims=(-2, -1)) (k counts quarter turns)"
        object.__setattr__(self, "k", _as_int("Rotated", "k", self.k, fix))
        object.__setattr__(self, "dims", _as_dims("Rotated", self.dims, 2, fix))

    def source_shape(self, logical: Shape) -> Shape:
        if len(logical) < 2:
            raise TieError(f"Rotated needs a tensor of at least 2 dims, got shape {tuple(logical)}")
        a, b = _dims_for(self, self.dims, logical)
        if self.k % 2 == 0:
            return tuple(logical)
        out = list(logical)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def right_inverse(self, logical):
        return torch.rot90(logical, -self.k, self.dims)

    def __call__(self, source, *, shape, **extras):
        out = torch.rot90(source, self.k, self.dims)
        # an odd k returns a transposed view of a flipped copy; served contiguous, as the
        # untied copy of the slot is (stop 42), so that tying.untie changes no output bit
        # (a strided weight takes another matmul path than a contiguous one: last bits)
        return out if self.k % 2 == 0 else out.contiguous()


@dataclasses.dataclass(frozen=True)
class Flipped(Relation):
    """The source reversed along ``dims`` (a mirror image)."""

    kind: ClassVar[str] = "Flipped"
    dims: tuple[int, ...] = (-1,)

    def __post_init__(self):
        fix = "e.g. Flipped(dims=(0,)) or Flipped(dims=(-2, -1))"
        object.__setattr__(self, "dims", _as_dims("Flipped", self.dims, None, fix))

    def source_shape(self, logical: Shape) -> Shape:
        _dims_for(self, self.dims, logical)
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

    def __post_init__(self):
        object.__setattr__(
            self, "dim", _as_int("Mirrored", "dim", self.dim, "e.g. Mirrored(dim=-1)")
        )

    def source_shape(self, logical: Shape) -> Shape:
        if not logical:
            raise TieError("Mirrored needs a tensor of at least 1 dim, got a scalar")
        (d,) = _dims_for(self, (self.dim,), logical)
        out = list(logical)
        out[d] = math.ceil(logical[d] / 2)
        return tuple(out)

    def right_inverse(self, logical):
        if logical.dtype in _HALF:
            # stop 34: float16 halves near the top of the range summed to inf; float32 sums
            # exactly, then one rounding to the slot's dtype
            return self.right_inverse(logical.float()).to(logical.dtype)
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

    def __post_init__(self):
        v = self.init
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise TieError(
                f"Scaled: init must be a finite real number, got {v!r} ({type(v).__name__}); "
                f"e.g. Scaled(init=1.0)"
            )
        object.__setattr__(self, "init", float(v))

    def source_shape(self, logical: Shape) -> Shape:
        return tuple(logical)

    def extras(self, logical, like):
        if not (like.dtype.is_floating_point or like.dtype.is_complex):
            # stop 31: an int64 scale silently truncated init=2.5 to 2 (and a bool one to True)
            raise TieError(
                f"{self!r}: a learnable scale needs a floating-point or complex slot, got "
                f"{like.dtype} (a {like.dtype} scale would truncate init {self.init:g}); cast "
                f"the model with .float() first, or use a relation that computes nothing "
                f"new (Same, Transposed, Rotated, Flipped)"
            )
        if like.dtype.is_floating_point or like.dtype.is_complex:
            # stop 34: a complex slot skipped the check, and init 1e39 on complex64 failed in
            # torch's words ("cannot be converted ... without overflow"), naming no slot
            fi = torch.finfo(like.dtype.to_real() if like.dtype.is_complex else like.dtype)
            if abs(self.init) > fi.max or (self.init != 0 and abs(self.init) < fi.tiny):
                raise TieError(
                    f"{self!r}: init {self.init:g} does not fit {like.dtype} (magnitudes "
                    f"{fi.tiny:g}..{fi.max:g}); choose an init in that range"
                )
        return {"scale": torch.full((), self.init, dtype=like.dtype, device=like.device)}

    def check_reparam(self) -> None:
        if self.init == 0:
            raise TieError(
                f"{self!r} cannot re-parametrise a slot by itself: the source would be "
                "inf; give like=, or an init other than 0"
            )

    def right_inverse(self, logical):
        self.check_reparam()
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
        fix = "e.g. Hashed(buckets=1024, seed=0, signed=True)"
        buckets = _as_int("Hashed", "buckets", self.buckets, fix)
        if buckets < 1:
            raise TieError(f"Hashed(buckets=...) must be a positive int, got {buckets!r}; {fix}")
        seed = _as_int("Hashed", "seed", self.seed, fix)
        if seed < 0:
            raise TieError(f"Hashed(seed=...) must be an int >= 0, got {seed!r}; {fix}")
        if not isinstance(self.signed, bool):
            raise TieError(
                f"Hashed: signed must be True or False, got {self.signed!r} "
                f"({type(self.signed).__name__}); {fix}"
            )
        object.__setattr__(self, "buckets", buckets)
        object.__setattr__(self, "seed", seed)
        # drawn once, so that the forward pass is pure torch (torch.compile fullgraph)
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "_coeffs", tuple(int(v) for v in rng.integers(1, _P, size=4)))

    def source_shape(self, logical: Shape) -> Shape:
        n = math.prod(logical)
        if n >= _P:
            raise TieError(
                f"Hashed supports fewer than 2**31-1 entries, got shape {tuple(logical)}"
            )
        if self.buckets > n:
            raise TieError(
                f"{self!r}: {self.buckets} buckets for a slot of shape {tuple(logical)} with only "
                f"{n} entries: at least {self.buckets - n} bucket(s) would never be read; "
                f"use buckets <= {n}"
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
        if flat.dtype in _HALF:
            # stop 34: summed in bfloat16 a bucket's count stuck at 256 (256 + 1 rounds to
            # 256) and its total drifted, so a bucket of 1,256 entries stored 2.0 for a mean
            # of 1.80; float32 sums, then one rounding to the slot's dtype
            return self.right_inverse(flat.float()).to(flat.dtype)
        if sign is not None:
            flat = flat * sign.to(flat.dtype)
        total = torch.zeros(self.buckets, dtype=flat.dtype, device=flat.device).index_add_(
            0, idx, flat
        )
        # a real count (complex has no clamp_min: a bare NotImplementedError before stop 31)
        real = flat.real.dtype if flat.is_complex() else flat.dtype
        count = torch.zeros(self.buckets, dtype=real, device=flat.device).index_add_(
            0, idx, torch.ones(flat.shape, dtype=real, device=flat.device)
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


def register_relation(cls: type[Relation]) -> type[Relation]:
    """Make a relation defined outside the core rebuildable from its spec.

    :func:`relation_from_spec` (and so :func:`tying.load` and plan files) finds
    relations by their ``kind``; a layer package registers its own when it is
    imported. Registering the same class again is a no-op.

    Args:
        cls: a :class:`Relation` subclass (a dataclass) with a unique ``kind``.

    Returns:
        ``cls``, so it can be used as a class decorator.

    Raises:
        TieError: another class is already registered under ``cls.kind``.

    Example:
        >>> register_relation(Same) is Same
        True
    """
    known = RELATIONS.get(cls.kind)
    if known is not None and known is not cls:
        raise TieError(
            f"relation kind {cls.kind!r} is already registered to "
            f"{known.__module__}.{known.__qualname__}; give "
            f"{cls.__module__}.{cls.__qualname__} another kind"
        )
    RELATIONS[cls.kind] = cls
    return cls


def relation_from_spec(spec: dict[str, Any]) -> Relation:
    """Rebuild a relation from :meth:`Relation.spec`.

    Raises:
        TieError: for an unknown relation type (naming the known ones), an unknown
            field, or arguments the relation refuses.

    Example:
        >>> import tying
        >>> relation_from_spec({"type": "Rotated", "k": 1, "dims": [0, 1]})
        Rotated(k=1, dims=(0, 1))
    """
    if not isinstance(spec, dict):
        raise TieError(f"a relation spec must be a dict with a 'type', got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in RELATIONS:
        raise TieError(
            f"unknown relation type {kind!r}; known: {sorted(RELATIONS)} (a relation "
            f"defined outside tying.core is known once the package that defines it is "
            f"imported)"
        )
    fields = {f.name for f in dataclasses.fields(RELATIONS[kind])}
    extra = sorted(str(k) for k in spec if k not in fields)
    if extra:
        raise TieError(
            f"relation {kind} has no field(s) {', '.join(map(repr, extra))}; "
            f"its fields are {sorted(fields)}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    return RELATIONS[kind](**kwargs)
