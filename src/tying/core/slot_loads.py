"""How a state dict is loaded through tied slots, and the checks that run before it.

A tied slot is not stored on its module (see :mod:`tying.core.slots`), so a state dict of
an untied or hand-tied model carries an entry the tied model does not hold. The tied
class's ``_load_from_state_dict`` accepts such an entry when it agrees with the tie (a
self re-parametrised slot's entry is mapped to its storage by the relation's
``right_inverse``) and refuses it when it does not: dropping a differing tensor silently
would lose data. ``load_state_dict`` copies module by module and reports errors only at the
end, so :func:`guard_loading` adds pre-hooks that check every tie first, on the module a
plan was applied to and on every part above a tied module: nothing is copied when one
contradicts the tie.

Split out of ``slots.py`` (stop 50); the names stay importable from there.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from tying.core import load_ancestors, load_precheck, tie_record
from tying.core.lost_writes import _same_values
from tying.core.sharded_check import agrees as _agrees
from tying.core.sharded_check import joined as _joined

__all__ = ["ancestors", "guard_layer", "guard_loading"]


def ancestors(module: nn.Module) -> list[nn.Module]:
    """Every module known to hold ``module``, nearest first (see
    :mod:`tying.core.load_ancestors`)."""
    return load_ancestors.ancestors(module)


def slots_of(module: nn.Module) -> dict:
    # slots imports this module for its tied classes: a lazy import (one dict look-up
    # after the first call), not a second definition of where a module keeps its slots
    from tying.core.slots import slots_of as _slots_of

    return _slots_of(module)


def _load_from_state_dict(
    self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
):
    # A state dict of an untied model (or a hand-tied one) carries the tied slot as
    # its own entry. Accept it when it agrees with the tie, refuse it when it does
    # not: dropping a differing tensor silently would lose data.
    # (Loading through a parent of the module the plan was applied to reaches here with
    # the modules before this one already loaded; guard_loading's pre-hook refuses first.)
    # computed once per slot (stop 41): the checks and the load below share it
    owns = {n: _own_once(state_dict, prefix, self, n, s) for n, s in slots_of(self).items()}
    if not prefix:  # this module is what is loaded into: refuse before anything is copied
        _check_before_load(self, state_dict, prefix, local_metadata, strict, missing, unexpected,
                           errors, owns)  # fmt: skip
    else:  # a root above checked before copying; these join its error list
        problems = _contradictions(self, state_dict, prefix, owns)
        if problems:  # the root did not check (see _unchecked): say what was loaded
            problems[-1] += _unchecked(prefix, stopped=False)
        errors.extend(problems)
    for name, slot in slots_of(self).items():
        own = owns[name]
        if own is not None:  # an untied model's entry that fits the tie: load it (stop 39)
            state_dict[prefix + slot.storage["source"]] = own
    for name in slots_of(self):
        state_dict.pop(prefix + name, None)
    type(self)._tying_base._load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    )


def _contradictions(module, state_dict, prefix, owns=None) -> list[str]:
    """Entries of ``state_dict`` (loaded into ``module`` at ``prefix``) that contradict a tie;
    ``owns``: the slots' :func:`_own_storage_from`, when the caller has computed them."""
    out = []
    for name, slot in slots_of(module).items():
        key = prefix + name
        if key not in state_dict:
            continue
        incoming = state_dict[key]
        own = owns[name] if owns else _own_once(state_dict, prefix, module, name, slot, keep=True)
        if own is not None:
            continue  # the untied value fits the tie: it is loaded into the tie's storage
        expected = _expected_from(state_dict, prefix, module, name, slot)
        if tuple(incoming.shape) != tuple(slot.shape) or (
            expected is not None and not _agrees(incoming, expected)
        ):
            absent = _missing_source(state_dict, prefix, slot)
            # stop 55: a state dict holding the slot but not its source (strict=False) was
            # told it "holds a different value", compared with a source it never named
            why = (
                f" (it has no entry {absent!r} for the source, so it was compared with the "
                f"model's value of it: add {absent!r} to the state dict to load both)"
                if absent is not None and tuple(incoming.shape) == tuple(slot.shape)
                else ""
            )
            out.append(
                f"{key} is tied (to {slot.paths[1] or 'its own storage'} via {slot.relation!r}) "
                f"but the state dict holds a different value for it{why}; load it into an "
                f"untied model (tying.untie) or drop the key"
            )
    return out


def _check_before_load(
    root, state_dict, prefix, local_metadata, strict, missing, unexpected, errors, owns=None
):
    # load_state_dict copies module by module and reports errors only at the end, so a
    # contradiction found at the tied module would leave every module loaded before it
    # changed. This pre-hook on the module a plan was applied to checks them all first.
    problems = []
    if not prefix:
        _OWNS.clear()  # what a load before this one left (it failed part way)
    for path, mod in root.named_modules():
        if slots_of(mod):
            here = prefix + (path + "." if path else "")
            problems += _contradictions(mod, state_dict, here, owns if mod is root else None)
    problems = _joined(root, problems)
    if problems:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(root).__name__} "
            f"{'(nothing was loaded)' if not prefix else 'at ' + repr(prefix[:-1])}:\n\t"
            + "\n\t".join(problems)
            + (_unchecked(prefix, stopped=True) if prefix else "")
        )
    if not prefix:
        _own_checks(root, state_dict)  # a layer's own, more specific refusal first
        tie_record.check_load(root, state_dict)  # a record of other ties (stop 59)
        _refuse_what_torch_refuses(root, state_dict)
    if local_metadata.get("assign_to_params_buffers"):
        _let_go_of_sources(root)


def _refuse_what_torch_refuses(root: nn.Module, state_dict) -> None:
    """Raise torch's own refusal (size mismatch, missing or unexpected keys under
    ``strict=True``) before anything is copied: torch raises it only after every module
    was loaded (stop 53: a refused load left the model half-loaded). See
    :mod:`tying.core.load_precheck`."""
    own_loads = (nn.Module._load_from_state_dict, _load_from_state_dict)
    own_hooks = (_check_before_load, _check_before_load_into_part)
    problems = load_precheck.refusals(root, state_dict, slots_of, own_loads, own_hooks)
    if problems:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(root).__name__} (nothing was loaded):"
            "\n\t" + "\n\t".join(problems)
        )


#: a method a module class may define, ``(self, state_dict, prefix, local_metadata)``,
#: raising when it would refuse the load; see :func:`_own_checks`
LOAD_CHECK = load_ancestors.CHECK_ATTR  # "_tying_check_load"


def _own_checks(root: nn.Module, state_dict) -> None:
    """Run every module's own load check (:data:`LOAD_CHECK`) under ``root`` before
    anything is copied.

    A layer that refuses a state dict in its own ``_load_from_state_dict`` (a
    ``tying.nn`` layer whose file was saved with another kernel size or head layout)
    refuses part way through a load into a module above it: the modules before it are
    loaded by then. The same check, defined as ``_tying_check_load(self, state_dict,
    prefix, local_metadata)`` on the class, is run here first (with the prefix and
    metadata the layer's own load will see), and a registration of such a layer guards
    the modules above it as a tie does (stop 51).
    """
    metadata = getattr(state_dict, "_metadata", None) or {}
    for path, mod in root.named_modules():
        check = getattr(type(mod), LOAD_CHECK, None)
        if check is not None:
            check(mod, state_dict, path + "." if path else "", metadata.get(path, {}))


def _let_go_of_sources(root: nn.Module) -> None:
    """Drop what the slots under ``root`` hold of their sources, before
    ``load_state_dict(..., assign=True)`` replaces those sources.

    A slot remembers the source it last read (``_seen``) and, for a computed slot, the
    value it last handed out (a view of the source for ``Transposed``): after an assign
    load they kept every replaced source alive until the slot's next read (stop 50: the
    tied embedding held twice, the old one unreachable but not freed). A record of a write
    not caught yet is kept, so the next read still refuses it (this pre-hook may run with
    modules before it already loaded: it raises nothing itself).
    """
    for mod in root.modules():
        for slot in slots_of(mod).values():
            slot._seen = None  # the next read outside functional_call records the new one
            records = (slot._handed, *(slot._kept or ()))
            if any(r is not None and slot._written(mod, r, False) for r in records):
                continue
            slot._handed = None
            slot._kept = ()


def _check_before_load_into_part(
    part, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
):
    # The same check for a load into a part of the model (``model.backbone.load_state_dict``,
    # ``model.lm_head.load_state_dict``): before stop 30 only the module a plan was applied
    # to had the pre-hook, and a part's tied entries that differed were dropped silently
    # ("All keys matched"). A part loaded as a piece of a larger load (prefix not empty) was
    # checked by that load's root.
    if not prefix:
        _check_before_load(part, state_dict, prefix, local_metadata, strict, missing, unexpected,
                           errors)  # fmt: skip


def _has_hook(module: nn.Module, fn) -> bool:
    hooks = getattr(module, "_load_state_dict_pre_hooks", None) or {}
    return any(getattr(h, "hook", h) is fn for h in hooks.values())


def _checked(module: nn.Module) -> bool:
    """Whether a load into ``module`` is checked before it copies."""
    return _has_hook(module, _check_before_load) or _has_hook(module, _check_before_load_into_part)


def _guard(modules) -> None:
    for mod in modules:
        if not _checked(mod):
            try:
                mod.register_load_state_dict_pre_hook(_check_before_load_into_part)
            except (AttributeError, RuntimeError):  # a scripted module takes no hook
                pass


def _on_child(parent: nn.Module, child: nn.Module) -> None:
    """A module registered into ``parent``: when it holds ties, the load into ``parent`` and
    into every module known to hold ``parent`` is checked first (see
    :mod:`tying.core.load_ancestors`)."""
    if (
        _checked(child)
        or slots_of(child)
        or hasattr(type(child), LOAD_CHECK)
        or load_ancestors.is_layer(child)
    ):
        _guard([parent, *ancestors(parent)])
    elif load_ancestors.is_layer(parent):  # a tying layer (tied or not) building itself
        _guard([parent])


def guard_loading(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` refuse a contradicting state dict before it copies
    anything, and so ``load_state_dict`` on any part of ``model`` that holds a tied module
    (a backbone, the tied module itself) and on every module known to hold ``model``
    (stop 51: a ``tying.nn`` layer in an ``nn.Sequential``, a plan applied to
    ``model.encoder``)."""
    if not _has_hook(model, _check_before_load):
        model.register_load_state_dict_pre_hook(_check_before_load)
    parts = set()  # the modules above a tied one (the tied module checks itself:
    for path, mod in model.named_modules():  # _load_from_state_dict)
        if path and slots_of(mod):
            names = path.split(".")
            parts.update(".".join(names[:i]) for i in range(1, len(names)))
    _guard(model.get_submodule(path) for path in parts)
    _guard(ancestors(model))


def guard_layer(layer: nn.Module) -> None:
    """Check a load into ``layer`` before it copies, from its ``__init__`` (stop 54).

    A layer that holds no module and no tie is told to no registration hook, so nothing
    else guards a load into it alone: torch copied its parameters one by one and refused a
    size mismatch or a missing key only after (an untied ``TiedGateLSTM`` given a tied
    one's state dict kept the gate weights it had copied). Installs the pre-hook that
    applies torch's rules first (:mod:`tying.core.load_precheck`); a no-op when ``layer``
    is checked already.

    Args:
        layer: the module being built (call it last in ``__init__``).

    Returns:
        None.

    Raises:
        Nothing: a scripted module takes no hook and is left as it is.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> guard_layer(layer)
        >>> before = layer.weight.detach().clone()
        >>> bad = {"weight": torch.ones(2, 2), "bias": torch.ones(3)}
        >>> try:
        ...     layer.load_state_dict(bad)
        ... except RuntimeError as err:
        ...     print(str(err).splitlines()[0])
        Error(s) in loading state_dict for Linear (nothing was loaded):
        >>> torch.equal(layer.weight, before)
        True
    """
    _guard([layer])


def _unchecked(prefix: str, stopped: bool) -> str:
    """The end of a refusal found at ``prefix`` by the tie itself: the module loaded into
    was not checked first (it holds the part past torch's registration, see
    :mod:`tying.core.load_ancestors`), so some of its modules were loaded; it is guarded for
    the next load.

    ``stopped``: the refusal raises here (a part's pre-hook), so the modules before
    ``prefix`` were loaded and the rest were not; else (a tied module's own load) the error
    joins torch's list and the load goes on, so every other module is loaded. The message
    names the module loaded into, the link, and the entries copied (stop 53: it named
    neither, and said "the modules loaded before" where the ones after were loaded too).
    """
    here = prefix[:-1]
    root, given = _loading_root()
    if root is None:
        return (
            f"\n\t(the load into the module above {here!r} was not checked before it "
            f"copied: other entries of the state dict may have been loaded; load a good "
            f"state dict again)"
        )
    _guard_path_to_ties(root)
    copied = _entries_loaded(root, here, given, stopped)
    shown = ", ".join(copied[:8]) + (f" and {len(copied) - 8} more" if len(copied) > 8 else "")
    which = "before" if stopped else "before and after"
    return (
        f"\n\t(the load into {type(root).__name__} was not checked before it copied: a "
        f"module on the way to {here!r} is held past torch's registration (e.g. "
        f"parent._modules[name] = part instead of parent.name = part or add_module), so "
        f"torch's registration hook never guarded it; the modules loaded {which} {here!r} "
        f"now hold the state dict's values: {shown or 'none'}; load a good state dict again. "
        f"Loads into {type(root).__name__} are checked first from now on.)"
    )


def _entries_loaded(root: nn.Module, here: str, state_dict, stopped: bool) -> list[str]:
    """The state dict's entries that ``load_state_dict`` on ``root`` copies when the refusal
    found at ``here`` raises (``stopped``: those of the modules before ``here`` in torch's
    order), or when it is only listed (every module's: the tied slots are not among a
    module's parameters, so they are not named)."""
    out: dict[str, None] = {}  # ordered, each once (a shared module is loaded twice)
    for path, mod in root.named_modules(remove_duplicate=False):  # torch's load order
        if stopped and (path == here or path.startswith(here + ".")):
            break
        pre = path + "." if path else ""
        skip = mod.__dict__.get("_non_persistent_buffers_set", ())
        names = [*mod._parameters, *(n for n in mod._buffers if n not in skip)]
        out.update((pre + n, None) for n in names if pre + n in state_dict)
    return list(out)


def _guard_path_to_ties(root: nn.Module) -> None:
    """Guard ``root``, every module under it that holds a tie or a load check deeper down,
    and the modules above ``root``: the links may have been made past torch's registration,
    so they are read from ``root`` down, not looked up."""
    parts = {""}
    for path, mod in root.named_modules():
        if path and (slots_of(mod) or hasattr(type(mod), LOAD_CHECK)):
            names = path.split(".")
            parts.update(".".join(names[:i]) for i in range(1, len(names)))
    _guard(root.get_submodule(path) for path in sorted(parts))
    _guard(ancestors(root))


def _loading_root() -> tuple[nn.Module | None, dict]:
    """The module whose ``load_state_dict`` is running (its frame's ``self``), if any, and
    the state dict it was given (torch hands each module only its own entries)."""
    code = nn.Module.load_state_dict.__code__
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        if frame.f_code is code:
            found = frame  # the outermost one: the load called
        frame = frame.f_back
    if found is None:
        return None, {}
    root, given = found.f_locals.get("self"), found.f_locals.get("state_dict")
    if not isinstance(root, nn.Module):
        return None, {}
    return root, given if hasattr(given, "__contains__") else {}


load_ancestors.install(_on_child)


#: ``(id(module), slot name) -> (the entry, its own storage)`` computed by the check of a
#: module above, taken by the module's own load (one ``right_inverse`` per slot and load)
_OWNS: dict[tuple[int, str], tuple] = {}


def _own_once(state_dict, prefix, module, name, slot, keep=False):
    """:func:`_own_storage_from`, computed once per load: the check of a module above
    (``keep``) leaves it for the module's own load, which takes it when the entry is the
    same tensor."""
    incoming = state_dict.get(prefix + name)
    kept = _OWNS.pop((id(module), name), None)
    if kept is not None and incoming is not None and kept[0] is incoming:
        return kept[1]
    own = _own_storage_from(state_dict, prefix, module, name, slot)
    if keep and incoming is not None:
        _OWNS[(id(module), name)] = (incoming, own)
    return own


def _own_storage_from(state_dict, prefix, module, name, slot):
    """The tie's own storage for an untied model's entry of a self re-parametrised slot
    (``SymmetricConv1d``'s ``Mirrored`` weight), when the state dict holds the slot but not
    the storage and the entry fits the tie exactly; else None.

    A plain ``nn.Conv1d``'s state dict with a palindromic kernel was refused as "a different
    value" (it was compared with the tie's current value, the storage not being in the
    load), so no anchor's weights could be loaded (stop 39). The entry is mapped to the
    storage by the relation's ``right_inverse`` and accepted only when the relation gives
    it back exactly (the current extras, e.g. a scale, kept): a value the tie cannot hold
    is still refused.
    """
    storage = slot.storage.get("source")
    key = prefix + name
    if storage is None or key not in state_dict or prefix + storage in state_dict:
        return None
    incoming = state_dict[key]
    if not isinstance(incoming, torch.Tensor) or tuple(incoming.shape) != tuple(slot.shape):
        return None
    with torch.no_grad():
        current = getattr(module, storage)
        extras = {r: getattr(module, n) for r, n in slot.storage.items() if r != "source"}
        try:
            own = slot.relation.right_inverse(incoming.detach().to(current.dtype))
            back = slot.relation(own, shape=slot.shape, **extras)
        except Exception:  # noqa: BLE001 - no inverse here: the usual check refuses it
            return None
        # a NaN at mirrored places gives itself back (stop 41: torch.equal refused it)
        if tuple(own.shape) != tuple(current.shape) or not _same_values(
            back.to(incoming.dtype), incoming.detach()
        ):
            return None
    return own


def _expected_from(state_dict, prefix, module, name, slot):
    """The value the tie gives ``module.<name>`` once ``state_dict`` (loaded at ``prefix``)
    is in: from the state dict's entry for the source when it holds one, else the tie's
    current value (the source is not part of this load, or has no entry)."""
    src_key = _source_key(prefix, slot)
    with torch.no_grad():
        if "source" in slot.storage:
            src = state_dict.get(prefix + slot.storage["source"])
        else:
            src = state_dict.get(src_key) if src_key is not None else None
        if src is None:
            return getattr(module, name).detach()
        extras = {
            r: state_dict.get(prefix + n, getattr(module, n))
            for r, n in slot.storage.items()
            if r != "source"
        }
        return slot.relation(src, shape=slot.shape, **extras)


def _missing_source(state_dict, prefix, slot) -> str | None:
    """The key of the tie's source in a state dict loaded at ``prefix`` that lacks it (a
    load with ``strict=False``), or None."""
    src_key = None if "source" in slot.storage else _source_key(prefix, slot)
    return src_key if src_key is not None and src_key not in state_dict else None


def _source_key(prefix: str, slot) -> str | None:
    """The key the tie's source has in a state dict loaded at ``prefix`` (None: outside it)."""
    mod_path, src_path = slot.paths
    src_key = None
    if not mod_path:  # the tied module is the plan's root: loaded at prefix
        src_key = prefix + src_path if src_path else None
    elif prefix.endswith(mod_path + "."):  # loaded through the plan's root, or a parent of it
        src_key = prefix[: len(prefix) - len(mod_path) - 1] + src_path if src_path else None
    else:
        # loaded into a part of the model: prefix is the end of mod_path, and the part's own
        # path (relative to the plan's root) is what comes before it
        here = prefix[:-1]
        if not here or mod_path == here or mod_path.endswith("." + here):
            part = mod_path[: len(mod_path) - len(here)].rstrip(".")
            if src_path and src_path.startswith(part + "."):
                src_key = src_path[len(part) + 1 :]
    return src_key
