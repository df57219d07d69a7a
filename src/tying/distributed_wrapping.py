"""Wrapping a tied model for ``torch.distributed``: ``td.ddp``, ``td.fully_shard`` and their checks.

The helpers that wrap a tied model (DDP) or shard it (FSDP2), the hooks they leave on
it (parameters kept, a gradient accumulated once, an owner gathered for its reader, a
full state refused by a sharded model), :func:`wrapped_by`, and the checks shared with
the checkpoint helpers (a process group, ties verified on a wrapped model). Every name
here is re-exported by :mod:`tying.distributed`, where the module docstring explains
how ties meet data parallelism and sharding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.outside import WRAPPER_SEGMENTS, mark_wrapped, wrapped_helper
from tying.core.outside import canonical as _canonical
from tying.core.patterns import Pattern
from tying.core.verify import ties, verify
from tying.distributed_gathered import (
    AfterForward,
    MidStepRefused,
    OwnerRegathered,
    install_step_hook,
    refuse_renamed_internals,
)
from tying.distributed_gathered import GatheredCheck as _GatheredCheck
from tying.distributed_hooks import (  # noqa: F401  (importable from here as before)
    _identity,
    _NestedAccumulation,
    _ParametersKept,
    _StaticGraphFirstStep,
)
from tying.distributed_record import install as _install_record


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
        TypeError: ``model`` is not an ``nn.Module``.
        TieError: a declared tie is broken; ``model`` is already wrapped by DDP or
            sharded by FSDP, or it (or one of its modules) is held by a live ``td.ddp``
            wrapper (``td.ddp(w.module)`` while ``w`` lives) or lies inside a
            ``td.fully_shard`` model; ``model`` holds tensor-parallel (DTensor) parameters, which
            DDP swaps at every forward (use ``td.fully_shard(model, mesh=mesh["dp"])``);
            the ranks' models differ (parameter paths, shapes or dtypes,
            ties, frozen parameters, and with ``init_sync=False``, which broadcasts nothing,
            parameter values: checked on every rank before wrapping, and raised on every
            rank); (at a forward) its parameters changed after wrapping (replaced, or
            changed in place: another dtype, shape or device, as ``model.double()`` or a
            Hugging Face ``resize_token_embeddings`` makes); (at a
            backward, unless ``static_graph=True``, of a forward outside ``no_sync()``) a
            tied tensor's gradient is accumulated twice between two forwards (a reentrant
            activation checkpoint around some of its uses), of which DDP would all-reduce
            only the first.
        RuntimeError: the default process group is not initialised; (on every other
            rank) one rank's model was refused by its own check; (at a forward, with
            ``static_graph=True``) a training forward under ``no_sync()`` before any
            synchronised one, which torch's reducer fails with an internal assert.

    Tie first, then wrap: ``td.ddp(tied_model)``; a ``tying.Plan(...).apply(model.module)``
    after it is refused at the next training forward (``docs/distributed.md``).
    """
    from torch.nn.parallel import DistributedDataParallel

    _require_group()
    _module_given(model, "ddp")
    # stop 37: ranks tied otherwise trained apart; one rank's refusal left the others waiting
    # stop 38: with init_sync=False DDP broadcasts nothing, and ranks seeded apart trained
    # apart (each its own values, the gradients averaged) with no error
    _agreed_to_wrap(
        model,
        "ddp",
        _ddp_group(kwargs),
        compare_values=not kwargs.get("init_sync", True),
        ignored=_ddp_ignored(model),
    )
    wrapped = DistributedDataParallel(model, **kwargs)
    wrapped.register_forward_pre_hook(_ParametersKept(model, "ddp"), prepend=True)
    if not kwargs.get("static_graph", False):  # static_graph reduces a nested use right
        _NestedAccumulation(model).attach(wrapped)
    else:
        wrapped.register_forward_pre_hook(_StaticGraphFirstStep(), prepend=True)
    # stop 59: the tie record where get_/set_model_state_dict move the keys past ``module.``
    _install_record(wrapped)
    mark_wrapped(model, "ddp", wrapped)
    return wrapped


def fully_shard(
    model: nn.Module, units: Iterable[str] = (), *, rank_local: Iterable[str] = (), **kwargs
) -> nn.Module:
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
        rank_local: names of buffers whose values may differ between ranks (FSDP2 never
            shards, broadcasts or reduces a buffer, so each rank keeps its own); every
            other buffer, persistent or not, must hold the same values on every rank, as
            every parameter but ``ignored_params`` must.
        **kwargs: passed to ``torch.distributed.fsdp.fully_shard`` for every unit.

    Returns:
        ``model``, sharded in place.

    Everything is checked before the first unit is sharded, so a refused call leaves
    ``model`` unsharded. A tie made or removed after sharding is refused with a
    :class:`tying.TieError` at the next training forward.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``mesh`` is not a DeviceMesh.
        ValueError: ``mesh`` is not 1-D, or 2-D with ``mesh_dim_names`` (HSDP).
        TieError: a unit pattern matches no module; a declared tie is broken; ``model``
            is a part of a tied model holding one end of a tie whose other end lies
            outside it (shard the whole model, the part as a unit); ``model``
            is already sharded or wrapped by DDP; the ranks' models differ (paths, shapes,
            dtypes, ties, frozen parameters, or values but ``ignored_params`` and
            ``rank_local`` buffers; raised on every rank); a ``rank_local`` name is not a
            buffer of ``model``; a hand-made tie (one ``nn.Parameter`` in two modules) spans two
            units; a parameter is 0-dim (a
            ``Scaled`` tie's scale), which FSDP2 cannot shard; (at a forward) the model's
            parameters changed after sharding; ``model`` (or one of its modules) is held
            by a live ``td.ddp`` wrapper; (at an optimizer's ``step()``) the optimizer
            holds gathered copies of the parameters (built from ``model.parameters()``
            after a forward with gradients that no backward followed); (at a
            ``state_dict()`` or ``load_state_dict``, as in ``td.save`` / ``td.load``,
            between a forward and its backward) a tie spans units, whose owner's unit the
            state dict would reshard under the backward; the installed torch lacks one
            of FSDP2's private names these checks read (a release renamed it; checked
            before the first unit is sharded).
        RuntimeError: the default process group is not initialised; (on every other
            rank) one rank's model was refused by its own check.
    """
    from torch.distributed.fsdp import fully_shard as _fully_shard

    _require_group()
    _module_given(model, "fully_shard")
    _mesh_given(kwargs.get("mesh"))
    # stop 37: ranks tied otherwise trained apart; one rank's refusal left the others waiting
    group, data_group = _fsdp_groups(kwargs.get("mesh"))
    _agreed_to_wrap(
        model,
        "fully_shard",
        group,
        compare_values=True,
        data_group=data_group,
        ignored={id(p) for p in kwargs.get("ignored_params") or ()},
        rank_local=rank_local,
    )
    inv = Inventory(model)
    # one pattern given as a str was read letter by letter ('layers.*' as 'l', 'a', ...:
    # refused for 'l', or with one-letter module names sharded by the letters; stop 32)
    if not isinstance(units, (str, Iterable)):
        raise TypeError(
            f"tying.distributed.fully_shard: units must be a module path pattern or a list "
            f"of them (() for the root alone), got {type(units).__name__} ({units!r}); "
            f"nothing was sharded"
        )
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
    refuse_renamed_internals()  # stop 51: before any unit is sharded
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
        # stop 51: two forwards before their backwards: one backward resharded the owner
        # before the other's reader ran its backward, which failed inside FSDP2 (setStorage)
        regather = [
            (owner, inv.modules[owner], f"{target} reads {root}")
            for target, root, owner in reads
            if owner in keep_gathered
        ]
        if regather:
            inv.modules[module_path].register_forward_hook(OwnerRegathered(regather))
    model.register_forward_pre_hook(_ParametersKept(model, "fully_shard"), prepend=True)
    # stop 49: a forward with no gradient (an evaluation) left the units gathered, as no
    # backward came to reshard them; parameters() then gave the gathered copies, and an
    # optimizer built on them trained tensors FSDP2 never reads again, with no error.
    # Stop 50: the same after a forward with gradients and no backward; that one cannot
    # reshard (a backward may still come), so a step of an optimizer holding one is refused
    after = AfterForward()
    model.register_forward_hook(after)
    install_step_hook()
    # stop 50: a state dict saved or loaded between a forward and its backward resharded a
    # tie owner's unit, and the reader's backward failed inside FSDP2 ("setStorage")
    owners = {}
    for reads in readers.values():
        for target, root, owner in reads:
            if owner in keep_gathered and owner not in owners:
                owners[owner] = (inv.modules[owner], f"{target} reads {root}")
    if owners:
        model.register_state_dict_pre_hook(MidStepRefused(owners, after))
        model.register_load_state_dict_pre_hook(MidStepRefused(owners, after))
    # stop 34: tying.load (and load_state_dict) of a full state failed inside FSDP's copy
    # with "got mixed torch.Tensor and DTensor", naming no fix
    model.register_load_state_dict_pre_hook(_FullStateRefused())
    mark_wrapped(model, "fully_shard")
    return model


def _rank_local_buffers(model: nn.Module, names: Iterable[str]) -> list[torch.Tensor]:
    """The buffers ``names`` (``td.fully_shard(rank_local=...)``), each checked to be one.

    Stop 41: non-persistent buffers were not compared across ranks, so a buffer of random
    features made on each rank's own seed gave each rank another function under FSDP2
    (which broadcasts no buffer), with no error. Every buffer is compared now; a buffer
    that is rank-local by design (a per-rank cache, an RNG state) is named here.
    """
    import difflib

    if not isinstance(names, (str, Iterable)):  # stop 56: None gave 'not iterable'
        raise TypeError(
            f"td.fully_shard: rank_local must be a buffer name or a list of them (() for "
            f"none), got {type(names).__name__} ({names!r}); no rank's model was wrapped"
        )
    names = (names,) if isinstance(names, str) else tuple(names)
    buffers = dict(model.named_buffers(remove_duplicate=False))
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"td.fully_shard: rank_local must hold buffer names (str), got {name!r} "
                f"({type(name).__name__})"
            )
        if name in buffers:
            out.append(buffers[name])
            continue
        is_param = name in dict(model.named_parameters(remove_duplicate=False))
        close = difflib.get_close_matches(name, list(buffers), n=3)
        hint = (
            "; it is a parameter: pass it in ignored_params (FSDP2 then neither shards nor "
            "reduces it)"
            if is_param
            else (f"; closest: {', '.join(close)}" if close else "")
        )
        raise TieError(
            f"td.fully_shard: rank_local names {name!r}, which is not a buffer of the "
            f"model{hint}; no rank's model was wrapped"
        )
    return out


def _agreed_to_wrap(
    model: nn.Module,
    helper: str,
    group=None,
    compare_values: bool = False,
    ignored: set[int] = frozenset(),
    rank_local: Iterable[str] = (),
    data_group=None,
) -> None:
    """The checks before wrapping, on every rank, then the ranks' models compared.

    Raises on every rank or on none. DDP broadcasts rank 0's values into the tensors each
    rank was built with and FSDP2 shards each rank's own, so ranks whose models were tied
    by different plans (or one tied, one not) but hold tensors of the same shapes trained
    different functions with no error (stop 37); a rank whose check failed left the others
    in DDP's first collective until the process group's timeout. ``group``: the process
    group the wrapper will use (None: the default one; False, for a multi-dimensional mesh
    over some of the ranks: each rank checks its own model only). ``ignored``: ids of the
    tensors the wrapper leaves alone, whose values are not compared; ``rank_local``: names
    of buffers not compared either (checked here, so a wrong name is refused on every rank).
    ``data_group``: for FSDP2 over the data dimension of a larger mesh (the 2-D recipe,
    tensor parallelism on the other dimension), that dimension's group; ``group`` is then
    every rank: plain tensors (which tensor parallelism leaves whole, replicated on every
    rank) are compared across all ranks, a DTensor's local shard within the data group.
    """
    import hashlib
    import json

    import torch.distributed as dist

    failure: BaseException | None = None
    try:
        _refuse_wrapped(model, helper)
        if helper == "fully_shard":
            _refuse_tie_across(model)
        if helper == "ddp":
            _refuse_tensor_parallel(model)
        _verified(model, helper)
        record = _tie_record(model)
        frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
        digest, entries = _model_signature(model)
        ties_digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        # stop 38: FSDP2 shards each rank's own values (DDP broadcasts rank 0's); a model
        # loaded on rank 0 only trained as a mix of its shards and another rank's init
        # (``compare_values``); DDP with init_sync=False broadcasts nothing either, and
        # syncs buffers at each forward (or keeps them rank-local by choice), so its
        # parameters are compared
        buffers = helper == "fully_shard"
        ignored = set(ignored) | {id(b) for b in _rank_local_buffers(model, rank_local)}
        values = _value_digests(model, buffers, ignored) if compare_values else ()
        # stop 41: a plain tensor of a tensor-parallel model is replicated over the whole
        # mesh; ranks of one tensor-parallel group seeded apart computed with their own
        # copies, with no error (the data group of (1, 2) ranks compared nothing)
        shards = _dtensor_names(model) if data_group is not None else set()
        plain = tuple(v for v in values if v[0] not in shards)
        sharded = tuple(v for v in values if v[0] in shards)
        where = _group_ranks(data_group) if data_group is not None else ()
        mine = ("ok", digest, ties_digest, tuple(frozen), _joined(plain), _joined(sharded), where)
    except BaseException as err:  # told to the other ranks, then re-raised here
        failure, mine = err, ("error", f"{type(err).__name__}: {err}")
    if group is False:
        if failure is not None:
            raise failure
        return
    seen: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(seen, mine, group=group)
    if failure is not None:
        raise failure
    for rank, outcome in enumerate(seen):
        if outcome[0] == "error":
            raise RuntimeError(
                f"tying.distributed.{helper}: rank {rank} refused to wrap its model "
                f"({outcome[1]}); rank {rank} raised that error, and no rank's model was "
                f"wrapped"
            )
    if len({s[1:5] for s in seen}) == 1 and all(
        len({t[5] for t in seen if t[6] == s[6]}) == 1 for s in seen
    ):
        return
    # the ranks differ: every rank learns how (a second collective, on every rank alike)
    details: list = [None] * len(seen)
    dist.all_gather_object(
        details, ((digest, entries), record, frozen, values, tuple(sorted(shards))), group=group
    )
    fix = (
        f"build, tie and freeze the model alike on every rank (the same config, dtype and "
        f"tying.Plan, applied before td.{helper}); no rank's model was wrapped"
    )
    if len({s[1] for s in seen}) > 1:
        first = _first_difference([d[0] for d in details])
        raise TieError(
            f"tying.distributed.{helper}: the ranks' models differ ({first}), so they would "
            f"train different models; {fix}"
        )
    if len({s[2] for s in seen}) > 1:
        base = details[0][1]
        for rank, (_, other, _, _, _) in enumerate(details[1:], start=1):
            diff = _record_diff(base, other, "rank 0", f"rank {rank}")
            if diff:
                raise TieError(
                    f"tying.distributed.{helper}: the ranks' models are tied differently "
                    f"({'; '.join(diff[:10])}): each rank would compute another function of "
                    f"the tensors it holds, and the ranks would train apart with no error; "
                    f"{fix}"
                )
    if len({s[4] for s in seen}) > 1 or len({s[4:] for s in seen}) > len({s[6] for s in seen}):
        first, across = _value_difference(details, seen, data_group)
        if across:  # two data groups' copies of a plain tensor differ
            why = (
                "tensor parallelism leaves a plain tensor whole on every rank of the mesh and "
                "nothing makes the copies agree, so each rank would compute with its own"
            )
            also = ""
        elif helper == "fully_shard":
            why = (
                "FSDP2 shards each rank's own tensors (it broadcasts nothing, unlike DDP), so "
                "the sharded model would be a mix of the ranks' values"
            )
            also = ""
        else:
            why = (
                "DDP with init_sync=False broadcasts nothing, so each rank would train its "
                "own values (the gradients averaged)"
            )
            also = ", or drop init_sync=False (DDP then broadcasts rank 0's values)"
        raise TieError(
            f"tying.distributed.{helper}: the ranks hold different values "
            f"({first}). {why}, with no error; "
            f"seed every rank alike before building the model (torch.manual_seed), or load "
            f"the same checkpoint on every rank, or broadcast rank 0's values "
            f"(torch.distributed.broadcast of each parameter and buffer) before "
            f"td.{helper}{also}; no rank's model was wrapped"
        )
    by_rank = "; ".join(f"rank {r}: {', '.join(d[2]) or 'none'}" for r, d in enumerate(details))
    raise TieError(
        f"tying.distributed.{helper}: the ranks froze different parameters (requires_grad="
        f"False: {by_rank}), so their gradients would not be reduced together; {fix}"
    )


def _refuse_tensor_parallel(model: nn.Module) -> None:
    """``td.ddp`` of a tensor-parallel model (DTensor parameters) is refused before wrapping.

    Stop 42: torch's DDP + tensor parallelism (``torch.distributed.tensor.parallel.ddp``)
    swaps each DTensor parameter for a new local ``nn.Parameter`` in DDP's constructor and
    back at every forward, so after the first step the model's parameters are no longer
    the tensors DDP reduces (torch 2.13 then held the tensor-parallel weights as plain
    attributes, gone from ``parameters()``); ``td.ddp`` wrapped such a model, compared its
    replicated tensors only within the data group, and refused it at the second forward
    as "parameters changed after wrapping", after one step.
    """
    from torch.distributed.tensor import DTensor

    sharded = [n for n, p in model.named_parameters() if isinstance(p, DTensor)]
    if sharded:
        raise TieError(
            f"tying.distributed.ddp: the model holds tensor-parallel parameters (DTensors: "
            f"{', '.join(sharded[:5])}{', ...' if len(sharded) > 5 else ''}); DDP with tensor "
            f"parallelism swaps them for new local tensors and back at every forward, so the "
            f"tensors DDP reduces would not stay the model's; shard the data dimension with "
            f"td.fully_shard(model, mesh=mesh['dp']) instead (FSDP2 with tensor parallelism, "
            f"which compares every replicated tensor across the whole mesh); no rank's model "
            f"was wrapped"
        )


def _module_given(model, helper: str) -> None:
    """Stop 56: a model that is not an ``nn.Module`` reached DDP or the checks as an
    ``AttributeError`` ('str' object has no attribute 'named_parameters')."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"tying.distributed.{helper}: model must be a torch.nn.Module (the tied model), "
            f"got {type(model).__name__}; nothing was wrapped"
        )


def _mesh_given(mesh) -> None:
    """``mesh=`` of ``td.fully_shard`` is None, a 1-D ``DeviceMesh``, or a 2-D one with
    named dimensions (FSDP2's HSDP: replicate, shard), refused by name before anything is
    sharded (stop 56: a tuple reached ``mesh.size()`` as an AttributeError, and an unnamed
    2-D mesh FSDP2's bare AssertionError)."""
    from torch.distributed.device_mesh import DeviceMesh

    if mesh is None:
        return
    if not isinstance(mesh, DeviceMesh):
        raise TypeError(
            f"tying.distributed.fully_shard: mesh must be a torch.distributed DeviceMesh or "
            f"None, got {type(mesh).__name__} ({mesh!r}); build one with "
            f"init_device_mesh(device_type, (world_size,)); nothing was sharded"
        )
    if mesh.ndim not in (1, 2) or (mesh.ndim == 2 and not mesh.mesh_dim_names):
        raise ValueError(
            f"tying.distributed.fully_shard: mesh must be 1-D (sharding) or 2-D with named "
            f"dimensions (replicate, shard: HSDP), got a {mesh.ndim}-D mesh of shape "
            f"{tuple(mesh.shape)} named {mesh.mesh_dim_names}; pass a 1-D mesh (for tensor "
            f"parallelism, its data dimension: mesh['dp']) or name a 2-D one "
            f"(init_device_mesh(..., mesh_dim_names=('replicate', 'shard'))); nothing was "
            f"sharded"
        )


def _fsdp_groups(mesh):
    """``(group, data_group)`` of ``td.fully_shard(mesh=...)``: the ranks whose models are
    compared, and (for a 1-D mesh cut from a larger mesh that spans every rank: FSDP2 over
    the data dimension, tensor parallelism over the other) that mesh's own group, within
    which DTensor shards are compared; None when the mesh is every rank or not cut."""
    import torch.distributed as dist

    group = _mesh_group(mesh)
    if mesh is None or group is None or mesh.ndim != 1:
        return group, None
    root = mesh._get_root_mesh()
    if root is mesh or root.size() != dist.get_world_size():
        return group, None
    return None, group


def _group_ranks(group) -> tuple[int, ...]:
    import torch.distributed as dist

    return tuple(dist.get_process_group_ranks(group))


def _dtensor_names(model: nn.Module) -> set[str]:
    from torch.distributed.tensor import DTensor

    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {name for name, t in tensors if isinstance(t, DTensor)}


def _value_difference(details: list, seen: list, data_group) -> tuple[str, bool]:
    """The first tensor whose values differ, as text: within a data group first (FSDP2's
    case), then, for a plain tensor, across the data groups (``data_group``: see
    ``_agreed_to_wrap``); and whether it is the latter (tensor parallelism's case)."""
    if data_group is None:
        return _first_value_difference([d[3] for d in details]), False
    # compare within each data group first (shards and plain tensors alike), then across
    groups: dict[tuple, list[int]] = {}
    for rank, s in enumerate(seen):
        groups.setdefault(s[6], []).append(rank)
    for ranks in groups.values():
        text = _first_value_difference([details[r][3] for r in ranks], ranks)
        if text != "their values differ":
            return text, False
    shards = set(details[0][4])  # the same names on every rank (their signatures agree)
    plain = [tuple(v for v in d[3] if v[0] not in shards) for d in details]
    return _first_value_difference(plain), True


def _ddp_ignored(model: nn.Module) -> set[int]:
    """Ids of the tensors DDP leaves alone (``DistributedDataParallel.
    _set_params_and_buffers_to_ignore_for_model``): neither broadcast nor all-reduced."""
    names = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    pairs = [*model.named_parameters(), *model.named_buffers()]
    return {id(t) for n, t in pairs if n in names}


def _ddp_group(kwargs: dict):
    """The process group DDP will reduce over (``process_group=`` or a 1-D ``device_mesh=``)."""
    if kwargs.get("process_group") is not None:
        return kwargs["process_group"]
    return _mesh_group(kwargs.get("device_mesh"))


def _mesh_group(mesh):
    """The group of every rank in ``mesh`` (None: the default group); ``False`` for a
    multi-dimensional mesh over some of the ranks, whose ranks are not compared."""
    import torch.distributed as dist

    if mesh is None or mesh.size() == dist.get_world_size():
        return None
    return mesh.get_group() if mesh.ndim == 1 else False


def _refuse_wrapped(model: nn.Module, helper: str) -> None:
    """A model already wrapped by DDP or sharded by FSDP2 is refused before anything changes."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    # stop 33: ddp(ddp(m)) reduced every gradient twice, ddp(sharded) failed inside
    # DDP's broadcast with no name, fully_shard(ddp(m)) sharded under DDP's reducer,
    # and fully_shard twice hit FSDP's AssertionError after the inner units were sharded
    # stop 50: td.ddp(w.module) (or td.fully_shard of it) while the first td.ddp wrapper
    # lived was accepted: two reducers on one model's tensors, and the first wrapper's
    # checks refused the second's steps ("accumulated twice", "parameters changed")
    live = _live_wrapped(model)
    for path, mod in model.named_modules():
        if isinstance(mod, (DistributedDataParallel, nn.DataParallel)):
            what = f"wrapped by {type(mod).__name__}"
            fix = f"pass the model inside (ddp_model.module) to td.{helper} instead"
        elif isinstance(mod, FSDPModule):
            what = "sharded by FSDP (fully_shard)"
            fix = f"use it as it is, or build the model again and call td.{helper} on that"
        elif live.get(mod) == "fully_shard":  # a module inside a unit, not a unit itself
            what = "part of a model sharded by td.fully_shard"
            fix = f"use the sharded model as it is, or build the model again and call td.{helper} on that"
        elif live.get(mod) == "ddp":
            what = "wrapped by td.ddp, whose DistributedDataParallel wrapper is still alive"
            fix = (
                f"train through that wrapper, or drop every reference to it first (inner = "
                f"wrapped.module; del wrapped), then td.{helper}(inner); two live wrappers "
                f"would each reduce this model's tensors, and the first one's checks would "
                f"refuse the second's steps"
            )
        else:
            continue
        raise TieError(
            f"tying.distributed.{helper}: the model{' at ' + repr(path) if path else ''} is "
            f"already {what}; a model is wrapped once, by one of td.ddp / td.fully_shard: "
            f"{fix}"
        )


def _refuse_tie_across(model: nn.Module, helper: str = "fully_shard") -> None:
    """A module sharded apart from a tied model that holds it must hold both ends of each tie.

    Stop 56: ``td.fully_shard(model.enc)`` of a model whose ``dec.weight`` reads
    ``enc.weight`` (a tie declared on the whole model) was accepted, and the ranks trained
    apart with no error (0.025 and 0.054 off the hand-tied anchor after 3 steps): the tie
    read FSDP2's shard or its freed gathered copy outside the unit, which nothing kept
    gathered. (``td.ddp`` of the owner's part is right: autograd sums the reader's
    gradient into the owner's before DDP's hook reduces it; 0.0 off the anchor. A part
    holding a reader alone is refused by ``verify``.)
    """
    from tying.core.load_ancestors import ancestors

    for outer in reversed(ancestors(model)):  # the outermost model first
        here = next((p for p, m in outer.named_modules() if m is model), None)
        here = _canonical(here) if here else ""
        if not here:  # the model itself under a wrapper (torch.compile's _orig_mod)
            continue

        def inside(path: str | None, here: str = here) -> bool:
            return path is not None and (path == here or path.startswith(here + "."))

        for tie in ties(outer):
            target = _canonical(tie.target)
            source = None if tie.source is None else _canonical(tie.source)
            if source is None or inside(target) == inside(source):
                continue
            kind = "a hand-made tie" if tie.hand else f"a {tie.relation!r} tie"
            # a hand-made tie's two ends must share a unit; a declared one may span units
            units = f", units=[{here!r}]" if helper == "fully_shard" and not tie.hand else ""
            raise TieError(
                f"tying.distributed.{helper}: the module given is {here!r} of an enclosing "
                f"tied model ({type(outer).__name__}) whose tie {tie.target} <- "
                f"{tie.source} ({kind}) "
                f"has one end inside it and one outside, so td.{helper} of {here!r} alone "
                f"would shard one end and leave the other reading its shard, and the ranks "
                f"would train apart with no error; wrap the whole model instead "
                f"(td.{helper}(model{units})), "
                f"or untie first (tying.untie); nothing was wrapped"
            )


def _live_wrapped(model: nn.Module) -> dict[nn.Module, str]:
    """``{module: helper}`` of the modules of ``model`` that ``td.ddp`` (while its wrapper
    lives) or ``td.fully_shard`` wrapped. A DDP wrapper that is only garbage (DDP holds
    reference cycles) is collected first, so a model whose wrapper was dropped may be
    wrapped again."""
    import gc

    found = {m: h for m in model.modules() if (h := wrapped_helper(m)) is not None}
    if "ddp" in found.values():
        gc.collect()
        found = {m: h for m in model.modules() if (h := wrapped_helper(m)) is not None}
    return found


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


def wrapped_by(model: nn.Module) -> str | None:
    """Which helper wrapped ``model`` or one of its submodules: ``"ddp"``, ``"fully_shard"`` or None.

    ``td.ddp`` and ``td.fully_shard`` record every module of the model they wrap, so a
    tie change on it (or on one of its submodules) is refused before it is made: the
    wrapped model's collectives know only the tensors it was wrapped with. A DDP record
    lasts as long as the DDP wrapper; a copy of a wrapped module is not wrapped.

    Args:
        model: a module (the wrapped model, its ``.module``, or any submodule).

    Returns:
        The helper's name, or None for a model no live wrapper holds.

    Example:
        >>> import torch, tying.distributed as td
        >>> td.wrapped_by(torch.nn.Linear(2, 2)) is None
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"tying.distributed.wrapped_by: model must be a torch.nn.Module, got "
            f"{type(model).__name__}"
        )
    for mod in model.modules():
        helper = wrapped_helper(mod)
        if helper is not None:
            return helper
    return None


class _FullStateRefused:
    """Load pre-hook on a sharded model: a full (unsharded) state is refused before any copy."""

    def __call__(self, module, state_dict, prefix, *args) -> None:
        from torch.distributed.tensor import DTensor

        for name, p in module.named_parameters(remove_duplicate=False):
            value = state_dict.get(prefix + name)
            if isinstance(p, DTensor) and value is not None and not isinstance(value, DTensor):
                raise TieError(
                    f"tying.distributed.fully_shard: {prefix + name} is sharded (a DTensor of "
                    f"shape {tuple(p.shape)}) but the state given holds a full tensor for it, "
                    f"which FSDP2 cannot copy into its shard; load a tying file with "
                    f"td.load(model, path) on every rank (or tying.load before "
                    f"td.fully_shard), and a full state dict with torch.distributed."
                    f"checkpoint.state_dict.set_model_state_dict(model, state, "
                    f"options=StateDictOptions(full_state_dict=True)); nothing was loaded"
                )


def _wrapper_paths(model: nn.Module) -> list[str]:
    """Paths of the modules in ``model`` that hold their module under a wrapper segment."""
    return [
        path or "<root>"
        for path, mod in model.named_modules()
        if any(seg in mod._modules for seg in WRAPPER_SEGMENTS)
    ]


def _verified(model: nn.Module, helper: str) -> None:
    """``verify(model)``; a failure on a model whose paths a wrapper renamed says so."""
    try:
        verify(model)
    except TieError as err:
        wrappers = _wrapper_paths(model)
        if not wrappers:
            raise
        # stop 36: after apply_activation_checkpointing the error said "head.weight: no such
        # parameter any more", naming neither the wrapper nor a fix
        raise TieError(
            f"tying.distributed.{helper}: {err} The model holds wrapped modules "
            f"({', '.join(wrappers[:10])}: activation checkpointing, torch.compile of a "
            f"submodule or FSDP1), which put their parameters under new paths "
            f"('{wrappers[0]}.{_inner_segment(model, wrappers[0])}.weight'), and ties declared "
            f"before the wrapping name the old ones; wrap those modules before tying "
            f"(tying.Plan(...).apply with the wrapped paths), or checkpoint inside forward "
            f"with torch.utils.checkpoint.checkpoint(..., use_reentrant=False)"
        ) from None


def _inner_segment(model: nn.Module, path: str) -> str:
    mod = model if path == "<root>" else model.get_submodule(path)
    return next(seg for seg in WRAPPER_SEGMENTS if seg in mod._modules)


def _model_signature(inner: nn.Module) -> tuple[str, tuple]:
    """(SHA-256, entries) of the model's logical parameters and buffers: path, shape and
    dtype, tied or not (a rank whose model lacks a tie the file makes loads as the others)."""
    import hashlib

    inv = Inventory(inner)
    entries = [
        (p, tuple(info.shape), str(inv.tensor(inv.root_of(p)).dtype), "parameter")
        for p, info in sorted(inv.slots.items())
    ]
    saved = inner.state_dict(keep_vars=True)  # a non-persistent buffer is no file's business
    entries += [
        (b, tuple(t.shape), str(t.dtype), "buffer")
        for b, t in sorted(inner.named_buffers(remove_duplicate=False))
        if b in saved
    ]
    digest = hashlib.sha256(repr(entries).encode()).hexdigest()
    return digest, tuple(entries)


def _value_digests(
    model: nn.Module, buffers: bool = True, ignored: set[int] = frozenset()
) -> tuple[tuple[str, str], ...]:
    """``(name, digest)`` of the bytes of every parameter (each tie's one tensor) and
    buffer, persistent or not (``buffers``), but the ``ignored`` ones (by id: a wrapper's
    ``ignored_params``, which may differ by rank, e.g. each rank's own experts, and
    ``td.fully_shard``'s ``rank_local`` buffers); ``"meta"``
    for a tensor with no values yet (a model built on the meta device and initialised after
    sharding, as FSDP2's recipes do). A DTensor (a
    tensor-parallel layer sharded over another mesh dimension) gives its local shard, which
    the ranks of one data-parallel group hold alike; another tensor subclass, whose bytes
    are not its values, is named by its type and not compared."""
    from torch.distributed.tensor import DTensor

    from tying.distributed_agreement import tensor_digest

    tensors = list(model.named_parameters())
    if buffers:  # non-persistent ones too (stop 41): FSDP2 broadcasts none of them
        tensors += list(model.named_buffers())
    out = []
    for name, t in tensors:
        if id(t) in ignored:
            continue
        # stop 38: TP then FSDP2 (the 2-D recipe) raised ".numpy() is not supported for
        # tensor subclasses" here, so td.fully_shard refused every tensor-parallel model
        local = t if t.is_meta or not isinstance(t, DTensor) else t.to_local()
        out.append((name, tensor_digest(local)))
    return tuple(out)


def _joined(values: tuple[tuple[str, str], ...]) -> str:
    import hashlib

    return hashlib.sha256(repr(values).encode()).hexdigest() if values else ""


def _first_value_difference(per_rank: list, ranks: list[int] | None = None) -> str:
    """The first tensor whose values differ from the first rank's, as text (``ranks``: the
    ranks ``per_rank`` belongs to; default 0, 1, ...)."""
    ranks = list(range(len(per_rank))) if ranks is None else ranks
    first, base = ranks[0], dict(per_rank[0])
    for rank, values in zip(ranks[1:], per_rank[1:], strict=True):
        for name, digest in values:
            if base.get(name) != digest:
                # a rank that built its model on the meta device holds no values to compare
                meta = [r for r, d in ((first, base.get(name)), (rank, digest)) if d == "meta"]
                where = f": on the meta device on rank {meta[0]} only" if meta else ""
                return f"{name} differs between rank {first} and rank {rank}{where}"
    return "their values differ"


def _first_difference(signatures: list) -> str:
    """The first entry in which a rank's model differs from rank 0's, as text (``None``: a
    rank whose model td.ddp / td.fully_shard wrapped, where the others' is plain)."""
    if any(sig is None for sig in signatures):
        wrapped = [r for r, sig in enumerate(signatures) if sig is None]
        return f"wrapped by td.ddp or td.fully_shard on ranks {wrapped} only"
    base = dict((e[0], e[1:]) for e in signatures[0][1])
    for rank, (_, entries) in enumerate(signatures[1:], start=1):
        other = dict((e[0], e[1:]) for e in entries)
        for name in sorted(set(base) | set(other)):
            if base.get(name) != other.get(name):
                what = lambda v: "absent" if v is None else f"{v[2]} of shape {v[0]}, {v[1]}"  # noqa: E731
                return f"{name}: rank 0 {what(base.get(name))}, rank {rank} {what(other.get(name))}"
    return "their models differ"


def _tie_record(inner: nn.Module) -> dict[str, dict]:
    """``{target: {"like", "relation", "hand"}}`` of every tie, by the names the checkpoint's
    tensors have (wrapper segments dropped, see :func:`tying.core.outside.canonical`); a Scaled tie's initial
    scale is left out (its value is a stored tensor)."""
    out = {}
    for t in ties(inner):
        spec = {k: v for k, v in t.relation.spec().items() if k != "init"}
        like = None if t.source is None else _canonical(t.source)
        out[_canonical(t.target)] = {"like": like, "relation": spec, "hand": bool(t.hand)}
    return out


def _record_diff(a: dict, b: dict, name_a: str, name_b: str) -> list[str]:
    """One line per tie target whose records in ``a`` and ``b`` differ, both named."""
    return [
        f"{t}: {name_a} {_record_text(a.get(t))}, {name_b} {_record_text(b.get(t))}"
        for t in sorted(set(a) | set(b))
        if a.get(t) != b.get(t)
    ]


def _record_text(entry: dict | None) -> str:
    if entry is None:
        return "untied"
    hand = ", hand-made" if entry["hand"] else ""
    # with its arguments: Rotated(k=1) against Rotated(k=3) printed "via Rotated" twice
    spec = entry["relation"]
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.items()) if k != "type")
    return f"tied to {entry['like'] or 'its own storage'} via {spec['type']}({args}){hand}"


def _require_group() -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "tying.distributed needs an initialised default process group: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment)"
        )


__all__ = ["ddp", "fully_shard", "wrapped_by"]
