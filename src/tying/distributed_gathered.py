"""The gathered copies a ``td.fully_shard`` model hands out between a forward and a backward.

FSDP2 gathers a unit's parameters for its forward and registers the gathered (unsharded)
copies on the unit's modules in place of the sharded ones (DTensors). A unit kept gathered
after its forward (``reshard_after_forward=False``: FSDP2's root, and every tie owner that
``td.fully_shard`` keeps gathered for its readers) is resharded only in the backward. So
after a forward with no backward, ``model.parameters()`` gives the gathered copies, and an
optimizer built then steps tensors FSDP2 never reads again: the next all-gather overwrites
them, and FSDP2 hands the gradient to the sharded parameters the optimizer does not hold.
The model trained off the single-process result, with no error (stop 49: 4 % off after an
evaluation forward; stop 50: 0.034 off after three steps, for a forward with gradients whose
loss was dropped).

- After a forward with no gradient no backward can come, so :class:`AfterForward`
  reshards every unit there (stop 49), unless an earlier forward's backward is still to
  come (stop 50); the next forward gathers again.
- After a forward with gradients a backward may come and needs the units gathered (a tie's
  reader runs its backward before its owner's unit would gather again), so nothing is
  resharded; :class:`AfterForward` records the gathered copies instead, and
  :func:`refuse_gathered` (a global optimizer step pre-hook, installed by the first
  ``td.fully_shard`` of a process) refuses a step of an optimizer that holds one, before
  any tensor is changed.
- A tie's reader in another unit needs its owner's unit gathered in its backward.
  :class:`GatheredCheck` checks that at the reader's forward; :class:`OwnerRegathered`
  gathers the owner again at the reader's backward when another backward has resharded it
  (two forwards, then one backward of both, or their backwards in either order: each
  failed inside FSDP2 with ``setStorage: ... out of bounds for storage of size 0``, stop 51).
- All of this reads FSDP2's private state (``FSDPParam._unsharded_param`` and the rest,
  :data:`FSDP_PRIVATE`); :func:`refuse_renamed_internals` checks at wrap time, before any
  unit is sharded, that the installed torch still has each of them (a rename would have
  silently turned the refusals off).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from tying.core.errors import TieError

# id(gathered copy) -> (weak reference to it, its parameter name): ids, not tensors, as
# keys, so a lookup is one dict probe per optimizer parameter and tensors are not compared
_GATHERED: dict[int, tuple[weakref.ref, str]] = {}
_STEP_HOOK = None


class AfterForward:
    """Forward hook on a sharded root: reshard after a forward with no gradient unless a
    backward is still to come; after one with gradients, record the gathered copies the
    model now hands out and that a backward is to come.

    A backward is to come while the autograd graph of a forward with gradients lives and
    its backward has not reached the forward's outputs: a pre-hook on each output's node
    says when the backward starts, and a token the hook holds says when the graph is freed
    (the loss dropped, no backward run). Resharding then freed the storage of a tie owner's
    unit, and that backward failed inside FSDP2 (``setStorage: ... storage of size 0``):
    a loss computed, an evaluation under ``torch.no_grad()``, then ``loss.backward()``
    (stop 50; the stop-49 reshard made that order fail).
    """

    def __init__(self):
        self.pending: set[int] = set()  # serials of forwards whose backward is to come
        self.serial = 0

    def __call__(self, module: nn.Module, args, output) -> None:
        if not torch.is_grad_enabled():  # no backward can come for this forward
            if self.pending:  # an earlier forward's backward needs the units gathered
                return
            from torch.distributed.fsdp import FSDPModule

            for mod in module.modules():
                if isinstance(mod, FSDPModule):
                    mod.reshard()
            return
        _record(module)
        self._watch(output)

    @torch.compiler.disable  # bookkeeping only: never traced into a compiled graph
    def _watch(self, output) -> None:
        from torch.utils._pytree import tree_leaves

        nodes = [
            t.grad_fn
            for t in tree_leaves(output)
            if isinstance(t, torch.Tensor) and t.grad_fn is not None
        ]
        if not nodes:
            return
        self.serial += 1
        serial, pending = self.serial, self.pending
        token = _Token()
        weakref.finalize(token, pending.discard, serial)  # the graph freed, no backward run

        def started(grad_outputs, token=token):  # the backward reached this forward's output
            pending.discard(serial)

        for node in nodes:
            node.register_prehook(started)
        pending.add(serial)


class _Token:
    """Held by a forward's backward pre-hooks only: freed with that forward's graph."""


@torch.compiler.disable  # bookkeeping only: never traced into a compiled graph
def _record(model: nn.Module) -> None:
    """Record every gathered copy FSDP2 has made of ``model``'s parameters.

    FSDP2 makes one gathered ``nn.Parameter`` per sharded parameter at its first all-gather
    and reuses it (freeing and refilling its storage), so each is recorded once. They are
    read from FSDP2's per-unit state (``FSDPParam._unsharded_param``): the sharded
    parameters may be replaced after sharding (``to_empty`` of a meta-device model), so
    no other test tells a gathered copy from a sharded parameter (under tensor
    parallelism both are DTensors). A torch release that renamed them is refused when
    sharding (:func:`refuse_renamed_internals`), so a copy missing here is one FSDP2 has not
    made yet (a unit whose forward has not run), not a renamed attribute.
    """
    from torch.distributed.fsdp import FSDPModule

    for mod in model.modules():
        if not isinstance(mod, FSDPModule):
            continue
        for group in _param_groups(mod):
            for fsdp_param in group.fsdp_params:
                p = getattr(fsdp_param, "_unsharded_param", None)
                if p is None:
                    continue
                key = id(p)
                entry = _GATHERED.get(key)
                if entry is not None and entry[0]() is p:
                    continue
                name = getattr(fsdp_param, "_param_fqn", None) or "a parameter"
                _GATHERED[key] = (weakref.ref(p, _forget(key)), name)


def _param_groups(unit: nn.Module) -> list:
    """FSDP2's parameter groups of one unit (an ``FSDPModule``)."""
    state = unit._get_fsdp_state()
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is None:  # torch before grouped units: one group per unit
        groups = [g for g in (getattr(state, "_fsdp_param_group", None),) if g is not None]
    return list(groups)


# FSDP2's private names read here, each as (module, class, function or property, name):
# the name the function writes (its code names it) or, for a property, None. A torch release
# that renames one would silently turn a refusal off (``_record`` finding no gathered copy, a
# unit's groups found empty), so each is looked up at wrap time (stop 51)
FSDP_PRIVATE = (
    ("_fsdp_state", "FSDPState", "__init__", "_fsdp_param_groups"),
    ("_fsdp_param_group", "FSDPParamGroup", "__init__", "fsdp_params"),
    ("_fsdp_param_group", "FSDPParamGroup", "is_unsharded", None),
    ("_fsdp_param", "FSDPParam", "__init__", "_param_fqn"),
    ("_fsdp_param", "FSDPParam", "init_unsharded_param", "_unsharded_param"),
)
_FSDP_PACKAGES = ("torch.distributed.fsdp._fully_shard", "torch.distributed._composable.fsdp")


def refuse_renamed_internals() -> None:
    """Refuse to shard when the installed torch lacks an FSDP2 private name read here.

    The refusals of this module (an optimizer holding gathered copies, a state dict between
    a forward and its backward) and the owner gathered again for a reader's backward read
    FSDP2's private state: :data:`FSDP_PRIVATE`, plus ``FSDPModule._get_fsdp_state`` and
    ``FSDPModule.unshard``. Each is looked up in the installed torch (a function's code must
    name the attribute it writes), before any unit is sharded.

    Raises:
        TieError: a name is missing (a torch release renamed or moved it), naming it and
            the torch version; nothing was sharded.

    Example:
        >>> from tying.distributed_gathered import refuse_renamed_internals
        >>> refuse_renamed_internals() is None  # this torch has every name
        True
    """
    import importlib
    import inspect

    from torch.distributed.fsdp import FSDPModule

    missing = [
        f"FSDPModule.{name}"
        for name in ("_get_fsdp_state", "unshard")
        if not callable(getattr(FSDPModule, name, None))
    ]
    for module_name, cls_name, attr, writes in FSDP_PRIVATE:
        where = f"{cls_name}.{attr}" + (f" (writing {writes})" if writes else "")
        cls = None
        for package in _FSDP_PACKAGES:
            try:
                cls = getattr(importlib.import_module(f"{package}.{module_name}"), cls_name, None)
            except ImportError:
                continue
            if cls is not None:
                break
        found = None if cls is None else inspect.getattr_static(cls, attr, None)
        if writes is None:
            ok = isinstance(found, property)
        else:
            code = getattr(inspect.unwrap(found), "__code__", None) if found else None
            # FSDPState before torch 2.6 held one group, as _fsdp_param_group
            names = {writes, "_fsdp_param_group"} if writes == "_fsdp_param_groups" else {writes}
            ok = code is not None and bool(names & set(code.co_names))
        if not ok:
            missing.append(where)
    if missing:
        raise TieError(
            f"tying.distributed.fully_shard: this torch ({torch.__version__}) lacks FSDP2's "
            f"private {', '.join(missing)}, which td.fully_shard reads to refuse an optimizer "
            f"built on gathered copies and a state dict between a forward and its backward, "
            f"and to gather a tie's owner for its reader's backward: a torch release renamed "
            f"or moved it, and those checks would be off with no error; use a torch release "
            f"tying supports (see pyproject.toml), or train with td.ddp; nothing was sharded"
        )


class GatheredCheck:
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


class OwnerRegathered:
    """Forward hook on a tie's reader in another unit: its owner's unit gathered again for
    the reader's backward.

    The reader's backward reads the owner's gathered storage (saved by its forward), and
    FSDP2 gathers the owner only when the backward reaches the owner's own forward, after
    the reader's. With one forward, the owner stays gathered from its forward
    (``reshard_after_forward=False``) until its backward. With two forwards before their
    backwards (``(model(a) + model(b)).backward()``, or ``la.backward()`` and
    ``lb.backward()`` in either order), the owner's backward of one forward resharded it
    before the reader's backward of the other, which failed inside FSDP2 with
    ``setStorage: ... out of bounds for storage of size 0`` (stop 51). A pre-hook on the
    reader's outputs' nodes gathers every owner that is not gathered
    (``FSDPModule.unshard``, a collective every rank reaches at the same point of the
    same backward); the owner's own backward then reduces its gradient as usual.

    Args:
        owners: ``[(unit path, unit module, "reader reads owner" text)]``.
    """

    def __init__(self, owners: list[tuple[str, nn.Module, str]]):
        self.owners = owners

    def __call__(self, module: nn.Module, args, output) -> None:
        if torch.is_grad_enabled():
            self._watch(output)

    @torch.compiler.disable  # bookkeeping only: never traced into a compiled graph
    def _watch(self, output) -> None:
        from torch.utils._pytree import tree_leaves

        for t in tree_leaves(output):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                t.grad_fn.register_prehook(self._regather)

    def _regather(self, grad_outputs) -> None:
        for path, unit, tie in self.owners:
            groups = _param_groups(unit)
            if all(group.is_unsharded for group in groups):
                continue
            unit.unshard()
            if not all(group.is_unsharded for group in groups):
                raise TieError(
                    f"tying.distributed.fully_shard: {tie} (a tie across FSDP units), and the "
                    f"unit {path!r} could not be gathered again for the reader's backward "
                    f"(FSDPModule.unshard left it sharded, torch {torch.__version__}); run "
                    f"each forward's backward before the next forward, or put both ends of "
                    f"the tie in one unit (units=)"
                )


class MidStepRefused:
    """State-dict save and load pre-hook on a sharded root: refused while a tie owner's unit
    is still gathered from a forward with gradients.

    FSDP2's own state-dict hooks reshard every unit and free its gathered storage. A unit
    kept gathered for a tie's reader in another unit is needed, gathered, by the reader's
    backward, which runs before the owner's unit would gather again; so a ``state_dict()``
    (``td.save``, ``td.dcp_save``) or ``load_state_dict`` (``td.load``) between a forward
    and its backward made that backward fail inside FSDP2 with ``setStorage: ... out of
    bounds for storage of size 0`` (stop 50), naming neither the tie nor the fix.

    Args:
        owners: ``{unit path: (unit module, "reader reads owner" text)}`` of every unit
            ``td.fully_shard`` keeps gathered for a reader in another unit.
    """

    def __init__(self, owners: dict[str, tuple[nn.Module, str]], after: AfterForward):
        self.owners, self.after = owners, after

    def __call__(self, module: nn.Module, *args, **kwargs) -> None:
        if not self.after.pending:  # no backward to come: FSDP2 may reshard every unit
            return
        for path, (unit, tie) in self.owners.items():
            if any(group.is_unsharded for group in _param_groups(unit)):
                raise TieError(
                    f"tying.distributed.fully_shard: {tie} (a tie across FSDP units), and "
                    f"the unit {path!r} is still gathered from a forward with gradients whose "
                    f"backward has not run; a state dict saved or loaded now (state_dict, "
                    f"load_state_dict, td.save, td.dcp_save, td.load, td.dcp_load) reshards "
                    f"every unit, and that backward would then fail inside FSDP2 (setStorage: "
                    f"... out of bounds for storage of size 0); save or load after the "
                    f"backward, or, when no backward will come, drop that forward's loss and "
                    f"outputs first; nothing was saved or loaded"
                )


def _forget(key: int):
    def gone(ref: weakref.ref) -> None:
        entry = _GATHERED.get(key)
        if entry is not None and entry[0] is ref:  # not a newer tensor given the same id
            del _GATHERED[key]

    return gone


def install_step_hook() -> None:
    """Register :func:`refuse_gathered` for every optimizer of the process, once."""
    global _STEP_HOOK
    if _STEP_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _STEP_HOOK = register_optimizer_step_pre_hook(refuse_gathered)


def refuse_gathered(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Optimizer step pre-hook: refuse a step of an optimizer that holds a gathered copy.

    Args:
        optimizer: the optimizer about to step.
        args, kwargs: the step's arguments (unused).

    Raises:
        TieError: ``optimizer`` holds a gathered (unsharded) copy of a ``td.fully_shard``
            model's parameter; nothing was stepped.

    Example:
        >>> import torch
        >>> from tying.distributed_gathered import refuse_gathered
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        >>> refuse_gathered(opt, (), {}) is None  # no gathered copy: the step goes on
        True
    """
    if not _GATHERED:
        return
    held = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = _GATHERED.get(id(p))
            if entry is not None and entry[0]() is p:
                held.append(f"{entry[1]} (shape {tuple(p.shape)})")
    if not held:
        return
    more = f", ... ({len(held)} in all)" if len(held) > 5 else ""
    raise TieError(
        f"tying.distributed.fully_shard: the optimizer ({type(optimizer).__name__}) holds "
        f"{', '.join(held[:5])}{more} as the gathered copy FSDP2 uses during a forward, not "
        f"the sharded parameter (a DTensor) that FSDP2 trains: it was built from "
        f"model.parameters() after a forward with gradients that no backward followed "
        f"(FSDP2 reshards the root, and the tie owners td.fully_shard keeps gathered, only "
        f"in the backward), so its steps would change a copy the next all-gather overwrites "
        f"and the model would not train, with no error; build the optimizer before the "
        f"first forward or after a backward (when no backward will come, drop that "
        f"forward's loss and outputs and run a forward under torch.no_grad(), which "
        f"reshards every unit); nothing was stepped"
    )


__all__ = ["refuse_gathered", "refuse_renamed_internals"]  # the hooks are td.fully_shard's own
