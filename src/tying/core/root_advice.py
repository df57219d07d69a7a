"""Untie advice that works from the model the user holds, not only from the plan's root.

A tie records its paths relative to the module the plan was applied to (its *root*). A
refusal at a tied slot (``model.head.weight = p``, ``del``, ``register_buffer``,
``requires_grad_``, ``torch.nn.utils.spectral_norm`` ...) advised
``tying.Plan([tying.free('2.weight')]).apply(model)`` with that relative path. When the
root sits inside something else (the plan was applied to ``model.encoder``; the tied
model was put in an ``nn.Sequential``, a DDP-like ``.module`` wrapper, or
``torch.compile``'s ``_orig_mod``), the user holds the outer model, and the advice
followed literally was refused ("pattern '2.weight' matches no parameter"), or, when
the outer model had a ``2.weight`` of its own, *freed 0 slots without an error* and the
refused operation was refused again (stop 59). Here the advice names the path from the
outermost module that holds the root, says which module that is, and gives the root's
own path as well.
"""

from __future__ import annotations

from torch import nn

from tying.core import load_ancestors

__all__ = ["free_call", "holder_path", "write_advice"]


def _root_of(module: nn.Module, mod_path: str) -> nn.Module | None:
    """The module the plan was applied to: the one holding ``module`` at ``mod_path``."""
    if not mod_path:
        return module
    for up in load_ancestors.ancestors(module):
        try:
            if up.get_submodule(mod_path) is module:
                return up
        except AttributeError:
            continue
    return None


def holder_path(module: nn.Module, slot) -> tuple[str, nn.Module, nn.Module] | None:
    """Where the plan's root sits in the outermost module holding it.

    Args:
        module: the tied module the refusal is about.
        slot: its :class:`tying.core.slots.Slot`.

    Returns:
        ``(prefix, outer, root)``: the root's path inside ``outer`` (``"encoder"``,
        ``"_orig_mod"``), or None when no module holds the root (its paths already work
        from it) or the root cannot be found.

    Example:
        >>> import torch, tying
        >>> inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(inner)
        >>> outer = torch.nn.ModuleDict({"encoder": inner})
        >>> slot = tying.core.slots.slots_of(inner[1])["weight"]
        >>> holder_path(inner[1], slot)[0]
        'encoder'
    """
    try:
        root = _root_of(module, slot.paths[0])
        ups = load_ancestors.ancestors(root) if root is not None else []
        if not ups:
            return None
        outer = ups[-1]  # nearest first: the last is the outermost
        prefix = next(
            (p for p, m in outer.named_modules(remove_duplicate=False) if m is root), None
        )
    except Exception:  # noqa: BLE001 - advice only: fall back to the root-relative one
        return None
    return None if not prefix else (prefix, outer, root)


def free_call(module: nn.Module, slot, target: str) -> str:
    """``tying.Plan([tying.free(<target>)]).apply(model)``, with a path that works from the
    module the user holds.

    Args:
        module: the tied module the refusal is about.
        slot: its :class:`tying.core.slots.Slot`.
        target: the slot's path relative to the plan's root (``"2.weight"``).

    Returns:
        The call as text; when the root sits inside another module, the path is given
        from the outermost one and the text says which module ``model`` is, and how to
        free it from the root itself.

    Example:
        >>> import torch, tying
        >>> inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(inner)
        >>> slot = tying.core.slots.slots_of(inner[1])["weight"]
        >>> free_call(inner[1], slot, "1.weight")
        "tying.Plan([tying.free('1.weight')]).apply(model)"
        >>> outer = torch.nn.ModuleDict({"encoder": inner})
        >>> free_call(inner[1], slot, "1.weight")  # doctest: +ELLIPSIS
        "tying.Plan([tying.free('encoder.1.weight')]).apply(model), model being the ModuleDict ...
    """
    held = holder_path(module, slot)
    if held is None:
        return f"tying.Plan([tying.free({target!r})]).apply(model)"
    prefix, outer, root = held
    return (
        f"tying.Plan([tying.free({prefix + '.' + target!r})]).apply(model), model being the "
        f"{type(outer).__name__} that holds the {type(root).__name__} the plan was applied to "
        f"at {prefix!r} (the paths above are relative to that {type(root).__name__}; from it: "
        f"tying.Plan([tying.free({target!r})]).apply(model.get_submodule({prefix!r})))"
    )


def write_advice(slot, source: str) -> str:
    """Where to write instead of the computed ``slot`` that reads ``source``: ``source``,
    or, when ``source`` is itself a computed slot (``c`` like ``b`` like ``a``; a D4
    ``r^k m`` block reads an ``m`` block, a flip of an ``e`` one), the physical tensor at
    the end of the chain: "write to b" was refused again when followed (stop 62).

    Args:
        slot: the computed slot that was written to.
        source: the full path of what it reads.

    Returns:
        ``"<path> instead"``, followed by the chain when there is one.

    Example:
        >>> import tying
        >>> from tying.core.slots import slots_of
        >>> m = nn.ModuleDict({k: nn.Linear(2, 2, bias=False) for k in "abc"})
        >>> rot = tying.Rotated(1)
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight", relation=rot),
        ...                 tying.share("c.weight", like="b.weight", relation=rot)]).apply(m)
        >>> write_advice(slots_of(m.c)["weight"], "b.weight")
        'the physical block a.weight instead (b.weight is a.weight via Rotated(k=1, dims=(-2, -1)))'
    """
    from tying.core.slots import slots_of

    at, name, chain = source, slot.source_name, []
    link = slots_of(slot.source_module).get(name)
    while link is not None and len(chain) < 64:  # 64: a plan installs no cycle
        end = link.target_and_source(name)[1]
        chain.append(f"{at} is {end} via {link.relation!r}")
        at, name = end, link.source_name
        link = slots_of(link.source_module).get(name)
    if not chain:
        return f"{source} instead"
    return f"the physical block {at} instead ({'; '.join(chain)})"
