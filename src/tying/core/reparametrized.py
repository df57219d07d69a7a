"""Advice for a tie whose source was re-parametrised after the tie was made.

``torch.nn.utils.parametrize``, ``weight_norm`` or ``spectral_norm`` applied to a tie's
source after the tie moves the source out of its module's parameters, which a tie cannot
follow: every read of the slot, and ``verify``/``count``/``save``, is refused. Before stop 61
the refusals advised "re-parametrise before tying" (``Plan.apply`` refuses a parametrized
source: the advice looped) and "untie first (tying.untie(model))" (``untie`` refuses the
same model, for the same reason), and named neither the module nor the remover that undoes
what was applied. The advice here names the one call that undoes it and, for a user who
wants to keep the parametrization, the order that works: remove it, untie, register it
again on the untied module. Two neighbours live here too: a module tie with one side
re-parametrised (:func:`one_sided`), and removing a re-parametrisation from one module of
a module tie, whose parameters are tied slots (:func:`remove_refusal`).

Example:
    >>> import torch
    >>> lin = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(2, 2))
    >>> remove_call(lin, "weight", "enc")
    "torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule('enc'), 'weight')"
"""

from __future__ import annotations

from torch import nn

__all__ = ["one_sided", "remove_call", "remove_refusal", "reparametrized_advice"]


def remove_call(module: nn.Module, name: str, owner: str) -> str:
    """The call that undoes what re-parametrised ``module``'s ``name``.

    Args:
        module: the module holding the re-parametrised source.
        name: the source's attribute name (``"weight"``).
        owner: the module's path from the model's root ("" for the root).

    Returns:
        The call, with the module named by its path (``model.get_submodule('a')``).
    """
    where = f"model.get_submodule({owner!r})" if owner else "model"
    return _remover(module, name, where) or (
        f"torch.nn.utils.parametrize.remove_parametrizations, remove_weight_norm or "
        f"remove_spectral_norm on {where}"
    )


def _remover(module: nn.Module, name: str, where: str) -> str | None:
    """The one remover for what re-parametrised ``module``'s ``name``; None if nothing did."""
    nested = getattr(module, "parametrizations", None)
    if isinstance(nested, nn.ModuleDict) and name in nested:
        return f"torch.nn.utils.parametrize.remove_parametrizations({where}, {name!r})"
    # the old hook forms, by their hook (a plain parameter named weight_orig, or prune's
    # weight_orig, is neither)
    hooks = {
        type(h).__name__
        for h in module._forward_pre_hooks.values()
        if getattr(h, "name", None) == name
    }
    if "WeightNorm" in hooks:
        return f"torch.nn.utils.remove_weight_norm({where}, {name!r})"
    if "SpectralNorm" in hooks:
        return f"torch.nn.utils.remove_spectral_norm({where}, {name!r})"
    return None


def reparametrized_advice(module: nn.Module, name: str, owner: str) -> str:
    """The fix for a tie whose source ``owner.name`` was re-parametrised (see the module).

    Args:
        module: the module holding the source.
        name: the source's attribute name.
        owner: the module's path from the model's root.

    Returns:
        Advice that works when followed: the remover, then, to keep the parametrization,
        ``tying.untie`` and registering it again.
    """
    call = remove_call(module, name, owner)
    return (
        f"remove it ({call}): the tie then reads the parameter again; to keep the "
        f"re-parametrisation, remove it, untie (tying.untie(model)) and apply it again to the "
        f"untied module (a tie cannot read a re-parametrised source)"
    )


def _reparametrized(modules: dict, owner: str, leaf: str) -> tuple[str, str] | None:
    """``(module path, name)`` when ``owner.leaf`` is (or stands for) a re-parametrised
    tensor: a parameter of torch's ``parametrizations.<name>``, an old-style
    ``weight_norm``'s ``<name>_g``/``<name>_v``, ``spectral_norm``'s ``<name>_orig``, or the
    ``<name>`` those hide; else None."""
    parts = leaf.split(".")
    if "parametrizations" in parts[:-1]:
        i = parts.index("parametrizations")
        path = ".".join([owner, *parts[:i]]).strip(".")
        mod = modules.get(path)
        if i + 1 < len(parts) and mod is not None and _remover(mod, parts[i + 1], "model"):
            return path, parts[i + 1]
        return None
    path = ".".join([owner, *parts[:-1]]).strip(".")
    mod = modules.get(path)
    if mod is None:
        return None
    last = parts[-1]
    for suffix in ("_g", "_v", "_orig", ""):
        name = last[: len(last) - len(suffix)] if suffix else last
        if suffix and not last.endswith(suffix):
            continue
        if _remover(mod, name, "model") is not None:
            nested = getattr(mod, "parametrizations", None)
            if isinstance(nested, nn.ModuleDict) and name in nested and suffix:
                continue  # a parametrized module's own <name>_orig parameter: not ours
            if name in mod._parameters:
                continue  # a plain parameter of that name: not hidden
            return path, name
    return None


def one_sided(modules: dict, spath: str, target_mod: str, src: str, source_mod: str) -> str | None:
    """Why module ``target_mod``'s slot ``spath`` has no counterpart ``src`` in module
    ``source_mod`` when only one of the two modules is re-parametrised, with fixes that
    work; None when the modules differ otherwise.

    Before stop 61 ``share("b", like="a")`` with only ``a`` weight-normed said "the two
    modules differ in structure; tie the matching parameters one by one", and the rule that
    advice gives (``share("b.weight", like="a.weight")``) is refused too.

    Args:
        modules: the model's modules by path.
        spath: the target's slot path with no counterpart.
        target_mod: the path of the module the rule ties.
        src: the counterpart path looked for.
        source_mod: the path of the rule's source module.

    Returns:
        The reason and fixes, or None.
    """
    n = len(target_mod) + 1 if target_mod else 0
    m = len(source_mod) + 1 if source_mod else 0
    side = _reparametrized(modules, target_mod, spath[n:])
    other, where = source_mod, target_mod
    if side is None:
        side = _reparametrized(modules, source_mod, src[m:])
        other, where = target_mod, source_mod
    if side is None:
        return None
    path, name = side
    call = remove_call(modules[path], name, path)
    full = f"{path}.{name}" if path else name
    return (
        f"{full!r} is re-parametrised (torch.nn.utils.parametrize, weight_norm or "
        f"spectral_norm) in {where!r} only, so its parameters have no counterpart in "
        f"{other!r}: re-parametrise the same tensor of {other!r} alike first (their "
        f"parameters then tie one to one; buffers, such as spectral_norm's power-iteration "
        f"vectors, stay each module's own), or remove it ({call})"
    )


def remove_refusal(reader: str, caller, slot, name: str | None, module: nn.Module):
    """The refusal of old-style ``remove_weight_norm``/``remove_spectral_norm`` on a module
    whose re-parametrisation's parameters are tied slots, or None for any other read.

    ``share("b", like="a")`` over two weight-normed layers ties ``b.weight_g``/``b.weight_v``;
    ``remove_weight_norm(model.b)`` then deleted ``b.weight`` and failed with a bare
    ``KeyError: 'weight_g'`` (``remove_spectral_norm`` likewise), the layer left half
    removed (stop 61). Refused at the read that starts the removal, before any change.

    Args:
        reader: the ``__name__`` of the module whose code read the slot.
        caller: the frame that read it.
        slot: the slot read.
        name: the slot's name on ``module`` (None: looked up when refusing; a forward's
            read does not pay for it).
        module: the tied module.

    Returns:
        A :class:`tying.TieError` to raise, or None.
    """
    tool = _REMOVERS.get(reader)
    if tool is None:
        return None
    if tool == "parametrize":
        # remove_parametrizations(model.b, "weight") where b is tied whole to a module
        # parametrized alike: its ParametrizationList's original is a tied slot, and torch
        # writes b's parametrized value into it in place (set_), i.e. into a's original
        # (stop 61: a's output changed, no error; with weight_norm's two originals b was
        # silently untied). Refused at its first read of the slot, before any change.
        # Its first read of a single original is remove_parametrizations' own
        # (parametrizations.original), refused there; only several originals (the new
        # weight_norm's original0/original1) are first read through the parametrized
        # property: forward <- _call_impl <- _wrapped_call_impl <- get_parametrized
        # [<- get_cached_parametrization] <- remove_parametrizations. Every forward of a
        # tied parametrized pair reads here, and each frame walked up is one Python
        # materialises (stop 61 review: walking 8 frames cost an orthogonal pair's
        # forward 4-8 %), so the walk is only taken for several originals and stops at
        # get_parametrized's caller.
        if caller.f_code.co_name != "remove_parametrizations":
            if getattr(module, "is_tensor", True):
                return None
            frame, depth = caller.f_back, 1
            while frame is not None and depth < 8:
                if frame.f_code.co_name == "get_parametrized":
                    frame = frame.f_back
                    break
                frame, depth = frame.f_back, depth + 1
            if frame is None or frame.f_code.co_name != "remove_parametrizations":
                return None
        call = "torch.nn.utils.parametrize.remove_parametrizations"
        what = (
            "would write this module's parametrized value into the shared tensor in place "
            "(changing the source's module too) or give it a tensor of its own"
        )
    else:
        outer = caller.f_back
        if caller.f_code.co_name != "compute_weight" or outer is None:
            return None
        if outer.f_code.co_name != "remove":
            return None
        call = f"torch.nn.utils.remove_{tool}"
        what = "would delete them"
    from tying.core.errors import TieError
    from tying.core.root_advice import free_call

    if name is None:
        from tying.core.slots import slots_of

        name = next((n for n, s in slots_of(module).items() if s is slot), slot.source_name)
    label = "parametrization" if tool == "parametrize" else tool
    where, src = slot.target_and_source(name)
    if tool == "parametrize":
        owner = where.split(".parametrizations.")[0]
    else:
        owner = where.rpartition(".")[0]
    whole = free_call(module, slot, owner or where)
    return TieError(
        f"{call}: {where} is a tied slot (reads {src} via {slot.relation!r}), one of the "
        f"{label} parameters of {type(module).__name__}; removing {label} from this module "
        f"alone {what} and break the tie, so nothing was changed. Untie the module first "
        f"({whole}), then remove it"
    )


_REMOVERS = {
    "torch.nn.utils.weight_norm": "weight_norm",
    "torch.nn.utils.spectral_norm": "spectral_norm",
    "torch.nn.utils.parametrize": "parametrize",
}
