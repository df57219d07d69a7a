"""What :func:`~tying.core.checkpoint.load` checks in the model before it changes it, and its
way back.

A load is all or nothing. Before the model is touched, tensors no value can be copied into
(the meta device, inference tensors, expanded ones), tied slots of another logical shape
than the file recorded, buffers the model shares but the file holds twice with different
values, and views of one memory whose file values differ where they meet are refused. A
copy of the values is kept where a part-way failure of ``load_state_dict`` is possible, and
written back if it fails.
"""

from __future__ import annotations

import pathlib

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.outside import canonical
from tying.core.relations import Same
from tying.core.slots import _check_before_load as check_before_load
from tying.core.slots import _check_before_load_into_part as check_before_load_into_part
from tying.core.slots import _load_from_state_dict as slots_load_from_state_dict


def _refuse_meta_device(model: nn.Module) -> None:
    for key, t in model.state_dict(keep_vars=True).items():
        _refuse_unwritable(key, t)
        if t.device.type == "meta":
            raise TieError(
                f"load: {key} is on the meta device, so no value can be loaded into it (the "
                f"load would report success and load nothing); materialise the model first "
                f"with model.to_empty(device='cpu') (or your device), then load"
            )


def _refuse_unwritable(key: str, t: torch.Tensor) -> None:
    """Refuse, before anything is loaded, a tensor no value can be copied into.

    Stop 34: ``load_state_dict`` copies one tensor after another and reports the failures
    at the end, so one such tensor left every other one loaded from the file while the load
    raised (a module made under ``torch.inference_mode()``, an ``expand``-ed parameter).
    """
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise TieError(
            f"load: {key} is an inference tensor (made under torch.inference_mode()), which "
            f"cannot be written outside inference mode; rebuild that module outside "
            f"torch.inference_mode(), or load inside `with torch.inference_mode():`; the model "
            f"was left as it was"
        )
    if any(stride == 0 and n > 1 for stride, n in zip(t.stride(), t.shape)):
        raise TieError(
            f"load: {key} is an expanded tensor (stride {tuple(t.stride())}: one memory "
            f"location serves several elements), so the file's values cannot be written into "
            f"it; give it memory of its own first (e.g. module.bias = "
            f"nn.Parameter(module.bias.clone())); the model was left as it was"
        )


def _values_kept_until_loaded(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(tensor, CPU copy)`` of every parameter and buffer, each once, for the way back;
    none when no copy of the load can fail part way.

    ``load_state_dict`` copies one tensor after another and raises at the end, so anything
    that refuses part way leaves the tensors before it loaded from the file: a module's
    own load hook or ``_load_from_state_dict`` (stop 31), and (stop 35) a ``copy_`` that
    can fail for reasons of its own: a tensor subclass (``__torch_function__``), a tensor
    on an accelerator, a conjugate or negative view, a sparse or other layout. A plain
    model keeps no copy only when every tensor is a dense CPU ``Tensor``/``Parameter``:
    its shape, dtype, writability and memory were checked before, so its copy cannot fail.
    """
    tied_load = slots_load_from_state_dict
    plain = nn.Module._load_from_state_dict
    own_hooks = (check_before_load, check_before_load_into_part)

    def may_refuse(m: nn.Module) -> bool:
        cls = type(m)
        load = cls._load_from_state_dict
        if load is tied_load:
            load = cls._tying_base._load_from_state_dict
        pre = [getattr(h, "hook", h) for h in m._load_state_dict_pre_hooks.values()]
        return (
            load is not plain
            or any(h not in own_hooks for h in pre)
            or bool(m._load_state_dict_post_hooks)
        )

    def copy_may_fail(t: torch.Tensor) -> bool:
        return (
            type(t) not in (torch.Tensor, nn.Parameter)
            or t.device.type != "cpu"
            or t.layout != torch.strided
            or t.is_conj()
            or t.is_neg()
        )

    tensors = [*model.parameters(), *model.buffers()]
    if not any(may_refuse(m) for m in model.modules()) and not any(map(copy_may_fail, tensors)):
        return []
    seen: set[int] = set()
    kept = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            kept.append((t, t.detach().to("cpu", copy=True)))
    return kept


def _restore(kept: list[tuple[torch.Tensor, torch.Tensor]], err: BaseException) -> None:
    """Write the kept values back; tensors that refuse again are counted in a note on ``err``."""
    failed = []
    with torch.no_grad():
        for t, copy in kept:
            try:
                t.copy_(copy)
            except Exception:  # the tensor that refused the load refuses its old value too
                try:
                    same = torch.equal(t.detach().to("cpu"), copy)
                except Exception:
                    same = False
                if not same:
                    failed.append(t)
    if failed:
        err.add_note(
            f"tying.load could not write the old values back into {len(failed)} tensor(s) "
            f"that refused the copy; reload the model from a good file"
        )


def _check_logical_shapes(inv: Inventory, logical: dict[str, tuple], path: pathlib.Path) -> None:
    """Refuse a file whose tied slot had another logical shape than the model's slot.

    The file stores the physical tensor and the relation; where the relation serves several
    logical shapes from one source shape (``Mirrored``: 5 or 6 taps from 3; ``Hashed``: any
    shape from its buckets) the physical shapes all fit, and the model computed another
    value than the saved one with no error (stop 32). Files without the record load as
    before.
    """
    bad = []
    for target, (shape, _) in logical.items():
        info = inv.slots.get(target)
        if shape is None or info is None or tuple(info.shape) == shape:
            continue
        bad.append(f"{target}: file {shape}, model {tuple(info.shape)}")
    if bad:
        raise TieError(
            f"load: {str(path)!r} was saved from a model whose tied slots had other logical "
            f"shapes ({'; '.join(bad[:10])}): its physical tensors fit this model, but the "
            f"relation would compute values of another shape than were saved (e.g. a "
            f"Mirrored kernel of 5 taps read as 6); build the model with the architecture the "
            f"file was saved from (kernel size, in/out sizes); the model was left as it was"
        )


def _check_shared_buffers(model: nn.Module, inv: Inventory, full, path: pathlib.Path) -> None:
    """Refuse a file that holds two values for one buffer the model shares between modules.

    Stop 31: ``model.b.running_mean = model.a.running_mean`` (one tensor, two keys) loaded
    from a file of two separate buffers took the second value for both, and the first was
    lost with no error. (A shared *parameter* is a hand tie, checked above.) Equal values,
    or a file that stores the buffer once (an alias), load as before.
    """
    first: dict[int, str] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        key = canonical(key)  # the file's keys are canonical (see load)
        owner = first.setdefault(id(t), key)
        if owner == key or key in inv.slots or key not in full or owner not in full:
            continue
        a, b = full[owner], full[key]
        if a is b or torch.equal(a, b):
            continue
        if a.is_floating_point() and bool(torch.eq(a, b).logical_or_(a.isnan() & b.isnan()).all()):
            continue  # NaN in the same places
        raise TieError(
            f"load: {key} and {owner} are one tensor in this model (a buffer shared between "
            f"modules) but {str(path)!r} holds different values for them, so loading would "
            f"keep only one of them; load into a model whose modules have buffers of their "
            f"own (assign a separate tensor to {key}), or save from a model that shares it; "
            f"the model was left as it was"
        )


def _span(t: torch.Tensor) -> int:
    """How many elements of its storage ``t`` reaches from its first (0 when empty)."""
    if t.numel() == 0:
        return 0
    return 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))


def _may_overlap_itself(t: torch.Tensor) -> bool:
    """False when no two elements of ``t`` can share memory (its strides nest)."""
    reach = 1
    for st, n in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if st < reach:
            return True
        reach += (n - 1) * st
    return False


def _check_overlapping_memory(model: nn.Module, expected, full, path: pathlib.Path) -> None:
    """Refuse a load whose values cannot all be held: two tensors sharing memory (views of
    one storage, as ``nn.Parameter(other.data[2:])``) or a tensor whose elements share it
    (``as_strided`` with overlapping strides), where the file's values differ there.

    Stop 35: ``load_state_dict`` wrote tensor after tensor, the later one over the earlier
    where they met, and reported success (``b.weight`` read two rows of ``c.weight``).
    The writes are played on a scratch copy of each shared stretch of memory, in the
    load's order, and every tensor is read back; views that do not meet (a fused weight
    split in slices) and files whose values agree where they meet load as before.
    """
    groups: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    seen: set[int] = set()
    for key, t in model.state_dict(keep_vars=True).items():
        key = canonical(key)  # the file's keys are canonical (see load)
        if key not in expected or key not in full or id(t) in seen or t.numel() == 0:
            continue
        seen.add(id(t))
        try:  # a DTensor shard (FSDP2) or another subclass may hold no storage of its own:
            ptr = t.untyped_storage().data_ptr()  # it is refused or loaded by its own checks
        except (RuntimeError, NotImplementedError):
            continue
        groups.setdefault((t.device, ptr), []).append((key, t))
    for members in groups.values():
        ranges = sorted(
            (t.storage_offset(), t.storage_offset() + _span(t), i)
            for i, (_, t) in enumerate(members)
        )
        cluster: list[int] = []
        end = -1
        for start, stop, i in [*ranges, (None, None, None)]:
            if start is None or start >= end:
                _play(members, cluster, full, path)
                cluster, end = [], -1
            if start is None:
                break
            cluster.append(i)
            end = max(end, stop)


def _play(members, cluster: list[int], full, path: pathlib.Path) -> None:
    """Write the file's values of one cluster of tensors into scratch memory, read back."""
    if not cluster or (len(cluster) == 1 and not _may_overlap_itself(members[cluster[0]][1])):
        return
    cluster = sorted(cluster)  # the load's order: later keys are written last
    tensors = [members[i][1] for i in cluster]
    if len({t.dtype for t in tensors}) > 1:
        keys = ", ".join(members[i][0] for i in cluster)
        raise TieError(
            f"load: {keys} share memory in this model but have different dtypes, so loading "
            f"would write one over the other; give each its own memory (e.g. module.weight "
            f"= nn.Parameter(module.weight.detach().clone())); the model was left as it was"
        )
    base = min(t.storage_offset() for t in tensors)
    size = max(t.storage_offset() + _span(t) for t in tensors) - base
    scratch = torch.empty(size, dtype=tensors[0].dtype, device=tensors[0].device)

    def view(t):
        return scratch.as_strided(t.shape, t.stride(), t.storage_offset() - base)

    for i in cluster:
        view(members[i][1]).copy_(full[members[i][0]])
    for i in cluster:
        key, t = members[i]
        got, want = view(t).cpu(), full[key]
        if torch.equal(got, want) or (
            got.is_floating_point()
            and bool(torch.eq(got, want).logical_or_(got.isnan() & want.isnan()).all())
        ):
            continue
        others = [members[j][0] for j in cluster if j != i]
        with_what = f"with {', '.join(others)}" if others else "between its own elements"
        raise TieError(
            f"load: {key} shares memory {with_what} in this model (a view, e.g. "
            f"nn.Parameter(other.data[2:]) or as_strided), and {str(path)!r} holds values "
            f"that differ where they meet, so loading would silently overwrite part of "
            f"{key}; give it memory of its own first (module.weight = "
            f"nn.Parameter(module.weight.detach().clone())); the model was left as it was"
        )


def _read_shared_records(tensors: dict, meta: dict, final: dict, slot_at: dict, path) -> None:
    """Hold a plain safetensors file's record of a tensor it stored once to this model's ties.

    ``safetensors.torch.save_model`` stores a tensor shared by two names once and records
    the other name in the metadata (``{"lm_head.weight": "embed.weight"}``): the two names
    were one tensor, the same values. Stop 51: where this model computes the dropped name
    from another source or through a relation (``Transposed``), ``tying.load`` loaded the
    file and the model computed other values than the model that wrote it, with no error;
    and where this model names the tie the other way round (the file keeps the target's
    name, the source's dropped) the file was refused as "not tied". The first is refused;
    the second is loaded into the source. ``tensors`` (canonical keys) is updated in place.
    """
    for dropped, kept in meta.items():
        if not (isinstance(kept, str) and canonical(kept) in tensors):
            continue
        cd, ck = canonical(dropped), canonical(kept)
        if cd in tensors:
            continue
        d, k = slot_at.get(cd, cd), slot_at.get(ck, ck)
        if d not in final or k not in final:
            continue
        td, tk = final[d], final[k]
        if td is not None and not td.hand:
            if td.source is not None and canonical(td.source) == ck and type(td.relation) is Same:
                continue  # the model ties them as the file did
            src = td.source or "its own storage"
            raise TieError(
                f"load: {str(path)!r} stores {dropped} as the same tensor as {kept} (the record "
                f"of safetensors.torch.save_model: the saved model shared one tensor between "
                f"them), but this model computes {d} from {src} via {td.relation!r}, so it "
                f"would hold other values than the saved model; tie it as the file does "
                f"(tying.share({d!r}, like={k!r})), or load into a model without that tie; "
                f"the model was left as it was"
            )
        if td is None and tk is not None and not tk.hand:
            if tk.source is not None and canonical(tk.source) == cd and type(tk.relation) is Same:
                tensors[cd] = tensors.pop(ck)  # the one value, stored under the tie's target
