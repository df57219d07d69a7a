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

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.relations import Same

ORIG = "_orig"


def _pruning_hook(module: nn.Module, name: str):
    from torch.nn.utils.prune import BasePruningMethod

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, BasePruningMethod) and getattr(hook, "_tensor_name", None) == name:
            return hook
    return None


def pruned_names(module: nn.Module) -> dict[str, str]:
    """``{"weight_orig": "weight"}`` for every tensor of ``module`` pruned by ``torch.nn.utils.prune``.

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> from tying.interop.pruning import pruned_names
        >>> lin = torch.nn.Linear(3, 3)
        >>> _ = prune.random_unstructured(lin, "weight", amount=0.5)
        >>> pruned_names(lin)
        {'weight_orig': 'weight'}
    """
    if not module._forward_pre_hooks:
        return {}
    out = {}
    for pname in module._parameters:
        if pname.endswith(ORIG) and _pruning_hook(module, pname[: -len(ORIG)]) is not None:
            out[pname] = pname[: -len(ORIG)]
    return out


def source_value(module: nn.Module, name: str) -> torch.Tensor:
    """The current value of ``module.<name>``, recomputed when ``name`` is pruned.

    A pruned module's attribute is written by its forward pre-hook; a tied use
    that runs before (or without) that module would read a stale tensor from an
    old graph. This reads ``<name>_orig * <name>_mask`` now.

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> from tying.interop.pruning import source_value
        >>> lin = torch.nn.Linear(2, 2)
        >>> _ = prune.l1_unstructured(lin, "weight", amount=0.5)
        >>> with torch.no_grad():
        ...     _ = lin.weight_orig.add_(1.0)  # an optimizer step; lin has not run since
        >>> torch.equal(source_value(lin, "weight"), lin.weight_orig * lin.weight_mask)
        True
    """
    if name + ORIG in module._parameters:
        hook = _pruning_hook(module, name)
        if hook is not None:
            return hook.apply_mask(module)
    return getattr(module, name)


def check_register(module: nn.Module, name: str, slots: dict) -> None:
    """Refuse ``torch.nn.utils.prune`` registering ``<slot>_orig`` on a tied slot (no change yet)."""
    if name.endswith(ORIG) and name[: -len(ORIG)] in slots:
        slot = slots[name[: -len(ORIG)]]
        src = slot.paths[1] or "its own storage"
        where = ".".join(p for p in (slot.paths[0], name[: -len(ORIG)]) if p)
        raise TieError(
            f"torch.nn.utils.prune on the tied slot {where!r} (reads {src} via {slot.relation!r}) "
            f"would give it a private copy and break the tie; prune the physical tensor so every "
            f"use sees the mask: tying.interop.pruning.prune(model, {where!r}, method, amount=...)"
        )


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
        TieError: when ``path`` is not a slot of ``model`` (naming the closest) or
            reads its source through a relation other than ``Same`` (the mask
            would be defined on a different layout than the one read).

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
    inv = Inventory(model)
    if path not in inv.slots:
        raise TieError(f"prune: {path!r} is not a parameter of the model{inv.closest(path)}")
    hops = path
    while inv.slots[hops].is_tied:
        info = inv.slots[hops]
        if type(info.tie.relation) is not Same or "source" in info.tie.storage or not info.source:
            raise TieError(
                f"prune: {path!r} reads {info.source or 'its own storage'} via "
                f"{info.tie.relation!r}; a mask on the physical tensor would not match the layout "
                f"{path!r} reads; untie it first (tying.Plan([tying.free({path!r})]).apply(model))"
            )
        hops = info.source
    info = inv.slots[hops]
    method(info.module, info.name, **kwargs)
    return hops
