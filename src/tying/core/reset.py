"""Give every relation's own parameters their declared initial value (after ``to_empty``).

A model built on the ``meta`` device and materialised with ``model.to_empty(device=...)``
holds uninitialised memory in every tensor, as torch documents; the usual fix is to call
each module's ``reset_parameters()``. A tie's relation may own parameters of its own (a
``Scaled`` tie's ``weight_scale``), and ``reset_parameters()`` of a tied module is refused
when it would write into a computed slot, so before stop 40 such a scale could only be set
by loading a checkpoint: the forward read whatever ``to_empty`` left there, with no error.
:func:`reset_relations` sets them to the value the relation declares (``Scaled(init=...)``),
in place, without touching the sources or any other parameter.
"""

from __future__ import annotations

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.slots import slots_of

__all__ = ["reset_relations"]


def reset_relations(model: nn.Module) -> list[str]:
    """Set each relation's own parameters (e.g. a ``Scaled`` scale) to its initial value.

    Call it after ``model.to_empty(device=...)`` on a model tied on the ``meta`` device,
    next to the initialisation of the ordinary parameters (which it leaves alone): the
    sources of the ties are ordinary parameters and are initialised as usual, through the
    module that owns them. Relations without parameters of their own (``Same``,
    ``Transposed``, ``Flipped``, ...) have nothing to reset.

    Args:
        model: a module tied with ``tying`` (a Plan or ``share``), materialised.

    Returns:
        The state-dict names of the parameters it set, in module order (empty when no
        relation owns one).

    Raises:
        TieError: relation parameters still on the ``meta`` device, all named (the first
            five, and how many more); materialise the model first with
            ``model.to_empty(device=...)``; or a relation's init that does not fit its
            parameter's dtype now (``Scaled(init=1e5)`` after ``model.half()``), named.
            Nothing is written then.

    Example:
        >>> import torch, tying
        >>> with torch.device("meta"):
        ...     net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight",
        ...                             relation=tying.Scaled(init=2.0))]).apply(net)
        >>> net = net.to_empty(device="cpu")
        >>> net[0].reset_parameters()  # the source and biases, as usual
        >>> torch.nn.init.zeros_(net[1].bias)
        Parameter containing:
        tensor([0., 0., 0., 0.], requires_grad=True)
        >>> tying.reset_relations(net)
        ['1.weight_scale']
        >>> torch.equal(net[1].weight, 2.0 * net[0].weight)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"reset_relations: expected an nn.Module, got {type(model).__name__}")
    todo: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    on_meta: list[str] = []  # every relation parameter with no memory, named in one refusal
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        for slot in slots_of(module).values():
            roles = {r: n for r, n in slot.storage.items() if r != "source"}
            if not roles:
                continue
            held = {r: module._parameters.get(n, module._buffers.get(n)) for r, n in roles.items()}
            like = next(iter(held.values()))
            if any(t is None for t in held.values()):  # pragma: no cover - a broken install
                raise TieError(f"reset_relations: {prefix}{slot!r} lost its storage")
            meta = [f"{prefix}{roles[r]}" for r, t in held.items() if t.device.type == "meta"]
            if meta:
                on_meta += meta
                continue
            try:
                init = slot.relation.extras(slot.shape, like)
            except TieError as err:  # e.g. an init that does not fit the model's dtype now
                names = ", ".join(f"{prefix}{n}" for n in roles.values())
                raise TieError(f"reset_relations: {names}: {err}; nothing was written") from None
            for role, name in roles.items():
                if role in init:
                    todo.append((f"{prefix}{name}", held[role], init[role]))
    if on_meta:
        shown = ", ".join(on_meta[:5])
        more = f" (and {len(on_meta) - 5} more)" if len(on_meta) > 5 else ""
        if len(on_meta) == 1:
            what = f"{shown} is on the meta device and has"
        else:
            what = f"{len(on_meta)} relation parameters, {shown}{more}, are on the meta device and have"
        raise TieError(
            f"reset_relations: {what} no memory to write; materialise the model first with "
            f"model.to_empty(device='cpu') (or your device), then call reset_relations"
        )
    # checked first, written after: a refusal leaves every parameter as it was
    with torch.no_grad():
        for _, tensor, value in todo:
            tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
    return [name for name, _, _ in todo]
