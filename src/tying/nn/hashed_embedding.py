"""Hashed embedding tables: ``V × D`` logical rows in ``B`` stored values, up to ``V·D = 2**62``.

:class:`HashedEmbedding` (lookups) and :class:`HashedEmbeddingBag` (pooled lookups,
the recommender's layer) share one table in three modes (claim C8, ``hashed-recsys``):

======== ============================================ ============================
mode     row ``r`` reads                              hashes per looked-up row
======== ============================================ ============================
entry    ``sign·w[h(r, j)]`` for each column ``j``    ``D`` (HashedNets; C8's table)
block    ``D/Z`` blocks of ``Z`` contiguous values,   ``D/Z`` (ROBE-Z)
         each at a hashed offset of a circular ``w``
qr       ``Q[r // m] * R[r % m]``                     none (quotient-remainder)
======== ============================================ ============================

The ``weight`` slot is a declared tie (``tying.Hashed`` for C8-size entry tables,
:class:`tying.nn.hashing.HashedTable` otherwise), so :func:`tying.count` reports the
logical ``V·D`` against the physical ``B``, and ``save``/``load``/``verify`` keep it.
Nothing of size ``V·D`` is ever allocated: the logical weight lives on the ``meta``
device, a lookup hashes only the rows it reads, and the backward is a scatter-add
into the ``B`` stored values. Reading ``layer.weight`` materialises the logical
table (for inspection) and is refused above ``2**31-1`` entries.

``sparse=True`` mirrors ``nn.Embedding(sparse=True)``: the stored values get a sparse
COO gradient (the looked-up indices and the incoming gradient, signed), which
``torch.optim.SGD``, ``Adagrad`` and ``SparseAdam`` take; the scatter moves into the
optimizer step. Block mode needs ``aligned=True`` for it (blocks at multiples of ``Z``;
ROBE-Z's blocks start anywhere and wrap, which whole-row sparse gradients cannot name).

Example:
    >>> import torch, tying
    >>> emb = HashedEmbedding(10**8, 128, buckets=1 << 20, mode="block", block=32)
    >>> emb(torch.tensor([[3, 99_999_999]])).shape
    torch.Size([1, 2, 128])
    >>> c = tying.count(emb); (c.logical, c.physical)
    (12800000000, 1048576)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Hashed, Plan, Same, share
from tying.core.errors import TieError
from tying.core.slots import base_class, slots_of
from tying.nn._args import assert_in_graph, in_graph, int_arg
from tying.nn._embedding_names import refuse_bag_mode, refuse_embedding_keywords
from tying.nn._input_errors import CAUGHT, InputDtypeError, dtype_detail, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting
from tying.nn._lost_writes import refuse_lost_writes
from tying.nn.hashed_kernels import FusedKeepLookup, FusedLookup, SparseGather, fused_available
from tying.nn.hashing import MAX_LOGICAL, MODES, HashedTable, P, combine, qr_split

__all__ = ["HashedEmbedding", "HashedEmbeddingBag"]

# nn.Embedding's three idioms for writing weight, each as it is done on a hashed table
# (untying, the core's other fix, leaves the layer no buckets to look up)
_LOST_WRITE_FIX = (
    "write the buckets named above instead (layer: the layer holding that weight_physical): "
    "an init as nn.init.normal_(layer.weight_physical, std=...); "
    "a dense table (weight.copy_(pretrained)) as its least-squares buckets, "
    "layer.weight_physical.data.copy_(layer.relation.right_inverse(pretrained)); a single "
    "row (weight[pad] = 0) has no values of its own (its buckets are shared with other "
    "rows): mask the lookup, out * (ids != pad).unsqueeze(-1); for a dense table "
    "torch.nn.Embedding.from_pretrained(layer.weight.detach())"
)


def _positive_int(name: str, value, owner: str) -> int:
    # the layer named first (stop 60: "buckets must be a positive int" named no layer)
    return int_arg(value, 1, f"{owner}: {name} must be a positive int, got {value!r}")


def _hash_weight(module: nn.Module, shape: tuple[int, int], relation, device, dtype):
    """Tie ``module.weight`` (logical ``shape``) to the relation's stored values.

    The logical weight only ever exists on the meta device, so no ``V × D`` storage
    is allocated; the physical values are then created for real.
    """
    if isinstance(relation, Hashed) and math.prod(shape) >= P:
        raise ValueError(
            f"{type(module).__name__}: the logical weight {shape} has {math.prod(shape):,} "
            f"entries; tying.Hashed supports fewer than 2**31-1; split the layer"
        )
    # expanded from one meta element: torch refuses meta storage of >= 2**63 bytes
    logical = torch.empty((1, 1), device="meta", dtype=dtype).expand(*shape)
    module.weight = nn.Parameter(logical)
    apply_plan(Plan([share("weight", relation=relation)]), module)
    module._parameters["weight_physical"] = nn.Parameter(
        torch.empty(relation.source_shape(shape), device=device, dtype=dtype)
    )


# The key under which a hashed layer's state-dict metadata names its hash (stop 31)
HASH_METADATA_KEY = "tying.hash"


def _untied_note(module: nn.Module) -> str:
    """``", tied=False (untied)"`` for a repr once ``tying.untie`` gave the weight its own
    values (its buckets, seed and sign are no longer read; stop 55), else ``""``."""
    setting = tie_setting(module, True)
    return "" if setting == "True" else f", tied={setting}"


def _hash_spec(module: nn.Module) -> dict | None:
    """The relation the ``weight`` slot reads its stored values through, as a spec."""
    slot = slots_of(module).get("weight")
    return None if slot is None else slot.relation.spec()


# ... and the logical weight's sizes, which the stored values' shape does not tell (stop 37)
SHAPE_METADATA_KEY = "tying.logical_shape"


def _logical_sizes(module: nn.Module) -> dict[str, int]:
    """The sizes of the logical weight, by constructor argument (no ``V × D`` tensor is made)."""
    if hasattr(module, "num_embeddings"):
        return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    return {"out_features": module.out_features, "in_features": module.in_features}


def _save_hash(module: nn.Module, destination, prefix: str) -> None:
    """Record the layer's hash and logical sizes in the state dict's metadata (which
    ``torch.save`` keeps)."""
    meta = getattr(destination, "_metadata", None)
    spec = _hash_spec(module)
    if meta is not None and spec is not None:
        record = meta.setdefault(prefix[:-1], {})
        record[HASH_METADATA_KEY] = spec
        record[SHAPE_METADATA_KEY] = _logical_sizes(module)


def _check_saved_hash(module: nn.Module, local_metadata, prefix: str, state_dict) -> None:
    """Refuse stored values saved from a layer that hashes differently (another seed...).

    A state dict holds only ``weight_physical``; loaded into a layer with another seed,
    sign or mode, every value lands in other logical entries and the layer computes other
    numbers with no error (stop 31). State dicts without the record (older ones, or
    rebuilt as a plain dict) load as before. A load without ``weight_physical`` (a
    partial ``strict=False`` load: a bias alone, or the rest of a model) is not checked:
    it was refused although no stored value was loaded (stop 50).
    """
    if prefix + "weight_physical" not in state_dict:
        return
    mine = _hash_spec(module)
    if mine is not None:
        _check_saved_sizes(module, local_metadata, prefix)
    saved = local_metadata.get(HASH_METADATA_KEY) if local_metadata else None
    if saved is None or mine is None or saved == mine or _same_qr_split(module, saved, mine):
        return
    name = base_class(module).__name__
    diff = ", ".join(
        f"{k}={saved.get(k)!r} (this layer: {mine.get(k)!r})"
        for k in sorted(set(saved) | set(mine))
        if saved.get(k) != mine.get(k)
    )
    raise ValueError(
        f"{name} at {prefix[:-1] or '<root>'!r}: the state dict's weight_physical was saved "
        f"from a layer hashing with {saved} and this layer hashes with {mine} ({diff}), so "
        f"every stored value would land in other logical entries; build the layer with the "
        f"saved settings (e.g. seed=, signed=, mode=) and load into that"
    )


def _same_qr_split(module: nn.Module, saved: dict, mine: dict) -> bool:
    """True when both specs are quotient-remainder tables split alike for ``module``'s sizes.

    A qr table hashes nothing: its seed and sign are not read, and its budget only picks
    the split ``(q, m)``. A state dict of ``mode="qr", seed=0`` was refused by a
    ``seed=1`` layer (and a budget of 40 by one of 41, both split ``(3, 10)``) as if
    "every stored value would land in other logical entries" (stop 58), where both
    compute the same table from the same values.
    """
    if not all(spec.get("mode") == "qr" for spec in (saved, mine)):
        return False
    V, D = module.num_embeddings, module.embedding_dim  # the sizes were checked equal
    try:
        return qr_split(V, D, int(saved["buckets"])) == qr_split(V, D, int(mine["buckets"]))
    except (KeyError, TypeError, ValueError):  # a budget that no longer fits: another table
        return False


def _check_saved_sizes(module: nn.Module, local_metadata, prefix: str) -> None:
    """Refuse stored values saved from a layer of other logical sizes.

    ``weight_physical`` has ``buckets`` values whatever the table's sizes, so a state dict
    of a ``HashedLinear(12, 2)`` loaded into a ``HashedLinear(8, 3)`` (or an embedding of
    another ``V`` or ``D``) with no error: the same values, read as other rows and columns
    (stop 37), where ``nn.Linear``/``nn.Embedding`` refuse the shape. A state dict without
    the record (older, or rebuilt as a plain dict) loads as before.
    """
    saved = local_metadata.get(SHAPE_METADATA_KEY) if local_metadata else None
    mine = _logical_sizes(module)
    if saved is None or dict(saved) == mine:
        return
    name = base_class(module).__name__
    diff = ", ".join(
        f"{k}={saved.get(k)!r} (this layer: {v!r})" for k, v in mine.items() if saved.get(k) != v
    )
    fix = ", ".join(f"{k}={saved.get(k)!r}" for k in mine)
    raise ValueError(
        f"{name} at {prefix[:-1] or '<root>'!r}: the state dict's weight_physical was saved "
        f"from a layer of other sizes ({diff}); its values would be read as other rows and "
        f"columns of the weight; build the layer with {fix} and load into that (or, to "
        f"reuse the stored values in a table of other sizes on purpose, copy "
        f"weight_physical by hand)"
    )


def _unwrapped(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values under every ``torch.func`` wrapper (all of vmap's batch)."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _default_block(D: int) -> int:
    """The largest divisor of ``D`` up to 32 (ROBE-Z's blocks are tens of values)."""
    return max(z for z in range(1, min(D, 32) + 1) if D % z == 0)


class HashedEmbedding(nn.Module):
    """An embedding table of ``V × D`` logical entries stored in ``buckets`` values.

    Args:
        num_embeddings: logical rows ``V`` (``V·D ≤ 2**62``).
        embedding_dim: columns ``D``.
        buckets: stored values ``B`` (``"entry"``/``"block"``: below ``2**31-1``;
            ``"qr"``: the budget its two tables must fit in).
        mode: ``"entry"`` (HashedNets, default: C8's table), ``"block"`` (ROBE-Z) or
            ``"qr"`` (quotient-remainder).
        block: ``Z`` values per block, a divisor of ``D`` no larger than ``B``
            (``"block"`` only; default the largest divisor of ``D`` up to 32).
        seed: picks the hash functions (a non-negative int).
        signed: multiply by a ±1 sign hash (per entry, or per block); ignored by ``"qr"``.
        aligned: ``"block"`` only: blocks start at multiples of ``block`` (the values are
            a ``(buckets / block, block)`` table; ``block`` must divide ``buckets``)
            instead of ROBE-Z's any offset of a circular array. A different table from
            the default block mode, needed by ``sparse=True``.
        sparse: the stored values get a sparse COO gradient, as
            ``nn.Embedding(sparse=True)`` (use SGD, Adagrad or SparseAdam); in block
            mode only with ``aligned=True``.
        device, dtype: of the stored values.

    Shape:
        integer ids of any shape ``(*)`` → ``(*, D)``.

    Raises:
        ValueError: for a non-positive size, ``V·D > 2**62``, an unknown mode, a
            ``block`` that does not divide ``D``, or a ``"qr"`` budget too small;
            ``aligned`` outside block mode or with a ``block`` that does not divide
            ``buckets``; ``sparse=True`` in block mode without ``aligned=True``.
        TypeError: for non-integer ids, or a ``signed``/``aligned``/``sparse`` that is
            not a bool; for ``nn.Embedding``'s ``padding_idx``, ``max_norm``, ``norm_type``,
            ``scale_grad_by_freq``, naming what to do here.
        IndexError: for an id outside ``[0, V)``.

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
        mode: str = "entry",
        block: int | None = None,
        seed: int = 0,
        signed: bool = True,
        aligned: bool = False,
        sparse: bool = False,
        device=None,
        dtype=None,
        **torch_names: object,
    ) -> None:
        super().__init__()
        name = base_class(self).__name__  # not Tied…
        # nn.Embedding's / nn.EmbeddingBag's keywords name what to use here (stop 60)
        refuse_embedding_keywords(name, torch_names, isinstance(self, HashedEmbeddingBag))
        V = self.num_embeddings = _positive_int("num_embeddings", num_embeddings, name)
        D = self.embedding_dim = _positive_int("embedding_dim", embedding_dim, name)
        B = _positive_int("buckets", buckets, name)
        if V * D > MAX_LOGICAL:
            raise ValueError(
                f"{name}: num_embeddings × embedding_dim = {V:,} × {D} = {V * D:,} exceeds "
                f"2**62; lower num_embeddings or split the table"
            )
        if mode not in MODES:
            raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
        # NumPy ints as nn.Embedding takes them (stop 38: seed=np.int64(3) was refused)
        seed = int_arg(seed, 0, f"{name}: seed must be a non-negative int, got {seed!r}")
        # NumPy's bools are bools (HashedLinear takes signed=np.False_ since stop 60; here
        # it was refused as "signed must be True or False, got np.False_")
        for flag, value in (("signed", signed), ("aligned", aligned), ("sparse", sparse)):
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"{name}: {flag} must be True or False, got {value!r}")
        signed, aligned, sparse = bool(signed), bool(aligned), bool(sparse)
        if aligned and mode != "block":
            raise ValueError(
                f"{name}: aligned=True applies to mode='block' only, got mode={mode!r}; drop "
                f"aligned= or use mode='block'"
            )
        if sparse and mode == "block" and not aligned:
            raise ValueError(
                f"{name}: sparse=True in mode='block' needs aligned=True: ROBE-Z's blocks "
                f"start at any offset and wrap around the circular array, which a sparse "
                f"gradient of whole blocks cannot name; pass aligned=True (blocks at "
                f"multiples of block, a different table) or sparse=False"
            )
        if mode != "qr" and B >= P:
            raise ValueError(
                f"{name}: buckets must be below 2**31-1 = {P:,} (the hash's range) in "
                f"mode={mode!r}, got {B:,}; use fewer buckets or mode='qr'"
            )
        if B > V * D:
            # block and qr modes took it (stop 58): a block table of 100 values for 6
            # entries, which tying.count reported as a ratio of 0.06; a qr budget of 200 for
            # 60 entries stored 62 values, more than the dense table, as "compressed"
            why = (
                "its quotient and remainder tables could hold more values than the dense "
                "table (a torch.nn.Embedding stores V × D)"
                if mode == "qr"
                else "some buckets would never be read"
            )
            raise ValueError(
                f"{name}: buckets={B:,} is more than the table's {V:,} × {D} = {V * D:,} "
                f"entries (mode={mode!r}), so {why}; use buckets <= {V * D:,}"
            )
        if mode == "qr":
            m0 = math.isqrt(V - 1) + 1 if V > 1 else 1  # the smallest tables: ⌈√V⌉ rows
            need = (-(-V // m0) + m0) * D
            if need > V * D:
                # V <= 3: the smallest qr tables hold more rows than the table itself, so
                # the two refusals sent a user back and forth (buckets=100 for V=3, D=64:
                # "raise buckets to 256"; 256: "use buckets <= 192"; stop 58 review). After
                # the cap above, so a budget over V·D is told that first
                raise ValueError(
                    f"{name}: mode='qr' cannot store a {V:,} × {D} table in fewer values "
                    f"than the dense table: its smallest quotient and remainder tables hold "
                    f"{need:,} values and the table {V * D:,}; use mode='entry' or "
                    f"mode='block' with buckets <= {V * D:,}, or torch.nn.Embedding"
                )
        if mode == "block":
            Z = _default_block(D) if block is None else _positive_int("block", block, name)
            if D % Z:
                divisors = [z for z in range(1, min(D, 64) + 1) if D % z == 0]
                raise ValueError(
                    f"{name}: block={Z} must divide embedding_dim={D} (each row is D/Z whole "
                    f"blocks); use one of {divisors}"
                )
            if Z > B:
                raise ValueError(
                    f"{name}: block={Z} is larger than buckets={B}: a block would read its "
                    f"own values twice; use block <= buckets"
                )
            if aligned and B % Z:
                raise ValueError(
                    f"{name}: aligned=True needs block={Z} to divide buckets={B:,} (the values "
                    f"are a (buckets / block, block) table); use buckets={B - B % Z:,} or "
                    f"{B - B % Z + Z:,}"
                )
        elif block is not None:
            raise ValueError(f"{name}: block= applies to mode='block' only, got mode={mode!r}")
        else:
            Z = 1
        self.mode, self.block, self.aligned, self.sparse = mode, Z, aligned, sparse
        if mode == "qr":
            self._qr = qr_split(V, D, B)  # raises when the budget is too small
        if mode == "entry" and V * D < P:  # claim C8's relation, values and files unchanged
            self.relation = Hashed(B, seed, signed)
        else:
            self.relation = HashedTable(
                mode=mode, buckets=B, block=Z, seed=seed, signed=signed, aligned=aligned
            )
        self.seed, self.signed = seed, signed
        _hash_weight(self, (V, D), self.relation, device, dtype)
        if mode != "qr":
            rel = HashedTable(mode=mode, buckets=B, block=Z, seed=seed, signed=signed)
            self._hash = rel.pair_hash((V, D))
            c1, c2 = self._hash.cols(D // Z, device)
            self.register_buffer("hash_cols", torch.stack([c1, c2]), persistent=False)
        self.reset_parameters()

    @property
    def buckets(self) -> int:
        """Stored values ``B`` (for ``"qr"``: the budget; see ``weight_physical`` for the use)."""
        return self.relation.buckets

    def _apply(self, fn, recurse=True):
        # hash_cols is derived, not state (non-persistent: no load restores it). to_empty
        # after a meta-device build left uninitialised memory there, and every lookup
        # then read wrong buckets without an error (stop 25 review): recompute it after
        # every move, on the buffer's new device
        out = super()._apply(fn, recurse)
        cols = self._buffers.get("hash_cols")
        if cols is not None:
            c1, c2 = self._hash.cols(self.embedding_dim // self.block, cols.device)
            self._buffers["hash_cols"] = torch.stack([c1, c2]).to(cols.dtype)
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        _save_hash(self, destination, prefix)

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse buckets saved with another hash, or a re-tied weight (ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``): refused inside a container,
        the load changes nothing (stop 51; it had loaded the modules before this one).
        """
        _check_saved_hash(self, local_metadata, prefix, state_dict)
        self._check_own_tie(loading=True)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        failed = len(errors)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )
        if prefix + "weight_physical" in state_dict and len(errors) == failed:
            # every bucket replaced: a write into weight before the load (an init pass, then
            # the checkpoint) is superseded, as nn.Embedding's, not lost; the lookup refused
            # it with the loaded values in place (review stop 61)
            for slot in slots_of(self).values():
                slot._handed, slot._kept = None, ()

    def _check_own_tie(self, loading: bool = False) -> None:
        """Refuse a lookup when ``weight`` no longer reads the layer's own hash.

        The lookup hashes ids with the layer's own functions, not through the ``weight``
        slot; once a plan or ``tying.load`` re-tied ``weight`` with another relation (a
        file saved from a layer with another seed), ``layer(ids)`` and
        ``layer.weight[ids]`` differed with no error (stop 31).
        """
        if torch.compiler.is_compiling():
            return
        slot = slots_of(self).get("weight")
        if (
            slot is not None
            and slot.source_module is self
            and (slot.relation is self.relation or slot.relation == self.relation)
        ) or self._table_owner() is not self:
            return
        name = base_class(self).__name__
        if slot is None and loading:
            return  # untied: nothing to compare (its lookup is refused below)
        if slot is None:
            raise TieError(
                f"{name}: weight is no longer tied to its hash (tying.untie or a free rule), "
                f"so there are no stored values to look up; for a dense table use "
                f"torch.nn.Embedding.from_pretrained(layer.weight.detach()), or build a new "
                f"{name}"
            )
        raise TieError(
            f"{name}: weight is tied through {slot.relation!r} (by a plan or tying.load), but "
            f"the layer was built to hash through {self.relation!r}, so its lookups would "
            f"read other buckets than layer.weight; build the layer with the settings the tie or "
            f"file was made with (seed=, signed=, mode=, block=, aligned=) and load into that"
        )

    def _table_owner(self) -> HashedEmbedding:
        """The layer whose buckets this one looks up: itself, or the layer whose ``weight``
        its own ``weight`` reads through ``Same`` when that layer hashes the same table
        (the right tower of a ``Siamese``, a layer of a ``share_layers`` stack). Stop 55:
        those were refused with advice to rebuild the layer, though the values agree."""
        slot = slots_of(self).get("weight")
        src = None if slot is None else slot.source_module
        if (
            type(slot.relation if slot else None) is not Same
            or slot.source_name != "weight"
            or not isinstance(src, HashedEmbedding)
            or src is self
            or (src.num_embeddings, src.embedding_dim, src.mode)
            != (self.num_embeddings, self.embedding_dim, self.mode)
            or not (src.relation is self.relation or src.relation == self.relation)
        ):
            return self
        owner = src._table_owner()
        own = slots_of(owner).get("weight")
        if owner is src and (own is None or own.source_module is not src):
            return self  # the source is not hashing its own table either: refused below
        return owner

    def fan_in(self) -> int:
        """1: each output entry reads one stored value (claim B15)."""
        return 1

    def memory_ratio(self) -> float:
        """Stored / logical entries: ``weight_physical.numel() / (V·D)``."""
        return self.weight_physical.numel() / (self.num_embeddings * self.embedding_dim)

    def reset_parameters(self) -> None:
        """Stored values ~ N(0, 1), like ``nn.Embedding``: every logical entry then has variance 1.

        Raises:
            TieError: once untied (``tying.untie``): there are no stored values (it died
                on "no attribute 'weight_physical'", stop 53); the layer is unchanged.
        """
        stored = self._parameters.get("weight_physical")
        if stored is None:
            name = base_class(self).__name__
            raise TieError(
                f"{name}.reset_parameters: weight is no longer tied to its hash (tying.untie "
                f"or a free rule), so there are no stored values to draw; for a dense table "
                f"use torch.nn.{name.removeprefix('Hashed')}.from_pretrained("
                f"layer.weight.detach()), or build a "
                f"new {name}"
            )
        with torch.no_grad():
            stored.normal_()

    def _ids(self, input: torch.Tensor, what: str = "indices") -> torch.Tensor:
        """``input`` checked (integer, in range) and flattened to int64."""
        name = base_class(self).__name__  # not Tied…
        if not isinstance(input, torch.Tensor):
            raise TypeError(
                f"{name} expects a tensor of int64/int32 {what}, got {type(input).__name__}"
            )
        if input.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} expects int64/int32 {what}, got {input.dtype}")
        fix = "map out-of-vocabulary ids into range (e.g. id % num_embeddings) first"
        if in_graph() and input.numel():
            # Any id hashes to some bucket, so an out-of-range id would read a row quietly:
            # a compiled graph cannot raise IndexError on a value, but it can assert one.
            # A torch.jit.trace graph keeps only tensor ops: the Python check below ran at
            # trace time alone, and the traced layer read a row for id 25 of 20 (stop 52).
            lo, hi = torch.aminmax(input)
            input = assert_in_graph(
                (lo >= 0) & (hi < self.num_embeddings),
                f"{name}: {what} must be in [0, {self.num_embeddings}); {fix}",
                input,
            )
        elif input.numel():
            # under vmap the ids are a batched wrapper whose values no int() may read
            # (torch's ".item()" error, stop 34): check every id of the batch underneath
            lo, hi = (int(v) for v in torch.aminmax(_unwrapped(input)))  # one pass
            if lo < 0 or hi >= self.num_embeddings:
                raise IndexError(
                    f"{name}: {what} must be in [0, {self.num_embeddings}), got min {lo}, max "
                    f"{hi}; {fix}"
                )
        return input.reshape(-1).to(torch.int64)

    def _lookup(self, ids, nbags=0, bags=None, fac=None) -> torch.Tensor:
        """Rows of ``ids`` ``(n, D)``, or their weighted sums into ``nbags`` bags ``(nbags, D)``."""
        self._check_own_tie()
        owner = self._table_owner()
        # the lookup reads the buckets, not the weight slot: a write into layer.weight
        # (nn.init.normal_, weight[pad] = 0) was lost with no error (stop 61); a tower
        # reading another's table (Siamese, share_layers) has the write recorded there
        refuse_lost_writes(self, None if owner is self else owner, fix=_LOST_WRITE_FIX)
        w = owner.weight_physical
        # the fused kernels are numba loops outside PyTorch: torch.func transforms (vmap,
        # grad, jacrev, jacfwd) cannot see through them, so those take the torch path
        # (stop 34); a second derivative and forward-mode AD reach the torch path from
        # the kernels' backward and jvp (``plain``)
        if (
            self.mode != "qr"
            and fused_available(w)
            and not torch._C._are_functorch_transforms_active()
        ):
            c1, c2 = self.hash_cols.unbind()
            Z = 0 if self.mode == "entry" else self.block
            args = (self._hash.row_coef, c1, c2, self.signed, Z, nbags, bags, fac)
            plain = functools.partial(self._plain_lookup, ids=ids, nbags=nbags, bags=bags, fac=fac)
            if self.aligned or (self.sparse and self.mode == "entry"):
                return FusedKeepLookup.apply(w, ids, *args, self.sparse, plain)  # keeps its reads
            return FusedLookup.apply(w, ids, *args, plain)
        return self._plain_lookup(w, ids, nbags, bags, fac)

    def _plain_lookup(self, w, ids, nbags=0, bags=None, fac=None) -> torch.Tensor:
        """:meth:`_lookup` in torch ops: any device, ``torch.compile``, ``torch.func``."""
        # torch.func transforms take no sparse gradient (SparseGather has no functorch
        # rule; a sparse F.embedding under vmap fails in aten::view): there it is dense
        sp = self.sparse and not torch._C._are_functorch_transforms_active()
        if self.mode == "qr":
            q, m = self._qr
            out = F.embedding(ids // m, w, sparse=sp) * F.embedding(q + ids % m, w, sparse=sp)
        else:
            c1, c2 = self.hash_cols.unbind()
            r1, r2 = self._hash.rows(ids)  # (n,) each: one row term per looked-up id
            if self.mode == "entry":
                idx = combine(r1, c1) % self.buckets  # (n, D)
                if self.sparse and torch.compiler.is_compiling():
                    name = base_class(self).__name__
                    raise ValueError(
                        f"{name}: sparse=True in mode='entry' does not compile "
                        f"(torch cannot trace a sparse gradient of the 1-D bucket array); use "
                        f"torch.compile without fullgraph=True (this lookup then runs eagerly), "
                        f"sparse=False, or mode='block' with aligned=True"
                    )
                out = SparseGather.apply(w, idx) if sp else w[idx]
                if self.signed:
                    out = out * ((combine(r2, c2) & 1) * 2 - 1).to(out.dtype)
            elif self.aligned:  # block rows of the (B/Z, Z) table
                off, sgn = self._blocks(r1, r2, c1, c2, self.buckets // self.block)
                out = F.embedding(off, w, sparse=sp) * sgn.unsqueeze(-1).to(w.dtype)
                out = out.flatten(-2)  # (n, D/Z, Z) -> (n, D)
            else:
                off, sgn = self._blocks(r1, r2, c1, c2, self.buckets)  # (n, D/Z) each
                Z = self.block
                idx = (off.unsqueeze(-1) + torch.arange(Z, device=off.device)) % self.buckets
                out = w[idx] * sgn.unsqueeze(-1).to(w.dtype)  # (n, D/Z, Z); backward: into B
                out = out.flatten(-2)
        if bags is None:
            return out
        out = out * fac.unsqueeze(-1).to(out.dtype)
        pooled = torch.zeros(nbags, out.shape[-1], dtype=out.dtype, device=out.device)
        return pooled.index_add(0, bags, out)

    def _blocks(self, r1, r2, c1, c2, R) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets ``(n, D/Z)`` of each block (``u mod R``), and their ±1 signs (int8).

        ``R = B``: offsets in the circular array; ``R = B/Z``: rows of the aligned table.
        """
        off = combine(r1, c1) % R
        if not self.signed:
            return off, torch.ones_like(off, dtype=torch.int8)
        return off, ((combine(r2, c2) & 1) * 2 - 1).to(torch.int8)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        ids = self._ids(input)
        try:
            return self._lookup(ids).reshape(*input.shape, self.embedding_dim)
        except CAUGHT as e:
            raise_if_mismatched(self, e, devices={"input": ids})
            raise

    def extra_repr(self) -> str:
        block = f", block={self.block}" if self.mode == "block" else ""
        # a qr table reads no hash: it printed seed= and signed= it ignores, so two layers
        # that compute the same function printed as different (stop 59); its split says it
        hashing = (
            f", tables=(q={self._qr[0]}, m={self._qr[1]})"
            if self.mode == "qr"
            else f", seed={self.seed}, signed={self.signed}"
        )
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, buckets={self.buckets}, "
            f"mode={self.mode!r}{block}{hashing}"
            + (", aligned=True" if self.aligned else "")
            + (", sparse=True" if self.sparse else "")
            + _untied_note(self)
        )


class HashedEmbeddingBag(HashedEmbedding):
    """Sums or means of bags of hashed rows: the hashed twin of :class:`torch.nn.EmbeddingBag`.

    With the fused CPU kernels the pooled ``(bags, D)`` output is accumulated
    directly: the ``(n, D)`` rows of the items are never materialised, forward or
    backward. Arguments as :class:`HashedEmbedding`, plus:

    Args:
        pooling: ``"sum"`` or ``"mean"`` (as ``nn.EmbeddingBag(mode=...)``; ``"max"`` is
            not supported).

    Shape:
        ``input`` ``(bags, L)`` (fixed-length bags), or 1-D ``(n,)`` with ``offsets``
        ``(bags,)`` (start of each bag, first 0, non-decreasing) → ``(bags, D)``.
        ``per_sample_weights`` (same shape as ``input``; ``pooling="sum"`` only) scales
        each item; they are data, not trained (no gradient flows to them).

    Raises:
        ValueError: for a bad ``pooling``, ``offsets`` or ``per_sample_weights``; for
            ``nn.EmbeddingBag``'s ``mode="sum"``/``"mean"``/``"max"`` (``pooling=`` here).
        TypeError: for ``nn.EmbeddingBag``'s ``include_last_offset`` (and the keywords
            :class:`HashedEmbedding` refuses), naming what to do here.
        TypeError / IndexError: for bad ids, as :class:`HashedEmbedding`; a ``TypeError``
            also for ``per_sample_weights`` of another dtype than the table (as
            ``nn.EmbeddingBag``).

    Example:
        >>> bag = HashedEmbeddingBag(1000, 8, buckets=256, mode="block", block=4)
        >>> ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
        >>> torch.allclose(bag(ids), bag.weight[ids].mean(1), atol=1e-6)
        True
    """

    def __init__(self, num_embeddings, embedding_dim, buckets, *, pooling="mean", **kwargs):
        refuse_bag_mode("HashedEmbeddingBag", kwargs.get("mode"))
        if pooling not in ("sum", "mean"):
            raise ValueError(
                f"HashedEmbeddingBag: pooling must be 'sum' or 'mean', got {pooling!r}"
            )
        super().__init__(num_embeddings, embedding_dim, buckets, **kwargs)
        self.pooling = pooling

    def forward(
        self,
        input: torch.Tensor,
        offsets: torch.Tensor | None = None,
        per_sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        name = base_class(self).__name__  # not Tied…
        ids = self._ids(input)
        if input.ndim == 2:
            if offsets is not None:
                raise ValueError(f"{name}: offsets must be None for 2-D input (one bag per row)")
            nbags, length = input.shape
            bags = torch.arange(nbags, device=ids.device).repeat_interleave(length)
            counts = torch.full((nbags,), length, device=ids.device)
        elif input.ndim == 1:
            if offsets is None:
                raise ValueError(f"{name}: 1-D input needs offsets (the start of each bag)")
            if (
                not isinstance(offsets, torch.Tensor)
                or offsets.ndim != 1
                or offsets.dtype not in (torch.int64, torch.int32)
            ):
                raise ValueError(
                    f"{name}: offsets must be a 1-D int64/int32 tensor, got {offsets!r}"
                )
            # sizes read from .shape, not numel(): a traced graph keeps them as the input's
            # (numel() was recorded as the trace's number, so a traced bag refused any
            # other number of ids with torch's "allocated size does not match", stop 53)
            nbags, n = offsets.shape[0], ids.shape[0]
            ends = torch.cat([offsets[1:].long(), offsets.new_zeros(1).long() + n])
            rule = f"{name}: offsets must start at 0, not decrease and stay <= len(input)"
            if in_graph() and nbags:
                # a Python if runs at recording time only: a traced or compiled bag failed
                # in repeat_interleave with torch's "allocated size does not match" (stop 53)
                starts = offsets.long()
                ok = (starts[0] == 0) & (ends >= starts).all() & (starts[-1] <= n)
                offsets = assert_in_graph(ok, f"{rule}; fix the offsets", offsets)
            elif nbags:
                starts = offsets.long()
                if int(starts[0]) != 0 or bool((ends < starts).any()) or int(starts[-1]) > n:
                    raise ValueError(f"{rule} = {n}, got {offsets.tolist()[:8]}")
            counts = ends - offsets.long()
            bags = torch.repeat_interleave(
                torch.arange(nbags, device=ids.device), counts, output_size=n
            )
        else:
            raise ValueError(
                f"{name}: input must be 1-D (with offsets) or 2-D, got shape {tuple(input.shape)}"
            )
        if per_sample_weights is not None:
            if self.pooling != "sum":
                raise ValueError(
                    f"{name}: per_sample_weights need pooling='sum', got {self.pooling!r}"
                )
            if (
                per_sample_weights.shape != input.shape
                or not per_sample_weights.is_floating_point()
            ):
                raise ValueError(
                    f"{name}: per_sample_weights must be a float tensor of the input's shape "
                    f"{tuple(input.shape)}, got {per_sample_weights.dtype} {tuple(per_sample_weights.shape)}"
                )
            if per_sample_weights.requires_grad:
                raise ValueError(
                    f"{name}: per_sample_weights that require grad are not supported (no "
                    f"gradient would reach them); pass per_sample_weights.detach()"
                )
            w_dtype = self._table_owner().weight_physical.dtype
            if per_sample_weights.dtype != w_dtype:
                # nn.EmbeddingBag refuses the clash (also under autocast); the weights were
                # cast to the table's dtype here with no error (float64 read as float32,
                # a float32 layer took bfloat16 weights) (stop 56)
                detail = dtype_detail(per_sample_weights.dtype, w_dtype, "per_sample_weights")
                raise InputDtypeError(f"{name}: {detail}", self, detail)
            per_sample_weights = per_sample_weights.reshape(-1)
        # one weight per item: its per-sample weight, over its bag's size for "mean"
        fac = torch.ones(ids.shape[0], dtype=torch.float64, device=ids.device)
        if per_sample_weights is not None:
            fac = per_sample_weights.double()
        if self.pooling == "mean":
            fac = fac / counts.clamp_min(1).double()[bags]
        try:
            return self._lookup(ids, nbags, bags, fac)
        except CAUGHT as e:
            raise_if_mismatched(
                self, e, devices={"input": ids, "per_sample_weights": per_sample_weights}
            )
            raise

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pooling={self.pooling!r}"
