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
import sys
from collections.abc import Iterable

import torch
from torch import nn

from tying.core.checkpoint import save_state
from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.patterns import Pattern
from tying.core.verify import ties, verify


def ddp(model: nn.Module, **kwargs) -> nn.Module:
    """Wrap a tied model in ``DistributedDataParallel``.

    DDP reduces each tensor of ``model.parameters()``; a tied tensor appears
    there once, so its gradient (summed over every use by autograd) is
    all-reduced once. The declared ties are verified first.

    DDP all-reduces the tensors it was built with, so the wrapped model's parameters
    must stay those tensors: a tie made, removed or re-made after wrapping (``Plan.apply``,
    ``tying.untie``/``retie``, ``load_state_dict(assign=True)``) is refused with a
    :class:`tying.TieError` at the next training forward (before it, a new tensor such
    as a ``Scaled`` tie's scale, or an untied copy, trained apart on every rank).

    Args:
        model: the tied model (already on its device), not yet wrapped or sharded.
        **kwargs: passed to ``DistributedDataParallel``.

    Returns:
        The DDP-wrapped model (``tying.verify`` works on it through ``.module``).

    Raises:
        TieError: a declared tie is broken; ``model`` is already wrapped by DDP or
            sharded by FSDP; (at a forward) its parameters changed after wrapping.
        RuntimeError: the default process group is not initialised.

    Tie first, then wrap: ``td.ddp(tied_model)``; a ``tying.Plan(...).apply(model.module)``
    after it is refused at the next training forward (``docs/distributed.md``).
    """
    from torch.nn.parallel import DistributedDataParallel

    _require_group()
    _refuse_wrapped(model, "ddp")
    verify(model)
    wrapped = DistributedDataParallel(model, **kwargs)
    wrapped.register_forward_pre_hook(_ParametersKept(model, "ddp"), prepend=True)
    return wrapped


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

    Everything is checked before the first unit is sharded, so a refused call leaves
    ``model`` unsharded. A tie made or removed after sharding is refused with a
    :class:`tying.TieError` at the next training forward.

    Raises:
        TieError: a unit pattern matches no module; a declared tie is broken; ``model``
            is already sharded or wrapped by DDP; a hand-made tie (one ``nn.Parameter``
            in two modules) spans two units; a parameter is 0-dim (a ``Scaled`` tie's
            scale), which FSDP2 cannot shard; (at a forward) the model's parameters
            changed after sharding.
        RuntimeError: the default process group is not initialised.
    """
    from torch.distributed.fsdp import fully_shard as _fully_shard

    _require_group()
    _refuse_wrapped(model, "fully_shard")
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

    _refuse_unshardable(inv, unit_of)
    keep_gathered: set[str] = set()
    readers: dict[str, list[tuple[str, str, str]]] = {}
    for tie in ties(model):
        if tie.hand:  # one Parameter in two modules: FSDP2 itself shards it with one unit
            continue
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
    model.register_forward_pre_hook(_ParametersKept(model, "fully_shard"), prepend=True)
    return model


def _refuse_wrapped(model: nn.Module, helper: str) -> None:
    """A model already wrapped by DDP or sharded by FSDP2 is refused before anything changes."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    # stop 33: ddp(ddp(m)) reduced every gradient twice, ddp(sharded) failed inside
    # DDP's broadcast with no name, fully_shard(ddp(m)) sharded under DDP's reducer,
    # and fully_shard twice hit FSDP's AssertionError after the inner units were sharded
    for path, mod in model.named_modules():
        if isinstance(mod, (DistributedDataParallel, nn.DataParallel)):
            what = f"wrapped by {type(mod).__name__}"
            fix = f"pass the model inside (ddp_model.module) to td.{helper} instead"
        elif isinstance(mod, FSDPModule):
            what = "sharded by FSDP (fully_shard)"
            fix = f"use it as it is, or build the model again and call td.{helper} on that"
        else:
            continue
        raise TieError(
            f"tying.distributed.{helper}: the model{' at ' + repr(path) if path else ''} is "
            f"already {what}; a model is wrapped once, by one of td.ddp / td.fully_shard: "
            f"{fix}"
        )


def _refuse_unshardable(inv: Inventory, unit_of) -> None:
    """What FSDP2 would refuse half-way through sharding, refused before the first unit."""
    # stop 33: a Scaled tie's scale failed inside FSDP2 ("Change weight_scale to a 1D
    # tensor") after the units before it were sharded, naming neither the tie nor a fix
    roles = {
        join(info.module_path, stored): f" (the {role} of the tie {info.path} <- "
        f"{info.source or 'its own storage'}, {info.tie.relation!r})"
        for info in inv.slots.values()
        if info.tie is not None
        for role, stored in info.tie.storage.items()
    }
    physical = [path for path, info in inv.slots.items() if not info.is_tied]
    for path in [*inv.storage, *physical]:
        if inv.tensor(path).dim() == 0:
            role = roles.get(path, "")
            raise TieError(
                f"fully_shard: {path} is a 0-dim parameter{role}, which FSDP2 cannot shard "
                f"(expected at least 1 dim, got shape ()); train this model with td.ddp, or "
                f"tie with a relation that stores no scalar (Same, Transposed, Rotated, "
                f"Flipped, Mirrored)"
            )
    for target, source in inv.hand.items():
        a = unit_of(inv.slots[source].module_path)
        b = unit_of(inv.slots[target].module_path)
        if a != b:
            raise TieError(
                f"fully_shard: {target} holds the same nn.Parameter as {source} (a hand-made "
                f"tie) but the two ends fall in different FSDP units ({a or '<root>'!r}, "
                f"{b or '<root>'!r}), and FSDP2 shards a tensor in one unit only; declare the "
                f"tie instead, which fully_shard keeps gathered for its reader: "
                f"tying.Plan([tying.free({target!r})]).apply(model), then "
                f"tying.Plan([tying.share({target!r}, like={source!r})]).apply(model); or "
                f"choose units= so that both ends fall in one unit"
            )


class _ParametersKept:
    """Forward pre-hook on a wrapped model: its parameters are still the ones it was wrapped with.

    DDP all-reduces the tensors it was built with and FSDP2 shards the ones it found, so a
    tie made or removed afterwards (``Plan.apply``, ``tying.untie``) left a tensor outside
    both: under DDP with ``find_unused_parameters`` or ``static_graph`` a ``Scaled`` tie's
    new scale, or every untied copy, then trained apart on each rank with no error (stop 33).
    DDP keeps each Parameter object, so its check is by identity; FSDP2 swaps sharded and
    gathered tensors under the same names, so its check is by name. Training forwards only:
    one walk over the modules, no tensor is read.
    """

    def __init__(self, model: nn.Module, helper: str):
        self.model, self.helper = model, helper
        self.by_id = helper == "ddp"
        self.names = self._names()
        self.key = self._key()

    def _names(self) -> set[tuple[int, str]]:
        pairs = self.model.named_parameters(remove_duplicate=False)
        return {(id(p) if self.by_id else 0, n) for n, p in pairs}

    def _key(self) -> list:
        out: list = []
        stack = [self.model]
        while stack:
            mod = stack.pop()
            params = mod._parameters
            out.append(tuple(map(id, params.values())) if self.by_id else tuple(params))
            stack.extend(m for m in mod._modules.values() if m is not None)
        return out

    def __call__(self, module, args):
        if not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return
        if self._key() == self.key:
            return
        now = self._names()
        gone = sorted(n for _, n in self.names - now)
        new = sorted(n for _, n in now - self.names)
        tool = "DDP all-reduces" if self.by_id else "FSDP2 shards and reduces"
        raise TieError(
            f"tying.distributed.{self.helper}: the model's parameters changed after it was "
            f"wrapped (replaced or removed: {', '.join(gone) or 'none'}; new: "
            f"{', '.join(new) or 'none'}): {tool} only the tensors it was given, so a new "
            f"one would train apart on every rank; make every tie change (Plan.apply, "
            f"tying.untie / retie / load, load_state_dict(assign=True)) before "
            f"td.{self.helper}(model), then build and wrap the model again"
        )


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

    inner = _unwrapped(model)
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


def _unwrapped(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / DataParallel / ``torch.compile`` wrappers (any nesting)."""
    from torch.nn.parallel import DistributedDataParallel

    # stop 33: any model with an attribute named ``module`` (``self.module = backbone``)
    # used to be taken for DDP, and only that submodule was written; a compiled model
    # wrote ties under '_orig_mod.' paths that no model has
    while True:
        if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif "torch._dynamo" in sys.modules and isinstance(
            model, sys.modules["torch._dynamo"].eval_frame.OptimizedModule
        ):
            model = model._orig_mod
        else:
            return model


def _require_group() -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "tying.distributed needs an initialised default process group: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment)"
        )


__all__ = ["ddp", "fully_shard", "save"]
