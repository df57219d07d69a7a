"""Counting: logical vs physical parameters and bytes, per tie group."""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a module is counted, not when Count is
    from torch import nn


@dataclasses.dataclass
class Group:
    """One physical tensor and the logical slots that read it."""

    physical_path: str
    physical: int
    bytes_physical: int
    slots: list[str]
    logical: int
    bytes_logical: int


@dataclasses.dataclass
class Count:
    """Parameter counts of a model.

    Attributes:
        logical: entries the model reads (every slot, tied or not).
        physical: entries stored and trained (each tensor once).
        bytes_logical, bytes_physical: the same in bytes.
        groups: one :class:`Group` per physical tensor read by more than one slot
            or through a relation.
    """

    logical: int
    physical: int
    bytes_logical: int
    bytes_physical: int
    groups: list[Group]

    @property
    def ratio(self) -> float:
        """logical / physical (1.0 for an untied model)."""
        return self.logical / self.physical if self.physical else 1.0

    def to_dict(self) -> dict:
        return {
            "logical": self.logical,
            "physical": self.physical,
            "bytes_logical": self.bytes_logical,
            "bytes_physical": self.bytes_physical,
            "ratio": self.ratio,
            "groups": [dataclasses.asdict(g) for g in self.groups],
        }

    def __str__(self) -> str:
        head = (
            f"parameters: logical {self.logical:,}  physical {self.physical:,}  "
            f"ratio {self.ratio:.3g}  (bytes {self.bytes_logical:,} / {self.bytes_physical:,})"
        )
        if not self.groups:
            return head + "\nno tie groups"
        w = max(len(g.physical_path) for g in self.groups)
        rows = [head, f"{'physical tensor':<{w}}  {'physical':>10}  {'logical':>10}  uses"]
        for g in self.groups:
            uses = ", ".join(g.slots[:4]) + (
                f", … (+{len(g.slots) - 4})" if len(g.slots) > 4 else ""
            )
            rows.append(f"{g.physical_path:<{w}}  {g.physical:>10,}  {g.logical:>10,}  {uses}")
        return "\n".join(rows)


def count(model: nn.Module) -> Count:
    """Count logical and physical parameters of ``model``.

    Tied slots count once per use in ``logical`` and their tensor once in
    ``physical``; a relation's own parameters (``Scaled``'s scale) count as
    physical. Hand-made ties (one ``nn.Parameter`` in two modules) are seen too, and so
    are Parameters that share memory through views (``nn.Parameter(a.weight.data[:2])``):
    ``physical`` counts the distinct entries stored, and overlapping ones form a group.
    A quantized module's packed weight and bias (``torch.ao``'s ``quantize_dynamic``,
    ``convert``), which are not parameters, count too: once per module object in
    ``physical``, once per seat in ``logical`` (:mod:`tying.core.packed`).

    Args:
        model: any ``nn.Module``, or an estimator with ``n_parameters()``
            returning a :class:`Count` (``tying.hmm`` models, ``tying.fit`` fits).

    Returns:
        A :class:`Count`.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        >>> _ = tying.Plan([tying.share("*", like="0")]).apply(m)
        >>> c = tying.count(m)
        >>> c.logical, c.physical, c.ratio
        (60, 20, 3.0)
    """
    torch = sys.modules.get("torch")  # an nn.Module implies torch is imported
    if torch is None or not isinstance(model, torch.nn.Module):
        counter = getattr(model, "n_parameters", None)
        if callable(counter):  # estimators with ties of their own (HMMs, global fits)
            return counter()
        raise TypeError(
            f"count: expected an nn.Module or an object with n_parameters() (a tying HMM or "
            f"global fit), got {type(model).__name__}"
        )
    from tying.core.inventory import Inventory
    from tying.core.packed import packed_weights

    inv = Inventory(model)
    physical_tensors: dict[int, tuple[str, object]] = {}  # id -> (path, tensor), each once
    for path, info in inv.slots.items():
        if not info.is_tied:
            physical_tensors.setdefault(id(inv.tensor(path)), (path, inv.tensor(path)))
    for path, tensor in inv.storage.items():
        physical_tensors.setdefault(id(tensor), (path, tensor))
    # Parameters that share memory through views (``nn.Parameter(a.weight.data[:2])``, a
    # transposed alias, one flat buffer cut into parameters) are distinct objects over the
    # same bytes: counted by the memory they cover, not once per object (stop 32: they
    # were counted twice), and overlapping ones form one group, like a tie.
    extent = _Extent([t for _, t in physical_tensors.values()])
    groups: dict[int, Group] = {}
    logical = bytes_logical = 0
    # a tensor torch.nn.utils.parametrize computes from fewer stored entries (a
    # LocallyConnected2d's tie_filters: one filter repeated over positions) is read as
    # its computed value: count saw its stored original only and said "no tie groups"
    # (stop 57); see _parametrized
    reads = _parametrized(model, inv)
    shared: set[int] = set()
    for path, info in inv.slots.items():
        root_path = inv.root_of(path)
        tensor = inv.tensor(root_path)
        size = tensor.element_size()
        name, numel, nbytes_read = path, info.numel, info.numel * size
        key = extent.component(tensor)
        if path in reads:
            name, more, more_bytes = reads[path]
            numel, nbytes_read = numel + more, nbytes_read + more_bytes
            shared.add(key)
        logical += numel
        bytes_logical += nbytes_read
        g = groups.get(key)
        if g is None:
            entries, nbytes = extent.of_component(key, tensor)
            g = groups[key] = Group(root_path, entries, nbytes, [], 0, 0)
        g.slots.append(name)
        g.logical += numel
        g.bytes_logical += nbytes_read
    physical, bytes_physical = extent.total()
    tie_groups = [
        g
        for key, g in groups.items()
        if len(g.slots) > 1 or key in shared or any(inv.slots[s].is_tied for s in g.slots)
    ]
    # A quantized module's int8 weight and bias are packed, not parameters: count(q) was 0
    # and a quantized module seated twice formed no group (stop 39). Each packed object
    # counts once in physical, once per seat in logical, like a module tied whole.
    packed: dict[tuple[int, str], Group] = {}
    for key, seat, tensors in packed_weights(model):
        for name, t in tensors:
            n, nbytes = t.numel(), t.numel() * t.element_size()
            g = packed.get((key, name))
            if g is None:
                g = packed[key, name] = Group(f"{seat}.{name}", n, nbytes, [], 0, 0)
                physical, bytes_physical = physical + n, bytes_physical + nbytes
            g.slots.append(f"{seat}.{name}")
            g.logical, g.bytes_logical = g.logical + n, g.bytes_logical + nbytes
            logical, bytes_logical = logical + n, bytes_logical + nbytes
    tie_groups += [g for g in packed.values() if len(g.slots) > 1]
    return Count(logical, physical, bytes_logical, bytes_physical, tie_groups)


def _parametrized(model, inv) -> dict[str, tuple[str, int, int]]:
    """``{stored original's path: (computed tensor's path, entries, bytes)}`` for each tensor
    that ``torch.nn.utils.parametrize`` computes from fewer stored entries than it has.

    Any parametrization (``register_parametrization``, ``unsafe=True`` too) is read by its
    computed value: where it has more entries than its originals store (a weight repeated
    from a smaller original, a filter shared over positions), the extra entries are
    logical (on its largest original) and the originals form a tie group under the
    computed tensor's name. One that stores at least as many as it computes
    (``orthogonal``, ``weight_norm``'s g and v, ``spectral_norm``) shares nothing: counted
    as its stored originals, logical = physical, as before.

    Raises:
        TieError: when computing a parametrized tensor raises (its count cannot be known).
    """
    import torch
    from torch.nn.utils import parametrize

    from tying.core.errors import TieError
    from tying.core.inventory import join

    out: dict[str, tuple[str, int, int]] = {}
    for mpath, mod in model.named_modules(remove_duplicate=False):
        if not parametrize.is_parametrized(mod):
            continue
        for name, plist in mod.parametrizations.items():
            held = [
                (join(mpath, f"parametrizations.{name}.{oname}"), t)
                for oname, t in plist.named_parameters(recurse=False)
                if oname == "original" or oname.removeprefix("original").isdigit()
            ]
            held = [(p, t) for p, t in held if p in inv.slots]
            if not held:
                continue
            try:
                value = _computed_quietly(mod, name, plist)
            except Exception as err:  # a user's parametrization: any error it raises
                raise TieError(
                    f"count: {join(mpath, name)} is computed by torch.nn.utils.parametrize "
                    f"({', '.join(type(f).__name__ for f in plist)}) and computing it raised "
                    f"{type(err).__name__}: {err}; its logical size cannot be known without "
                    f"it: fix the parametrization or remove it (parametrize."
                    f"remove_parametrizations(module, {name!r})) before counting"
                ) from err
            stored = sum(t.numel() for _, t in held)
            stored_bytes = sum(t.numel() * t.element_size() for _, t in held)
            if not isinstance(value, torch.Tensor) or value.numel() <= stored:
                continue
            path = max(held, key=lambda pt: pt[1].numel())[0]
            more_bytes = max(0, value.numel() * value.element_size() - stored_bytes)
            out[path] = (join(mpath, name), value.numel() - stored, more_bytes)
    return out


def _computed_quietly(mod, name: str, plist):
    """``getattr(mod, name)`` with nothing of the model changed: the parametrizations in
    eval mode (``spectral_norm``'s power iteration in training mode updates its ``u`` and
    ``v``) and any buffer they wrote put back. Counting changes nothing.

    Only the computed tensor's size is needed: it is computed on ``meta`` copies of the
    originals and buffers first (no arithmetic, no random draw, works on a ``meta``
    model); for real only where an operation has no meta kernel, with the random state
    put back."""
    import torch
    from torch.func import functional_call

    modes = [(m, m.training) for m in plist.modules()]
    try:
        plist.eval()
        with torch.no_grad():
            state = {k: v.to("meta") for k, v in plist.named_parameters()}
            state.update({k: v.to("meta") for k, v in plist.named_buffers()})
            try:
                return functional_call(plist, state, ())
            except Exception:  # an operation without a meta kernel: computed for real
                pass
            kept = [(b, b.clone()) for b in plist.buffers() if not b.is_meta]
            try:
                with torch.random.fork_rng(devices=[]):
                    return getattr(mod, name)
            finally:
                for b, before in kept:
                    if not torch.equal(b, before):
                        b.copy_(before)
    finally:
        for m, training in modes:
            m.training = training


def _memory_key(t) -> tuple | None:
    """Which storage ``t``'s elements live in, or None when that cannot be known (meta and
    fake tensors, tensor subclasses such as DTensor, sparse tensors): then ``t`` is taken
    to share memory with no other tensor."""
    import torch

    if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.is_meta or t.layout != torch.strided:
        return None
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # a functorch wrapper, no storage
        return None
    return None if ptr == 0 else (str(t.device), ptr)


def _runs(t):
    """``(starts, length)``: the byte offsets in its storage where each contiguous run of
    ``t``'s elements starts, and the runs' length in bytes."""
    import torch

    size = t.element_size()
    if t.numel() == 0:
        return torch.empty(0, dtype=torch.int64), 0
    # a dimension of stride 0 (an expanded tensor) only repeats elements
    dims = sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1 and st != 0)
    run = 1
    while dims and dims[0][0] == run:  # the innermost dimensions that are contiguous
        run *= dims.pop(0)[1]
    starts = torch.tensor([t.storage_offset()], dtype=torch.int64)
    for st, n in dims:
        starts = (starts[:, None] + torch.arange(n, dtype=torch.int64) * st).flatten()
    return starts * size, run * size


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class _Extent:
    """The memory a set of tensors covers: distinct entries and bytes, and which tensors
    overlap (components). Tensors alone in their storage and contiguous cost nothing more
    than ``numel()``; the others are measured as unions of byte intervals."""

    def __init__(self, tensors: list) -> None:
        import torch

        self._rep: dict[int, int] = {}  # id(tensor) -> id of its component's first tensor
        self._measure: dict[int, tuple[int, int]] = {}  # component -> (entries, bytes)
        by_storage: dict[tuple, list] = {}
        self._total = [0, 0]
        for t in tensors:
            key = _memory_key(t)
            by_storage.setdefault(key if key is not None else ("", id(t)), []).append(t)
        for key, members in by_storage.items():
            if len(members) == 1 and (key[0] == "" or members[0].is_contiguous()):
                t = members[0]
                self._add([t], t.numel(), t.numel() * t.element_size())
                continue
            runs = [_runs(t) for t in members]
            starts = torch.cat([s for s, _ in runs])
            ends = torch.cat([s + n for s, n in runs])
            owner = torch.cat(
                [torch.full((len(s),), i, dtype=torch.int64) for i, (s, _) in enumerate(runs)]
            )
            order = torch.argsort(starts, stable=True)
            starts, ends, owner = starts[order], ends[order], owner[order]
            reach = torch.cummax(ends, dim=0).values
            before = torch.cat([starts[:1], reach[:-1]])  # the farthest byte covered so far
            new = (ends - torch.maximum(starts, before)).clamp(min=0)
            # a run that starts at or past everything before it opens a new component
            component = torch.cumsum((starts >= before).to(torch.int64), dim=0)
            component[0] = 1
            parent = list(range(len(members)))  # union-find over the members
            find = functools.partial(_find, parent)
            first: dict[int, int] = {}
            for c, o in zip(component.tolist(), owner.tolist()):
                j = first.setdefault(c, o)
                a, b = find(j), find(o)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            covered: dict[int, list[int]] = {}
            sizes = [t.element_size() for t in members]
            for o, nb in zip(owner.tolist(), new.tolist()):
                acc = covered.setdefault(find(o), [0, 0])
                acc[0] += nb // sizes[o]  # whole elements (one dtype per storage, in practice)
                acc[1] += nb
            for root, (entries, nbytes) in covered.items():
                self._add([t for i, t in enumerate(members) if find(i) == root], entries, nbytes)
            for t in members:  # components that added no bytes (numel 0)
                if id(t) not in self._rep:
                    self._add([t], 0, 0)

    def _add(self, members: list, entries: int, nbytes: int) -> None:
        key = id(members[0])
        for t in members:
            self._rep[id(t)] = key
        self._measure[key] = (entries, nbytes)
        self._total[0] += entries
        self._total[1] += nbytes

    def component(self, t) -> int:
        return self._rep.get(id(t), id(t))

    def of_component(self, key: int, t) -> tuple[int, int]:
        """(entries, bytes) of a component; a tensor outside every component by itself."""
        return self._measure.get(key, (t.numel(), t.numel() * t.element_size()))

    def total(self) -> tuple[int, int]:
        return self._total[0], self._total[1]
