"""Tied models under ``torch.distributed``: DDP, FSDP2 and checkpoints.

The tie engine stores each physical tensor once (a tied slot is read from its
owner at access time), so data parallelism sees each physical parameter once
and reduces its gradient once. What remains is sharding: under FSDP2 a unit's
parameters are gathered only while that unit runs. A tied slot read from
another unit must find its owner gathered, so :func:`fully_shard` keeps the
owning unit gathered after its forward (``reshard_after_forward=False``) and
checks, at every forward of a reading module, that the owner is gathered:
a configuration that cannot keep a tie raises :class:`tying.TieError` at the
first forward, before any optimizer step.

Checkpoints: :func:`save` gathers the full state on rank 0 and writes the
usual tying file (physical tensors once, ties in the metadata, atomic,
hashed); :func:`tying.load` restores it on any world size before wrapping.

Example (2 processes: ``torchrun --nproc-per-node 2 train.py``):

.. code-block:: python

    import torch, torch.distributed as dist, tying, tying.distributed as td
    dist.init_process_group("gloo")
    model = build()                                   # every rank, same seed
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(model)
    td.fully_shard(model, units=["layers.*"])         # one unit per layer + the root
    ...train...
    td.save(model, "ckpt.safetensors")                # rank 0 writes
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from torch import nn

from tying.core.checkpoint import save_state
from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.patterns import Pattern
from tying.core.verify import ties, verify


def ddp(model: nn.Module, **kwargs) -> nn.Module:
    """Wrap a tied model in ``DistributedDataParallel``.

    DDP reduces each tensor of ``model.parameters()``; a tied tensor appears
    there once, so its gradient (summed over every use by autograd) is
    all-reduced once. The declared ties are verified first.

    Args:
        model: the tied model (already on its device).
        **kwargs: passed to ``DistributedDataParallel``.

    Returns:
        The DDP-wrapped model (``tying.verify`` works on it through ``.module``).

    Raises:
        TieError: a declared tie is broken.
        RuntimeError: the default process group is not initialised.
    """
    from torch.nn.parallel import DistributedDataParallel

    _require_group()
    verify(model)
    return DistributedDataParallel(model, **kwargs)


def fully_shard(model: nn.Module, units: Iterable[str] = (), **kwargs) -> nn.Module:
    """Shard a tied model with FSDP2 so that every tie keeps working.

    ``units`` are module paths (globs allowed, e.g. ``"layers.*"``) that become
    their own FSDP units, innermost first; the root is always a unit. Every tie
    group's physical tensor belongs to exactly one unit (its owner's), so it is
    gathered and reduce-scattered once per step. When a tied slot is read from
    a module outside the owner's unit, the owner's unit keeps its parameters
    gathered after its forward, and the reader checks at each forward that it
    finds them gathered.

    Args:
        model: the tied model, on its device, identical on every rank.
        units: module path patterns to shard as separate units (one str is one pattern).
        **kwargs: passed to ``torch.distributed.fsdp.fully_shard`` for every unit.

    Returns:
        ``model``, sharded in place.

    Raises:
        TieError: a unit pattern matches no module, or a declared tie is broken.
        RuntimeError: the default process group is not initialised.
    """
    from torch.distributed.fsdp import fully_shard as _fully_shard

    _require_group()
    verify(model)
    inv = Inventory(model)
    # one pattern given as a str was read letter by letter ('layers.*' as 'l', 'a', ...:
    # refused for 'l', or with one-letter module names sharded by the letters; stop 32)
    units = (units,) if isinstance(units, str) else tuple(units)
    unit_paths: list[str] = []
    for pattern in units:
        pat = Pattern(pattern)
        found = [p for p in inv.modules if p and pat.match(p) is not None]
        if not found:
            raise TieError(
                f"fully_shard: unit pattern {pattern!r} matches no module{inv.closest(pattern)}"
            )
        unit_paths += [p for p in found if p not in unit_paths]
    unit_paths.sort(key=lambda p: -p.count("."))  # innermost first, as FSDP2 requires

    def unit_of(module_path: str) -> str:
        best = ""
        for u in unit_paths:
            if (module_path == u or module_path.startswith(u + ".")) and len(u) > len(best):
                best = u
        return best

    keep_gathered: set[str] = set()
    readers: dict[str, list[tuple[str, str, str]]] = {}
    for tie in ties(model):
        info = inv.slots[tie.target]
        root = inv.root_of(tie.target)
        owner_module = root.rsplit(".", 1)[0] if "." in root else ""
        owner, reader = unit_of(owner_module), unit_of(info.module_path)
        if owner != reader:
            if owner:
                keep_gathered.add(owner)
            readers.setdefault(info.module_path, []).append((tie.target, root, owner or "<root>"))

    for path in unit_paths:
        kw = dict(kwargs)
        if path in keep_gathered:
            kw["reshard_after_forward"] = False
        _fully_shard(inv.modules[path], **kw)
    _fully_shard(model, **kwargs)

    for module_path, reads in readers.items():
        inv.modules[module_path].register_forward_pre_hook(_GatheredCheck(reads))
    return model


class _GatheredCheck:
    """Forward pre-hook: every tied slot this module reads must find its owner gathered."""

    def __init__(self, reads: list[tuple[str, str, str]]):
        self.reads = reads

    def __call__(self, module, args):
        from torch.distributed.tensor import DTensor

        for target, root, owner in self.reads:
            name = target.rsplit(".", 1)[-1]
            if isinstance(getattr(module, name), DTensor):
                raise TieError(
                    f"{target} reads {root}, whose FSDP unit {owner!r} is still sharded: that unit "
                    f"must run its forward before this module in every step; make the owner's unit "
                    f"an ancestor of this module (drop it from units=) or reorder the model"
                )


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Gather the full state of a (sharded) tied model and write it from rank 0.

    A collective: every rank must call it. The file is the usual tying file, so
    :func:`tying.load` restores it into an unsharded model on any world size.

    Args:
        model: the model (plain, DDP-wrapped or FSDP2-sharded).
        path: the file rank 0 writes (atomically).
        metadata: extra str → str header entries.

    Raises:
        RuntimeError: on every rank but 0 when rank 0's write failed (rank 0 raises its
            own error); every rank returns or raises, none is left waiting.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )
    state = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not dist.is_initialized():
        save_state(state, ties(inner), path, metadata)
        return
    # Rank 0 writes and then tells every rank how it went: a failed write used to raise
    # on rank 0 alone while the others waited at a barrier that never came (a hang).
    failure: BaseException | None = None
    outcome: list[str | None] = [None]
    if dist.get_rank() == 0:
        try:
            save_state(state, ties(inner), path, metadata)
        except BaseException as err:  # told to the other ranks, then re-raised here
            failure = err
            outcome = [f"{type(err).__name__}: {err}"]
    dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        raise RuntimeError(
            f"tying.distributed.save: rank 0 could not write {os.fspath(path)!r} "
            f"({outcome[0]}); rank 0 raised that error, and no rank holds a new file"
        )


def _require_group() -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "tying.distributed needs an initialised default process group: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment)"
        )


__all__ = ["ddp", "fully_shard", "save"]
