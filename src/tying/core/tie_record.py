"""A plan's tied slots, recorded in the state dict and checked on ``load_state_dict`` (stop 59).

A slot a plan ties is not a key of the state dict: it is computed from its source. So
the headline ALBERT plan, ``share("layers.*", like="layers.0")``, gives a depth-4 model
and a depth-6 one the same keys (``layers.0.*`` alone), and ``load_state_dict`` loaded
one into the other with no error: the extra layers read layer 0 and the model computed
another function (3.72 off the saved one), where ``tying.load`` of the same file refuses.
An untied model of another depth is refused by torch's key check.

``Plan.apply`` now registers, on the module it tied and on every part above a tied
module, a state-dict hook that records the tied slots (canonical paths, relative to the
module) in ``state_dict._metadata`` next to torch's ``"version"``, under
:data:`TIED_METADATA_KEY`. The load pre-hook tying already puts on those modules
(:func:`tying.core.slot_loads.guard_loading`) calls :func:`check_load`, which refuses,
before anything is copied, a strict load whose record does not fit: a slot this model
ties that the state dict neither holds as a key nor records as tied, or one it records
as tied that this model has neither tied nor as a key. The value is a plain list of
strings, so ``torch.load(weights_only=True)`` and ``tying.save`` keep it.

What loads as before: a state dict without the record (a plain ``dict(sd)``, a
safetensors file, a file saved before this stop, an untied model's state dict), and
``strict=False`` (torch's way of saying the two models differ on purpose).
"""

from __future__ import annotations

import json
import sys

from torch import nn

from tying.core import tie_sources
from tying.core.errors import TieError
from tying.core.outside import canonical
from tying.core.relations import Same

__all__ = ["RELATIONS_METADATA_KEY", "TIED_METADATA_KEY", "check_load", "install", "tied_slots"]

#: the key under which a module's state-dict metadata lists the slots it ties
TIED_METADATA_KEY = "tying.tied"
#: the key (next to it, since stop 62) listing ``"<slot> <relation spec>"`` for the slots tied
#: through a relation other than Same: the slots alone let a square ``Transposed`` tie's
#: state dict load into a ``Same``-tied model (1.20 off, no error). Absent: an older record
RELATIONS_METADATA_KEY = "tying.relations"


def tied_slots(
    module: nn.Module, relations: list | None = None, visited: list | None = None
) -> list[str]:
    """The slots tied under ``module``, as canonical paths relative to it, sorted.

    Args:
        module: any module (a plan's root or a part of it).
        relations: a list to fill with ``"<slot> <relation spec as JSON>"`` for each slot
            tied through a relation other than ``Same`` (sorted), or None.
        visited: a list to fill with ``(path, module)`` for every module walked, or None.

    Returns:
        A list of strings (empty when nothing under ``module`` is tied by a plan).

    Raises:
        Nothing.

    Example:
        >>> import tying
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
        >>> tied_slots(m)
        ['1.weight']
    """
    from tying.core.slots import SLOTS_ATTR

    out: list[str] = []
    seen: set[int] = set()

    # torch's named_modules plus slots_of per module cost a 24-layer ALBERT's state_dict
    # 90 % more; this walk (the same modules, each once, canonical per module) about half
    def walk(mod: nn.Module, path: str) -> None:
        if id(mod) in seen:
            return
        seen.add(id(mod))
        if visited is not None:  # for the sources record (tie_sources, stop 62)
            visited.append((path, mod))
        names = mod.__dict__.get(SLOTS_ATTR)
        if names:
            here = canonical(path)
            out.extend(f"{here}.{n}" if here else n for n in names)
            if relations is not None:
                relations.extend(
                    f"{here}.{n} {_spec(s.relation)}" if here else f"{n} {_spec(s.relation)}"
                    for n, s in names.items()
                    if type(s.relation) is not Same
                )
        for name, child in mod._modules.items():
            if child is not None:
                walk(child, f"{path}.{name}" if path else name)

    walk(module, "")
    out.sort()
    if relations is not None:
        relations.sort()
    return out


def install(model: nn.Module) -> None:
    """Register the record and the check on ``model`` (a plan's root) and on every part
    above a tied module (for ``model.part.state_dict()`` / ``load_state_dict``); a no-op
    where they are registered already.

    Args:
        model: the module a plan was applied to.

    Returns:
        None.

    Raises:
        Nothing: a module that takes no hook (a scripted one) is left as it is.

    Example:
        >>> import torch, tying
        >>> from torch import nn
        >>> def stack(depth):
        ...     m = nn.Sequential(*[nn.Linear(2, 2) for _ in range(depth)])
        ...     return tying.Plan([tying.share("*", like="0")]).apply(m) and m
        >>> saved = stack(2).state_dict()
        >>> saved._metadata[""][TIED_METADATA_KEY]
        ['1.bias', '1.weight']
        >>> try:
        ...     stack(3).load_state_dict(saved)
        ... except tying.TieError as err:
        ...     print(str(err).split(":")[0])
        load_state_dict into Sequential
        >>> stack(3).load_state_dict(dict(saved))  # on purpose: a plain dict
        <All keys matched successfully>
    """
    _register(model, _record_at_root)
    parts = set()
    for path, mod in model.named_modules():
        if path and _slot_names(mod):
            names = path.split(".")
            parts.update(".".join(names[:i]) for i in range(1, len(names)))
    for path in sorted(parts):
        _register(model.get_submodule(path), _record_at_part)


def _slot_names(mod: nn.Module):
    from tying.core.slots import slots_of

    return slots_of(mod)


def _register(mod: nn.Module, record) -> None:
    hooks = getattr(mod, "_state_dict_hooks", None)
    if hooks is None or any(getattr(h, "__func__", h) is record for h in hooks.values()):
        return
    try:
        mod.register_state_dict_post_hook(record)
    except (AttributeError, RuntimeError):  # a scripted module takes no hook
        pass


def _has(mod: nn.Module, record) -> bool:
    hooks = mod.__dict__.get("_state_dict_hooks") or {}
    return any(h is record for h in hooks.values())


# -- the record ------------------------------------------------------------------------


def _record_at_root(module, state_dict, prefix, local_metadata) -> None:
    _write(module, local_metadata)


def _record_at_part(module, state_dict, prefix, local_metadata) -> None:
    # a part records only when its own state dict is taken; inside a larger one the
    # plan's root records its slots (one walk per state_dict call)
    if not prefix:
        _write(module, local_metadata)


def _write(module, local_metadata) -> None:
    if local_metadata is None:
        return
    relations: list[str] = []
    visited: list = []
    tied = tied_slots(module, relations, visited)
    if tied:
        local_metadata[TIED_METADATA_KEY] = tied
        local_metadata[RELATIONS_METADATA_KEY] = relations
        local_metadata[tie_sources.SOURCES_METADATA_KEY] = tie_sources.record(visited, module)
    else:  # untied since: the module records nothing, as a plain one
        local_metadata.pop(TIED_METADATA_KEY, None)
        local_metadata.pop(RELATIONS_METADATA_KEY, None)
        local_metadata.pop(tie_sources.SOURCES_METADATA_KEY, None)


# -- the check -------------------------------------------------------------------------


def check_load(root: nn.Module, state_dict) -> None:
    """Refuse a strict load into ``root`` whose record of tied slots does not fit, before
    anything is copied: called by the pre-hook tying puts on a plan's root, its parts and
    the modules above them (:func:`tying.core.slot_loads.guard_loading`), for the module
    ``load_state_dict`` was called on. Checks ``root`` when its own state dict records
    (a plan's root or a part of it) and every plan root under it, each at its prefix.

    Args:
        root: the module being loaded.
        state_dict: the state dict given to ``load_state_dict`` (its ``_metadata`` read).

    Returns:
        None.

    Raises:
        TieError: naming the slots, both tie sets and the two fixes; nothing was loaded.
    """
    metadata = getattr(state_dict, "_metadata", None)
    if not metadata:
        return  # a plain dict or a safetensors file: no record, loads as before
    for path, mod in root.named_modules():
        if _has(mod, _record_at_root) or (not path and _has(mod, _record_at_part)):
            prefix = path + "." if path else ""
            _check(mod, state_dict, prefix, metadata.get(path, {}))


def _recorded_entry(state_dict, prefix: str, local_metadata):
    """The record for the module at ``prefix``, the metadata entry holding its tied slots
    (their relations and sources sit beside them there): its own metadata entry, or (a
    state dict saved through a wrapper whose keys are clean but whose metadata keeps the
    wrapper's segments, FSDP's ``_fsdp_wrapped_module``) the entry at the same canonical
    path; None when there is none."""
    if (local_metadata or {}).get(TIED_METADATA_KEY) is not None:
        return local_metadata
    metadata = getattr(state_dict, "_metadata", None)
    if not metadata:
        return None
    here = canonical(prefix[:-1])
    # torch's get_model_state_dict(DistributedDataParallel(m)) strips "module." from the
    # keys but not from _metadata: the record of m sits at "module" (stop 59: a state dict
    # with other ties loaded into a bare model with no error). Read there too, unless the
    # keys are a bare model's own (a real child of that name: :func:`_ddp_stripped`)
    wrapped = "module" if not here else f"module.{here}"
    if not _ddp_stripped(state_dict, metadata):
        wrapped = None
    found = None
    for path, entry in metadata.items():
        if not (isinstance(path, str) and isinstance(entry, dict) and TIED_METADATA_KEY in entry):
            continue
        if canonical(path) == here:
            return entry
        if wrapped is not None and found is None and canonical(path) == wrapped:
            found = entry
    return found


def _ddp_stripped(state_dict, metadata) -> bool:
    """Whether ``state_dict`` has keys with ``module.`` taken off and ``_metadata`` kept
    under it (``get_model_state_dict`` of a DDP wrapper). No key under ``module.`` says so;
    a model with a real child ``module`` has keys there too (review 59: its record was then
    never read, a depth-2 stack loaded into depth 3), and its keys say so instead: each
    key's module is in the metadata under ``module.``, and not every one at its own path,
    where torch writes an entry for every module of a bare model's state dict."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if not any(k.startswith("module.") for k in keys):
        return True
    owners = {k.rpartition(".")[0] for k in keys}
    return all(("module." + o if o else "module") in metadata for o in owners) and not all(
        o in metadata for o in owners
    )


def _check(module, state_dict, prefix: str, local_metadata) -> None:
    entry = _recorded_entry(state_dict, prefix, local_metadata)
    saved = None if entry is None else entry[TIED_METADATA_KEY]
    if not isinstance(saved, (list, tuple)):
        return  # no record: an older file, a plain dict or an untied model's
    saved = {canonical(s) for s in saved if isinstance(s, str)}
    relations: list[str] = []
    visited: list = []
    tied = set(tied_slots(module, relations, visited))
    if tied == saved:
        # the relations and sources sit beside the slots, which may be another entry than
        # this module's own (get_model_state_dict(DDP(m)) keeps them under 'module')
        _check_relations(module, prefix, entry, saved, relations)
        tie_sources.check(module, prefix, entry, visited, relations)
        return
    if not _strict_load():
        return
    keys = {canonical(k[len(prefix) :]) for k in state_dict if k.startswith(prefix)}
    unheld = sorted(tied - keys - saved)
    own = {canonical(k) for k in module.state_dict(keep_vars=True)}  # only on a mismatch
    unknown = sorted(saved - tied - own)
    if not unheld and not unknown:
        return
    where = f"load_state_dict into {type(module).__name__}" + (
        f" at {prefix[:-1]!r}" if prefix else ""
    )
    parts = []
    if unheld:
        parts.append(
            f"this model ties {len(unheld)} slot(s) that the state dict neither holds nor "
            f"records as tied ({_summary(unheld)}): they would read their tie's source, "
            f"which the saved model did not do"
        )
    if unknown:
        parts.append(
            f"the state dict records {len(unknown)} tied slot(s) this model does not have "
            f"({_summary(unknown)}): the saved model computed them from their source and "
            f"this one would leave them out"
        )
    raise TieError(
        f"{where}: {'; '.join(parts)}. The state dict was saved from a model that ties "
        f"{len(saved)} slot(s) ({_summary(sorted(saved))}) and this one ties {len(tied)} "
        f"({_summary(sorted(tied))}), so the load would pass on the keys alone and the "
        f"model compute another function. Build the saved architecture (its depth, its "
        f"plan) to get the saved model, or, to load these values into this model on "
        f"purpose, load a plain dict, which holds no record: "
        f"model.load_state_dict(dict(state_dict)). Nothing was loaded"
    )


def _check_relations(module, prefix: str, local_metadata, saved, relations) -> None:
    """Refuse a strict load whose record ties the same slots through other relations
    (a square ``Transposed``/``Rotated`` tie's state dict into a ``Same``-tied model read
    the stored source as it is: 1.20 off, no error, stop 62). A record without the
    relations (saved before stop 62, or through a tool that keeps only the slots) is not
    checked."""
    recorded = (local_metadata or {}).get(RELATIONS_METADATA_KEY)
    if not isinstance(recorded, (list, tuple)) or not _strict_load():
        return
    theirs = dict(_split(r) for r in recorded if isinstance(r, str))
    ours = dict(_split(r) for r in relations)
    differ = [slot for slot in sorted(saved) if theirs.get(slot, _SAME) != ours.get(slot, _SAME)]
    if differ:  # equal specs agree; else ask the relation (two qr tables of one split)
        held = _slots_by_path(module)
        differ = [slot for slot in differ if not _reads_as(held.get(slot), theirs.get(slot))]
    if not differ:
        return
    theirs = {k: _shown(v) for k, v in theirs.items()}
    ours = {k: _shown(v) for k, v in ours.items()}
    where = f"load_state_dict into {type(module).__name__}" + (
        f" at {prefix[:-1]!r}" if prefix else ""
    )
    shown = "; ".join(
        f"{slot}: saved via {theirs.get(slot, 'Same()')}, this model via {ours.get(slot, 'Same()')}"
        for slot in differ[:5]
    )
    raise TieError(
        f"{where}: the state dict was saved from a model that ties the same slots through "
        f"other relations ({shown}{' ...' if len(differ) > 5 else ''}), so the load would "
        f"pass on the keys alone and these slots compute another function from the stored "
        f"source. Apply the saved plan (its relations) to get the saved model, or, to load "
        f"these values into this model on purpose, load a plain dict, which holds no "
        f"record: model.load_state_dict(dict(state_dict)). Nothing was loaded"
    )


_SAME = '{"type": "Same"}'


def _spec(relation) -> str:
    # every state_dict() writes it: kept on the relation object (a frozen dataclass, which
    # has a __dict__: share() takes only Relations), where an lru_cache hashed the fields
    # per slot per call (4 D4 GroupConv2d layers' state_dict 0.11 -> 0.23 ms)
    spec = relation.__dict__.get("_tying_spec")
    if spec is None:
        spec = _spec_of(relation)
        object.__setattr__(relation, "_tying_spec", spec)
    return spec


def _spec_of(relation) -> str:
    try:
        return json.dumps(relation.spec(), sort_keys=True)
    except (TypeError, ValueError, AttributeError):  # a relation with no JSON spec
        return json.dumps({"type": repr(relation)})


def _split(entry: str) -> tuple[str, str]:
    slot, _, relation = entry.partition(" ")
    return canonical(slot), relation


def _slots_by_path(module: nn.Module) -> dict:
    from tying.core.slots import slots_of

    return {
        canonical(f"{path}.{name}" if path else name): slot
        for path, mod in module.named_modules()
        for name, slot in slots_of(mod).items()
    }


def _reads_as(slot, spec: str | None) -> bool:
    """Whether our ``slot`` computes what the saved relation ``spec`` computed."""
    from tying.core.relations import relation_from_spec

    if slot is None:
        return False
    try:
        other = relation_from_spec(json.loads(spec or _SAME))
    except (TypeError, ValueError, KeyError):
        return False
    shape = tuple(slot.shape)
    return slot.relation.reads_as(other, shape) or _probed_alike(slot.relation, other, shape)


#: the largest slot whose two relations are compared by computing them on a probe
_PROBE_LIMIT = 1 << 20


def _probed_alike(ours, theirs, shape) -> bool:
    """Whether two relations compute the same slot from the same stored values, asked of
    the values themselves: one probe source of distinct entries through both, their
    learnable extras (stored in the state dict, so their ``init`` does not matter) alike.

    Relations are compared by ``==``, so other spellings of one function were refused
    (review 62): ``Transposed()`` vs ``Transposed(dims=(-2, -1))`` or ``(1, 0)``,
    ``Rotated(1)`` vs ``Rotated(5)``/``Rotated(-3)``, ``Flipped((-1,))`` vs ``Flipped((1,))``
    on a 2-d weight, ``Rotated(0)`` vs ``Same()``, ``Scaled(1.0)`` vs ``Scaled(0.5)``: the
    load computes the very same slot."""
    import math

    import torch

    try:
        need = tuple(ours.source_shape(shape))
        if tuple(theirs.source_shape(shape)) != need or math.prod(need) > _PROBE_LIMIT:
            return False
        probe = torch.arange(1, math.prod(need) + 1, dtype=torch.float64).reshape(need)
        mine, other = ours.extras(shape, probe), theirs.extras(shape, probe)
        if set(mine) != set(other) or any(v.shape != other[k].shape for k, v in mine.items()):
            return False
        extras = {k: torch.ones_like(v) for k, v in mine.items()}
        with torch.no_grad():
            a = ours(probe, shape=shape, **extras)
            b = theirs(probe, shape=shape, **extras)
        return tuple(a.shape) == tuple(b.shape) and torch.equal(a, b)
    except Exception:  # a relation that cannot run on a probe: another function
        return False


def _shown(spec: str) -> str:
    from tying.core.relations import relation_from_spec

    try:
        return repr(relation_from_spec(json.loads(spec)))
    except (TypeError, ValueError, KeyError):
        return spec


def _strict_load() -> bool:
    """The ``strict`` of the ``nn.Module.load_state_dict`` that runs now (torch hands every
    hook ``strict=True``); False under another loader, which is left to its own checks."""
    code = nn.Module.load_state_dict.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return bool(frame.f_locals.get("strict", True))
        frame = frame.f_back
    return False


def _summary(names: list[str], most: int = 6) -> str:
    """``names`` grouped by the module path up to its first numbered segment
    (``layers.4.*``), at most ``most`` groups, or 'none'."""
    if not names:
        return "none"
    groups: dict[str, int] = {}
    for name in names:
        segs = name.split(".")
        cut = next((i for i, s in enumerate(segs[:-1]) if s.isdigit()), None)
        key = ".".join(segs[: cut + 1]) + ".*" if cut is not None else name
        groups[key] = groups.get(key, 0) + 1
    shown = list(groups)[:most]
    more = len(groups) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")
