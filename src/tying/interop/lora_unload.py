"""Taking shared peft adapters off a tied model: :func:`merge_and_unload` and :func:`unload`.

:func:`tying.interop.lora.get_peft_model` puts one adapter wrapper at every path of a
module tied whole. peft's own ``merge_and_unload`` / ``unload`` take a wrapper off one of
its paths only; these take it off every path, merge each delta once into the one
physical tensor, and give back the tied base model (``tying.verify`` passes). They are
re-exported by :mod:`tying.interop.lora`, and a ``PeftModel`` made there runs them as its
own ``merge_and_unload`` / ``unload``.

Example:
    >>> import torch, tying, peft
    >>> from tying.interop.lora import get_peft_model
    >>> from tying.interop.lora_unload import unload
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
    >>> base = unload(get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0", "2"])))
    >>> base[2].weight is base[0].weight, tying.verify(base)
    (True, 2)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.outside import is_adapter
from tying.core.slots import slots_of
from tying.interop.groups import set_module
from tying.interop.lora_saved import is_prompt_learning, restore_declarations

# on a PeftModel from get_peft_model: {tied path: the module that was there before}
SHARED_ATTR = "_tying_shared_adapters"


class _Unloading:
    """``pm.merge_and_unload`` / ``pm.unload`` through :func:`_unload` (a plain object, as
    :class:`_AddAdapter`, so pickles and deep copies keep it bound to their own copy)."""

    def __init__(self, pm, how: str) -> None:
        self.pm, self.how = pm, how

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        return _unload(self.pm, self.how, kwargs, args)


def merge_and_unload(peft_model, **kwargs: Any) -> nn.Module:
    """Merge every adapter exactly once per physical tensor and give back the tied base model.

    peft's own ``peft_model.merge_and_unload()`` on a model from :func:`get_peft_model` or
    :func:`from_pretrained` runs this function (it used to leave a shared wrapper at one of
    its paths, or the declarations inside peft's wrappers, and ``tying.verify`` reported the
    merged model broken).

    Args:
        peft_model: a ``PeftModel`` from :func:`get_peft_model`.
        **kwargs: passed to peft's ``merge_and_unload``.

    Returns:
        The base model with the deltas merged; its ties are as before the
        adapters (``tying.verify`` passes) and its outputs equal the adapter
        model's (to float rounding).

    Raises:
        TieError: when an adapter sits on a tied weight in a way one merge cannot
            serve (e.g. plain ``peft.get_peft_model`` on a tied ``lm_head``),
            naming the tie, before anything is merged.

    Example:
        >>> import torch, tying, peft
        >>> from tying.interop.lora import get_peft_model, merge_and_unload
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> pm = get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
        >>> x = torch.randn(3, 8)
        >>> with torch.no_grad():
        ...     y = pm(x)
        >>> merged = merge_and_unload(pm)
        >>> torch.allclose(merged(x), y, atol=1e-5), merged[2].weight is merged[0].weight
        (True, True)
    """
    return _unload(peft_model, "merge_and_unload", kwargs)


def unload(peft_model) -> nn.Module:
    """Take every adapter off, unmerged, and give back the tied base model.

    Plain peft's ``unload()`` on a model from :func:`get_peft_model` took the
    shared wrapper off one path only: the other tied path kept it and still
    added the delta (a stack of two tied embeddings: outputs 6.9 away from the
    base model's, no error; only ``tying.verify`` named it). Stop 26 review.

    Args:
        peft_model: a ``PeftModel`` from :func:`get_peft_model` (or
            :func:`from_pretrained`).

    Returns:
        The base model without the adapters: its weights, ties and outputs as
        before :func:`get_peft_model` (``tying.verify`` passes).

    Raises:
        TieError: when an adapter sits on a tied weight in a way the shared
            wrappers do not explain (plain peft on a tied weight), naming the tie.

    Example:
        >>> import torch, tying, peft
        >>> from tying.interop.lora import get_peft_model, unload
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> x = torch.randn(3, 8)
        >>> with torch.no_grad():
        ...     y = m(x)
        >>> pm = get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
        >>> base = unload(pm)
        >>> torch.equal(base(x), y), base[2].weight is base[0].weight
        (True, True)
    """
    return _unload(peft_model, "unload", {})


def _unload(peft_model, how: str, kwargs, args=()) -> nn.Module:
    """peft's ``merge_and_unload`` / ``unload``, then every shared wrapper's paths put back."""
    from tying.core.verify import verify

    if is_prompt_learning(peft_model):
        peft_type = peft_model.peft_config[peft_model.active_adapter].peft_type
        kind = getattr(peft_type, "value", peft_type)
        raise TypeError(
            f"{how}: the active adapter {peft_model.active_adapter!r} is {kind}, a prompt-"
            f"learning method: it adds virtual tokens and changes no weight of the model, so "
            f"there is nothing to {'merge' if how == 'merge_and_unload' else 'unload'} (peft "
            f"has no {how} for it either); pm.get_base_model() is the base model, ties as before"
        )
    verify(peft_model)  # refuses an adapter on a tied weight, naming the tie
    originals = peft_model.__dict__.get(SHARED_ATTR, {})
    base_inv = Inventory(peft_model.base_model.model)
    sources, src_layers = {}, {}
    for path in originals:
        wrapper = base_inv.modules[path]
        sources[path] = next(
            p for p, m in base_inv.modules.items() if m is wrapper and p not in originals
        )
        # the module the tied path's declarations read (a seated module is its own source);
        # not wrapper.get_base_layer(): after pm.merge_adapter() LNTuning's is the tuned copy
        slot = next(iter(slots_of(originals[path]).values()), None)
        src_layers[path] = slot.source_module if slot is not None else originals[path]
    # the paths of every adapter wrapper's parameters and buffers: gone after the merge
    inside = {
        f"{p}.{n}"
        for p, mod in base_inv.modules.items()
        if is_adapter(mod)
        for n, _ in [*mod.named_parameters(), *mod.named_buffers()]
    }
    # the tuner class's own method: the attributes of that name are this module's (_Unloading)
    tuner = peft_model.base_model
    merged = getattr(type(tuner), how)(tuner, *args, **kwargs)
    peft_model.__dict__.pop(SHARED_ATTR, None)
    restore_declarations(peft_model)  # each copied module is back at its path
    for path, original in originals.items():
        src = sources[path]
        at_src = merged.get_submodule(src)
        if is_adapter(at_src):  # peft replaced the wrapper under one path only
            at_src = at_src.get_base_layer()
        if at_src is not src_layers[path]:
            # LNTuning's merge swaps the tuned copy in for the base layer: the tied paths'
            # declarations read the source module they were made on, so it takes the merged
            # values and goes back to its path (it was refused as "ties broken" after merging)
            _take_values(src_layers[path], at_src, src)
            at_src = src_layers[path]
        set_module(merged, src, at_src)
        set_module(merged, path, original)
    _forget_adapter_hand_ties(merged, inside)
    verify(merged)
    return merged


def _take_values(layer: nn.Module, merged: nn.Module, path: str) -> None:
    """Copy the values of ``merged`` (what peft's merge put at ``path``) into ``layer``, the
    source module the ties were declared on."""
    import torch

    ours, theirs = layer.state_dict(), merged.state_dict()
    if type(layer) is not type(merged) or {k: v.shape for k, v in ours.items()} != {
        k: v.shape for k, v in theirs.items()
    }:  # pragma: no cover - no peft method does this today
        raise TieError(
            f"merge_and_unload: peft's merge put a {type(merged).__name__} with other "
            f"parameters at the tie source {path!r} (was {type(layer).__name__}); the modules "
            f"tied whole to it cannot follow; unload() the adapter instead"
        )
    with torch.no_grad():
        for key, value in theirs.items():
            ours[key].copy_(value)


def _forget_adapter_hand_ties(model: nn.Module, inside: set[str] = frozenset()) -> None:
    """Drop the declared hand ties that ran through adapter internals (``base_layer``,
    ``lora_*``, or any path in ``inside``: the parameters of every adapter wrapper before
    the merge, so IA3's ``ia3_l``, LoHa's ``hada_*`` too): a plan applied while shared
    adapters were in place (stop 30 review:
    ``tying.hf.resize_token_embeddings`` re-applies the plan) declared the shared
    wrapper's parameters at each of its paths as hand ties, and once the adapters are
    merged those paths are gone, so ``merge_and_unload`` merged correctly and then raised
    "declared ties broken"."""
    from tying.core.plan import DECLARED_ATTR

    def inside_adapter(path: str | None) -> bool:
        return bool(path) and (
            path in inside
            or any(part == "base_layer" or part.startswith("lora_") for part in path.split("."))
        )

    for _, mod in model.named_modules():
        declared = mod.__dict__.get(DECLARED_ATTR)
        if not declared:
            continue
        for target, spec in list(declared.items()):
            if spec.get("hand") and (inside_adapter(target) or inside_adapter(spec.get("like"))):
                del declared[target]
