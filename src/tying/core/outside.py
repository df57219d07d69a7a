"""What outside tools do to modules, seen from the tie engine: pruning and adapters.

Two tools change a tied model's modules in ways the engine must see through:
``torch.nn.utils.prune`` stores ``weight`` as ``weight_orig`` and recomputes
``weight`` in a forward pre-hook, and adapters (peft's tuner layers) wrap a
module in one with a ``base_layer``. The engine (inventory, slot reads,
``verify``) needs to recognise both; this module does it with torch alone and
duck typing, so ``tying.core`` imports no package above it (DESIGN.md layers).
The user-facing entry points stay in :mod:`tying.interop` (``prune``,
``get_peft_model``), which re-export these helpers.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.root_advice import free_call, holder_path

if TYPE_CHECKING:
    from tying.core.inventory import Inventory

__all__ = [
    "ORIG",
    "WRAPPER_SEGMENTS",
    "adapter_wrapper",
    "canonical",
    "check_not_wrapped",
    "check_prune_query",
    "check_register",
    "declared_through_adapters",
    "is_adapter",
    "live_wrapper",
    "mark_wrapped",
    "plain_ddp_holding",
    "pruned_names",
    "saved_copy_problems",
    "source_value",
    "wrapped_helper",
]

ORIG = "_orig"

#: Path segments that wrappers insert above a module without changing what it computes:
#: ``apply_activation_checkpointing``'s ``checkpoint_wrapper``, ``torch.compile``'s
#: ``OptimizedModule`` and FSDP1. A tie declared, or a file saved, on one side of such a
#: wrapper names the same slots as on the other side once these are left out (torch's own
#: state-dict hooks strip ``_checkpoint_wrapped_module.`` the same way).
WRAPPER_SEGMENTS = ("_checkpoint_wrapped_module", "_orig_mod", "_fsdp_wrapped_module")


def canonical(path: str) -> str:
    """``path`` without wrapper segments (:data:`WRAPPER_SEGMENTS`).

    Example:
        >>> from tying.core.outside import canonical
        >>> canonical("_orig_mod.2._checkpoint_wrapped_module.weight")
        '2.weight'
    """
    if "_" not in path:  # the common case: no segment can be there
        return path
    return ".".join(seg for seg in path.split(".") if seg not in WRAPPER_SEGMENTS)


def canonical_index(paths, what: str) -> dict[str, str]:
    """``{canonical(p): p}`` for ``paths``; a :class:`TieError` naming both when two paths
    of one model differ only by wrapper segments (which of them a file or a declaration
    names cannot be told)."""
    out: dict[str, str] = {}
    for p in paths:
        c = canonical(p)
        other = out.setdefault(c, p)
        if other != p:
            raise TieError(
                f"{what}: {other} and {p} name the same slot once the wrapper segments "
                f"{'/'.join(WRAPPER_SEGMENTS)} are left out, so a path saved or declared on "
                f"the other side of a wrapper cannot be matched to one of them; rename the "
                f"module whose name is one of those segments"
            )
    return out


def _pruning_hook(module: nn.Module, name: str):
    from torch.nn.utils.prune import BasePruningMethod

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, BasePruningMethod) and getattr(hook, "_tensor_name", None) == name:
            return hook
    return None


def pruned_names(module: nn.Module) -> dict[str, str]:
    """``{"weight_orig": "weight"}`` for every tensor of ``module`` pruned by ``torch.nn.utils.prune``.

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> from tying.core.outside import pruned_names
        >>> lin = torch.nn.Linear(3, 3)
        >>> _ = prune.random_unstructured(lin, "weight", amount=0.5)
        >>> pruned_names(lin)
        {'weight_orig': 'weight'}
    """
    if not module._forward_pre_hooks:
        return {}
    out = {}
    for pname in module._parameters:
        if pname.endswith(ORIG) and _pruning_hook(module, pname[: -len(ORIG)]) is not None:
            out[pname] = pname[: -len(ORIG)]
    return out


def source_value(module: nn.Module, name: str) -> torch.Tensor:
    """The current value of ``module.<name>``, recomputed when ``name`` is pruned.

    A pruned module's attribute is written by its forward pre-hook; a tied use
    that runs before (or without) that module would read a stale tensor from an
    old graph. This reads ``<name>_orig * <name>_mask`` now.

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> from tying.core.outside import source_value
        >>> lin = torch.nn.Linear(2, 2)
        >>> _ = prune.l1_unstructured(lin, "weight", amount=0.5)
        >>> with torch.no_grad():
        ...     _ = lin.weight_orig.add_(1.0)  # an optimizer step; lin has not run since
        >>> torch.equal(source_value(lin, "weight"), lin.weight_orig * lin.weight_mask)
        True
    """
    if name + ORIG in module._parameters:
        hook = _pruning_hook(module, name)
        if hook is not None:
            return hook.apply_mask(module)
    return getattr(module, name)


def check_register(module: nn.Module, name: str, slots: dict) -> None:
    """Refuse ``torch.nn.utils.prune`` registering ``<slot>_orig`` on a tied slot (no change yet)."""
    if name.endswith(ORIG) and name[: -len(ORIG)] in slots:
        slot = slots[name[: -len(ORIG)]]
        where, src = slot.target_and_source(name[: -len(ORIG)])
        from tying.core.relations import Same

        # the paths from the outermost module holding the plan's root: prune(outer, "2.weight")
        # pruned the outer model's own 2.weight, or found none (stop 59)
        held = holder_path(module, slot)
        pre = "" if held is None else f"{held[0]}."
        model = (
            "model"
            if held is None
            else f"model, the {type(held[1]).__name__} holding the {type(held[2]).__name__} "
            f"the plan was applied to at {held[0]!r}"
        )
        if type(slot.relation) is Same:
            fix = (
                f"prune the physical tensor so every use sees the mask: "
                f"tying.interop.pruning.prune(model, {pre + where!r}, method, amount=...) "
                f"({model})"
            )
        else:  # a mask on the source would not match the layout this slot reads (stop 35)
            fix = (
                f"a mask cannot follow {slot.relation!r}: prune the source instead "
                f"(tying.interop.pruning.prune(model, {pre + src!r}, method, amount=...); "
                f"{model}), or untie first ({free_call(module, slot, where)})"
            )
        raise TieError(
            f"torch.nn.utils.prune on the tied slot {where!r} (reads {src} via {slot.relation!r}) "
            f"would give it a private copy and break the tie; {fix}"
        )


def check_prune_query(module: nn.Module, name: str, slots: dict) -> None:
    """Refuse ``torch.nn.utils.prune.global_unstructured`` over a tied slot before it prunes anything.

    ``global_unstructured`` reads every ``(module, name)``'s ``<name>_mask`` before it
    prunes the first one; a tied module answers that query (asked from torch's prune
    module only, so ``hasattr(m, "weight_mask")`` elsewhere stays False) with a refusal.
    Called from the tied module's ``<slot>_mask`` property (three frames up: the
    property, then the comprehension in torch's prune module).
    Pruning one module at a time is refused by :func:`check_register` instead.
    """
    if not name.endswith("_mask") or name[: -len("_mask")] not in slots:
        return
    frame = sys._getframe(2)
    for _ in range(3):  # the caller: a comprehension inside global_unstructured
        if frame is None:
            return
        if frame.f_globals.get("__name__") == "torch.nn.utils.prune":
            break
        frame = frame.f_back
    else:
        return
    slot = slots[name[: -len("_mask")]]
    where, src = slot.target_and_source(name[: -len("_mask")])
    raise TieError(
        f"torch.nn.utils.prune.global_unstructured: {where!r} is a tied slot (reads {src} via "
        f"{slot.relation!r}); pruning it would give it a private copy and break the tie, so "
        f"nothing was pruned. List the physical tensor ({src}) once instead of {where!r}, or "
        f"untie first (tying.untie(model))"
    )


def is_adapter(module: nn.Module) -> bool:
    """True for a peft tuner layer (a wrapper with a ``base_layer``), without importing peft."""
    return "base_layer" in module._modules and hasattr(type(module), "adapter_layer_names")


def adapter_wrapper(inv: Inventory, path: str | None) -> tuple[str, nn.Module] | None:
    if not path:
        return None
    mpath = path.rpartition(".")[0]
    while mpath:
        mod = inv.modules.get(mpath)
        if mod is not None and is_adapter(mod):
            return mpath, mod
        mpath = mpath.rpartition(".")[0]
    return None


def declared_through_adapters(inv: Inventory, target: str, source: str | None) -> str | None:
    """How a declared tie ``target <- source`` stands when an adapter wraps either end.

    Called by ``tying.verify`` for each declared tie.

    Returns:
        None when no adapter wraps either end (verify checks the tie as usual);
        ``""`` when one adapter module serves both ends (the tie holds, with the
        delta on every use); else a message naming the tie and the fix.

    Example:
        >>> import torch, tying
        >>> from tying.core.inventory import Inventory
        >>> from tying.core.outside import declared_through_adapters
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> declared_through_adapters(Inventory(m), "b.weight", "a.weight") is None
        True
    """
    tw, sw = adapter_wrapper(inv, target), adapter_wrapper(inv, source)
    if tw is None and sw is None:
        return None
    if tw is not None and sw is not None and tw[1] is sw[1]:
        return ""
    where = (tw or sw)[0]
    return (
        f"{target}: the peft adapter at {where!r} sits on the tie {target} <- {source}; its delta "
        f"does not reach the other use(s), and merging would write it into the one shared tensor "
        f"for every use. Use tying.interop.lora.get_peft_model (one adapter shared by a module "
        f"tied whole) or leave {where!r} out of target_modules"
    )


def _saved_copy_wrapper(module: nn.Module) -> bool:
    """True for peft's ``ModulesToSaveWrapper`` (``modules_to_save``), by duck typing: it
    keeps the module as ``original_module`` and runs a trained copy per adapter from a
    ``modules_to_save`` ModuleDict while an adapter is active."""
    return (
        "original_module" in module._modules
        and isinstance(module._modules.get("modules_to_save"), nn.ModuleDict)
        and hasattr(type(module), "active_adapters")
    )


def _run_copy(inv: Inventory, path: str) -> tuple[str, str] | None:
    """``(wrapper path, path the forward reads instead)`` when ``path`` lies in the
    ``original_module`` of a peft ``modules_to_save`` wrapper whose trained copy runs in
    its place (an adapter active, with a copy); None when the forward reads ``path``."""
    head = path
    while "." in head:
        head = head.rpartition(".")[0]
        mod = inv.modules.get(head)
        if mod is None or not _saved_copy_wrapper(mod):
            continue
        inner = head + ".original_module."
        if not path.startswith(inner) or getattr(mod, "disable_adapters", False):
            return None
        active = list(getattr(mod, "active_adapters", None) or [])
        if not active or active[0] not in mod._modules["modules_to_save"]:
            return None
        return head, f"{head}.modules_to_save.{active[0]}.{path[len(inner) :]}"
    return None


def saved_copy_problems(inv: Inventory) -> list[str]:
    """Hand ties (one Parameter under several paths) that the forward no longer uses as one.

    peft's ``modules_to_save=["lm_head"]`` (peft's own ``get_peft_model``, not
    :func:`tying.interop.lora.get_peft_model`, which refuses it) keeps the tied head as
    ``lm_head.original_module`` and runs a deep copy of it instead: HF's declared tie
    (``tie_word_embeddings``) still holds by identity between the embedding and the
    unused original, so ``tying.verify`` counted it as holding while the logits read a
    separate tensor that trains apart from the embedding (stop 39). peft's
    ``ensure_weight_tying=True`` ties the copies to each other: that holds.

    Called by ``tying.verify``; returns one message per broken use, [] when none.
    """
    problems = []
    for group in inv.hand_groups():
        runs = {p: _run_copy(inv, p) for p in group}
        if not any(runs.values()):
            continue

        def read(p: str, runs: dict = runs):
            run = runs[p]
            owner, _, name = (run[1] if run else p).rpartition(".")
            return getattr(inv.modules.get(owner), name, None)

        first = read(group[0])
        for p in group[1:]:
            if read(p) is first:
                continue
            copy = next((runs[q] for q in (p, group[0]) if runs[q]), None)
            ends = f"{group[0]} and {p}"
            problems.append(
                f"{p}: holds the same nn.Parameter as {group[0]} (a hand-made tie, e.g. HF's "
                f"tie_word_embeddings), but peft's modules_to_save wrapper at {copy[0]!r} runs "
                f"its trained copy ({copy[1]}) instead, a separate tensor: {ends} are no longer "
                f"one weight in the forward and train apart. Pass ensure_weight_tying=True to "
                f"peft's LoraConfig with an entry it acts on (it ties the copies only for an "
                f"entry whose last name is embed_tokens or lm_head: not proj_out, wte or "
                f"decoder, with the option or without), leave that module out of "
                f"modules_to_save, or use tying.interop.lora.get_peft_model (it refuses this)"
            )
    return problems


#: every module of a model ``tying.distributed`` wrapped -> (helper, the DDP wrapper's
#: weakref, or None for fully_shard, which shards the model for good). Weak both ways: a
#: deepcopy or a pickle of the module is not wrapped (an attribute would travel with it),
#: and a model whose DDP wrapper is gone may be tied and wrapped again.
_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mark_wrapped(model: nn.Module, helper: str, wrapper: nn.Module | None = None) -> None:
    """Record that ``helper`` (``"ddp"``/``"fully_shard"``) wrapped every module of ``model``,
    for as long as ``wrapper`` lives (None: for good)."""
    ref = None if wrapper is None else weakref.ref(wrapper)
    for mod in model.modules():
        _WRAPPED[mod] = (helper, ref)


def wrapped_helper(module: nn.Module) -> str | None:
    """The helper that wrapped this one module while its wrapper lives, or None."""
    entry = _WRAPPED.get(module)
    if entry is not None and (entry[1] is None or entry[1]() is not None):
        return entry[0]
    return None


def check_not_wrapped(model: nn.Module, what: str) -> None:
    """Refuse a tie change on a model (or a submodule of one) wrapped for data parallelism.

    DDP all-reduces, and FSDP2 shards, only the tensors the model held when it was
    wrapped, so a tie made or removed afterwards leaves a tensor that trains apart on
    every rank (stop 33 caught it only at the next training forward). ``td.ddp`` records
    the modules it wraps while its wrapper lives (:func:`mark_wrapped`);
    FSDP2's modules are known by class. Called only for a change that is not a no-op, so
    re-applying a plan (or ``td.load`` of the same ties) stays allowed.
    """
    fsdp = sys.modules.get("torch.distributed.fsdp")
    for path, mod in model.named_modules():
        helper = wrapped_helper(mod)
        if helper is None and fsdp is not None and isinstance(mod, fsdp.FSDPModule):
            helper = "fully_shard"
        if helper is None:
            continue
        where = f" (at {path!r})" if path else ""
        raise TieError(
            f"{what}: the model{where} is wrapped by {helper}, which reduces only the tensors "
            f"it was wrapped with, so a tie made or removed now would train apart on every "
            f"rank; make every tie change before wrapping: build the model again, tie it, "
            f"then td.{helper}(model); the model was left as it was"
        )
    # stop 53: a plain DistributedDataParallel(model) leaves no mark, and a tie removed after
    # it (tying.untie, Plan.apply of tying.free) trained the new copy apart on every rank:
    # mid2.weight 0.9586 from the tied anchor on rank 0, 0.9620 on rank 1, after 3 steps
    held = plain_ddp_holding(model)
    if held is not None:
        path, relation = held
        where = f" (at {path!r})" if path else ""
        raise TieError(
            f"{what}: the model{where} is {relation} a torch DistributedDataParallel wrapper, "
            f"which all-reduces only the tensors it was built with, so a tie made or removed "
            f"now would train apart on every rank; make every tie change before wrapping: "
            f"drop the wrapper (inner = wrapped.module; del wrapped), change the ties, then "
            f"wrap again (td.ddp(inner) also refuses a later change at once) and build the "
            f"optimizer anew; the model was left as it was"
        )


def plain_ddp_holding(model: nn.Module) -> tuple[str, str] | None:
    """``(path, "held by")`` of the first module of ``model`` (``""``: the model itself)
    that a live ``DistributedDataParallel`` not made by ``td.ddp`` holds, or None.

    ``DistributedDataParallel`` leaves no mark on the module it wraps; its constructor's
    ``self.module = module`` is seen by a module registration hook (:func:`_record_ddp`)
    that this module installs when imported, so the check is one look-up per module. A
    wrapper that was dropped but not yet collected (DDP holds reference cycles) is garbage,
    not live: a collection runs before a wrapper is reported.

    Example:
        >>> import torch
        >>> from tying.core.outside import plain_ddp_holding
        >>> plain_ddp_holding(torch.nn.Linear(2, 2)) is None
        True
    """
    import gc

    def first():
        for path, mod in model.named_modules():
            ref = _PLAIN_DDP.get(mod)
            wrapper = None if ref is None else ref()
            if wrapper is not None and wrapper._modules.get("module") is mod:
                return path
        return None

    if first() is None:
        return None
    gc.collect()
    path = first()
    return None if path is None else (path, "held by")


#: ``{module: weakref to the DistributedDataParallel built on it}``; see :func:`_record_ddp`.
_PLAIN_DDP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _record_ddp(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    """Module registration hook: remember the module a ``DistributedDataParallel`` wraps.

    Every ``register_module`` / ``module.child = ...`` in the process calls it; all but
    DDP's ``self.module = module`` return after one string compare and a type check.
    """
    if name != "module" or submodule is None:
        return None
    ddp = sys.modules.get("torch.nn.parallel.distributed")
    if ddp is not None and isinstance(module, ddp.DistributedDataParallel):
        try:  # never raise into a registration (a model class with __eq__ and no __hash__)
            _PLAIN_DDP[submodule] = weakref.ref(module)
        except TypeError:
            pass
    return None


nn.modules.module.register_module_module_registration_hook(_record_ddp)


def live_wrapper(model: nn.Module) -> tuple[str, str] | None:
    """``(path, helper)`` of the first module of ``model`` a data-parallel wrapper holds, or None.

    ``helper`` is ``"ddp"`` for a module a live ``td.ddp`` wrapper holds, or a
    ``DistributedDataParallel`` / ``DataParallel`` wrapper itself (``model`` given as the
    wrapper), and ``"fully_shard"`` for a module ``td.fully_shard`` (or FSDP2's own
    ``fully_shard``, known by class) sharded. A DDP wrapper that is only garbage (DDP holds
    reference cycles) is collected first, so a model whose wrapper was dropped
    (``inner = wrapped.module; del wrapped``) counts as unwrapped. A plain
    ``DistributedDataParallel(model)`` leaves no mark on ``model``: only the wrapper is seen.

    Example:
        >>> import torch
        >>> from tying.core.outside import live_wrapper
        >>> live_wrapper(torch.nn.Linear(2, 2)) is None
        True
    """
    import gc

    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)

    def first():
        fsdp = sys.modules.get("torch.distributed.fsdp")
        for path, mod in model.named_modules():
            helper = wrapped_helper(mod)
            if helper is None and isinstance(mod, wrappers):
                helper = "ddp"
            if helper is None and fsdp is not None and isinstance(mod, fsdp.FSDPModule):
                helper = "fully_shard"
            if helper is not None:
                return path, helper, mod
        return None

    found = first()
    if found is not None and found[1] == "ddp" and not isinstance(found[2], wrappers):
        gc.collect()  # only a record: its wrapper may be garbage that a collection removes
        found = first()
    return None if found is None else found[:2]
