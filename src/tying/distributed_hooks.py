"""The checks a ``td.ddp`` / ``td.fully_shard`` wrapper runs at each training forward and backward.

Split from :mod:`tying.distributed_wrapping` (stop 51), which makes the wrappers and leaves
these hooks on them:

- :class:`_ParametersKept`: the wrapped model's parameters are still the ones it was
  wrapped with (a tie made or removed, a parameter replaced, or, under DDP, changed in
  place: another dtype, shape or device);
- :class:`_StaticGraphFirstStep`: ``static_graph=True`` with a first ``no_sync()`` forward;
- :class:`_NestedAccumulation`: a tied tensor's gradient accumulated twice between two
  training forwards of a DDP model.
"""

from __future__ import annotations

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.verify import ties


class _ParametersKept:
    """Forward pre-hook on a wrapped model: its parameters are still the ones it was wrapped with.

    DDP all-reduces the tensors it was built with and FSDP2 shards the ones it found, so a
    tie made or removed afterwards (``Plan.apply``, ``tying.untie``) left a tensor outside
    both: under DDP with ``find_unused_parameters`` or ``static_graph`` a ``Scaled`` tie's
    new scale, or every untied copy, then trained apart on each rank with no error (stop 33).
    DDP keeps each Parameter object, so its check is by identity, shape and dtype: DDP's
    buckets keep the shapes and dtypes it was built with, and a parameter changed in
    place (``model.double()`` or ``model.to(torch.bfloat16)`` after wrapping: the ranks
    trained apart, 0.25 apart after two steps, with no error, as under plain DDP; a Hugging
    Face ``resize_token_embeddings``, which swaps the embedding's ``.data``: a bare autograd
    error, "TBackward0 returned an invalid gradient", in the backward; stop 51) is refused
    too. FSDP2 swaps sharded and gathered tensors under the same names and re-shards on a
    dtype change itself, so its check is by name. Training forwards only: one walk over the
    modules, and under DDP one look at each parameter's shape and dtype (0.2 ms a forward for
    200 parameters on the shared test machine); no tensor is read.
    """

    def __init__(self, model: nn.Module, helper: str):
        self.model, self.helper = model, helper
        self.by_id = helper == "ddp"
        self.names = self._names()
        self.key = self._key()
        params = dict.fromkeys(model.parameters()) if self.by_id else {}
        # stop 52: the device too (model.cuda() / .cpu() after wrapping keeps each Parameter
        # and swaps its data); it was compared only when a shape or dtype changed with it
        self.layouts = [(p, p.shape, p.dtype, p.device) for p in params]

    def _names(self) -> set[tuple]:
        pairs = self.model.named_parameters(remove_duplicate=False)
        return {(*_identity(p), n) if self.by_id else (0, n) for n, p in pairs}

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
        if self._key() == self.key and all(
            p.shape == shape and p.dtype is dtype and p.device == device
            for p, shape, dtype, device in self.layouts
        ):
            return
        now = self._names()
        was = {e[0]: e for e in self.names}  # by id (DDP): the same object, changed?
        moved = sorted(
            f"{e[-1]} {_layout(was[e[0]])} -> {_layout(e)}"
            for e in now - self.names
            if self.by_id and e[0] in was
        )
        kept = {e[0] for e in now} & set(was) if self.by_id else set()
        gone = sorted({e[-1] for e in self.names - now if e[0] not in kept})
        new = sorted({e[-1] for e in now - self.names if e[0] not in kept})
        more = f", ... ({len(moved)} in all)" if len(moved) > 5 else ""
        changed = f"; changed in place: {', '.join(moved[:5])}{more}" if moved else ""
        tool = "DDP all-reduces" if self.by_id else "FSDP2 shards and reduces"
        raise TieError(
            f"tying.distributed.{self.helper}: the model's parameters changed after it was "
            f"wrapped (replaced or removed: {', '.join(gone) or 'none'}; new: "
            f"{', '.join(new) or 'none'}{changed}): {tool} only the tensors it was given, "
            f"with the shapes, dtypes and devices they had, so a new or changed one would train apart "
            f"on every rank; make every tie change (Plan.apply, tying.untie / retie / load, "
            f"load_state_dict(assign=True)), resize (resize_token_embeddings) and dtype or "
            f"device change (model.to(...)) before td.{self.helper}(model), then build and "
            f"wrap the model again{self._way_back(moved)}"
        )

    def _way_back(self, moved: list[str]) -> str:
        """Stop 53: the change is already made when this forward sees it (Hugging Face's own
        ``model.resize_token_embeddings`` returns under ``td.ddp`` with the tables grown), so
        name the ways to go on from the model as it now is."""
        if not (self.by_id and moved):
            return ""
        grown = [
            (e[-1], e[1][0], now.shape[0])
            for e in sorted(self.names, key=lambda e: e[-1])
            for now in [p for p, *_ in self.layouts if id(p) == e[0]]
            if tuple(now.shape) != e[1] and now.dim() == len(e[1]) and now.shape[1:] == e[1][1:]
        ]
        undo = "; for a resize, resize back" if grown else ""
        if grown:
            name, rows, _ = grown[0]
            undo += (
                f" ({name} had {rows} rows; Hugging Face: model.resize_token_embeddings({rows}) "
                f"keeps the first {rows})"
            )
        return (
            f". The model inside already holds the change: either "
            f"undo it and train on with this wrapper (model.to the old dtype or device{undo}), "
            f"or keep it and wrap again: inner = wrapped.module; del wrapped; wrapped = "
            f"td.ddp(inner) (rank 0's values are broadcast, so rows a resize drew on each rank "
            f"agree again), then build the optimizer anew"
        )


def _identity(p: torch.Tensor | None) -> tuple | None:
    """What DDP's reducer fixed about a parameter when it was built (None: no parameter)."""
    return None if p is None else (id(p), tuple(p.shape), p.dtype, p.device)


def _layout(entry: tuple) -> str:
    return f"{entry[1]} {str(entry[2]).replace('torch.', '')}" + (
        f" on {entry[3]}" if entry[3].type != "cpu" else ""
    )


class _StaticGraphFirstStep:
    """Forward pre-hook of ``td.ddp(model, static_graph=True)``: a training forward under
    ``no_sync()`` before any synchronised one is refused, naming the fix.

    DDP learns a static graph in its first synchronised iteration; a ``no_sync()`` forward
    before it made the backward fail with torch's ``expect_autograd_hooks_ INTERNAL ASSERT
    FAILED ... please report a bug to PyTorch`` (reducer.cpp), after the forward had run.
    Plain ``DistributedDataParallel`` fails the same way (torch 2.13), so this names torch's
    limit before torch meets it (stop 38); after one synchronised forward, no check is left.
    """

    def __init__(self):
        self.synced = False

    def __call__(self, module, args) -> None:
        if not self.synced and torch.is_grad_enabled():
            self._check(module)

    @torch.compiler.disable  # as _ParametersKept: run eagerly under torch.compile
    def _check(self, module) -> None:
        if module.require_backward_grad_sync:
            self.synced = True
            return
        raise RuntimeError(
            "tying.distributed.ddp: a training forward under no_sync() before the first "
            "synchronised one, with static_graph=True: DDP records the static graph in its "
            "first synchronised iteration, and without it the backward fails inside torch "
            "(reducer.cpp: expect_autograd_hooks_ INTERNAL ASSERT FAILED; plain "
            "DistributedDataParallel does the same); run one step outside no_sync() first "
            "(e.g. the last micro-batch of the first step), or wrap without "
            "static_graph=True; nothing was run"
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
    counted afresh at each forward. A forward under ``no_sync()`` is not checked: DDP reduces
    nothing in its backward, and the next synchronised backward all-reduces the whole
    accumulated gradient, nested parts included (stop 38: such steps, which train as one
    process, were refused). One hook per tied tensor, on training steps only;
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
        self.syncing = True  # whether DDP reduces in the backward of the last forward

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
            # DDP decides at the forward whether its backward reduces (no_sync sets this)
            self.syncing = getattr(module, "require_backward_grad_sync", True)

    def _hook(self, root: str):
        def accumulated(param) -> None:
            if not self.syncing:
                return
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


__all__: list[str] = []  # td.ddp's and td.fully_shard's own hooks
