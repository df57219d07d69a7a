"""Counting: logical vs physical parameters and bytes, per tie group."""

from __future__ import annotations

import dataclasses
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
    physical. Hand-made ties (one ``nn.Parameter`` in two modules) are seen too.

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

    inv = Inventory(model)
    groups: dict[int, Group] = {}
    logical = bytes_logical = 0
    for path, info in inv.slots.items():
        root_path = inv.root_of(path)
        tensor = inv.tensor(root_path)
        size = tensor.element_size()
        logical += info.numel
        bytes_logical += info.numel * size
        g = groups.get(id(tensor))
        if g is None:
            g = groups[id(tensor)] = Group(
                root_path, tensor.numel(), tensor.numel() * size, [], 0, 0
            )
        g.slots.append(path)
        g.logical += info.numel
        g.bytes_logical += info.numel * size
    physical = bytes_physical = 0
    seen: set[int] = set()
    for _path, tensor in [(p, inv.tensor(p)) for p in inv.slots if not inv.slots[p].is_tied] + list(
        inv.storage.items()
    ):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        physical += tensor.numel()
        bytes_physical += tensor.numel() * tensor.element_size()
    tie_groups = [
        g for g in groups.values() if len(g.slots) > 1 or any(inv.slots[s].is_tied for s in g.slots)
    ]
    return Count(logical, physical, bytes_logical, bytes_physical, tie_groups)
