"""Before a distributed save: every rank holds the values the checkpoint will hold.

:func:`tying.distributed.save` writes rank 0's full state, and
:func:`tying.distributed.dcp_save` writes each replicated (plain, unsharded) tensor once,
from whichever rank ``torch.distributed.checkpoint``'s planner picks for it (it balances
the bytes each rank writes, so one tensor may come from rank 0 and the next from rank 1).
Ranks holding different values of a replicated tensor (a model seeded apart and never
wrapped, buffers DDP leaves alone with ``broadcast_buffers=False``, ``ignored_params``)
therefore gave a file of rank 0's values that the other ranks do not hold, or a DCP
checkpoint mixing the ranks' tensors (``emb.weight`` from rank 1, ``layers.1.bias`` from
rank 0: a model no rank held), with no error (stop 42). Both helpers now compare a digest
of every replicated tensor across the ranks first and refuse, on every rank, naming the
first tensor that differs; one that differs by design is named in ``rank_local=``, and
rank 0's value is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch

from tying.core.errors import TieError


def rank_local_names(names: Iterable[str], known: Iterable[str], helper: str) -> set[str]:
    """``names`` (``rank_local=``) checked against the checkpoint's tensor names ``known``."""
    names = (names,) if isinstance(names, str) else tuple(names)
    known = list(known)
    out = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"tying.distributed.{helper}: rank_local must hold tensor names (str), got "
                f"{name!r} ({type(name).__name__}); nothing was written"
            )
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise TieError(
                f"tying.distributed.{helper}: rank_local names {name!r}, which is not a tensor "
                f"of the model's state dict{hint}; nothing was written"
            )
        out.add(name)
    return out


def _flat(state, prefix: str = "") -> Iterable[tuple[str, object]]:
    """``(dotted name, leaf)`` of a nested state (dicts and lists, as an optimizer's)."""
    if isinstance(state, dict):
        for k, v in state.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], state


def replicated_digests(state: dict, skip: set[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    """``(name, digest)`` of every plain tensor in ``state`` (nested), DTensors (each rank
    its own shard) and the ``skip`` names (and their ``.``-children) left out.

    Example:
        >>> import torch
        >>> from tying.distributed_agreement import replicated_digests
        >>> a = replicated_digests({"w": torch.zeros(2), "b": torch.ones(1)})
        >>> a == replicated_digests({"w": torch.tensor([0.0, 1e-30]), "b": torch.ones(1)})
        False
        >>> [name for name, _ in replicated_digests({"w": torch.zeros(2), "b": torch.ones(1)}, {"b"})]
        ['w']
    """
    from torch.distributed.tensor import DTensor

    out = []
    for name, t in _flat(state):
        if not isinstance(t, torch.Tensor) or isinstance(t, DTensor):
            continue
        if name in skip or any(name.startswith(s + ".") for s in skip):
            continue
        out.append((name, tensor_digest(t)))
    return tuple(sorted(out))


def tensor_digest(t: torch.Tensor) -> str:
    """A digest of a plain tensor's bytes; ``"meta"`` for a tensor with no values yet (a
    model built on the meta device), and ``"a <type>"`` for another tensor subclass, whose
    bytes are not its values (so it is named, not compared). A DTensor is given by the
    caller as its local shard."""
    import hashlib

    if t.is_meta:
        return "meta"
    local = t.detach()
    if type(local) is not torch.Tensor:
        return f"a {type(local).__name__}"
    data = local.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return hashlib.blake2b(memoryview(data), digest_size=16).hexdigest()


def refuse_rank_values(
    state_of, helper: str, rank_local: Iterable[str], writes: str, nested: bool = False
) -> set[str]:
    """Compare every rank's replicated tensors (a collective; raises on every rank or none).

    Args:
        state_of: a callable giving this rank's state (nested dict of tensors) to compare.
        helper: ``"save"`` or ``"dcp_save"``, for the messages.
        rank_local: tensor names whose values may differ (rank 0's is written).
        writes: how the helper writes, for the message.
        nested: ``state`` is dcp_save's ``{"model": ..., "optim": ...}``, not a state dict.

    Returns:
        The checked ``rank_local`` names.
    """
    import torch.distributed as dist

    from tying.distributed_wrapping import _first_value_difference

    group = dist.is_available() and dist.is_initialized()
    failure: BaseException | None = None
    local: set[str] = set()
    try:
        state = state_of()
        model_names = [n for n, _ in _flat(state["model"] if nested else state)]
        local = rank_local_names(rank_local, model_names, helper)
        # a rank-local parameter's optimizer state is its own too
        skip = {f"optim.state.{n}" for n in local}
        if not group:  # one process: nothing to compare
            return local
        if nested:  # model tensors by their state-dict names, as rank_local takes them
            digests = replicated_digests(state["model"], local) + replicated_digests(
                {k: v for k, v in state.items() if k == "optim"}, skip
            )
        else:
            digests = replicated_digests(state, local)
        mine = ("ok", digests)
    except BaseException as err:  # told to the other ranks, then re-raised here
        failure, mine = err, ("error", f"{type(err).__name__}: {err}")
    if not group and failure is not None:
        raise failure
    seen: list = [None] * dist.get_world_size()
    dist.all_gather_object(seen, mine)
    if failure is not None:
        raise failure
    for rank, (kind, msg) in enumerate(seen):
        if kind == "error":
            raise RuntimeError(
                f"tying.distributed.{helper}: rank {rank} could not check its model ({msg}); "
                f"rank {rank} raised that error, and nothing was written"
            )
    if len({values for _, values in seen}) > 1:
        first = _first_value_difference([values for _, values in seen])
        raise TieError(
            f"tying.distributed.{helper}: the ranks hold different values ({first}); "
            f"{writes}, so the checkpoint would not hold the model every rank trains; make "
            f"the ranks agree first (td.ddp broadcasts rank 0's values; seed every rank "
            f"alike, or load one checkpoint on every rank), or, for a tensor that differs by "
            f"design (a buffer DDP leaves alone with broadcast_buffers=False, an ignored "
            f"parameter), name it in td.{helper}(..., rank_local=[...]) to write rank 0's "
            f"value; nothing was written"
        )
    return local
