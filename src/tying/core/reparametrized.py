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

import sys

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "list_members",
    "one_sided",
    "remove_call",
    "remove_refusal",
    "removed_source",
    "reparametrized_advice",
]


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
        # silently untied). Refused before any change: at its first look at the tied
        # list, ``parametrizations.is_tensor`` (the property :func:`list_members` adds;
        # caller = remove_parametrizations), or at its read of the single original. Every
        # forward reads the originals too, from ParametrizationList.forward, so a read
        # costs one compare here: the frame walk of stop 61 (for weight_norm's several
        # originals, first read through the parametrized property) cost a tied
        # parametrized forward 1.5-6.7 %, and missed a removal inside parametrize.cached()
        # after a forward, which reads the cached value and no original.
        if caller.f_code.co_name != "remove_parametrizations":
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
    removed = removed_source(slot, module)
    if removed is not None:
        # the loop over every layer (HiFi-GAN's remove_weight_norm idiom) removed the
        # source first: freeing this module, the advice below, is refused then too
        # (review 62), and nothing of the source's module can change any more
        return TieError(
            f"{call}: {where} is a tied slot (reads {src} via {slot.relation!r}), but "
            f"{removed}; nothing was changed"
        )
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


def list_members(base: type) -> dict:
    """Members a tied subclass of ``base`` adds when ``base`` is torch's
    ``ParametrizationList``: an ``is_tensor`` property that refuses
    ``remove_parametrizations`` of the list's module (see :func:`remove_refusal`).

    ``remove_parametrizations(model.b, "weight")`` of a module tied whole to another one
    parametrized alike reads ``is_tensor`` before anything else of the list. Inside
    ``parametrize.cached()`` after a forward it read the new-style weight_norm's value
    from the cache and no original, and ``b`` was untied silently (stop 61 review,
    stop 62). Refused here, before any change, as its read of an original is.

    Args:
        base: the class a tied class is made for.

    Returns:
        ``{"is_tensor": property}`` for a ParametrizationList, else ``{}``.
    """
    if not issubclass(base, parametrize.ParametrizationList):
        return {}
    return {"is_tensor": property(_is_tensor, _set_is_tensor)}


def _is_tensor(self) -> bool:
    if torch.compiler.is_compiling():  # a traced forward (sys._getframe stops fullgraph)
        return self.__dict__["is_tensor"]
    caller = sys._getframe(1)
    if caller.f_code.co_name == "remove_parametrizations":
        from tying.core.slots import slots_of

        name, slot = next(iter(sorted(slots_of(self).items())))
        refusal = remove_refusal("torch.nn.utils.parametrize", caller, slot, name, self)
        if refusal is not None:
            raise refusal
    return self.__dict__["is_tensor"]


def _set_is_tensor(self, value: bool) -> None:
    self.__dict__["is_tensor"] = value


def removed_source(slot, module: nn.Module) -> str | None:
    """Why ``slot``'s source is gone when a remover took it: ``remove_parametrizations``,
    ``remove_weight_norm`` or ``remove_spectral_norm`` on the tie's *source* module, which
    leaves the tied module reading the removed tensors; None for any other cause.

    Before stop 62 every read, ``untie``, ``count`` and ``verify`` then blamed "a quantizer,
    an adapter, a copy or an assignment" (or a ``del``) and advised re-applying the plan,
    putting the module back and untying, ``tying.retie`` or ``tying.interop``: each of
    those is refused on such a model (the advice went nowhere). The order that works:
    free the tied module first, then remove the re-parametrisation from each module.

    Args:
        slot: a tied slot whose source no longer serves it.
        module: the module holding ``slot`` (for the old forms it still carries the
            re-parametrisation its source lost, unlike a tensor deleted by hand).

    Returns:
        The reason and the fixes (to follow ``"<slot> reads <source>, but "``), or None.
    """
    src = slot.paths[1] or ""
    if ".parametrizations." in src:
        links = slot._links() if slot.anchor is not None else ()
        gone = next(((p, c) for p, c, held in links if p._modules.get(c) is not held), None)
        if gone is None or (
            gone[1] != "parametrizations" and not isinstance(gone[0], nn.ModuleDict)
        ):
            return None  # nothing swapped, or the source's whole module: not a remover
        owner, _, rest = src.partition(".parametrizations.")
        name = rest.split(".")[0]
        tool = "torch.nn.utils.parametrize.remove_parametrizations"
        what = f"the parametrization of {owner}.{name}"
        undo = (
            f"on this model that cannot be undone (untie, retie, free and re-parametrising "
            f"{owner!r} are refused too), so rebuild the model and load its saved state"
        )
    else:
        smod, sname = slot.source_module, slot.source_name
        kind = next(
            (k for suffix, k in _OLD_STYLE if sname.endswith(suffix) and sname != suffix), None
        )
        name = sname[: sname.rfind("_")]
        if kind is None or name not in smod._parameters:
            return None
        left = (name + "_g", name + "_v") if kind == "weight_norm" else (sname, name + "_u")
        if any(n in smod._parameters or n in smod._buffers for n in left):
            return None  # the remover takes all of its tensors: one deleted by hand
        if _remover(module, name, "model") != f"torch.nn.utils.remove_{kind}(model, {name!r})":
            return None  # the tied module is not re-parametrised alike: no remover's doing
        if _remover(smod, name, "model") is not None:
            return None  # still re-parametrised: the tensor went some other way
        owner = src.rpartition(".")[0]
        tool = f"torch.nn.utils.remove_{kind}"
        what = f"the {kind} of {owner}.{name}"
        # the slot reads the tensor by name: applying it again re-creates it (the tie holds)
        undo = (
            f"to undo that, apply it again (torch.nn.utils.{kind}(model.get_submodule("
            f"{owner!r}), {name!r})): the tie then reads its new tensors"
        )
    target = (slot.paths[0] or "").split(".parametrizations.")[0] or "<the tied module>"
    return (
        f"{what}, the tie's source, was removed after the tie was made ({tool} on "
        f"{owner!r}), and a tie cannot follow it (the removed tensors are no longer "
        f"trained): {undo}. To remove it from tied modules, free the tied module first, "
        f"then remove it from each and tie the plain tensors again: "
        f"tying.Plan([tying.free({target!r})]).apply(model); "
        f"{tool}(model.get_submodule({owner!r}), {name!r}); "
        f"{tool}(model.get_submodule({target!r}), {name!r}); "
        f"tying.Plan([tying.share({target!r}, like={owner!r})]).apply(model)"
    )


# old-style re-parametrisations: the suffix of the tensors they add, and the remover's name
_OLD_STYLE = (("_g", "weight_norm"), ("_v", "weight_norm"), ("_orig", "spectral_norm"))
