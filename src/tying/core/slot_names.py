"""A tied slot's name is taken: deleting it or registering something else under it is refused.

A tied module serves each tied slot (``head.weight``) through a property of its
class (see :mod:`tying.core.slots`). Plain assignment over a slot is refused by
the class's ``__setattr__`` with a ``TieError`` naming the tie. The module's other
ways to change what a name holds reached Python's or torch's generic errors instead,
naming no tie and giving no way out (stop 58):

- ``del model.head.weight``: ``AttributeError: property 'weight' of 'TiedLinear'
  object has no deleter``;
- ``model.head.register_parameter("weight", p)``, ``register_buffer("weight", t)``,
  ``add_module("weight", m)`` / ``register_module``: ``KeyError: "attribute
  'weight' already exists"``.

On a hand tie (``head.weight = emb.weight``) each of them quietly breaks the tie;
here each is refused, before anything changes, with the tie and the fix that works
(free the slot first, then do it). The model is left as it was.
"""

from __future__ import annotations

from torch import nn

from tying.core.errors import TieError
from tying.core.root_advice import free_call

SLOTS_ATTR = "_tying_slots"  # slots.SLOTS_ATTR (slots imports this module)


def check_name_free(module: nn.Module, name: str, how: str) -> None:
    """Refuse ``how`` (``"del"``, ``"register_parameter"``, ...) over the tied slot ``name``.

    Args:
        module: the module whose attribute ``name`` is about to be deleted or registered.
        name: the attribute name.
        how: the operation, as the message names it.

    Raises:
        TieError: when ``name`` is a tied slot of ``module``; names the slot's full path,
            its source and relation, and the untie that lets the operation through.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 4),
        ...                          "head": torch.nn.Linear(4, 10, bias=False)})
        >>> _ = tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
        >>> del m.head.weight
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: del head.weight: it is a tied slot of TiedLinear, served ...
        >>> _ = tying.Plan([tying.free("head.weight")]).apply(m)
        >>> del m.head.weight  # untied: a plain module again
        >>> hasattr(m.head, "weight")
        False
    """
    slots = module.__dict__.get(SLOTS_ATTR)
    if not slots or name not in slots:
        return
    slot = slots[name]
    target, source = slot.target_and_source(name)
    served = source if slot.paths[1] else f"its own storage {source}"
    if how == "del":
        redo = "delete it"
    elif how == "register_parameter":
        redo = f"call {how}"
    else:  # an untied module still holds the parameter, which torch refuses to shadow
        redo = f"delete the parameter (del module.{name}) and call {how}"
    raise TieError(
        f"{how} {target}: it is a tied slot of {type(module).__name__}, served from "
        f"{served} via {slot.relation!r}; this would break the tie, so nothing was "
        f"changed. Untie it first ({free_call(module, slot, target)}), "
        f"then {redo}"
    )


def slot_deleter(name: str):
    """The ``fdel`` of a tied slot's property: ``del module.<name>`` is refused by name."""

    def fdel(self):
        check_name_free(self, name, "del")
        # reached only when nn.Module.__delattr__ found no such parameter, buffer or module
        # (a fresh instance of a tied class deletes its own parameter before it gets here)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    fdel.__name__ = name
    return fdel


def register_buffer(self, name, tensor, persistent=True):
    check_name_free(self, name, "register_buffer")
    type(self)._tying_base.register_buffer(self, name, tensor, persistent)


def add_module(self, name, module):
    # nn.Module.register_module calls add_module: one guard serves both
    check_name_free(self, name, "add_module")
    type(self)._tying_base.add_module(self, name, module)
