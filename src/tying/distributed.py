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

import collections
import os
import sys
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from tying.core.checkpoint import (
    _merged_metadata,
    _refuse_meta_device,
    _rule_names,
    absent_slots,
    absent_text,
    save_state,
)
from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.outside import WRAPPER_SEGMENTS
from tying.core.outside import canonical as _canonical
from tying.core.verify import ties, verify
from tying.distributed_agreement import refuse_rank_values
from tying.distributed_wrapping import (  # noqa: F401  (re-exported: td.<name> as before)
    _first_difference,
    _FullStateRefused,
    _GatheredCheck,
    _inner_segment,
    _model_signature,
    _NestedAccumulation,
    _ParametersKept,
    _record_diff,
    _record_text,
    _refuse_unshardable,
    _refuse_wrapped,
    _require_group,
    _tie_record,
    _verified,
    _wrapper_paths,
    ddp,
    fully_shard,
    wrapped_by,
)


def load(model: nn.Module, path: str | os.PathLike, verify_hash: bool = True):
    """Load a tying file into a plain, DDP-wrapped or FSDP2-sharded tied model, on every rank.

    A collective when a process group is initialised: every rank must call it, each
    reading ``path`` (a shared file, or one copy per machine). Every rank reads and checks
    its file first; when any rank fails, or the ranks read files with different contents
    (DDP never broadcasts again after wrapping, so the ranks would train different
    models), every rank raises and no model is changed. A wrapped model's ties cannot
    change, so the file must tie exactly as the model does (load a file of other ties
    before wrapping, with :func:`tying.load`). A sharded model receives each rank's shard
    of the file's tensors, as a single-process :func:`tying.load` followed by
    :func:`fully_shard` would hold. Each module is handed the state-dict metadata the file
    recorded and runs its own load check with it, as in :func:`tying.load` (a C4
    ``LiftingConv2d``'s file refused by a D4 layer, sharded or not).

    Args:
        model: a plain, ``td.ddp``-wrapped or ``td.fully_shard``-sharded model.
        path: a file :func:`save` or :func:`tying.save` wrote.
        verify_hash: as for :func:`tying.load`.

    Returns:
        The :class:`tying.Plan` of the file's ties.

    Raises:
        TieError: the file does not fit the model (as :func:`tying.load`); the model is
            wrapped and the file ties otherwise; the ranks read different files.
        RuntimeError: on every other rank, when one rank could not read or check its file.

    Example (in every process of ``torchrun``):

    .. code-block:: python

        td.fully_shard(model, units=["layers.*"], mesh=mesh)
        td.load(model, "ckpt.safetensors")      # each rank receives its shards
    """
    import pathlib

    import torch.distributed as dist

    inner = _unwrapped(model, "load")
    helper = wrapped_by(inner) or ("ddp" if inner is not model else None)
    group = dist.is_available() and dist.is_initialized()
    if not group:
        if helper is not None:
            _require_group()
        return _load_file(inner, pathlib.Path(path), verify_hash)

    # every rank checks its own file, then all learn how it went: a rank that went on
    # alone would wait in the first collective (or train a model the others do not hold)
    def check():
        # stop 36: a path that is no path (None where one rank's environment lacked it)
        # raised on that rank alone, before the collective the others waited in
        checked = _checked_file(inner, _as_path(path), verify_hash, helper)
        if helper is not None:  # a wrapper checked the ranks' models alike when it wrapped
            return checked, None
        # stop 36: a plain model is checked against the file only by tying.load, after
        # this collective: a rank whose model did not fit (another vocabulary size or dtype,
        # built on the meta device) raised alone while the others loaded the file
        _refuse_meta_device(inner)
        return checked, _model_signature(inner)

    (checked, _), seen = _agreed(check, "load", str(path), lambda r: (r[0][3], r[1]))
    digests = [d for d, _ in seen]
    if len(set(digests)) > 1:
        by_rank = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        raise TieError(
            f"tying.distributed.load: the ranks read different contents from {str(path)!r} "
            f"(SHA-256 {by_rank}), so they would hold different models; give every rank the "
            f"same file (copy it to every machine, or use a shared folder); no rank's model "
            f"was changed"
        )
    signatures = [sig for _, sig in seen]
    if len(set(signatures)) > 1:
        by_rank = ", ".join(
            f"rank {r}: {sig[0][:12] if sig else 'a wrapped model'}"
            for r, sig in enumerate(signatures)
        )
        first = _first_difference(signatures)
        raise TieError(
            f"tying.distributed.load: the ranks' models differ ({first}; SHA-256 of each "
            f"model's parameter and buffer paths, shapes and dtypes: {by_rank}), so the file "
            f"would load on some ranks and be refused on others; build the same model on "
            f"every rank (same config and dtype), then call td.load on every rank; no "
            f"rank's model was changed"
        )
    path = pathlib.Path(path)
    if helper != "fully_shard":
        return _load_file(inner, path, verify_hash)
    plan, full, _, _ = checked
    _load_shards(inner, full, path)
    verify(inner)
    return plan


def _as_path(path):
    import pathlib

    try:
        return pathlib.Path(path)
    except TypeError:
        raise TypeError(
            f"tying.distributed.load: path must be a str or os.PathLike, got "
            f"{type(path).__name__} ({path!r}); pass the file's path on every rank; no rank's "
            f"model was changed"
        ) from None


def _load_file(inner: nn.Module, path, verify_hash: bool):
    """``tying.load``; a file whose tie paths a wrapper renamed (on either side) says so."""
    from tying.core.checkpoint import load as load_file

    try:
        return load_file(inner, path, verify_hash)
    except TieError as err:
        wrappers = _wrapper_paths(inner)
        if not wrappers and not any(seg in str(err) for seg in WRAPPER_SEGMENTS):
            raise
        # stop 36: "pattern 'head._checkpoint_wrapped_module.weight' matches no parameter"
        raise TieError(
            f"tying.distributed.load: {err} (a tying file names each tie by the saved "
            f"model's module paths, wrapper segments such as {WRAPPER_SEGMENTS[0]!r} "
            f"included, and this model's wrapped modules are "
            f"{', '.join(wrappers[:10]) or 'none'}: load the file into the model as it was "
            f"saved, wrapped or not: e.g. load before apply_activation_checkpointing when "
            f"the file was saved before it, or apply it before loading when it was saved "
            f"after; td.dcp_save/dcp_load name tensors and ties without wrapper segments and "
            f"load either way)"
        ) from None


def _checked_file(inner: nn.Module, path, verify_hash: bool, helper: str | None):
    """Read and check ``path`` against ``inner``: ``(plan, full state, file ties, digest)``.

    For a wrapped model the file must tie as the model does (its tensors cannot change), and
    for a sharded one its tensors must fit the model's state dict by name, shape and dtype:
    all refused here, before any rank changes anything.
    """
    from tying.core.checkpoint import (
        HASH_KEY,
        _check_integrity,
        _check_logical_shapes,
        _digest,
        _parse,
        _read,
        mismatched,
    )
    from tying.core.plan import Plan

    tensors, meta = _read(path)
    _check_integrity(path, tensors, meta, verify_hash)
    rules, aliases, logical = _parse(path, meta)
    digest = meta.get(HASH_KEY) if verify_hash else None
    digest = digest or _digest(tensors, meta)
    plan = Plan(rules)
    if helper is None:
        return plan, tensors, rules, digest
    where = f"tying.distributed.load: {str(path)!r}"
    fix = (
        f"the model was wrapped by td.{helper}, whose collectives know only the tensors it "
        f"was wrapped with; load this file with tying.load(model, path) before "
        f"td.{helper}(model), or into a model tied as the file; nothing was loaded"
    )
    try:
        res = plan.resolve(inner)
    except TieError as err:
        absent = absent_slots(_rule_names(rules) | set(tensors), inner)
        if absent:  # a deeper stack's file: loading it before wrapping fails the same way
            raise TieError(
                f"{where}: its ties do not fit this model: {absent_text(absent)}, then "
                f"wrap it with td.{helper}; nothing was loaded (first tie that failed: {err})"
            ) from None
        raise TieError(f"{where}: its ties do not fit this model ({err}); {fix}") from None
    inv = res.inventory
    if res.changes:
        what = "; ".join(
            f"{ch.path}: model {_tie_text(ch.old)}, file {_tie_text(ch.new)}"
            for ch in res.changes[:10]
        )
        raise TieError(f"{where} ties otherwise than this model ({what}); {fix}")
    full = dict(tensors)
    for alias, key in aliases.items():
        in_model = alias in inv.slots and key in inv.slots  # else a shared buffer's alias
        if in_model and inv.hand.get(alias) != key and not _declared_same(inv, alias, key):
            raise TieError(
                f"{where} stores {alias} as the same tensor as {key} (a hand-made tie) but "
                f"this model holds them apart; {fix}"
            )
        if key in full:
            full[alias] = full[key]
    expected = {k: (tuple(t.shape), t.dtype) for k, t in inner.state_dict(keep_vars=True).items()}
    missing = sorted(set(expected) - set(full))
    unexpected = sorted(set(full) - set(expected))
    bad = mismatched(full, expected)
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing in file: {', '.join(missing[:10])}")
        if unexpected:
            tied = [k for k in unexpected if k in inv.slots and inv.slots[k].is_tied]
            parts.append(
                f"not in model: {', '.join(unexpected[:10])}"
                + (
                    f" (tied in this model, stored apart in the file: {', '.join(tied)})"
                    if tied
                    else ""
                )
            )
        if bad:
            parts.append(f"shape/dtype mismatch: {'; '.join(bad[:10])}")
        raise TieError(
            f"{where} does not fit this model ({'; '.join(parts)}); build the model with the "
            f"architecture, dtype and ties the file was saved from; nothing was loaded"
        )
    _check_logical_shapes(inv, logical, path)
    recorded = _check_saved_modules(inner, inv, path, meta, rules, aliases, full)
    # a state dict as torch's carry it: the file's record over the model's own metadata,
    # handed to each module's load as tying.load hands it
    full = collections.OrderedDict(full)
    full._metadata = _merged_metadata(inner, inner.state_dict(keep_vars=True), recorded)  # type: ignore[attr-defined]
    return plan, full, rules, digest


def _check_saved_modules(inner, inv, path, meta, rules, aliases, full) -> dict | None:
    """What :func:`tying.load` checks of the saved modules, for a wrapped model (stop 57):
    each module's own load check with the state-dict metadata the file recorded (a C4
    ``LiftingConv2d``'s file refused by a D4 layer, by its group), and a model tying a slot
    the file neither declares nor stores (a file written before the record, or by another
    architecture). A sharded model loaded a C4 file into a D4 layer with no error: its
    mirrored copies read the C4 kernels, another function."""
    from tying.core.checkpoint import _check_modules_own, _refuse_undeclared_ties, ties_now
    from tying.core.file_format import _state_metadata
    from tying.core.outside import canonical

    recorded = _state_metadata(path, meta)
    _check_modules_own(inner, full, recorded, path)
    if "tying.format" not in meta:
        return recorded
    final = ties_now(inv)
    declared = {canonical(r.target) for r in rules} | {canonical(a) for a in aliases}
    full = {canonical(k): v for k, v in full.items()}
    _refuse_undeclared_ties(inner, final, declared, full, path)
    return recorded


def _declared_same(inv: Inventory, alias: str, key: str) -> bool:
    info = inv.slots.get(alias)
    return info is not None and info.tie is not None and info.source == key


def _tie_text(tie) -> str:
    if tie is None:
        return "untied"
    return f"tied to {tie.source or 'its own storage'} via {tie.relation!r}"


def _load_shards(inner: nn.Module, full: dict[str, torch.Tensor], path) -> None:
    """Each rank's shard of ``full`` into the sharded ``inner``; on failure the shards are restored."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.tensor import DTensor

    kept = []
    seen: set[int] = set()
    for t in inner.state_dict(keep_vars=True).values():
        local = t.to_local() if isinstance(t, DTensor) else t
        if local.data_ptr() not in seen or local.numel() == 0:
            seen.add(local.data_ptr())
            kept.append((local, local.detach().clone()))
    values = collections.OrderedDict(full)  # torch's loader fills it in place
    values._metadata = getattr(full, "_metadata", None) or {}  # type: ignore[attr-defined]
    try:
        set_model_state_dict(
            inner, values, options=StateDictOptions(full_state_dict=True, strict=True)
        )
    except BaseException:
        with torch.no_grad():
            for local, copy in kept:
                local.copy_(copy)
        raise


def save(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    *,
    rank_local: Iterable[str] = (),
) -> None:
    """Gather the full state of a (sharded) tied model and write it from rank 0.

    A collective: every rank must call it. The file is the usual tying file, so
    :func:`tying.load` restores it into an unsharded model on any world size; it records
    the state dict's metadata as :func:`tying.save` does (a group conv's group: a load into
    a layer over another group is refused). Rank 0
    writes its own values, so every replicated (unsharded) tensor must hold the same
    values on every rank: they are compared first (a digest per tensor).

    Args:
        model: the model (plain, DDP-wrapped or FSDP2-sharded).
        path: the file rank 0 writes (atomically).
        metadata: extra str → str header entries.
        rank_local: state-dict names of tensors that may differ between ranks by design
            (a buffer DDP leaves alone with ``broadcast_buffers=False``); rank 0's is written.

    Raises:
        TieError: (on every rank, nothing written) the ranks hold different values of a
            replicated tensor not in ``rank_local``; a ``rank_local`` name is not in the
            model's state dict.
        RuntimeError: on every rank but 0 when rank 0's write failed (rank 0 raises its
            own error); every rank returns or raises, none is left waiting.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = _unwrapped(model, "save")
    if dist.is_initialized():
        _same_target(path, metadata)  # metadata checked there, told to every rank
    else:
        _metadata_given(metadata)
    # stop 42: rank 0 wrote its own values where the other ranks held others (a model
    # seeded apart, never wrapped), and the file was a model no other rank held
    refuse_rank_values(
        lambda: inner.state_dict(keep_vars=True),
        "save",
        rank_local,
        "rank 0 alone writes the file, from its own values",
    )
    state = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    # stop 57: the state dict's metadata goes into the file as tying.save writes it (a
    # group conv's group, module versions): without it a C4 LiftingConv2d's file loaded into
    # a D4 layer was caught only by a coarser guard, and a sharded one not at all
    recorded = getattr(inner.state_dict(keep_vars=True), "_metadata", None) or {}
    if not dist.is_initialized():
        save_state(state, ties(inner), path, metadata, state_metadata=recorded)
        return
    # Rank 0 writes and then tells every rank how it went: a failed write used to raise
    # on rank 0 alone while the others waited at a barrier that never came (a hang).
    failure: BaseException | None = None
    outcome: list[str | None] = [None]
    if dist.get_rank() == 0:
        try:
            save_state(state, ties(inner), path, metadata, state_metadata=recorded)
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


def _same_target(path, metadata) -> None:
    """Every rank was given the same ``path`` and ``metadata`` (a collective): rank 0 alone
    writes, so ranks given other ones returned as if they had saved there (stop 36)."""
    import torch.distributed as dist

    try:
        given = ("ok", os.fspath(path), repr(metadata))
        _metadata_given(metadata)
    except TypeError as err:  # told to the other ranks, which would wait for this one
        given = ("error", f"{type(err).__name__}: {err}", "")
    seen: list = [None] * dist.get_world_size()
    dist.all_gather_object(seen, given)
    rank = dist.get_rank()
    for r, (kind, msg, _) in enumerate(seen):
        if kind == "error":
            if r == rank:
                _metadata_given(metadata)
                raise TypeError(
                    f"tying.distributed.save: path must be a str or os.PathLike, got "
                    f"{type(path).__name__} ({msg}); nothing was written"
                )
            raise RuntimeError(
                f"tying.distributed.save: rank {r} was given a bad path or metadata ({msg}); "
                f"rank {r} raised that error, and nothing was written"
            )
    if len({(p, m) for _, p, m in seen}) > 1:
        by_rank = "; ".join(f"rank {r}: {p!r}, metadata {m}" for r, (_, p, m) in enumerate(seen))
        raise ValueError(
            f"tying.distributed.save: every rank must pass the same path and metadata, got "
            f"{by_rank}; rank 0 alone writes the file, so the other ranks' paths would hold "
            f"no file: pass one path (rank 0's is written; on several machines, a shared "
            f"folder) and one metadata on every rank; nothing was written"
        )


def _metadata_given(metadata) -> None:
    """Stop 56: a list reached ``dict(...)`` as 'dictionary update sequence element #0 has
    length 1; 2 is required'."""
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(
            f"tying.distributed.save: metadata must be a dict of str to str or None, got "
            f"{type(metadata).__name__} ({metadata!r}); nothing was written"
        )


#: the checkpoint entry that records the model's ties (JSON, as a uint8 tensor: no pickle)
DCP_TIES_KEY = "tying.ties"


def dcp_save(
    model: nn.Module,
    checkpoint_id,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    rank_local: Iterable[str] = (),
):
    """Save a (wrapped) tied model with ``torch.distributed.checkpoint``, its ties recorded.

    A collective: every rank writes its shards (each physical tensor once, as
    ``get_model_state_dict`` gives it) under ``"model"``, the optimizer's state (one per
    physical tensor) under ``"optim"``, and the model's ties under ``"tying.ties"``, so
    :func:`dcp_load` refuses a model tied otherwise instead of loading the stored tensors
    into other ties (a tensor the model reads through a tie was dropped with no error).
    A replicated (unsharded) tensor is written once, from whichever rank DCP's planner
    picks, so every one must hold the same values on every rank: they are compared first.

    Args:
        model: a plain, ``td.ddp``-wrapped or ``td.fully_shard``-sharded tied model.
        checkpoint_id: the checkpoint folder (as for ``dcp.save``).
        optimizer: the model's optimizer, or None.
        rank_local: state-dict names of tensors that may differ between ranks by design
            (a buffer DDP leaves alone with ``broadcast_buffers=False``); rank 0's value
            (and its optimizer state) is written.

    Raises:
        TypeError: (on every rank, nothing written) ``optimizer`` is not an Optimizer.
        TieError: a declared tie is broken; ``optimizer`` holds a parameter that is not
            the model's; (on every rank, nothing written) the ranks hold
            different values of a replicated tensor (parameter, buffer or optimizer state)
            not in ``rank_local``, or a ``rank_local`` name is not in the model's state
            dict; (after writing, on every rank) the ranks do not
            find one checkpoint in their folders (each was given its own folder, or a folder
            not shared between machines), so no folder holds the whole checkpoint.

    Example (every rank): ``td.dcp_save(model, "ckpt/step-100", optimizer=opt)``
    """
    import json

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    inner = _unwrapped(model, "dcp_save")
    _verified(inner, "dcp_save")

    def folder_given() -> None:
        # stop 36: dcp.save raised on the rank given no folder (None) and the other ranks
        # waited in its collective until the process group's timeout
        try:
            os.fspath(checkpoint_id)
        except TypeError:
            raise TypeError(
                f"tying.distributed.dcp_save: checkpoint_id must be a str or os.PathLike "
                f"(the checkpoint folder), got {type(checkpoint_id).__name__} "
                f"({checkpoint_id!r}); pass the folder on every rank; nothing was written"
            ) from None

    def given() -> None:
        folder_given()
        _checked_optimizer(inner, optimizer, "dcp_save", "nothing was written")

    _agreed(given, "dcp_save", str(checkpoint_id), verb="save to")
    record = json.dumps(_tie_record(inner), sort_keys=True).encode()
    state = {
        "model": get_model_state_dict(inner),
        DCP_TIES_KEY: torch.frombuffer(bytearray(record), dtype=torch.uint8),
    }
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(inner, optimizer)
    # stop 42: DCP writes a replicated tensor from one rank of its choosing (balancing the
    # bytes), so ranks holding different values wrote a mix: a model no rank held
    local = refuse_rank_values(
        lambda: state,
        "dcp_save",
        rank_local,
        "DCP writes each replicated tensor once, from a rank its planner picks per tensor, "
        "so the checkpoint would mix the ranks' values",
        nested=True,
    )
    if local and _rank() != 0:  # rank 0's value, and its optimizer state, is written
        from torch.distributed.tensor import DTensor

        for name in local:
            if isinstance(state["model"].get(name), DTensor):  # each rank's own shard
                continue
            state["model"].pop(name, None)
            if "optim" in state:
                state["optim"].get("state", {}).pop(name, None)
    dcp.save(state, checkpoint_id=checkpoint_id)
    # stop 35: ranks given different folders each wrote their shards apart, and only
    # rank 0's folder got the index (.metadata), naming shard files it does not hold
    _same_checkpoint(checkpoint_id, "dcp_save")


def dcp_load(model: nn.Module, checkpoint_id, optimizer: torch.optim.Optimizer | None = None):
    """Load a ``torch.distributed.checkpoint`` folder into a (wrapped) tied model, ties checked.

    A collective on any world size (1 <-> N, DDP <-> FSDP2). Before anything is read
    into the model, every rank checks the checkpoint against the model: its recorded
    ties (:func:`dcp_save`) must be the model's (same targets, sources and relations), and
    a tensor the model reads through a tie must not be stored on its own in the checkpoint
    (a plain ``dcp.load`` into the tied model dropped it with no error: an untied
    ``lm_head.weight`` was replaced by the embedding). A folder written by plain
    ``dcp.save({"model": get_model_state_dict(m)})`` is checked by its tensor names.

    Args:
        model: the model, built, tied and wrapped as the checkpoint's.
        checkpoint_id: the checkpoint folder (a path; read with ``FileSystemReader``).
        optimizer: restore its state from the checkpoint's ``"optim"`` entry, or None.

    Raises:
        TieError: the checkpoint ties otherwise, stores a tied slot as its own tensor,
            stores two different values under the two names of one tensor the model
            shares (a hand-made tie, from a plain ``dcp.save`` of an untied model), lacks a tensor of the model or holds one of another shape or dtype (dcp.load
            would cast it); ``optimizer`` holds a parameter that is not the model's, or
            needs an optimizer-state entry the checkpoint lacks (saved by another
            optimizer class or settings); the ranks' folders hold different checkpoints
            (each rank would load its own); nothing was loaded.
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        RuntimeError: on every other rank, when one rank refused (that rank raises its own).
    """
    import json

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    inner = _unwrapped(model, "dcp_load")
    # stop 36: os.fspath(None) (a rank whose environment lacked the folder) raised on that
    # rank alone, before the collective the other ranks then waited in
    try:
        folder = os.fspath(checkpoint_id)
    except TypeError:
        folder = None
    where = f"tying.distributed.dcp_load: {folder!r}"

    def check() -> str | None:
        if folder is None:
            raise TypeError(
                f"tying.distributed.dcp_load: checkpoint_id must be a str or os.PathLike "
                f"(the checkpoint folder), got {type(checkpoint_id).__name__} "
                f"({checkpoint_id!r}); pass the folder on every rank; no rank's model was "
                f"changed"
            )
        _checked_optimizer(inner, optimizer, "dcp_load", "no rank's model was changed")
        # stop 36: a model whose declared ties do not hold was loaded first and refused
        # after (by the verify at the end), changed
        _verified(inner, "dcp_load")
        stored = dcp.FileSystemReader(checkpoint_id).read_metadata().state_dict_metadata
        # (shape, dtype): dcp.load cast a float32 checkpoint into a bfloat16 model with no
        # error, where tying.load and td.load refuse a dtype mismatch (stop 35)
        tensors = {
            k[len("model.") :]: (tuple(v.size), v.properties.dtype)
            for k, v in stored.items()
            if k.startswith("model.") and isinstance(v, TensorStorageMetadata)
        }
        want = {k: (tuple(t.shape), t.dtype) for k, t in inner.state_dict(keep_vars=True).items()}
        mine = _tie_record(inner)
        fix = (
            "build and tie the model as the checkpoint's was (tying.Plan(...).apply(model) "
            "before wrapping); nothing was loaded"
        )
        tied_apart = sorted(t for t in mine if t in tensors and t not in want)
        if tied_apart:
            raise TieError(
                f"{where} stores {', '.join(tied_apart[:10])} as its own tensor, but this model "
                f"reads it through a tie, so its stored value would be dropped; load it into "
                f"a model without that tie (tying.Plan([tying.free(...)]).apply(model)) or "
                f"{fix}"
            )
        if DCP_TIES_KEY in stored:
            holder = {DCP_TIES_KEY: torch.zeros(stored[DCP_TIES_KEY].size, dtype=torch.uint8)}
            with warnings.catch_warnings():  # no_dist: each rank reads it alone, no collective
                warnings.filterwarnings("ignore", "torch.distributed is disabled")
                dcp.load(holder, checkpoint_id=checkpoint_id, no_dist=True)
            theirs = json.loads(bytes(holder[DCP_TIES_KEY].tolist()).decode())
            diff = _record_diff(theirs, mine, "checkpoint", "model")
            # the record's paths only: a relation's own storage (a.weight_physical,
            # b.weight_scale) is no slot of a model tied otherwise
            named = set(theirs) | {e["like"] for e in theirs.values() if e["like"]}
            absent = absent_slots(named, inner) if diff else []
            if absent:  # a deeper stack's checkpoint: no tie on this model would fit it
                raise TieError(
                    f"{where} does not fit this model: {absent_text(absent, 'checkpoint')} "
                    f"(wrapped as this one was); nothing was loaded (the ties that differ: "
                    f"{'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''})"
                )
            if diff:
                raise TieError(
                    f"{where} ties otherwise than this model ({'; '.join(diff[:10])}); {fix}"
                )
        else:
            # stop 55: a checkpoint of plain dcp.save stores a tensor the model shares (one
            # Parameter under two names: lm_head.weight is embed.weight) under both names,
            # and dcp.load read both into the one storage: the last name's value won and
            # the other was dropped with no error (an untied model's embedding replaced by
            # its head). Such a pair must hold one value in the checkpoint
            _refuse_shared_apart(checkpoint_id, stored, inner, where, fix)
        if optimizer is not None and not any(k.startswith("optim.") for k in stored):
            raise TieError(
                f"{where} holds no optimizer state (no 'optim' entry: it was saved without "
                f"optimizer=); call td.dcp_load without optimizer=, or load the checkpoint "
                f"td.dcp_save(model, ..., optimizer=opt) wrote; nothing was loaded"
            )
        missing = sorted(set(want) - set(tensors))
        bad = [
            f"{k}: checkpoint {tensors[k][0]} {tensors[k][1]}, model {want[k][0]} {want[k][1]}"
            for k in sorted(set(want) & set(tensors))
            if tensors[k] != want[k]
        ]
        if missing or bad:
            parts = ([f"missing in checkpoint: {', '.join(missing[:10])}"] if missing else []) + (
                [f"shape/dtype mismatch: {'; '.join(bad[:10])}"] if bad else []
            )
            shared = set(want) & set(tensors)
            dtype_fix = (
                " (for another dtype, build the model in the checkpoint's dtype, load, then "
                "model.to(dtype))"
                if any(tensors[k][1] != want[k][1] for k in shared)
                else ""
            )
            raise TieError(
                f"{where} does not fit this model ({'; '.join(parts)}); {fix}{dtype_fix}"
            )
        return _metadata_digest(checkpoint_id)

    # stop 35: ranks given folders of different checkpoints each loaded their own, and
    # trained different models with no error (DDP never broadcasts again after wrapping)
    _, seen = _agreed(check, "dcp_load", str(folder), lambda digest: (digest, folder))
    _refuse_different_checkpoints(seen, "dcp_load", "no rank's model was changed")
    state = {"model": get_model_state_dict(inner)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(inner, optimizer)
        _agreed(
            lambda: _refuse_other_optimizer(
                checkpoint_id, state["optim"], where, type(optimizer).__name__
            ),
            "dcp_load",
            str(folder),
        )
    dcp.load(state, checkpoint_id=checkpoint_id)
    set_model_state_dict(inner, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(inner, optimizer, state["optim"])
    verify(inner)


def _checked_optimizer(inner: nn.Module, optimizer, helper: str, after: str) -> None:
    """``optimizer`` is None or a ``torch.optim.Optimizer`` over this model's parameters.

    Stop 56: a str reached ``get_optimizer_state_dict`` (AttributeError: 'str' object has no
    attribute 'state'), and an optimizer of another model a bare ``KeyError: 0``.
    """
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"tying.distributed.{helper}: optimizer must be a torch.optim.Optimizer or None, "
            f"got {type(optimizer).__name__}; pass the optimizer built on this model's "
            f"parameters (after wrapping); {after}"
        )
    mine = {id(p) for p in inner.parameters()}
    for i, group in enumerate(optimizer.param_groups):
        for j, p in enumerate(group["params"]):
            if id(p) not in mine:
                raise TieError(
                    f"tying.distributed.{helper}: the optimizer's param_groups[{i}] "
                    f"parameter {j} (shape {tuple(p.shape)}) is not a parameter of this "
                    f"model (expected every optimizer parameter in model.parameters()): it "
                    f"was built on another model, or before a tie or td.fully_shard replaced "
                    f"the model's parameters; build it from model.parameters() after "
                    f"tying and wrapping; {after}"
                )


def _refuse_other_optimizer(checkpoint_id, optim: dict, where: str, kind: str) -> None:
    """The checkpoint's optimizer state holds every entry this optimizer needs.

    Stop 56: a checkpoint of an SGD (momentum_buffer) loaded into an Adam failed inside
    ``dcp.load`` with a CheckpointException ('Missing key in checkpoint state_dict:
    optim.state.enc.weight.step'), naming neither the optimizers nor a fix.
    """
    import torch.distributed.checkpoint as dcp

    stored = dcp.FileSystemReader(checkpoint_id).read_metadata().state_dict_metadata
    held: dict[str, set[str]] = {}
    for key in stored:
        if key.startswith("optim.state."):
            fqn, _, entry = key[len("optim.state.") :].rpartition(".")
            held.setdefault(fqn, set()).add(entry)
    for fqn, entries in optim.get("state", {}).items():
        lacking = sorted(set(entries) - held.get(fqn, set()))
        if lacking:
            raise TieError(
                f"{where}: the checkpoint's optimizer state of {fqn} holds "
                f"{sorted(held.get(fqn, set())) or 'nothing'}, but this optimizer "
                f"({kind}) "
                f"needs {sorted(entries)} (lacking {lacking}): it was saved by another "
                f"optimizer class or settings; build the optimizer as the checkpoint's was "
                f"(its class and options), or call td.dcp_load without optimizer=; nothing "
                f"was loaded"
            )


def _refuse_shared_apart(checkpoint_id, stored: dict, inner: nn.Module, where, fix) -> None:
    """Refuse a checkpoint holding two values for the two names of one shared tensor.

    A tie whose target and source are both in the model's state dict, as one tensor, is
    one tensor under two names (an identity tie, a hand-made tie), which ``dcp.load``
    fills once per name. Only those pairs are read (each rank alone, no collective).
    """
    import torch.distributed.checkpoint as dcp

    want = inner.state_dict(keep_vars=True)
    pairs = []
    for t in ties(inner):
        target = _canonical(t.target)
        source = None if t.source is None else _canonical(t.source)
        if source is None or target not in want or source not in want:
            continue
        if want[target] is not want[source]:  # two tensors: each loads its own name
            continue
        if f"model.{target}" in stored and f"model.{source}" in stored:
            pairs.append((target, source))
    if not pairs:
        return
    names = {n for pair in pairs for n in pair}
    holder = {
        "model": {n: torch.empty(want[n].shape, dtype=want[n].dtype, device="cpu") for n in names}
    }
    with warnings.catch_warnings():  # no_dist: each rank reads it alone, no collective
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(holder, checkpoint_id=checkpoint_id, no_dist=True)
    got = holder["model"]
    apart = [
        f"{target} vs {source} (max difference "
        f"{(got[target].double() - got[source].double()).abs().max().item():.4g})"
        for target, source in pairs
        if not torch.equal(got[target], got[source])
    ]
    if apart:
        raise TieError(
            f"{where} stores different values for names this model reads as one tensor "
            f"({'; '.join(apart[:10])}): it was saved from a model without that tie, and "
            f"loading would keep one of the two and drop the other; load it into a model "
            f"without that tie (tying.Plan([tying.free(...)]).apply(model) or an untied "
            f"build), or {fix}"
        )


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _metadata_digest(checkpoint_id) -> str | None:
    """SHA-256 of a DCP folder's index (``.metadata``), or None when there is none. The
    index records the save's id, so two saves differ and copies of one save agree."""
    import hashlib

    from torch.distributed.checkpoint import filesystem

    name = getattr(filesystem, "_metadata_fn", ".metadata")
    try:
        with open(os.path.join(os.fspath(checkpoint_id), name), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None


def _refuse_different_checkpoints(seen: list, helper: str, after: str) -> None:
    """Every rank must see one checkpoint: the same index in its folder. ``seen`` holds
    each rank's ``(index digest, folder)``."""
    digests = [d for d, _ in seen]
    if len(set(digests)) <= 1 and digests[0] is not None:
        return
    by_rank = ", ".join(
        f"rank {r}: {folder!r} (index {d[:12] if d else 'missing'})"
        for r, (d, folder) in enumerate(seen)
    )
    raise TieError(
        f"tying.distributed.{helper}: the ranks do not see one checkpoint ({by_rank}; "
        f"SHA-256 of each folder's .metadata); a DCP checkpoint is one folder written by "
        f"every rank together: give every rank the same folder (a shared filesystem, or "
        f"copies of one checkpoint); {after}"
    )


def _same_checkpoint(checkpoint_id, helper: str) -> None:
    """After ``dcp.save``: every rank finds the same index in its folder."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if "://" in str(os.fspath(checkpoint_id)):  # fsspec storage (s3://...): no local folder
        return
    seen: list = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (_metadata_digest(checkpoint_id), os.fspath(checkpoint_id)))
    _refuse_different_checkpoints(
        seen,
        helper,
        "each rank wrote its shards into its own folder, so no folder holds a whole "
        "checkpoint: save again with one folder",
    )


def _agreed(fn, helper: str, what: str, told=lambda result: None, verb: str = "load"):
    """Run ``fn`` on every rank; if it raised on any rank, raise on every rank (no rank
    goes on alone into a collective the others never reach). Returns this rank's result
    and every rank's ``told(result)`` (something small: it is sent to every rank)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        result = fn()
        return result, [told(result)]
    failure: BaseException | None = None
    result = None
    try:
        result = fn()
        outcome = ("ok", told(result))
    except BaseException as err:  # told to the other ranks, then re-raised here
        failure, outcome = err, ("error", f"{type(err).__name__}: {err}")
    outcomes: list = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, outcome)
    if failure is not None:
        raise failure
    for rank, (kind, msg) in enumerate(outcomes):
        if kind == "error":
            raise RuntimeError(
                f"tying.distributed.{helper}: rank {rank} could not {verb} {what!r} ({msg}); "
                f"rank {rank} raised that error, and "
                + ("no rank's model was changed" if verb == "load" else "nothing was written")
            )
    return result, [value for _, value in outcomes]


def _unwrapped(model: nn.Module, helper: str | None = None) -> nn.Module:
    """The user's model inside DDP / DataParallel / ``torch.compile`` wrappers (any nesting).

    ``helper`` (the public function's name): a model that is not an ``nn.Module`` is refused
    with a TypeError naming it (stop 56: an AttributeError, 'str' object has no attribute
    'modules').
    """
    from torch.nn.parallel import DistributedDataParallel

    if helper is not None and not isinstance(model, nn.Module):
        raise TypeError(
            f"tying.distributed.{helper}: model must be a torch.nn.Module (the tied model, "
            f"plain or wrapped), got {type(model).__name__}; nothing was changed"
        )

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


__all__ = ["dcp_load", "dcp_save", "ddp", "fully_shard", "load", "save", "wrapped_by"]
