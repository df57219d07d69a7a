"""Where an untied parameter goes back: the place it had in its module before the tie.

Tying a slot removes its parameter from the module's ``_parameters``; untying it
(``tying.untie``, ``tying.free``) registers an independent copy again. Registered
at the end, ``nn.Linear``'s ``weight`` came back *after* ``bias``: ``parameters()``,
``state_dict()`` and so ``parameters_to_vector`` ran in another order than the
same model built untied, and ``vector_to_parameters`` with that model's vector (or
an optimizer state loaded by position) put values into the wrong tensors with no
error, since it only checks the total length (stop 42). So a tie records the
module's parameter names as they were, and an untie seats the copy back in front of
the first name that followed it then.

Example:
    >>> import torch, tying
    >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
    >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    >>> _ = tying.untie(m)
    >>> list(m["b"]._parameters)
    ['weight', 'bias']
"""

from __future__ import annotations

from torch import nn

# An attribute of the Slot (pickled and deep-copied with it; a Slot from an older
# pickle has none, and its parameter goes back at the end, as before).
ORDER_ATTR = "order_before_tie"


def remember(slot, module: nn.Module, name: str, previous=None) -> None:
    """Record on ``slot`` the order of ``module``'s parameter names before ``name`` was tied.

    Args:
        slot: the new Slot that will serve ``module.<name>``.
        module: the module that holds the slot.
        name: the slot's name in ``module``.
        previous: the Slot it replaces (a re-tie), whose record is kept.
    """
    order = getattr(previous, ORDER_ATTR, None)
    if order is None and name in module._parameters:
        order = tuple(module._parameters)
    if order is not None:
        setattr(slot, ORDER_ATTR, order)


def order_of(slot) -> tuple[str, ...]:
    """The names recorded by :func:`remember` (empty when none was)."""
    return getattr(slot, ORDER_ATTR, ())


def seat(module: nn.Module, name: str, order: tuple[str, ...]) -> None:
    """Move ``module._parameters[name]`` back in front of the first name that followed it.

    Names not in ``order`` (a relation's storage, parameters registered later) keep
    their places; with no record the parameter stays where it is (the end).
    """
    params = module._parameters
    if name not in params or name not in order:
        return
    after = set(order[order.index(name) + 1 :])
    keys = [k for k in params if k != name]
    at = next((i for i, k in enumerate(keys) if k in after), None)
    if at is None:
        return
    items = [(k, params[k]) for k in keys]
    items.insert(at, (name, params[name]))
    params.clear()  # the same dict, refilled: anything holding it sees the new order
    params.update(items)
