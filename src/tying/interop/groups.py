"""Which ties can share one wrapped module: whole-module ``Same`` ties.

Tools that replace modules (quantizers, adapters) can keep a tie right only
when the tied module can become the very same object as its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from tying.core.inventory import Inventory, join
from tying.core.relations import Same
from tying.core.slots import base_class


def whole_module_ties(inv: Inventory) -> dict[str, str]:
    """``{tied module path: source module path}`` for modules tied whole with ``Same``.

    A module is tied whole when every parameter it reads is tied, with ``Same``
    and no storage of its own, to the same-named parameter of one source module
    of the same class (which is itself untied). Such a pair can share one
    wrapped or quantized module object; any other tie cannot.

    Example:
        >>> import torch, tying
        >>> from tying.core.inventory import Inventory
        >>> from tying.interop.groups import whole_module_ties
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3),
        ...                          "c": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a"), tying.share("c.weight", like="a.weight")]).apply(m)
        >>> whole_module_ties(Inventory(m))
        {'b': 'a'}
    """
    by_module: dict[str, list] = {}  # module path -> its slots, grouped once (not per module)
    for i in inv.slots.values():
        by_module.setdefault(i.module_path, []).append(i)
    out = {}
    for mpath, mod in inv.modules.items():
        own = by_module.get(mpath, [])
        if not own or not all(i.is_tied for i in own):
            continue
        sources = {
            i.source.rsplit(".", 1)[0] if i.source and "." in i.source else None for i in own
        }
        if len(sources) != 1 or None in sources:
            continue
        src = sources.pop()
        src_mod = inv.modules.get(src)
        if src_mod is None or base_class(src_mod) is not base_class(mod):
            continue
        src_own = {i.name for i in by_module.get(src, [])}
        if all(
            type(i.tie.relation) is Same
            and not i.tie.storage
            and i.source == join(src, i.name)
            and not inv.slots[i.source].is_tied
            for i in own
        ) and src_own == {i.name for i in own}:
            out[mpath] = src
    return out


def hand_ties_touching(
    inv: Inventory, selected: set[str]
) -> Iterator[tuple[str, str, Any, Any, str]]:
    """Each hand-made tie (one ``nn.Parameter`` in two modules) with a module in ``selected``.

    Yields ``(target, source, target slot, source slot, path)``, ``path`` the first of
    the two modules in ``selected``. One module object reached under two paths is no
    such tie: it is skipped (the callers handle it).
    """
    for target, source in inv.hand.items():
        t, s = inv.slots[target], inv.slots[source]
        if t.module is s.module:
            continue
        touched = [p for p in (t.module_path, s.module_path) if p in selected]
        if touched:
            yield target, source, t, s, touched[0]


def hand_tie_fix(target: str, t_mod: nn.Module, s_mod: nn.Module, t_path: str, s_path: str) -> str:
    """The way out of a hand-made tie ``target`` (in ``t_mod``) that a tool refuses.

    Two modules of one class with the same parameters can be declared a tie of whole
    modules (one wrapper or quantized module then serves both); any other pair cannot
    (HF's ``lm_head`` <- ``embed_tokens``: a ``Linear`` and an ``Embedding``), so the only
    way to change one of them is to give it its own copy.

    Example:
        >>> import torch
        >>> from tying.interop.groups import hand_tie_fix
        >>> emb, head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
        >>> hand_tie_fix("head.weight", head, emb, "head", "emb")[:48]
        "'head' (Linear) and 'emb' (Embedding) cannot be "
    """

    def params(m: nn.Module) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape) for n, p in m.named_parameters()}

    free = f"tying.Plan([tying.free({target!r})]).apply(model)"
    if base_class(t_mod) is base_class(s_mod) and params(t_mod) == params(s_mod):
        return (
            f"declare it as a tie of whole modules ({free}, then tying.Plan([tying.share("
            f"{t_path!r}, like={s_path!r})]).apply(model))"
        )
    return (
        f"{t_path!r} ({base_class(t_mod).__name__}) and {s_path!r} "
        f"({base_class(s_mod).__name__}) cannot be one module, so no tie of whole modules "
        f"can serve both; give {target!r} its own copy ({free}; for HF's own tie also set "
        f"model.config.tie_word_embeddings = False, or HF ties it again)"
    )


_HOOKS = {
    "_forward_pre_hooks": "forward pre-hooks",
    "_forward_hooks": "forward hooks",
    "_backward_pre_hooks": "backward pre-hooks",
    "_backward_hooks": "backward hooks",
}


def refuse_other_hooks(what: str, path: str, source: str, tied: nn.Module, src: nn.Module) -> None:
    """Refuse to make ``tied`` the very same object as ``src`` when their hooks differ.

    A tool that seats one module at both paths (a quantized module, a shared adapter)
    runs one set of hooks at both uses: a forward hook on the tied module was dropped,
    one on the source ran at both uses (outputs 0.19-0.41 away from the untied model
    quantized by torch.ao or wrapped by peft, no error; stop 35 review).
    The same hooks (one callable registered on both) are fine.

    Raises:
        TieError: naming both paths, the kind of hook, and the way out.

    Example:
        >>> import torch
        >>> from tying.interop.groups import refuse_other_hooks
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> refuse_other_hooks("quantize_dynamic", "b", "a", b, a)  # no hooks: fine
        >>> _ = b.register_forward_hook(lambda mod, args, out: 2 * out)
        >>> refuse_other_hooks("quantize_dynamic", "b", "a", b, a)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: quantize_dynamic: 'b' is tied whole to 'a' ...
    """
    from tying.core.errors import TieError

    for attr, kind in _HOOKS.items():
        mine, theirs = list(getattr(tied, attr).values()), list(getattr(src, attr).values())
        if mine != theirs:
            raise TieError(
                f"{what}: {path!r} is tied whole to {source!r} and would become the very same "
                f"module, but they carry different {kind} ({len(mine)} on {path!r}, "
                f"{len(theirs)} on {source!r}): one module cannot run the hooks of {path!r} at "
                f"one use and those of {source!r} at the other (the tied use's would be "
                f"dropped, the source's would run at both). Remove them first (the handle's .remove()), "
                f"then register them on the result, where they run at every use; or untie "
                f"{path!r} (tying.Plan([tying.free({path!r})]).apply(model))"
            )


def set_module(model: nn.Module, path: str, value: nn.Module) -> None:
    """Put ``value`` at module path ``path`` of ``model`` (how the tools here re-seat a tie).

    Example:
        >>> import torch
        >>> from tying.interop.groups import set_module
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> set_module(m, "0", torch.nn.Identity()); type(m[0]).__name__
        'Identity'
    """
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, value)


_SETTINGS = (type(None), bool, int, float, str, tuple)


def refuse_other_settings(
    what: str,
    path: str,
    source: str,
    tied: nn.Module,
    src: nn.Module,
    ignore: frozenset[str] = frozenset(),
) -> None:
    """Refuse to make ``tied`` the very same object as ``src`` when their settings differ.

    A tie of whole modules shares the parameters, not the settings that say how they are
    read (``batch_first``, ``dropout`` of an ``nn.LSTM``). A tool that seats one module at both paths runs the source's
    settings at both uses: an ``LSTM(batch_first=True)`` tied whole to an
    ``LSTM(batch_first=False)`` came back from ``quantize_dynamic`` as the source's
    quantized module, reading its input's batch dimension as time, with no error (stop 42).

    Args:
        ignore: settings the tool's module does not read (the caller says why).

    Raises:
        TieError: naming both paths, each differing setting with both values, and the way out.

    Example:
        >>> import torch
        >>> from tying.interop.groups import refuse_other_settings
        >>> a, b = torch.nn.LSTM(4, 4), torch.nn.LSTM(4, 4)
        >>> refuse_other_settings("quantize_dynamic", "b", "a", b, a)  # same settings: fine
        >>> b.batch_first = True
        >>> refuse_other_settings("quantize_dynamic", "b", "a", b, a)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: quantize_dynamic: 'b' is tied whole to 'a' ...
    """
    from tying.core.errors import TieError

    def settings(m: nn.Module) -> dict[str, Any]:
        return {
            k: v
            for k, v in vars(m).items()
            if not k.startswith("_")
            and k != "training"
            and k not in ignore
            and isinstance(v, _SETTINGS)
        }

    mine, theirs = settings(tied), settings(src)
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        both = ", ".join(f"{k}: {mine.get(k)!r} vs {theirs.get(k)!r}" for k in differ)
        raise TieError(
            f"{what}: {path!r} is tied whole to {source!r} and would become the very same "
            f"module, but their settings differ ({both}; {path!r} vs {source!r}): one module "
            f"would read both uses with the settings of {source!r}. Give them the same settings, "
            f"exclude both, or untie {path!r} (tying.Plan([tying.free({path!r})]).apply(model))"
        )
