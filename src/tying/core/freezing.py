"""``requires_grad_`` on a tied module: a tied slot is frozen or trained with its source.

``module.requires_grad_(flag)`` sets the flag on ``module.parameters()`` only. A tied slot's
tensor belongs to its source's module, so ``model[1].requires_grad_(False)`` on a layer
tied to ``model[0]`` froze its bias and left its tied weight training, without a word
(stop 38). Setting the shared tensor instead would freeze every other use of it, which the
caller did not name. A plan refuses to tie tensors whose ``requires_grad`` differ for the
same reason (a tied tensor is frozen or trained as one), so a call that cannot give a tied
slot the asked state is refused too, before anything changes.

``module.zero_grad()`` clears ``module.parameters()`` only, so on a tied module it left the
gradient its tied slot's source had gathered (``head.zero_grad()`` after a backward: the
embedding's gradient stayed, and the next step applied it again, no error; stop 56). A
gradient is no choice the caller has to name: with a hand tie ``head.weight.grad`` *is*
``embed.weight.grad``, and ``head.zero_grad()`` clears it. So the tied class clears its
slots' sources too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tying.core.errors import TieError
from tying.core.outside import ORIG
from tying.core.root_advice import free_call, holder_path

if TYPE_CHECKING:
    from tying.core.slots import Slot


def requires_grad_(self, requires_grad: bool = True):
    """``nn.Module.requires_grad_`` of a tied module (installed on its tied class).

    Args:
        requires_grad: the flag to set on the module's parameters.

    Returns:
        The module, as ``nn.Module.requires_grad_`` does.

    Raises:
        TieError: a tied slot of the module reads a source outside it whose flag differs
            from ``requires_grad``, naming the slot, its source and both fixes; nothing is
            changed.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
        >>> m[1].requires_grad_(False)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: requires_grad_(False) on TiedLinear cannot freeze ...
        >>> _ = m[0].requires_grad_(False)    # the source: every use follows
        >>> m[1].weight.requires_grad
        False
    """
    from tying.core.slots import slots_of

    own = {id(p) for p in self.parameters()}
    clash, targets, sources, first = [], [], [], []
    for name, slot in slots_of(self).items():
        leaf = _physical_leaf(slot)
        if leaf is None or id(leaf) in own or leaf.requires_grad == bool(requires_grad):
            continue
        target, source = slot.target_and_source(name)
        clash.append(f"{target} (served from {source} via {slot.relation!r})")
        targets.append(target)
        sources.append(source)
        first.append(slot)
    if clash:
        flag = bool(requires_grad)
        verb = "unfreeze" if flag else "freeze"
        held = holder_path(self, first[0])  # the source's path from the model the user holds
        src = sources[0] if held is None else f"{held[0]}.{sources[0]}"
        raise TieError(
            f"requires_grad_({flag}) on {type(self).__name__} cannot {verb} its tied slot(s) "
            f"{', '.join(clash)}: each is one tensor shared with its source, whose other uses "
            f"would change too, and requires_grad_ sets only the module's own parameters; "
            f"{verb} the source itself, every use follows it (model.get_parameter("
            f"{src!r}).requires_grad_({flag})), or untie the slot to give it a tensor "
            f"of its own ({free_call(self, first[0], targets[0])}); nothing "
            f"was changed"
        )
    return type(self)._tying_base.requires_grad_(self, requires_grad)


def zero_grad(self, set_to_none: bool = True) -> None:
    """``nn.Module.zero_grad`` of a tied module (installed on its tied class).

    Clears the gradients of the module's own parameters, as PyTorch does, and those of the
    parameters its tied slots (and those of the tied modules inside it) read, as
    ``zero_grad`` on the same model tied by hand does: the slot's gradient is its source's.

    Args:
        set_to_none: set each gradient to ``None`` (default) instead of zeroing it.

    Returns:
        None, as ``nn.Module.zero_grad``.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
        >>> m(torch.ones(1, 2)).sum().backward()
        >>> m[1].zero_grad()
        >>> m[1].weight.grad is None and m[0].weight.grad is None
        True
        >>> m[0].bias.grad is None        # not read by m[1]: kept
        False
    """
    from tying.core.slots import slots_of

    type(self)._tying_base.zero_grad(self, set_to_none)
    # no walk of self.parameters() to skip the module's own sources (a second traversal of
    # a large tied container, 2x its zero_grad): a source cleared above has no grad left
    # (set_to_none) or a zero one, which zeroing again leaves as it is
    seen: set[int] = set()
    for mod in self.modules():
        for slot in slots_of(mod).values():
            leaf = _physical_leaf(slot, pruned=True)
            if leaf is None or id(leaf) in seen or leaf.grad is None:
                continue
            seen.add(id(leaf))
            # the same steps as torch's nn.Module.zero_grad for one parameter
            if set_to_none:
                leaf.grad = None
            else:
                if leaf.grad.grad_fn is not None:
                    leaf.grad.detach_()
                else:
                    leaf.grad.requires_grad_(False)
                leaf.grad.zero_()


def _physical_leaf(slot: Slot, *, pruned: bool = False):
    """The parameter a slot's value is computed from, following chains of ties (None: not a
    registered parameter, e.g. re-parametrised, or pruned unless ``pruned``: then a pruned
    source's ``<name>_orig``, the Parameter its gradient reaches)."""
    from tying.core.slots import slots_of

    mod, name = slot.source_module, slot.source_name
    for _ in range(64):
        inner = slots_of(mod).get(name)
        if inner is None:
            break
        if not inner.paths[1]:  # own storage of the chained slot
            name = inner.storage.get("source", name)
            break
        mod, name = inner.source_module, inner.source_name
    leaf = mod._parameters.get(name)
    if leaf is None and pruned:
        leaf = mod._parameters.get(name + ORIG)
    return leaf
