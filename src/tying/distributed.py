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
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from tying.core.checkpoint import _refuse_meta_device, save_state
from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.outside import WRAPPER_SEGMENTS, mark_wrapped, wrapped_helper
from tying.core.outside import canonical as _canonical
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
            sharded by FSDP; (at a forward) its parameters changed after wrapping; (at a
            backward, unless ``static_graph=True``) a tied tensor's gradient is accumulated
            twice between two forwards (a reentrant activation checkpoint around some of
            its uses), of which DDP would all-reduce only the first.
        RuntimeError: the default process group is not initialised.

    Tie first, then wrap: ``td.ddp(tied_model)``; a ``tying.Plan(...).apply(model.module)``
    after it is refused at the next training forward (``docs/distributed.md``).
    """
    from torch.nn.parallel import DistributedDataParallel

    _require_group()
    _refuse_wrapped(model, "ddp")
    _verified(model, "ddp")
    wrapped = DistributedDataParallel(model, **kwargs)
    wrapped.register_forward_pre_hook(_ParametersKept(model, "ddp"), prepend=True)
    if not kwargs.get("static_graph", False):  # static_graph reduces a nested use right
        _NestedAccumulation(model).attach(wrapped)
    mark_wrapped(model, "ddp", wrapped)
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
    _verified(model, "fully_shard")
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
    # stop 34: tying.load (and load_state_dict) of a full state failed inside FSDP's copy
    # with "got mixed torch.Tensor and DTensor", naming no fix
    model.register_load_state_dict_pre_hook(_FullStateRefused())
    mark_wrapped(model, "fully_shard")
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
        if torch.is_grad_enabled():
            self._check()

    # stop 36: under torch.compile(td.ddp(model)) this hook is traced, and it returned when
    # compiling: a parameter replaced after wrapping trained apart on every rank with no
    # error. Run eagerly instead (a graph break before the model's first op)
    @torch.compiler.disable
    def _check(self) -> None:
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


class _NestedAccumulation:
    """A tied tensor's gradient accumulated twice between two training forwards.

    Autograd sums every use of a tensor and accumulates its gradient once per backward,
    when DDP all-reduces it; DDP reduces once per forward. A reentrant activation
    checkpoint (``torch.utils.checkpoint(..., use_reentrant=True)``) runs a backward of its
    own inside the outer one, so a tied tensor read inside and outside the checkpoint (or in
    two checkpoints) is accumulated twice: DDP all-reduced the first part, finished the step
    at the end of that backward, and each rank kept its own rest; the ranks' models diverged
    with no error (stop 35). Two backward passes of one forward lose the second the same way.
    Gradient accumulation (a forward before each backward, with or without ``no_sync``) is
    counted afresh at each forward. One hook per tied tensor, on training steps only;
    ``static_graph=True``, which DDP reduces right, is not checked.
    """

    def __init__(self, model: nn.Module):
        inv = Inventory(model)
        self.readers: dict[str, list[str]] = {}
        self.params: dict[str, nn.Parameter] = {}
        for tie in ties(model):
            root = tie.source if tie.hand else inv.root_of(tie.target)
            p = inv.tensor(root)
            if isinstance(p, nn.Parameter) and p.requires_grad:
                self.params[root] = p
                self.readers.setdefault(root, []).append(tie.target)
        self.seen: set[str] = set()

    def attach(self, wrapped: nn.Module) -> None:
        import weakref

        handles = [
            p.register_post_accumulate_grad_hook(self._hook(root))
            for root, p in self.params.items()
        ]
        if handles:
            wrapped.register_forward_pre_hook(self._reset, prepend=True)
            # a model whose wrapper is gone may be wrapped again (stop 34): no hook outlives it
            weakref.finalize(wrapped, lambda: [h.remove() for h in handles])

    def _reset(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.seen.clear()

    def _hook(self, root: str):
        def accumulated(param) -> None:
            if root not in self.seen:
                self.seen.add(root)
                return
            raise TieError(
                f"tying.distributed.ddp: the gradient of {root} (tied, read by "
                f"{', '.join([root, *self.readers[root]])}) was accumulated twice since the "
                f"last forward, by a backward nested in another (a reentrant activation "
                f"checkpoint, torch.utils.checkpoint(..., use_reentrant=True), around some of "
                f"its uses) or by two backward passes of one forward: DDP all-reduces the "
                f"first part only and each rank keeps its own rest, so the ranks' models "
                f"would diverge; use checkpoint(..., use_reentrant=False), or "
                f"td.ddp(model, static_graph=True), or checkpoint every use of the tie "
                f"together"
            )

        return accumulated


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
    :func:`fully_shard` would hold.

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

    inner = _unwrapped(model)
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
    return plan, full, rules, digest


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
    try:
        set_model_state_dict(
            inner, dict(full), options=StateDictOptions(full_state_dict=True, strict=True)
        )
    except BaseException:
        with torch.no_grad():
            for local, copy in kept:
                local.copy_(copy)
        raise


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
    if dist.is_initialized():
        _same_target(path, metadata)
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


def _same_target(path, metadata) -> None:
    """Every rank was given the same ``path`` and ``metadata`` (a collective): rank 0 alone
    writes, so ranks given other ones returned as if they had saved there (stop 36)."""
    import torch.distributed as dist

    try:
        given = ("ok", os.fspath(path), repr(metadata))
    except TypeError as err:  # told to the other ranks, which would wait for this one
        given = ("error", f"{type(err).__name__}: {err}", "")
    seen: list = [None] * dist.get_world_size()
    dist.all_gather_object(seen, given)
    rank = dist.get_rank()
    for r, (kind, msg, _) in enumerate(seen):
        if kind == "error":
            if r == rank:
                raise TypeError(
                    f"tying.distributed.save: path must be a str or os.PathLike, got "
                    f"{type(path).__name__} ({msg}); nothing was written"
                )
            raise RuntimeError(
                f"tying.distributed.save: rank {r} was given a bad path ({msg}); rank {r} "
                f"raised that error, and nothing was written"
            )
    if len({(p, m) for _, p, m in seen}) > 1:
        by_rank = "; ".join(f"rank {r}: {p!r}, metadata {m}" for r, (_, p, m) in enumerate(seen))
        raise ValueError(
            f"tying.distributed.save: every rank must pass the same path and metadata, got "
            f"{by_rank}; rank 0 alone writes the file, so the other ranks' paths would hold "
            f"no file: pass one path (rank 0's is written; on several machines, a shared "
            f"folder) and one metadata on every rank; nothing was written"
        )


#: the checkpoint entry that records the model's ties (JSON, as a uint8 tensor: no pickle)
DCP_TIES_KEY = "tying.ties"


def dcp_save(model: nn.Module, checkpoint_id, optimizer: torch.optim.Optimizer | None = None):
    """Save a (wrapped) tied model with ``torch.distributed.checkpoint``, its ties recorded.

    A collective: every rank writes its shards (each physical tensor once, as
    ``get_model_state_dict`` gives it) under ``"model"``, the optimizer's state (one per
    physical tensor) under ``"optim"``, and the model's ties under ``"tying.ties"``, so
    :func:`dcp_load` refuses a model tied otherwise instead of loading the stored tensors
    into other ties (a tensor the model reads through a tie was dropped with no error).

    Args:
        model: a plain, ``td.ddp``-wrapped or ``td.fully_shard``-sharded tied model.
        checkpoint_id: the checkpoint folder (as for ``dcp.save``).
        optimizer: the model's optimizer, or None.

    Raises:
        TieError: a declared tie is broken; (after writing, on every rank) the ranks do not
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

    inner = _unwrapped(model)
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

    _agreed(folder_given, "dcp_save", str(checkpoint_id), verb="save to")
    record = json.dumps(_tie_record(inner), sort_keys=True).encode()
    state = {
        "model": get_model_state_dict(inner),
        DCP_TIES_KEY: torch.frombuffer(bytearray(record), dtype=torch.uint8),
    }
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(inner, optimizer)
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
            lacks a tensor of the model or holds one of another shape or dtype (dcp.load
            would cast it); the ranks' folders hold different checkpoints (each rank would
            load its own); nothing was loaded.
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

    inner = _unwrapped(model)
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
            diff = [
                f"{t}: checkpoint {_record_text(theirs.get(t))}, model {_record_text(mine.get(t))}"
                for t in sorted(set(theirs) | set(mine))
                if theirs.get(t) != mine.get(t)
            ]
            if diff:
                raise TieError(
                    f"{where} ties otherwise than this model ({'; '.join(diff[:10])}); {fix}"
                )
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
    dcp.load(state, checkpoint_id=checkpoint_id)
    set_model_state_dict(inner, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(inner, optimizer, state["optim"])
    verify(inner)


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


def _record_text(entry: dict | None) -> str:
    if entry is None:
        return "untied"
    hand = ", hand-made" if entry["hand"] else ""
    # with its arguments: Rotated(k=1) against Rotated(k=3) printed "via Rotated" twice
    spec = entry["relation"]
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.items()) if k != "type")
    return f"tied to {entry['like'] or 'its own storage'} via {spec['type']}({args}){hand}"


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


__all__ = ["dcp_load", "dcp_save", "ddp", "fully_shard", "load", "save", "wrapped_by"]
