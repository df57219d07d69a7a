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


def whole_tie_blocker(t_mod: nn.Module, s_mod: nn.Module, t_path: str, s_path: str) -> str | None:
    """Why module ``t_mod`` cannot be tied whole to ``s_mod`` without changing the model.

    Tying whole makes every parameter and buffer of ``t_mod`` read ``s_mod``'s: two
    Linears sharing their weight by hand but not their biases came out with the source's
    bias at both, outputs 0.069 off with no error, when a refusal's advice was followed
    (stop 60). Returns None when the tie keeps every value.

    Example:
        >>> import torch
        >>> from tying.interop.groups import whole_tie_blocker
        >>> a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        >>> b.weight = a.weight
        >>> whole_tie_blocker(b, a, "b", "a")[:46]
        "'b' holds other values than 'a' in b.bias (its"
        >>> b.bias = a.bias
        >>> whole_tie_blocker(b, a, "b", "a") is None
        True
    """
    if base_class(t_mod) is not base_class(s_mod):
        return (
            f"{t_path!r} ({base_class(t_mod).__name__}) and {s_path!r} "
            f"({base_class(s_mod).__name__}) cannot be one module"
        )
    mine = {**dict(t_mod.named_parameters()), **dict(t_mod.named_buffers())}
    theirs = {**dict(s_mod.named_parameters()), **dict(s_mod.named_buffers())}
    if {n: tuple(v.shape) for n, v in mine.items()} != {
        n: tuple(v.shape) for n, v in theirs.items()
    }:
        return f"{t_path!r} and {s_path!r} hold tensors of other names or shapes"
    other = [join(t_path, n) for n, v in mine.items() if not _same_values(v, theirs[n])]
    if other:
        return (
            f"{t_path!r} holds other values than {s_path!r} in {', '.join(other)} (its own "
            f"bias, say: tying them whole would replace them with those of {s_path!r}, "
            f"changing the model)"
        )
    return None


def _same_values(a, b) -> bool:
    """One tensor, or equal values (meta tensors hold none: nothing to change)."""
    if a is b or (a.is_meta and b.is_meta):
        return True
    return a.dtype == b.dtype and a.device == b.device and bool(a.detach().equal(b.detach()))


def hand_tie_fix(target: str, t_mod: nn.Module, s_mod: nn.Module, t_path: str, s_path: str) -> str:
    """The way out of a hand-made tie ``target`` (in ``t_mod``) that a tool refuses.

    Two modules of one class with the same parameters and values can be declared a tie of
    whole modules (one wrapper or quantized module then serves both); any other pair cannot
    (HF's ``lm_head`` <- ``embed_tokens``: a ``Linear`` and an ``Embedding``; two Linears
    sharing a weight but not their biases), so the only way to change one of them is to
    give it its own copy (:func:`whole_tie_blocker` says why).

    Example:
        >>> import torch
        >>> from tying.interop.groups import hand_tie_fix
        >>> emb, head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
        >>> hand_tie_fix("head.weight", head, emb, "head", "emb")[:48]
        "'head' (Linear) and 'emb' (Embedding) cannot be "
    """
    free = f"tying.Plan([tying.free({target!r})]).apply(model)"
    blocker = whole_tie_blocker(t_mod, s_mod, t_path, s_path)
    if blocker is None:
        # every tensor the two modules hold alike is freed, not the target alone: a bias
        # shared by hand too stayed a hand tie, and the share was refused (stop 60 review)
        frees = ", ".join(f"tying.free({x!r})" for x in held_alike(t_mod, s_mod, t_path, target))
        free = f"tying.Plan([{frees}]).apply(model)"
        return (
            f"declare it as a tie of whole modules ({free}, then tying.Plan([tying.share("
            f"{t_path!r}, like={s_path!r})]).apply(model))"
        )
    return (
        f"{blocker}, so no tie of whole modules can serve both; give {target!r} its own "
        f"copy ({free}; for HF's own tie also set model.config.tie_word_embeddings = False, "
        f"or HF ties it again)"
    )


def hand_group(inv: Inventory, source: str) -> list[tuple[str, str]]:
    """The hand-made ties ``(target, source)`` of the ``nn.Parameter`` at slot ``source``,
    each in a module other than the source's (one module reached under two paths holds
    it twice, but is no tie to undo)."""
    s_mod = inv.slots[source].module
    return [(t, s) for t, s in inv.hand.items() if s == source and inv.slots[t].module is not s_mod]


def tied_readers(inv: Inventory, path: str) -> list:
    """The slots tied to the tensor slot ``path`` reads (its root, chains followed)."""
    root = inv.root_of(path)
    return [i for i in inv.slots.values() if i.is_tied and inv.root_of(i.path) == root]


def hand_group_fix(
    inv: Inventory, ties: list[tuple[str, str]], targets: set[str] | None = None
) -> str:
    """The one-step way out of every hand-made tie ``ties`` of one ``nn.Parameter``.

    A tool (peft, a quantizer) refusing one tie of a Parameter held by several modules
    named one tie per try (M2M100's ``shared`` at the encoder, decoder and head). This
    names them all: one ``free`` plan, one ``share`` plan for the modules that can be tied
    whole to the source's module, the copies the rest must get, and the targets to pass.

    Args:
        inv: the model's inventory.
        ties: ``(target slot, source slot)`` pairs, one source slot for all.
        targets: the module paths the user gave peft as ``target_modules`` (the modules
            tied whole then join them); None for a tool that takes no targets.

    Returns:
        The fix text (starts ``in one step:``).

    Example:
        >>> import torch
        >>> from tying.core.inventory import Inventory
        >>> from tying.interop.groups import hand_group_fix
        >>> m = torch.nn.Sequential(*[torch.nn.Linear(3, 3, bias=False) for _ in range(3)])
        >>> m[1].weight = m[2].weight = m[0].weight
        >>> fix = hand_group_fix(Inventory(m), [("1.weight", "0.weight"), ("2.weight", "0.weight")], {"0"})
        >>> print(fix.replace("), ", "),\\n"))
        in one step: tying.Plan([tying.free('1.weight'),
        tying.free('2.weight')]).apply(model),
        then tying.Plan([tying.share('1', like='0'),
        tying.share('2', like='0')]).apply(model),
        and pass target_modules=['0', '1', '2']
    """
    source = inv.slots[ties[0][1]]
    frees, shares, copies = [], [], []
    whole = [source.module_path]
    for target, _ in ties:
        t = inv.slots[target]
        for slot in held_alike(t.module, source.module, t.module_path, target):
            if f"tying.free({slot!r})" not in frees:  # (a bias held alike too: stop 60 review)
                frees.append(f"tying.free({slot!r})")
        why = whole_tie_blocker(t.module, source.module, t.module_path, source.module_path)
        if why is None:
            shares.append(f"tying.share({t.module_path!r}, like={source.module_path!r})")
            whole.append(t.module_path)
        else:
            copies.append(why)
    text = f"in one step: tying.Plan([{', '.join(frees)}]).apply(model)"
    if shares:
        text += f", then tying.Plan([{', '.join(shares)}]).apply(model)"
    if shares and targets is not None:  # a module tied whole takes its source's adapter
        text += f", and pass target_modules={sorted(targets | set(whole))}"
    if copies:
        text += (
            f" ({'; '.join(copies)}: the free gives each such module its own copy; for HF's "
            f"own tie also set model.config.tie_word_embeddings = False, or HF ties it again)"
        )
    return text


def held_alike(t_mod: nn.Module, s_mod: nn.Module, t_path: str, target: str) -> list[str]:
    """``target`` and every other slot of ``t_mod`` holding the very ``nn.Parameter`` that
    ``s_mod`` holds under the same name (a bias shared by hand with the weight): all of
    them must be freed before ``t_mod`` can be tied whole to ``s_mod``.

    Example:
        >>> import torch
        >>> from tying.interop.groups import held_alike
        >>> a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        >>> b.weight, b.bias = a.weight, a.bias
        >>> held_alike(b, a, "b", "b.weight")
        ['b.weight', 'b.bias']
    """
    theirs = dict(s_mod.named_parameters(remove_duplicate=False))
    out = [target]
    for name, p in t_mod.named_parameters(remove_duplicate=False):
        slot = join(t_path, name)
        if theirs.get(name) is p and slot not in out:
            out.append(slot)
    return out


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
