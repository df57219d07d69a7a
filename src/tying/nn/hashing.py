"""The hashes behind tying.nn's hashed embeddings, and the relation that ties them.

Three ways to store a ``V × D`` table in far fewer values (claim C8 and ``hashed-recsys``):

- ``"entry"`` (HashedNets, Chen et al. 2015): entry ``(r, j)`` reads
  ``sign(r, j) · w[h(r, j)]`` from ``B`` buckets. For ``V·D < 2**31-1`` the hash is
  exactly :class:`tying.Hashed`'s ``h(r·D + j)`` (C8's tables are unchanged); larger
  tables use a universal hash of the pair ``(r, j)``, so ``r·D + j`` is never formed.
- ``"block"`` (ROBE-Z, Desai et al. 2022): row ``r`` is ``D / Z`` contiguous blocks of
  ``Z`` values, block ``k`` read at a hashed offset ``h(r, k)`` of one circular array
  of ``B`` values (times a ±1 sign per block). One hash per ``Z`` values.
  ``aligned=True`` (a variant, not ROBE-Z): offsets are multiples of ``Z``, so the
  values are a ``(B/Z, Z)`` table and block ``k`` of row ``r`` is its row
  ``h(r, k) mod (B/Z)``: what lets a sparse gradient name whole blocks (``sparse=True``).
- ``"qr"`` (quotient-remainder, Shi et al. 2020): row ``r`` is
  ``Q[r // m] * R[r % m]`` (elementwise), two small dense tables stored as one.

Every pair hash is ``u(r, c) = (ρ(r) + γ(c)) mod P`` with ``P = 2**31 - 1``: a row term
computed once per looked-up row and a column (or block) term computed once per layer,
so a lookup costs one add and one compare per entry on top of the gather. Row and
column terms are dot products of 21-bit limbs with random coefficients mod ``P``
(Carter–Wegman), exact in int64 for any ``r, c < 2**63``: no overflow up to
``V·D = 2**62``.

:class:`HashedTable` is the relation (kind ``"HashedTable"``) that makes ``weight`` a
declared tie of the physical buckets, so :func:`tying.count`, :func:`tying.save`,
:func:`tying.load` and :func:`tying.verify` treat these tables like any other tie.

Example:
    >>> import torch
    >>> rel = HashedTable(mode="block", buckets=64, block=4, seed=1)
    >>> rel.source_shape((1000, 8))
    (64,)
    >>> rel(torch.randn(64), shape=(1000, 8)).shape
    torch.Size([1000, 8])
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch

from tying.core.errors import TieError
from tying.core.relations import Relation, register_relation
from tying.nn._args import int_arg

__all__ = ["HashedTable", "MODES", "PairHash", "qr_split"]

P = 2**31 - 1  # Mersenne prime: the hash field
MAX_LOGICAL = 2**62  # largest V·D: every int64 step below stays under 2**63
MAX_MATERIALISE = 2**31 - 1  # reading .weight of a bigger table would need > 8 GB
MODES = ("entry", "block", "qr")
_LIMB = 21
_MASK = (1 << _LIMB) - 1


def _draw(seed: int, stream: int, n: int) -> tuple[int, ...]:
    rng = np.random.default_rng([stream, seed])
    return tuple(int(v) for v in rng.integers(1, P, size=n))


def _limbs(x: torch.Tensor, c: tuple[int, int, int]) -> torch.Tensor:
    """``(c0·x0 + c1·x1 + c2·x2) mod P`` over the 21-bit limbs of ``x`` (0 ≤ x < 2**63)."""
    x0, x1, x2 = x & _MASK, (x >> _LIMB) & _MASK, x >> (2 * _LIMB)
    return (x0 * c[0] + x1 * c[1] + x2 * c[2]) % P  # each product < 2**52: no overflow


class PairHash:
    """Two hashes (bucket, sign) of pairs ``(r, c)``: ``u = (ρ(r) + γ(c)) mod P``.

    ``compat_width=D`` reproduces :class:`tying.Hashed` on the flat position
    ``x = r·D + c`` (valid while ``V·D < P``): ``ρ(r) = (a·r·D + b) mod P``, ``γ(c) = a·c mod P``.
    Otherwise ρ and γ are independent limb hashes (a universal family on pairs).
    Either way ``ρ(r) = (Σ_k coef_k · limb_k(r·width) + b) mod P`` (:attr:`row_coef`),
    the one formula the fused kernels evaluate.
    """

    def __init__(self, seed: int, stream: int, compat_width: int | None = None):
        self.compat_width = compat_width
        if compat_width is not None:  # tying.Hashed's coefficients, drawn the same way
            rng = np.random.default_rng(seed)
            a1, b1, a2, b2 = (int(v) for v in rng.integers(1, P, size=4))
            # a·x ≡ Σ_k (a·2**(21k) mod P)·limb_k(x): the same value, in the limb form
            row1 = tuple(a1 * pow(2, _LIMB * k, P) % P for k in range(3))
            row2 = tuple(a2 * pow(2, _LIMB * k, P) % P for k in range(3))
            self.col1, self.col2, width = row1, row2, compat_width
        else:
            c = _draw(seed, stream, 14)
            row1, self.col1, b1 = c[0:3], c[3:6], c[6]
            row2, self.col2, b2 = c[7:10], c[10:13], c[13]
            width = 1
        self._row = (width, *row1, b1, width, *row2, b2)
        #: (width, c0, c1, c2, b) of ρ1 then of ρ2, int64: the fused kernels' input
        # on the CPU always (the kernels read it as numpy), also under torch.device('meta')
        self.row_coef = torch.tensor(self._row, dtype=torch.int64, device="cpu")

    def rows(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row terms ``(ρ1(r), ρ2(r))`` of int64 rows ``r`` (any shape)."""
        c = self._row
        x = r * c[0]  # < 2**62 (V·D bound); for compat < P
        return (_limbs(x, c[1:4]) + c[4]) % P, (_limbs(x, c[6:9]) + c[9]) % P

    def cols(self, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Column (or block) terms ``(γ1(c), γ2(c))`` for ``c = 0 … n-1``."""
        c = torch.arange(n, device=device, dtype=torch.int64)
        return _limbs(c, self.col1), _limbs(c, self.col2)


def combine(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``(row[..., None] + col) mod P`` for ``row, col < P`` (one add, one fold)."""
    u = row.unsqueeze(-1) + col  # (*, C), < 2P
    return torch.where(u >= P, u - P, u)


def qr_split(num_embeddings: int, embedding_dim: int, buckets: int) -> tuple[int, int]:
    """Quotient and remainder row counts ``(q, m)`` that fit ``(q + m)·D ≤ buckets``.

    Balanced tables (``m ≈ q``) give each row of either table the fewest sharers.

    Raises:
        ValueError: when even the smallest pair of tables (``≈ 2·√V`` rows) does not fit.
    """
    V, D = num_embeddings, embedding_dim
    rows = buckets // D
    m0 = math.isqrt(V - 1) + 1 if V > 1 else 1  # ⌈√V⌉: the smallest pair of tables
    for m in (max(1, min(V, rows // 2)), m0):
        q = -(-V // m)
        if q + m <= rows:
            return q, m
    need = (-(-V // m0) + m0) * D
    raise ValueError(
        f"mode='qr': buckets={buckets:,} holds {rows:,} rows of D={D}, but quotient + "
        f"remainder tables for V={V:,} need at least {need:,} values (≈ 2·√V rows); "
        f"raise buckets to {need:,} or use mode='block'"
    )


@dataclasses.dataclass(frozen=True)
class HashedTable(Relation):
    """A ``(V, D)`` table computed from stored values by one of :data:`MODES`.

    Args:
        mode: ``"entry"``, ``"block"`` or ``"qr"`` (see the module docstring).
        buckets: stored values ``B`` (for ``"qr"``: the budget the two tables fit in).
        block: ``Z``, values per block (``"block"`` only; 1 otherwise).
        seed: picks the hash functions (not read by ``"qr"``, which stores it as 0).
        signed: multiply by a ±1 sign hash (per entry, or per block; not read by ``"qr"``,
            which stores it as True).
        aligned: ``"block"`` only: blocks start at multiples of ``block`` (stored as a
            ``(buckets / block, block)`` table) instead of ROBE-Z's any offset.

    Raises:
        TieError: (a ValueError) for an unknown mode, a size that is not a positive
            int, a seed that is not a non-negative int, or a ``signed`` that is not a
            bool, or an ``aligned`` outside block mode; when applied, for a slot that is not ``(V, D)`` or a block that does
            not divide ``D`` or exceeds the buckets, or aligned blocks that do not
            divide the buckets.
    """

    kind: ClassVar[str] = "HashedTable"
    mode: str = "block"
    buckets: int = 1024
    block: int = 1
    seed: int = 0
    signed: bool = True
    aligned: bool = False

    def __post_init__(self):
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise TieError(f"HashedTable(mode=...) must be one of {MODES}, got {self.mode!r}")
        # NumPy ints stored as ints: the relation's fields go to json and the hash seeds
        for name, minimum, what in (
            ("buckets", 1, "a positive"),
            ("block", 1, "a positive"),
            ("seed", 0, "a non-negative"),
        ):
            v = getattr(self, name)
            error = f"HashedTable({name}=...) must be {what} int, got {v!r}"
            object.__setattr__(self, name, int_arg(v, minimum, error, TieError))
        if not isinstance(self.signed, bool):
            raise TieError(f"HashedTable(signed=...) must be True or False, got {self.signed!r}")
        if not isinstance(self.aligned, bool):
            raise TieError(f"HashedTable(aligned=...) must be True or False, got {self.aligned!r}")
        if self.aligned and self.mode != "block":
            raise TieError(
                f"HashedTable(aligned=True) is for mode='block' only, got mode={self.mode!r}; "
                f"drop aligned= or use mode='block'"
            )
        if self.mode != "block" and self.block != 1:
            raise TieError(
                f"HashedTable(block={self.block}) is for mode='block' only; drop block= or use "
                f"mode='block'"
            )
        if self.mode == "qr":
            # a qr table reads no hash: its seed and sign are stored as the defaults, so two
            # qr relations of one budget are equal (and print alike) as they compute alike
            # (stop 59: they printed the seed and sign given, and compared unequal by them)
            object.__setattr__(self, "seed", 0)
            object.__setattr__(self, "signed", True)

    def __repr__(self) -> str:
        # a qr table hashes nothing: seed, signed (and block, aligned) are not read, so its
        # repr leaves them out rather than print settings it ignores (stop 59)
        if self.mode == "qr":
            return f"HashedTable(mode='qr', buckets={self.buckets})"
        return (
            f"HashedTable(mode={self.mode!r}, buckets={self.buckets}, block={self.block}, "
            f"seed={self.seed}, signed={self.signed}, aligned={self.aligned})"
        )

    def source_shape(self, logical) -> tuple[int, ...]:
        if len(logical) != 2:
            raise TieError(
                f"HashedTable ties a (V, D) table, got a slot of shape {tuple(logical)}; "
                f"use it on an embedding's 2-D weight"
            )
        V, D = logical
        if self.mode == "block" and (D % self.block or self.block > self.buckets):
            raise TieError(
                f"HashedTable(block={self.block}) must divide D={D} and be at most "
                f"buckets={self.buckets}; choose a block size that divides the row"
            )
        if self.aligned and self.buckets % self.block:
            raise TieError(
                f"HashedTable(aligned=True, block={self.block}) must divide buckets="
                f"{self.buckets} (the values are a (buckets / block, block) table); use "
                f"buckets={self.buckets - self.buckets % self.block:,}"
            )
        if self.mode == "qr":
            q, m = qr_split(V, D, self.buckets)
            return (q + m, D)
        if self.aligned:
            return (self.buckets // self.block, self.block)
        return (self.buckets,)

    def right_inverse(self, logical: torch.Tensor) -> torch.Tensor:
        shape = self.source_shape(tuple(logical.shape))
        if logical.is_meta:
            return torch.empty(shape, device="meta", dtype=logical.dtype)
        V, D = logical.shape
        if self.mode == "qr":  # quotient rows: the mean of their rows; remainder rows: 1
            q, m = qr_split(V, D, self.buckets)
            pad = torch.zeros(q * m, D, dtype=logical.dtype, device=logical.device)
            pad[:V] = logical
            return torch.cat([pad.view(q, m, D).mean(1), torch.ones_like(pad[:m])])
        # the least-squares source: every bucket the mean of the (signed) entries it serves
        idx, sign = self.flat_index(torch.arange(V, device=logical.device), (V, D))
        flat = logical.reshape(-1) * sign.reshape(-1).to(logical.dtype)
        total = flat.new_zeros(self.buckets).index_add_(0, idx.reshape(-1), flat)
        count = flat.new_zeros(self.buckets).index_add_(0, idx.reshape(-1), torch.ones_like(flat))
        return (total / count.clamp_min(1)).reshape(shape)

    def reads_as(self, other, logical) -> bool:
        """A qr table reads no seed or sign and its budget only picks the split: two qr
        tables of one split ``(q, m)`` for ``logical`` compute the same slot (stop 58 review:
        ``load_state_dict`` took such a file and ``tying.load`` refused it).

        Example:
            >>> a = HashedTable(mode="qr", buckets=40, seed=0)  # split (3, 10) for (30, 2)
            >>> a.reads_as(HashedTable(mode="qr", buckets=41, seed=5, signed=False), (30, 2))
            True
            >>> a.reads_as(HashedTable(mode="qr", buckets=36), (30, 2))  # split (4, 9)
            False
        """
        if self == other:
            return True
        if not (isinstance(other, HashedTable) and self.mode == other.mode == "qr"):
            return False
        if len(logical) != 2:
            return False
        V, D = logical
        try:
            return qr_split(V, D, self.buckets) == qr_split(V, D, other.buckets)
        except ValueError:  # a budget that does not fit: another table
            return False

    def pair_hash(self, shape) -> PairHash:
        """The hash of this relation for a ``(V, D)`` table."""
        V, D = shape
        if self.mode == "entry":
            return PairHash(self.seed, 0, D if V * D < P else None)
        return PairHash(self.seed, 1)

    def flat_index(self, rows: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket index and ±1 sign of every entry of ``rows`` (``(n, D)`` each; not ``"qr"``)."""
        V, D = shape
        h = self.pair_hash(shape)
        r1, r2 = h.rows(rows)
        if self.mode == "entry":
            c1, c2 = h.cols(D, rows.device)
            idx = combine(r1, c1) % self.buckets
            sign = combine(r2, c2) & 1 if self.signed else torch.ones_like(idx)
            return idx, sign * 2 - 1 if self.signed else sign
        nb = D // self.block
        c1, c2 = h.cols(nb, rows.device)
        if self.aligned:  # offsets Z·(u mod B/Z): a block never wraps
            off = combine(r1, c1) % (self.buckets // self.block) * self.block  # (n, nb)
        else:
            off = combine(r1, c1) % self.buckets  # (n, nb)
        idx = (off.unsqueeze(-1) + torch.arange(self.block, device=off.device)) % self.buckets
        sign = (combine(r2, c2) & 1) * 2 - 1 if self.signed else torch.ones_like(off)
        return idx.flatten(-2), sign.repeat_interleave(self.block, -1)

    def __call__(self, source, *, shape, **extras):
        V, D = shape
        if V * D > MAX_MATERIALISE:
            raise ValueError(
                f"HashedTable: the logical table {tuple(shape)} has {V * D:,} entries "
                f"({V * D * source.element_size() / 2**30:.1f} GiB); reading the whole "
                f"weight would materialise it; look rows up with layer(ids) instead"
            )
        rows = torch.arange(V, device=source.device)
        if self.mode == "qr":
            q, m = qr_split(V, D, self.buckets)
            return source[rows // m] * source[q + rows % m]
        idx, sign = self.flat_index(rows, shape)
        out = source.reshape(-1)[idx]
        return out * sign.to(out.dtype) if self.signed else out


register_relation(HashedTable)  # so tying.load / tying.verify rebuild it
