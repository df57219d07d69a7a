"""``torch.nn.utils.prune`` on tied weights: one mask on the one physical tensor.

``torch.nn.utils.prune`` re-registers a pruned weight ``w`` as ``w_orig`` (a
parameter) and ``w_mask`` (a buffer), and recomputes ``w = w_orig * w_mask`` in
a forward pre-hook of the pruned module. For ties this means:

- **pruning a tie source** (``prune.l1_unstructured(embed, "weight", 0.3)``)
  works: the engine sees ``embed.weight`` as the logical slot stored in
  ``embed.weight_orig``, and every tied use reads ``w_orig * w_mask`` fresh (not
  the attribute the source's hook last wrote, which is stale until the source
  module runs). ``verify``, ``count``, ``ties`` and ``save`` work while pruned
  and after ``prune.remove``.
- **pruning a tied slot directly** (``prune.l1_unstructured(lm_head, "weight",
  ...)`` where ``lm_head.weight`` reads ``embed.weight``) would give the tied
  module a private ``weight_orig``, a second copy. It is refused with a
  ``TieError`` naming the tie, before anything changes; :func:`prune` prunes the
  physical tensor instead, so every use sees the mask.
- **making a mask permanent**: ``prune.remove(lm_head, "weight")`` on the tied
  module fails with torch's "has to be pruned before pruning can be removed"
  (the mask sits on the source module, and a module whose class defines its own
  ``__repr__``, such as transformers' GPT-2 ``Conv1D``, prints no tie in it);
  :func:`remove` follows the tie and removes the pruning where it sits, or names
  the source and that it is not pruned.

Example:
    >>> import torch, tying
    >>> from torch.nn.utils import prune as torch_prune
    >>> from tying.interop.pruning import prune
    >>> m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4),
    ...                          "head": torch.nn.Linear(4, 10, bias=False)})
    >>> _ = tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    >>> prune(m, "head.weight", torch_prune.l1_unstructured, amount=0.5)
    'embed.weight'
    >>> int((m["head"].weight == 0).sum()), tying.verify(m), tying.count(m).physical
    (20, 1, 40)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.relations import Same


def prune(model: nn.Module, path: str, method: Callable[..., nn.Module], **kwargs) -> str:
    """Prune the physical tensor behind slot ``path``, so every tied use sees the mask.

    Args:
        model: the model holding ``path``.
        path: a slot path, tied or not (``"lm_head.weight"``).
        method: a ``torch.nn.utils.prune`` function, e.g. ``prune.l1_unstructured``.
        **kwargs: passed to ``method`` (``amount=...``).

    Returns:
        The path of the physical tensor that was pruned.

    Raises:
        TypeError: when ``path`` is not a str, ``method`` is not callable, or ``name=``
            is passed (torch's ``(module, name)`` pair: here the slot path names it).
        TieError: when ``path`` is not a slot of ``model`` (naming the closest, or, for
            a module path, its parameter slots),
            reads its source through a relation other than ``Same`` (the mask
            would be defined on a different layout than the one read), or is one
            ``nn.Parameter`` in several modules (a hand-made tie: the mask would
            reach one module only), with the plans that make it a declared tie.
            One module seated at several paths is pruned: its one mask serves
            every seat.

    Example:
        >>> import torch, tying
        >>> from torch.nn.utils import prune as torch_prune
        >>> from tying.interop.pruning import prune
        >>> m = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        >>> _ = tying.Plan([tying.share("*", like="0")]).apply(m)
        >>> prune(m, "2.weight", torch_prune.random_unstructured, amount=0.25)
        '0.weight'
        >>> torch_prune.remove(m[0], "weight") is m[0], tying.verify(m)
        (True, 4)
    """
    # a list or tuple of paths failed with "unhashable type: 'list'"
    fix = (
        "call prune once per slot, or torch.nn.utils.prune.global_unstructured over the "
        "physical tensors for one global threshold"
    )
    _check_path("prune", path, fix)
    if not callable(method):
        torch_style = (
            f" (torch's (module, name) pair? here the slot path names the parameter: "
            f"prune(model, {_slot_to_pass(model, path, method)!r}, method, ...))"
            if isinstance(method, str)
            else ""
        )
        raise TypeError(
            f"prune: method must be a torch.nn.utils.prune function (e.g. "
            f"torch.nn.utils.prune.l1_unstructured), got {type(method).__name__} {method!r}"
            f"{torch_style}"
        )
    if "name" in kwargs:
        # torch's (module, name) pair: it reached the method twice, "got multiple values for
        # argument 'name'" (stop 59)
        slot = _slot_to_pass(model, path, kwargs["name"])
        raise TypeError(
            f"prune: name={kwargs['name']!r} is torch.nn.utils.prune's (module, name) pair; "
            f"here the slot path names the parameter: drop name= and pass the slot path "
            f"(prune(model, {slot!r}, method, ...)); the model is unchanged"
        )
    inv, hops, _, info = _follow_same("prune", model, path)
    if info is not None:
        raise TieError(
            f"prune: {path!r} reads {info.source or 'its own storage'} via "
            f"{info.tie.relation!r}; a mask on the physical tensor would not match the layout "
            f"{path!r} reads; untie it first (tying.Plan([tying.free({path!r})]).apply(model))"
        )
    group = next((g for g in inv.hand_groups() if hops in g), [])
    # one module seated at several paths (Sequential(lin, act, lin)) holds one hook and one
    # mask for every seat: no tie to break. It was refused as a hand-made tie, with a fix
    # that would have split the module's seats into two tensors (stop 39)
    here = (inv.slots[hops].module, inv.slots[hops].name)
    others = [p for p in group if (inv.slots[p].module, inv.slots[p].name) != here]
    if others:
        # one Parameter under several paths: torch's prune re-registers it as weight_orig
        # on one module and masks only there; the others kept reading it unmasked, and
        # verify still counted the tie as holding (stop 18)
        fix = "; ".join(
            f"tying.Plan([tying.free({p!r})]).apply(model); "
            f"tying.Plan([tying.share({p!r}, like={hops!r})]).apply(model)"
            for p in others
        )
        raise TieError(
            f"prune: {hops!r} is one nn.Parameter with {', '.join(map(repr, others))} (a "
            f"hand-made tie), and a mask on one module would not reach the other use(s); make "
            f"it a declared tie first, then prune: {fix}"
        )
    info = inv.slots[hops]
    method(info.module, info.name, **kwargs)
    return hops


def remove(model: nn.Module, path: str) -> str:
    """Make the pruning behind slot ``path`` permanent, wherever the tie puts its mask.

    ``torch.nn.utils.prune.remove(module, name)`` works on the module that holds the
    mask only. On a tied slot (``lm_head.weight`` reading ``wte.weight``, layer 1 of
    a shared stack) the mask sits on the source's module, and torch's error names
    neither the tie nor the source (stop 54: GPT-2's ``Conv1D`` prints only
    ``Conv1D(nf=48, nx=16)``). This follows ``Same`` ties to the physical tensor
    and calls ``prune.remove`` there; every tied use keeps reading it.

    Args:
        model: the model holding ``path``.
        path: a slot path, tied or not (``"lm_head.weight"``).

    Returns:
        The path of the physical tensor whose pruning was made permanent.

    Raises:
        TypeError: when ``path`` is not a str.
        TieError: when ``path`` is not a slot of ``model`` (naming the closest, or, for
            a module path, its parameter slots), reads its source through a relation
            other than ``Same``, or when the
            physical tensor behind it is not pruned (naming that tensor and the
            tie that leads to it); the model is unchanged.

    Example:
        >>> import torch, tying
        >>> from torch.nn.utils import prune as torch_prune
        >>> from tying.interop.pruning import prune, remove
        >>> m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4),
        ...                          "head": torch.nn.Linear(4, 10, bias=False)})
        >>> _ = tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
        >>> prune(m, "head.weight", torch_prune.l1_unstructured, amount=0.5)
        'embed.weight'
        >>> remove(m, "head.weight"), torch_prune.is_pruned(m)
        ('embed.weight', False)
        >>> m["head"].weight is m["embed"].weight, tying.verify(m)
        (True, 1)
    """
    from torch.nn.utils import prune as torch_prune
    from torch.nn.utils.prune import BasePruningMethod

    _check_path("remove", path, "call remove once per slot")
    inv, hops, chain, info = _follow_same("remove", model, path)
    if info is not None:
        src = inv.slots.get(info.source) if info.source else None
        fix = (
            f"make the mask on its source permanent: torch.nn.utils.prune.remove("
            f"model.get_submodule({src.module_path!r}), {src.name!r})"
            if src is not None
            else "a tie with storage of its own holds no torch.nn.utils.prune mask"
        )
        raise TieError(
            f"remove: {path!r} reads {info.source or 'its own storage'} via "
            f"{info.tie.relation!r}, not Same, so its pruning is not the source's to "
            f"follow here; {fix}; the model is unchanged"
        )
    info = inv.slots[hops]
    hooks = info.module._forward_pre_hooks.values()
    if not any(isinstance(h, BasePruningMethod) and h._tensor_name == info.name for h in hooks):
        via = f" (reached through the tie {'; '.join(chain)})" if chain else ""
        raise TieError(
            f"remove: {path!r} is not pruned: its physical tensor {hops!r}{via} holds no "
            f"torch.nn.utils.prune mask, so there is nothing to make permanent; prune it first "
            f"(tying.interop.pruning.prune(model, {path!r}, method, amount=...)); the model is "
            f"unchanged"
        )
    torch_prune.remove(info.module, info.name)
    return hops


def _check_path(what: str, path: object, fix: str) -> None:
    """Refuse a ``path`` that is not one slot path (str), naming ``what`` and ``fix``."""
    if not isinstance(path, str):
        raise TypeError(
            f"{what}: path must be one slot path (str), got {type(path).__name__} {path!r}; {fix}"
        )


def _slot_to_pass(model: nn.Module, path: str, name) -> str:
    """The slot path to advise for torch's ``(module, name)`` given as ``(path, name)``: the
    path itself when it is a slot already (``"head.weight"`` with ``name="bias"`` was told
    ``'head.weight.bias'``), ``path.name`` when that is a slot (``"weight"`` for the root
    module, which was told ``'.weight'``), else ``path.name`` as torch would read it."""
    slots = Inventory(model).slots
    joined = f"{path}.{name}" if path else str(name)
    if path in slots and joined not in slots:
        return path
    return joined


def _follow_same(
    what: str, model: nn.Module, path: str
) -> tuple[Inventory, str, list[str], object]:
    """Follow ``path``'s ``Same`` ties to the tensor that holds its values.

    Returns ``(the model's inventory, physical path, the hops "a <- b" taken, None)``, or,
    at the first tie that is not a plain ``Same`` read of a source (a relation, or storage
    of its own), the path reached so far, the hops and that tie's slot info (the caller
    refuses it by name). A ``path`` that is no slot of ``model`` is refused for ``what``,
    naming the closest.
    """
    inv = Inventory(model)
    if path not in inv.slots and path in inv.modules:
        # torch's prune takes (module, name); a module path here was refused as "not a
        # parameter; closest: <that same path>", advice that looped (stop 59)
        own = [p for p, i in inv.slots.items() if i.module_path == path]
        fix = (
            f"pass one of its parameter slots: {', '.join(map(repr, own))}"
            if own
            else "it holds no parameter of its own; pass the slot path of a parameter"
        )
        raise TieError(
            f"{what}: {path!r} is a module, not a parameter slot (tying.interop.pruning.{what} "
            f"takes the slot path, as in {what}(model, 'lm_head.weight', ...), where "
            f"torch.nn.utils.prune takes (module, name)); {fix}; the model is unchanged"
        )
    if path not in inv.slots:
        raise TieError(f"{what}: {path!r} is not a parameter of the model{inv.closest(path)}")
    hops, chain = path, []
    while inv.slots[hops].is_tied:
        info = inv.slots[hops]
        if type(info.tie.relation) is not Same or "source" in info.tie.storage or not info.source:
            return inv, hops, chain, info
        chain.append(f"{hops} <- {info.source}")
        hops = info.source
    return inv, hops, chain, None
