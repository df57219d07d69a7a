"""Files: ``save``/``load`` tied models as safetensors, ties in the metadata, no pickle.

Only physical tensors are written (each once); the ties go into the file's
metadata, so loading into a fresh, untied model re-creates them, hand-made ties
(one ``nn.Parameter`` under two paths) included. Writing is atomic (temporary
file, fsync, rename): a crash mid-save leaves the previous file intact, and the
next save into the folder removes temporary files that a killed save of this
library left behind (only those: their names carry this library's mark, the
host and the writer's process id, and the process must be gone).

The file format (header fields, hash, parsing) is :mod:`tying.core.file_format`'s,
the atomic write :mod:`tying.core.file_writing`'s; this module ties them to a model.

Integrity: a SHA-256 over the tie metadata (every header entry) *and* the tensor
bytes is stored in the file and checked on load, before the model is touched.
A truncated or altered file, a file with ``tying`` metadata but no hash, and
metadata of the wrong types are all refused with a :class:`~tying.TieError`
naming the file (and the field).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.file_format import FORMAT as FORMAT
from tying.core.file_format import HASH_KEY as HASH_KEY
from tying.core.file_format import _check_integrity as _check_integrity
from tying.core.file_format import _digest as _digest
from tying.core.file_format import _parse as _parse
from tying.core.file_format import _read as _read
from tying.core.file_format import _state_metadata
from tying.core.file_format import mismatched as mismatched
from tying.core.file_writing import save_state as save_state
from tying.core.inventory import Inventory, join
from tying.core.load_guards import (
    _check_logical_shapes,
    _check_overlapping_memory,
    _check_shared_buffers,
    _read_shared_records,
    _restore,
    _values_kept_until_loaded,
)
from tying.core.load_guards import _may_overlap_itself as _may_overlap_itself
from tying.core.load_guards import _play as _play
from tying.core.load_guards import _refuse_meta_device as _refuse_meta_device
from tying.core.load_guards import _refuse_unwritable as _refuse_unwritable
from tying.core.load_guards import _span as _span
from tying.core.load_guards import check_before_load as check_before_load
from tying.core.load_guards import check_before_load_into_part as check_before_load_into_part
from tying.core.load_guards import slots_load_from_state_dict as slots_load_from_state_dict
from tying.core.outside import WRAPPER_SEGMENTS, canonical, canonical_index
from tying.core.plain_files import shard_hint, tie_gives_back
from tying.core.plan import Change, Plan, Tie
from tying.core.relations import Same
from tying.core.slots import check_writes
from tying.core.verify import dropped_ties, ties


def _physical_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """The model's state, each tensor once, the aliases of hand-made duplicates, and the
    state dict's own metadata (``_metadata``: module versions, a group conv's group)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    state = model.state_dict(keep_vars=True)
    for key, t in state.items():
        if id(t) in first:
            aliases[key] = first[id(t)]
            continue
        first[id(t)] = key
        # a quantized module's state holds non-tensors (its packed params' dtype): kept
        # as they are for save_state to refuse by name (t.detach() raised AttributeError)
        tensors[key] = t.detach() if isinstance(t, torch.Tensor) else t
    return tensors, aliases, getattr(state, "_metadata", None) or {}


def save(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> pathlib.Path:
    """Write ``model``'s physical tensors and its ties to a safetensors file, atomically.

    Args:
        model: the (tied) model.
        path: the file to write; its previous content survives any failure.
        metadata: extra str → str entries for the file header.

    Returns:
        The path written.

    Raises:
        TypeError: when ``metadata`` is not str → str.
        ValueError: when a ``metadata`` key starts with ``tying.`` (reserved).
        TieError: when a tensor is on the meta device (it has no values), a
            computed slot was written to since it was last read (the write was lost),
            a tie reads a module that was replaced after the plan was applied, or the
            ties would not load back. Nothing is written then.
        IsADirectoryError, PermissionError: ``path`` is a folder or a read-only file,
            or its folder cannot be written; nothing is written.
        NotADirectoryError: a folder on ``path`` is a file; nothing is written.

    A symlink is written through (its target is replaced, the link stays), and an
    existing file keeps its permission bits.

    Example:
        >>> import torch, tying, tempfile, os
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> _ = tying.save(m, path)
        >>> fresh = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.load(fresh, path)
        >>> fresh["b"].weight is fresh["a"].weight, torch.equal(fresh["a"].weight, m["a"].weight)
        (True, True)
    """
    check_writes(model)  # before any read: a lost write to a computed slot is refused
    tie_list = ties(model)  # first: its inventory names a lazy parameter (torch's error did not)
    tensors, aliases, state_metadata = _physical_state(model)
    inv = Inventory(model)
    for t in tie_list:
        if t.source:  # a source re-parametrised under the tie: TieError naming it and the fix
            inv.slots[t.source]  # noqa: B018
        elif t.source == "":  # a part of the tied model, or a source module replaced
            raise TieError(
                f"save: {inv.outside(t.target, 'save')}; nothing was written to {os.fspath(path)!r}"
            )
    dropped = dropped_ties(model, inv)
    if dropped:
        raise TieError(
            f"save: {len(dropped)} tie(s) a plan declared no longer hold: {', '.join(dropped)} "
            f"is now an independent parameter (the module holding it was replaced after the "
            f"plan, e.g. model.lm_head = nn.Linear(...)), so the file would hold it as a tensor "
            f"of its own and a load would not re-create the tie; re-create it with "
            f"tying.retie(model), or keep it untied with tying.untie(model) and a plan without "
            f"that rule; nothing was written to {os.fspath(path)!r}"
        )
    # Written without wrapper segments (apply_activation_checkpointing, torch.compile,
    # FSDP1), as torch's own state-dict hooks write checkpoint_wrapper's tensors: the file
    # loads into the model wrapped or not (its ties kept the segment while its tensors did
    # not, and it loaded into neither: stop 36)
    where = f"save: nothing was written to {os.fspath(path)!r}"
    canonical_index(tensors, where)
    canonical_index([t.target for t in tie_list], where)
    tensors = {canonical(k): t for k, t in tensors.items()}
    aliases = {canonical(k): canonical(v) for k, v in aliases.items()}
    tie_list = [
        dataclasses.replace(t, target=canonical(t.target), source=t.source and canonical(t.source))
        for t in tie_list
    ]
    # the state dict's metadata goes into the file as torch.save keeps it (stop 57): a C4
    # LiftingConv2d's file loaded into a D4 layer (every tie the file declares exists
    # there too) with no error, and the layer computed another function
    return save_state(tensors, tie_list, path, metadata, aliases, state_metadata)


def _unfit_ties(path, rules, tensors, model: nn.Module, err: TieError, hint: str) -> TieError:
    """The refusal of a file whose ties do not resolve on the model.

    When the file names slots the model does not have at all (a 6-layer stack's file into
    4 layers), that is the cause, named with the slots and the fix; before stop 60 the
    first rule that failed was printed ("pattern 'layers.4.weight' matches no parameter
    or module; closest: layers.3.weight"), which read as a typo in a pattern the user
    never wrote."""
    absent = absent_slots(_rule_names(rules) | set(tensors), model)
    if not absent:
        return TieError(f"load: the ties in {str(path)!r} do not fit this model: {err}{hint}")
    return TieError(
        f"load: the ties in {str(path)!r} do not fit this model: {absent_text(absent)}; the "
        f"model was left as it was (first tie that failed: {err}){hint}"
    )


def _rule_names(rules) -> set:
    """The targets and sources a file's rules name."""
    return {r.target for r in rules} | {r.like for r in rules if r.like is not None}


def absent_slots(named, model: nn.Module) -> list[str]:
    """The paths of ``named`` (a file's ties and tensors) whose module ``model`` lacks.

    Only a missing module is another architecture: a path of a module the model has but
    that is no slot of it is a relation's own storage (``b.weight_scale``,
    ``b.weight_physical``, which a model tied otherwise lacks) or a tensor under
    ``parametrize``, and the rule's own message names the cause and the fix."""
    modules = {canonical(n) for n, _ in model.named_modules(remove_duplicate=False)}
    # every slot and buffer of the model lies in one of its modules: the module decides
    return sorted(
        n for n in named if isinstance(n, str) and canonical(n).rpartition(".")[0] not in modules
    )


def absent_text(absent: list[str], what: str = "file") -> str:
    """Why a ``what`` (file, checkpoint) naming the slots ``absent`` does not fit, and the
    fix (also for ``tying.distributed.load`` and ``dcp_load``)."""
    from tying.core.tie_record import _summary

    return (
        f"the {what} ties or stores {len(absent)} slot(s) this model does not have "
        f"({_summary(absent)}): it was saved from another architecture (a deeper stack, "
        f"another configuration); build the model the {what} was saved from and load into that"
    )


def _same_stored(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two entries of a plain file are one value (shape, dtype and every entry)."""
    from tying.core.sharded_check import same_values

    return a.shape == b.shape and a.dtype == b.dtype and same_values(a, b)


def load(model: nn.Module, path: str | os.PathLike, verify_hash: bool = True) -> Plan:
    """Load a file written by :func:`save` into ``model``, re-creating its ties.

    All or nothing: the file is read and checked (hash, metadata, ties, names,
    shapes, dtypes) before the model is changed; on any mismatch the model is
    unchanged. Ties in the file that the model lacks are created, hand-made ties
    (one ``nn.Parameter`` under two paths) as hand-made ties. A tie the model has
    but the file does not (the file stores that slot as its own tensor) is
    refused, never dropped: free it first if the file is what you want.

    Args:
        model: a model of the same architecture, untied or tied as the file, on a
            real device (not ``meta``: call ``model.to_empty(device=...)`` first).
        path: the file, or a sharded checkpoint (transformers' folder with a
            ``*.safetensors.index.json``, or that index), read as one file. A plain file
            storing both ends of a tie loads where the tie gives the stored target back
            exactly; ends that differ are refused with the difference.
        verify_hash: check the stored SHA-256 of the metadata and tensor bytes
            (default True); False also accepts plain safetensors files.

    Returns:
        The :class:`~tying.Plan` of the file's ties (applied to ``model``).

    Raises:
        FileNotFoundError: no file at ``path``.
        TieError: truncated or altered file, missing hash, malformed metadata,
            ties that do not fit the model, missing/unexpected tensors, shape or
            dtype mismatches, a tied slot whose logical shape differs from the one
            recorded in the file (``Mirrored`` 5 vs 6 taps from 3 stored), a model on
            the meta device.

    Example:
        >>> import torch, tying, tempfile, os
        >>> m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3),
        ...                          "head": torch.nn.Linear(3, 5, bias=False)})
        >>> m["head"].weight = m["embed"].weight          # a hand-made tie
        >>> path = tying.save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> fresh = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3),
        ...                              "head": torch.nn.Linear(3, 5, bias=False)})
        >>> _ = tying.load(fresh, path)
        >>> fresh["head"].weight is fresh["embed"].weight, tying.count(fresh).physical
        (True, 15)
    """
    path = pathlib.Path(path)
    tensors, meta = _read(path)
    if path.is_file() and not any(k.startswith("tying.") for k in meta):
        # one shard of a sharded checkpoint never holds the whole model: say so before any
        # other check (stop 58 docs audit: shards without the tied embedding got the
        # hand-tie advice free('lm_head.weight'), after which the folder itself was refused)
        hint = shard_hint(path)
        if hint:
            raise TieError(
                f"load: {str(path)!r} holds part of a sharded checkpoint, not a whole model"
                f"{hint}; the model was left as it was"
            )
    _check_integrity(path, tensors, meta, verify_hash)
    rules, aliases, logical = _parse(path, meta)
    recorded = _state_metadata(path, meta)
    _refuse_meta_device(model)
    # Paths on either side of a wrapper that inserts a segment (apply_activation_
    # checkpointing, torch.compile, FSDP1) name the same slots once it is left out: the
    # file's keys and ties are matched to the model's by that canonical form (a file saved
    # from a wrapped model was refused by a bare one and the other way round, and a wrapped
    # model's own file did not load back into it: stop 36)
    C = canonical
    slots_now = Inventory(model).slots
    slot_at = canonical_index(slots_now, "load")
    tensors = _canonical_keys(tensors, path)
    aliases = {C(k): C(v) for k, v in aliases.items()}
    rules = [
        dataclasses.replace(
            r,
            target=slot_at.get(C(r.target), r.target),
            like=r.like if r.like is None else slot_at.get(C(r.like), r.like),
        )
        for r in rules
    ]
    logical = {slot_at.get(C(k), k): v for k, v in logical.items()}
    rules = [_as_model_reads(r, slots_now) for r in rules]
    plan = Plan(rules)
    try:
        res = plan.resolve(model)  # phase 1: changes nothing
    except TieError as err:
        raise _unfit_ties(path, rules, tensors, model, err, _wrapper_hint(tensors, model)) from None
    inv, changes = res.inventory, res.changes

    final = ties_now(inv)
    for ch in changes:
        final[ch.path] = ch.new
        if ch.old is not None and ch.new is not None and not (ch.old.hand or ch.new.hand):
            # stop 36: the file's tie replaced the model's (another source or relation)
            # without a word, while a hand tie the file ties otherwise was refused below
            was, now = (
                f"{t.source or 'its own storage'} via {t.relation!r}" for t in (ch.old, ch.new)
            )
            raise TieError(
                f"load: {ch.path} is tied in this model (to {was}) but {str(path)!r} ties it "
                f"to {now}; loading would replace this model's tie with the file's. Free it "
                f"first with tying.Plan([tying.free({ch.path!r})]).apply(model) to take the "
                f"file's tie, or load a file saved from a model tied as this one"
            )

    def tied_here(key: str, what: str) -> TieError:
        t = final[key]
        src = t.source or "its own storage"
        return TieError(
            f"load: {key} is tied in this model (to {src} via {t.relation!r}) but {str(path)!r} "
            f"{what}; untie it first with tying.Plan([tying.free({key!r})]).apply(model), or "
            f"load into a model without that tie"
        )

    plain = not any(k.startswith("tying.") for k in meta)
    if plain:
        # a plain safetensors file stores a tied weight once: transformers' model.safetensors
        # and safetensors.torch.save_model leave the tied key out (save_model names it in its
        # metadata); where this model ties it by hand to a stored tensor, the file's value is
        # the tie's value, as transformers and safetensors.torch.load_model read it (stop 34:
        # refused, saying the file "stores it as its own tensor")
        # a file that stores both ends (an untied model's): the target's entry is the tie's
        # value where the tie gives it back exactly, as load_state_dict reads it (stop 58)
        differ = tie_gives_back(inv, final, tensors, aliases)
        if differ:
            target, why = next(iter(differ.items()))
            src = inv.hand.get(target) or final[target].source
            # every tie whose ends differ, in one plan (review stop 58: a 4-layer shared
            # stack took 6 tries, one free() per refusal)
            more = (
                f" (and {len(differ) - 1} more tied slot(s) whose ends differ)"
                if len(differ) > 1
                else ""
            )
            frees = ", ".join(f"tying.free({t!r})" for t in differ)
            raise TieError(
                f"load: {target} is tied in this model (to {src}) but {str(path)!r} {why}"
                f"{more}; to load both ends as the file holds them, free the ties first with "
                f"tying.Plan([{frees}]).apply(model), then load; the model "
                f"was left as it was"
            )
        groups: dict[str, list[str]] = {}
        for target, source in inv.hand.items():
            groups.setdefault(source, [source]).append(target)
        for members in groups.values():
            # stored once under any one of its names (stop 58: a file keeping lm_head.weight
            # and leaving embed.weight out was refused, though both name one Parameter)
            stored = [m for m in members if C(m) in tensors]
            if len(stored) > 1 and all(
                _same_stored(tensors[C(stored[0])], tensors[C(m)]) for m in stored[1:]
            ):
                # review stop 58: a file keeping two names of a group, but not the one
                # tie_gives_back compares with (T5's encoder.embed_tokens.weight and
                # lm_head.weight, no shared.weight), was refused though both agree
                for m in stored[1:]:
                    del tensors[C(m)]
                stored = stored[:1]
            if len(stored) == 1:
                (kept,) = stored
                for m in members:
                    if m != kept and meta.get(m, kept) == kept:
                        aliases.setdefault(C(m), C(kept))
        _read_shared_records(tensors, meta, final, slot_at, path)
    full = dict(tensors)
    for calias, ckey in aliases.items():
        alias, key = slot_at.get(calias, calias), slot_at.get(ckey, ckey)
        if alias in inv.slots and key in inv.slots:  # a hand-made tie between parameters
            if final[key] is not None:
                raise tied_here(key, "stores it as its own tensor")
            t = final[alias]
            if t is not None:
                if t.source == key and type(t.relation) is Same:
                    continue  # the model ties it as a declared tie: the same thing
                raise tied_here(alias, f"stores it as the same tensor as {key} (a hand-made tie)")
            a, k = inv.slots[alias], inv.slots[key]
            if a.module._parameters[a.name] is not k.module._parameters[k.name]:
                changes.append(Change(alias, None, Tie(key, Same(), hand=True)))
        if ckey in full:
            full[calias] = full[ckey]
    for target, source in inv.hand.items():
        ct, cs = C(target), C(source)
        if aliases.get(ct, ct) != aliases.get(cs, cs) and final[target] is None:
            how = "stores it as its own tensor" if C(target) in full else "has no value for it"
            raise TieError(
                f"load: {target} is the same nn.Parameter as {source} in this model (a "
                f"hand-made tie) but {str(path)!r} {how}; let them part "
                f"first with tying.Plan([tying.free({target!r})]).apply(model), or load into a "
                f"model without that tie"
            )

    _check_modules_own(model, full, recorded, path)  # its own words first (a group conv's)
    if "tying.format" in meta:
        declared = {C(r.target) for r in rules} | set(aliases)
        _refuse_undeclared_ties(model, final, declared, full, path)
    expected = {
        C(k): (tuple(t.shape), t.dtype) for k, t in model.state_dict(keep_vars=True).items()
    }
    for ch in changes:
        info = inv.slots[ch.path]
        if ch.new is not None and ch.new.hand:
            continue  # stays a physical entry of the state dict
        if ch.old is not None:
            for sname in info.tie.storage.values():
                expected.pop(C(join(info.module_path, sname)), None)
        if ch.new is None:
            expected[C(ch.path)] = (info.shape, _dtype(inv, ch.path))
            continue
        expected.pop(C(ch.path), None)
        prefix = f"{C(info.module_path)}." if C(info.module_path) else ""
        dt = _dtype(inv, ch.path)
        if ch.new.source is None:
            expected[f"{prefix}{info.name}_physical"] = (
                tuple(ch.new.relation.source_shape(info.shape)),
                dt,
            )
        for role, t in ch.new.relation.extras(info.shape, torch.empty(0, dtype=dt)).items():
            expected[f"{prefix}{info.name}_{role}"] = (tuple(t.shape), dt)
    missing = sorted(set(expected) - set(full))
    unexpected = sorted(set(full) - set(expected))
    for key in unexpected:
        key = slot_at.get(key, key)
        if key in final and final[key] is not None:
            src = final[key].source
            if plain and src and C(src) not in full and type(final[key].relation) is Same:
                # stop 58: a plain file keeping the other end of an identity tie (its source
                # left out) was said to come from a model that "did not tie it"
                raise TieError(
                    f"load: {key} is tied in this model (to {src} via Same()) but "
                    f"{str(path)!r} stores {key} and has no entry for {src}: it keeps the "
                    f"tie's other end (saved from a model tied the other way round); tie "
                    f"them that way, tying.Plan([tying.free({key!r}), tying.share({src!r}, "
                    f"like={key!r})]).apply(model), then load; the model was left as it was"
                )
            raise tied_here(key, "stores it as its own tensor (the saved model did not tie it)")
    bad = mismatched(full, expected)
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing in file: {', '.join(missing[:10])}")
            shared = [k for k in missing if meta.get(k) in full]
            if shared:  # safetensors.torch.save_model's record of a tensor it stored once
                k = shared[0]
                parts.append(
                    f"the file stores {k} as the same tensor as {meta[k]} (saved from a model "
                    f"that tied them): tie them in this model first (model.{k} = "
                    f"model.{meta[k]}, or tying.share({k!r}, like={meta[k]!r})), then load"
                )
        if unexpected:
            parts.append(f"not in model: {', '.join(unexpected[:10])}")
        if bad:
            parts.append(f"shape/dtype mismatch: {'; '.join(bad[:10])}")
        raise TieError(
            f"load: {str(path)!r} does not fit this model ({'; '.join(parts)}); "
            f"build the model with the architecture and dtype the file was saved from"
            f"{_wrapper_hint(tensors, model)}{shard_hint(path) if missing else ''}"
        )
    _check_logical_shapes(inv, logical, path)
    _check_shared_buffers(model, inv, full, path)
    _check_overlapping_memory(model, expected, full, path)
    kept = _values_kept_until_loaded(model)

    def load_values() -> None:
        # the keys the model's state dict has now (the file's ties are in place)
        own = model.state_dict(keep_vars=True)
        now = canonical_index(own, "load")
        values = collections.OrderedDict((now.get(k, k), v) for k, v in full.items())
        # the state dict's metadata the file recorded, as torch.save keeps it (stop 57: a
        # C4 LiftingConv2d's file loaded into a D4 layer, another function, no error), over
        # the model's own versions (stop 55: without versions torch's old-layout hooks
        # convert today's layout; spectral_norm refused a Plan-tied weight_orig as missing)
        values._metadata = _merged_metadata(model, own, recorded)  # type: ignore[attr-defined]
        with torch.no_grad():
            model.load_state_dict(values, strict=True)

    # phase 2: all or nothing, with the file's hand ties among the changes and the values.
    # Everything the file and the model say was checked above, but a module's own load
    # hook may still refuse (a hashed layer tied through another hash, a user's hook) once
    # the modules before it were loaded: the ties are then restored by the commit, and
    # the values from the copy kept here (stop 31: the model was left re-tied with the
    # file's relations and partly loaded).
    try:
        res.commit(_then=load_values, _values_follow=True)
    except BaseException as err:
        _restore(kept, err)
        raise
    return plan


def _as_model_reads(rule, slots: dict):
    """``rule`` with the model's own relation where the file's computes the same slot from
    the same stored values (:meth:`Relation.reads_as`: two quotient-remainder tables of one
    split, whatever their seed, sign and budget). ``load_state_dict`` loads those, and
    ``tying.load`` refused them as a tie the file replaced (stop 58 review)."""
    info = slots.get(rule.target)
    if rule.kind != "share" or rule.like is not None or info is None or info.tie is None:
        return rule
    now = info.tie.relation
    if "source" not in info.tie.storage or now == rule.relation:
        return rule  # tied to another slot, or the same relation already
    reads_as = getattr(now, "reads_as", None)
    if reads_as is not None and reads_as(rule.relation, tuple(info.shape)):
        return dataclasses.replace(rule, relation=now)
    return rule


def ties_now(inv: Inventory) -> dict[str, Tie | None]:
    """Each slot's tie in the model ``inv`` was taken of (None: untied; a Tie with no
    source: the slot's own storage)."""
    return {
        p: None
        if info.tie is None
        else Tie(None if "source" in info.tie.storage else info.source, info.tie.relation)
        for p, info in inv.slots.items()
    }


def _refuse_undeclared_ties(model: nn.Module, final: dict, declared: set, full: dict, path) -> None:
    """Refuse a model that ties a slot a :func:`save` file neither declares a tie of nor
    stores: the saved model had no such slot (a file of a C4 ``LiftingConv2d``, whose
    ties are all in a D4 one, loaded with the D4 layer's mirrored copies left as they
    were: another function, no error; stop 57). Every tie of a saved model is in its file."""
    extra = sorted(
        p
        for p, t in final.items()
        if t is not None and canonical(p) not in declared and canonical(p) not in full
    )
    if extra:
        t = final[extra[0]]
        more = f" (and {len(extra) - 1} more: {', '.join(extra[1:6])})" if len(extra) > 1 else ""
        held = sorted({k.split(".", 1)[0] for k in full})
        children = dict(model.named_children())
        if extra[0].split(".", 1)[0] not in held and all(h in children for h in held):
            # the file holds other modules only (a backbone, an embedding): loading it into
            # them alone works, and the tie reads what was loaded
            parts = ", ".join(f"{h!r}: model.get_submodule({h!r})" for h in held)
            raise TieError(
                f"load: {extra[0]} is tied in this model (to {t.source or 'its own storage'} "
                f"via {t.relation!r}){more} but {str(path)!r} neither declares that tie nor stores "
                f"{extra[0]}: it holds only {', '.join(held)}: "
                f"load it into those modules alone, tying.load(torch.nn.ModuleDict({{{parts}}}), "
                f"path), and {extra[0]} reads what was loaded; the model was left as it was"
            )
        raise TieError(
            f"load: {extra[0]} is tied in this model (to {t.source or 'its own storage'} via "
            f"{t.relation!r}){more} but {str(path)!r} neither declares that tie nor stores "
            f"{extra[0]}: the file was saved from a model without that slot (another "
            f"architecture or configuration, e.g. a group conv over another group); build "
            f"the model the file was saved from and load into that (then apply the plan "
            f"that adds the tie, if it is wanted); the model was left as it was"
        )


def _merged_metadata(model: nn.Module, own, recorded: dict | None):
    """The model's own state-dict metadata with the file's record (by canonical module
    path) laid over it, entry by entry; the model's own alone for a file without one."""
    merged = collections.OrderedDict(
        (k, dict(v)) for k, v in (getattr(own, "_metadata", None) or {}).items()
    )
    if recorded:
        for prefix, _ in model.named_modules(remove_duplicate=False):
            entries = recorded.get(canonical(prefix))
            if entries:
                merged.setdefault(prefix, {}).update(entries)
    return merged


def _check_modules_own(model: nn.Module, full: dict, recorded: dict | None, path) -> None:
    """Run every module's own load check (``_tying_check_load``: a group conv refusing a
    file of another group) with the metadata the file recorded, before the model changes;
    its refusal becomes a TieError naming the file."""
    if not recorded:
        return  # the model's own metadata: its checks pass against themselves
    from tying.core.slot_loads import _own_checks

    own = model.state_dict(keep_vars=True)
    now = canonical_index(own, "load")
    values = collections.OrderedDict((now.get(k, k), v) for k, v in full.items())
    values._metadata = _merged_metadata(model, own, recorded)  # type: ignore[attr-defined]
    try:
        _own_checks(model, values)
    except (ValueError, TypeError) as err:
        raise TieError(f"load: {str(path)!r}: {err}; the model was left as it was") from None


def _canonical_keys(tensors: dict, path: pathlib.Path) -> dict:
    """``tensors`` keyed without wrapper segments; a file holding two keys that differ only
    by them is refused by name (which of the two values is meant cannot be told)."""
    out: dict = {}
    for k, t in tensors.items():
        c = canonical(k)
        if c in out:
            other = next(o for o in tensors if o != k and canonical(o) == c)
            raise TieError(
                f"load: {str(path)!r} holds both {other} and {k}, which name the same tensor "
                f"once the wrapper segments {'/'.join(WRAPPER_SEGMENTS)} are left out; "
                f"save the model again with this version of tying.save (it writes each "
                f"tensor once, without wrapper segments); the model was left as it was"
            )
        out[c] = t
    return out


def _wrapper_hint(tensors, model: nn.Module) -> str:
    """Why no key fits when one side was saved or built inside a wrapper, or ``""``.

    ``tying.save(torch.compile(model))`` writes ``_orig_mod.*`` keys, DataParallel and
    DDP ``module.*``; the refusal listed every key as missing (stop 36).
    """
    try:
        here = set(model.state_dict(keep_vars=True))
    except TieError:  # a lost write to a computed slot: the load's own checks name it
        return ""
    there = set(tensors)
    if not there or not here or there & here:
        return ""
    for keys, other, saved in ((there, here, True), (here, there, False)):
        heads = {k.split(".", 1)[0] for k in keys}
        if len(heads) != 1 or not all("." in k for k in keys):
            continue
        (head,) = heads
        inner = {k.split(".", 1)[1] for k in keys}
        if saved and inner <= other:
            wrap = {"module": "nn.DataParallel(model)", "_orig_mod": "torch.compile(model)"}
            return (
                f". Every key in the file starts with '{head}.': it was saved from a wrapped "
                f"model (DataParallel/DDP keep it under 'module', torch.compile under "
                f"'_orig_mod'); load into the same wrapper (tying.load("
                f"{wrap.get(head, f'nn.ModuleDict({{{head!r}: model}})')}, path)), and save "
                f"the inner model next time (tying.save(wrapped.{head}, path))"
            )
        if not saved and other <= inner:
            return (
                f". Every key of this model starts with '{head}.' and the file's keys fit "
                f"without it: it is a wrapper (DataParallel/DDP, torch.compile); load into "
                f"the model inside it, tying.load(model.{head}, path)"
            )
    return ""


def _dtype(inv: Inventory, path: str) -> torch.dtype:
    return inv.tensor(inv.root_of(path)).dtype
