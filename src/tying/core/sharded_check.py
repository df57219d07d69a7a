"""A load into an FSDP2-sharded tied model: a state dict's entry for a tied slot against
the tie's value, shard by shard (stop 38).

``set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))``
distributes the model's own keys into shards but leaves a tied slot's key (an untied
checkpoint holds it) a plain full tensor, while the tie's value is this rank's DTensor
shard; core compared the two with ``torch.equal`` and torch refused ("aten.equal.default
got mixed torch.Tensor and DTensor"), naming no tie. Here each rank compares its shard
with the matching slice of the full value, and the ranks join their verdicts, so a value
that contradicts the tie in one shard is refused on every rank.
"""

from __future__ import annotations

import torch
from torch import nn


def agrees(incoming: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether a state dict's entry for a tied slot equals the value the tie gives it.

    On an FSDP2-sharded model the tie's value is a DTensor (this rank's shard) while a full
    state dict (``set_model_state_dict(..., full_state_dict=True)``) leaves the tied key, which
    the model's own state dict lacks, a plain full tensor: torch refused to compare the two
    ("aten.equal.default got mixed torch.Tensor and DTensor", stop 38). Each rank compares its
    shard with the matching slice of the full value, without a collective (the ranks' verdicts
    are joined by :func:`joined`).

    Args:
        incoming: the state dict's entry (a tensor or a DTensor).
        expected: the value the tie gives the slot once the load is in.

    Returns:
        True when every element this rank holds is equal (after a cast to
        ``expected``'s dtype); False otherwise, or when the shapes differ.

    Example:
        >>> import torch
        >>> agrees(torch.ones(2), torch.ones(2)), agrees(torch.ones(2), torch.zeros(2))
        (True, False)
    """
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(expected, dtensor) != isinstance(incoming, dtensor):
        if isinstance(incoming, dtensor):
            expected, incoming = incoming, expected
        incoming = _local_slice(incoming, expected)
        expected = expected.to_local()
        if incoming is None or tuple(incoming.shape) != tuple(expected.shape):
            return False
        incoming = incoming.to(expected.device)
    return same_values(incoming.to(expected.dtype), expected)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal``, with NaN equal to NaN at the same place.

    A NaN equals nothing, itself included, so an untied checkpoint of a diverged model
    (``lm_head.weight`` a copy of ``embed.weight``, NaN entries and all) was refused as
    holding "a different value" for the tie (stop 41); torch and transformers load it.

    Args:
        a, b: tensors of one dtype.

    Returns:
        True when the shapes agree and every entry is equal or NaN in both.

    Example:
        >>> nan = float("nan")
        >>> same_values(torch.tensor([1.0, nan]), torch.tensor([1.0, nan]))
        True
    """
    if torch.equal(a, b):
        return True
    if a.shape != b.shape or not (a.is_floating_point() or a.is_complex()):
        return False
    return bool(torch.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True).all())


def _dtensor_type():
    """torch's DTensor class, or None when torch.distributed is not built."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def _local_slice(full: torch.Tensor, like) -> torch.Tensor | None:
    """The part of ``full`` that ``like`` (a DTensor of the same global shape) holds here."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if tuple(full.shape) != tuple(like.shape):
        return None
    shape, offset = compute_local_shape_and_global_offset(
        like.shape, like.device_mesh, like.placements
    )
    index = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
    return full[index]


def _sharded_ties(root: nn.Module) -> torch.Tensor | None:
    """A DTensor a tie of ``root`` reads (FSDP2-sharded), or None: then a load's verdict
    must be the same on every rank."""
    dtensor = _dtensor_type()
    if dtensor is None or not torch.distributed.is_initialized():
        return None
    from tying.core.slots import slots_of

    for mod in root.modules():
        for slot in slots_of(mod).values():
            src = slot.source_module._parameters.get(slot.source_name)
            if isinstance(src, dtensor):
                return src
    return None


def joined(root: nn.Module, problems: list[str]) -> list[str]:
    """``problems`` on this rank, or a line saying another rank found one, when ``root`` is
    sharded: each rank compares only its own shards, and a rank that found nothing would
    load while the others refuse (the ranks' models would differ).

    A collective (one ``all_reduce``) when ``root`` has a tie whose source is a DTensor:
    every rank calls it, as every rank loads a sharded model.

    Args:
        root: the module being loaded into.
        problems: this rank's contradictions (lines of text).

    Returns:
        ``problems``, or one line naming another rank's refusal when this rank found none.

    Example:
        >>> import torch
        >>> joined(torch.nn.Linear(2, 2), [])  # not sharded: this rank's verdict
        []
    """
    src = _sharded_ties(root)
    if src is None:
        return problems
    device = src.to_local().device
    flag = torch.tensor([1 if problems else 0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() and not problems:
        return [
            "another rank found a tied slot whose entry contradicts its tie in its shard "
            "(see that rank's error); every rank refuses, so the shards stay as they were"
        ]
    return problems
