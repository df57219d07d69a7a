"""Checking, listing and removing ties: ``verify``, ``ties``, ``retie``, ``untie``."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from tying.core import declared_roots, param_order, stale
from tying.core.errors import TieError
from tying.core.inventory import REPLACED_SOURCE_FIX, Inventory, join
from tying.core.outside import (
    ORIG,
    adapter_wrapper,
    canonical,
    canonical_index,
    check_not_wrapped,
    declared_through_adapters,
    saved_copy_problems,
)
from tying.core.plan import DECLARED_ATTR, ApplyReport, Plan, _contiguous_copy
from tying.core.relations import Relation, Same, relation_from_spec
from tying.core.reparametrized import removed_source
from tying.core.sharded_check import same_values
from tying.core.slots import (
    SLOTS_ATTR,
    SLOTS_GENERATION_ATTR,
    check_writes,
    slots_of,
    uninstall,
)


@dataclasses.dataclass(frozen=True)
class TieInfo:
    """One tie in a model: ``target`` reads ``source`` (None: its own storage; ``""``: a
    module outside the model given, see :func:`verify`) via ``relation``.

    ``hand`` is True for a hand-made tie: ``target`` registers the very
    ``nn.Parameter`` of ``source`` (``lm_head.weight = embed.weight``, Hugging
    Face's ``tie_word_embeddings``); its relation is always :class:`~tying.Same`.

    ``shape`` and ``dtype`` are the target's logical shape and the dtype of the tensor
    it is computed from (None when not known): ``tying.save`` records them, because a
    relation such as ``Mirrored`` or ``Hashed`` serves slots of several shapes from one
    source shape. They take no part in comparisons.
    """

    target: str
    source: str | None
    relation: Relation
    hand: bool = False
    shape: tuple[int, ...] | None = dataclasses.field(default=None, compare=False)
    dtype: torch.dtype | None = dataclasses.field(default=None, compare=False)

    def __repr__(self) -> str:
        hand = ", hand=True" if self.hand else ""
        return (
            f"TieInfo(target={self.target!r}, source={self.source!r}, "
            f"relation={self.relation!r}{hand})"
        )


def ties(model: nn.Module) -> list[TieInfo]:
    """Every tied slot of ``model``, in module order, hand-made ties included.

    Args:
        model: any module.

    Returns:
        One :class:`TieInfo` per tied slot.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
        >>> tying.ties(m)
        [TieInfo(target='b.weight', source='a.weight', relation=Same())]
        >>> m["b"].bias = m["a"].bias                  # a hand-made tie is a tie too
        >>> [t for t in tying.ties(m) if t.hand]
        [TieInfo(target='b.bias', source='a.bias', relation=Same(), hand=True)]
    """
    inv = Inventory(model)
    out = []
    for path, info in inv.slots.items():
        if info.tie is not None:
            own = "source" in info.tie.storage
            try:
                dtype = inv.tensor(inv.root_of(path)).dtype
            except (TieError, KeyError):  # a source outside the model: save names it
                dtype = None
            source = None if own else info.source
            out.append(TieInfo(path, source, info.tie.relation, shape=info.shape, dtype=dtype))
        elif path in inv.hand:
            out.append(TieInfo(path, inv.hand[path], Same(), hand=True))
    return out


def verify(model: nn.Module) -> int:
    """Check by identity that every declared tie of ``model`` still holds.

    Use it after anything that may rebuild parameters or modules: loading,
    adapters (LoRA), quantization, sharding. A tie holds when the target slot is
    served from the declared source module and name with the declared relation
    (for ``Same``: ``target is source``) and no stray parameter shadows it.
    Hand-made ties (one ``nn.Parameter`` under two paths) are checked too: every
    one found holds by identity and counts; one that a plan or :func:`tying.load`
    saw and that no longer holds (``lm_head.weight`` replaced by a new Parameter)
    is reported broken. So is a hand tie whose use peft's ``modules_to_save`` replaced
    by a trained copy (HF's tied ``lm_head`` under plain ``peft.get_peft_model``): the
    unused original still holds the Parameter, the forward reads the copy.

    Args:
        model: a model a plan was applied to (or any parent of it).

    Returns:
        The number of ties verified.

    Raises:
        TieError: listing every broken tie and the fix; naming a tie whose source lies
            outside ``model`` (a part of the model the plan was applied to: verify that
            model instead); or naming a computed slot
            (a relation's view) written to since it was last read, whose write was
            lost (``nn.init.normal_(dec.weight)``, ``dec.weight.data.fill_(0)``).

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> tying.verify(m)
        2
        >>> m["b"] = torch.nn.Linear(3, 3)          # e.g. an adapter swapped the module
        >>> tying.verify(m)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: 2 declared tie(s) broken: ...
    """
    check_writes(model)  # before any read below replaces what the slots handed out
    inv = Inventory(model)
    broken: list[str] = []
    checked: set[str] = set()
    index: dict[str, str] | None = None

    def here(path: str | None) -> str | None:
        # a declaration made before a wrapper renamed the path (apply_activation_
        # checkpointing: "2.weight" is now "2._checkpoint_wrapped_module.weight") or after
        # one: "no such parameter" before stop 36
        nonlocal index
        if path is None or path in inv.slots:
            return path
        if index is None:
            index = canonical_index(inv.slots, "tying.verify")
        return index.get(canonical(path), path)

    moved = _moved(model, inv)
    for tpath, source, spec in _declarations(model, inv, "verify"):
        tpath, source = here(tpath), here(source)
        checked.add(tpath)
        if tpath in moved:
            broken.append(_moved_note(tpath, moved[tpath]))
            continue
        relation = relation_from_spec(spec["relation"])
        adapted = declared_through_adapters(inv, tpath, source)  # peft wrappers (base_layer)
        if adapted is not None:  # "": one adapter serves both ends, the tie holds
            if adapted:
                broken.append(adapted)
            continue
        info = inv.slots.get(tpath)
        if info is None and spec.get("hand") and _one_module_seated(inv, tpath, source):
            continue  # torch's quantize_dynamic of a module seated twice: one module (stop 39)
        if info is None:
            broken.append(f"{tpath}: no such parameter any more")
        elif spec.get("hand"):
            if not _same_object(inv, tpath, source):
                broken.append(
                    f"{tpath}: is no longer the same nn.Parameter as {source} (a hand-made "
                    f"tie: something assigned a new Parameter to one end)"
                )
        elif info.tie is None:
            broken.append(
                f"{tpath}: is an independent parameter, expected tied to {source or 'its own storage'}"
            )
        elif info.tie.relation != relation:
            broken.append(f"{tpath}: relation is {info.tie.relation!r}, declared {relation!r}")
        elif (
            source is not None and info.source != source and not _aliases(inv, info.source, source)
        ):
            broken.append(
                f"{tpath}: reads {info.source or '<a module outside the model>'}, declared {source}"
            )
        elif source is not None and source not in inv.slots and _gone(info.tie):
            # stop 55: a source deleted from its module (del pd["x"]) under a relation tie
            # was counted as holding; under Same verify failed with a bare AttributeError
            broken.append(f"{tpath}: reads {source}, which is no parameter of the model any more")
        elif source is not None and type(relation) is Same:
            got = getattr(info.module, info.name)
            want = getattr(inv.slots[source].module, inv.slots[source].name)
            # a source that is itself a computed view is a new tensor at every read
            if isinstance(want, nn.Parameter) and got is not want:
                broken.append(f"{tpath}: is not the same tensor object as {source}")
    # A part of a tied model (tying.verify(model.decoder)) holds slots whose declaration
    # and source lie above it: it returned 0 ("nothing to check") without a word (stop 36)
    outside = [
        inv.outside(path, "verify")
        for path, info in inv.slots.items()
        if info.tie is not None and info.source == "" and path not in checked
    ]
    if outside:
        raise TieError("; ".join(outside))
    # A new container of a tied model's modules (model[0:3], nn.Sequential(*list(model)[:2]))
    # is no part of the module the plan was applied to, so no declaration names its ties:
    # verify returned 0 ("nothing to check") while tying.ties listed them (stop 37). A tie
    # read live with its source inside holds by construction (its last write was checked
    # above, its source's shape at every read): counted.
    live = {
        path
        for path, info in inv.slots.items()
        if info.tie is not None and info.source != "" and path not in checked
    }
    broken += _hand_tie_problems(inv, checked)
    copied = saved_copy_problems(inv)  # a tied head peft's modules_to_save copied (stop 39)
    if broken or copied:
        # retie cannot re-tie peft's copy (it would tie the unused original): say so
        fix = ". Re-create them with tying.retie(model) (or re-apply your plan)." if broken else "."
        if any(info.tie is not None and info.source == "" for info in inv.slots.values()):
            fix = f"; {REPLACED_SOURCE_FIX}."  # retie refuses such a tie (stop 49)
        # a remover on a tie's source: retie and that fix are refused too (stop 62)
        ties = (i for i in inv.slots.values() if i.tie is not None) if broken else ()
        removed = next(filter(None, (removed_source(i.tie, i.module) for i in ties)), None)
        if removed is not None:
            fix = f"; {removed}."
        raise TieError(
            f"{len(broken) + len(copied)} declared tie(s) broken: "
            + "; ".join(broken + copied)
            + fix
        )
    return len(checked | set(inv.hand) | live)


def _gone(slot) -> bool:
    """Whether a slot's source was deleted from its module (not re-parametrised: then
    parametrize's property or the old weight_norm's plain attribute serves the name, and
    the read names that)."""
    mod, name = slot.source_module, slot.source_name
    return (
        name not in mod._parameters
        and name not in mod.__dict__
        and not isinstance(getattr(type(mod), name, None), property)
    )


def dropped_ties(model: nn.Module, inv: Inventory) -> list[str]:
    """Ties a plan declared on ``model`` whose target is now an independent parameter.

    ``model.lm_head = nn.Linear(...)`` after a plan tied ``lm_head.weight`` puts a module
    without the tie at its path: plain PyTorch drops a hand tie the same way, and the
    forward reads the new weight. ``verify`` reports it; ``tying.save`` refuses it (stop
    50: the file held the head as its own tensor, and a load into the tied model refused
    it or a load into a fresh one dropped the tie, without a word at save time).
    A module that only moved, an adapter wrapping the target, and a declared hand tie
    (checked by identity in ``verify``) are not counted.
    """
    moved = _moved(model, inv)
    out = []
    for tpath, source, spec in _declarations(model, inv):
        if spec.get("hand") or tpath in moved:
            continue
        info = inv.slots.get(tpath)
        if info is None or info.tie is not None:
            continue
        if declared_through_adapters(inv, tpath, source) is not None:
            continue
        out.append(f"{tpath} (declared tied to {source or 'its own storage'})")
    return out


def _declarations(
    model: nn.Module, inv: Inventory, refuse_outside: str = "", ancestors: dict | None = None
):
    """``(target, source, spec)`` of every tie declared for slots of ``model``, paths
    relative to ``model``: those declared on ``model`` and its modules, then those a plan
    applied to a module above it declared for slots inside it (``tying.verify(part)`` and,
    after ``tying.load(torch.compile(model), path)``, ``tying.verify(model)`` returned 0
    for them, as if there were nothing to check; stop 36). The modules above are found
    through each tied slot's links to the module the plan was applied to, and through
    :mod:`tying.core.declared_roots`; a tie whose source lies outside ``model`` is left to
    the caller, which names it, or, once its slot was replaced, refused here by name when
    ``refuse_outside`` names the call (stop 59)."""
    given = set()  # a slot declared here and by a plan above: listed once, as declared here
    for prefix, mod in model.named_modules():
        if mod.__dict__.get(DECLARED_ATTR):  # a copy or unpickled model: never applied to
            declared_roots.remember(mod)
        for target, spec in mod.__dict__.get(DECLARED_ATTR, {}).items():
            source = None if spec["like"] is None else join(prefix, spec["like"])
            given.add(canonical(join(prefix, target)))
            yield join(prefix, target), source, spec
    inside = {id(m) for m in model.modules()}
    roots: dict[int, nn.Module] = {}
    for info in inv.slots.values():
        if info.tie is not None and info.tie.anchor is not None and info.source:
            root = info.tie._links()[0][0]
            if id(root) not in inside:
                roots.setdefault(id(root), root)
    if ancestors is None:
        ancestors = _declaring_ancestors(model)
    for key, up in ancestors.items():  # those no tied slot leads to
        roots.setdefault(key, up)
    # a plan applied to ``model.dec`` and another to ``model`` make two roots above
    # ``model.dec.x``, one inside the other: each module's declarations are read once (the
    # outer root's walk reached ``dec`` too, and Plan.declared listed its ties twice)
    walked = set(inside)
    for root in roots.values():
        where = next((p for p, m in root.named_modules() if m is model), None)
        if where is None:
            continue
        cut = canonical(where)

        def rel(path: str | None, cut: str = cut) -> str | None:
            # the path below ``model``, or None when it lies outside it
            c = canonical(path)
            if not cut:
                return c
            return c[len(cut) + 1 :] if c.startswith(cut + ".") else None

        for prefix, mod in root.named_modules():
            if id(mod) in walked:
                continue  # declared on model or below it (yielded above), or read already
            walked.add(id(mod))
            for target, spec in mod.__dict__.get(DECLARED_ATTR, {}).items():
                tpath = rel(join(prefix, target))
                source = None if spec["like"] is None else rel(join(prefix, spec["like"]))
                held = inv.slots.get(tpath)  # still tied: refused by the caller, by name
                if (
                    refuse_outside
                    and tpath
                    and spec["like"] is not None
                    and not source
                    and not spec.get("hand")  # one Parameter at both paths: nothing to re-make
                    and (held is None or held.tie is None)
                ):
                    # a tied slot there is refused by name (Inventory.outside); once it was
                    # replaced its declaration was skipped: Plan.declared/retie/verify of
                    # the part passed over a broken tie (stop 59)
                    like = canonical(join(prefix, spec["like"]))
                    raise TieError(
                        f"{tpath} is declared tied to {like} (via "
                        f"{relation_from_spec(spec['relation'])!r}) by the plan applied to the "
                        f"{type(root).__name__} above it; {like} lies outside the module "
                        f"given to tying.{refuse_outside}: a tie is counted, checked, saved "
                        f"and untied in the model the plan was applied to; pass that model "
                        f"(or a parent of it) instead"
                    )
                if tpath and (spec["like"] is None or source) and tpath not in given:
                    given.add(tpath)
                    yield tpath, source, spec


def _declaring_ancestors(model: nn.Module) -> dict[int, nn.Module]:
    """The modules above ``model`` that a plan was applied to, nearest first (see
    :mod:`tying.core.declared_roots`), not only those its tied slots link to: once every
    tied slot of a part was replaced (``model.dec[2] = nn.Linear(...)``), no slot led to
    the plan above it, so ``tying.verify(model.dec)`` returned 0 while
    ``tying.verify(model)`` named the broken tie, and ``tying.retie(model.dec)``
    re-created nothing, silently (stop 59)."""
    return {id(up): up for up in declared_roots.holding(model)}


def own_declarations(model: nn.Module) -> list[tuple[str, str | None, dict]]:
    """``(target, like, spec)`` of the ties declared by plans applied to ``model`` or to its
    modules, paths relative to ``model``; not those a plan over a model containing it
    declared (:func:`declarations_for_plan` adds those). A caller that can free and re-make
    only the ties declared here (``tying.hf.resize_token_embeddings`` of a part) reads
    these."""
    return [
        (join(prefix, target), None if spec["like"] is None else join(prefix, spec["like"]), spec)
        for prefix, mod in model.named_modules()
        for target, spec in mod.__dict__.get(DECLARED_ATTR, {}).items()
    ]


def declarations_for_plan(model: nn.Module) -> list[tuple[str, str | None, dict]]:
    """``(target, like, spec)`` of every tie of ``model``'s slots, for :meth:`Plan.declared`.

    Those declared on ``model`` and its modules, then those a plan applied to a module
    above it declared for slots inside it, paths relative to ``model``. Stop 58:
    ``Plan.declared(model.decoder)`` after a plan over the whole model returned
    ``Plan([])`` for a decoder whose ties ``tying.ties`` and ``tying.verify`` listed, so
    the plan re-created nothing on a fresh decoder, silently. A tie whose source lies
    outside ``model`` cannot be written relative to it: refused, naming it.

    Raises:
        TieError: a tie of a slot inside ``model`` reads a module outside it.
    """
    own = own_declarations(model)
    inside = {id(m) for m in model.modules()}
    declared = {target for target, _, _ in own}
    ancestors = _declaring_ancestors(model)  # walks every recorded root: once a call
    if not ancestors and all(
        join(prefix, name) in declared
        and (slot.anchor is None or id(slot._links()[0][0]) in inside)
        for prefix, mod in model.named_modules()
        for name, slot in slots_of(mod).items()
    ):
        return own  # every tie inside was declared on model or below it: no search
    inv = Inventory(model)
    for path, info in inv.slots.items():
        if info.tie is not None and info.source == "":
            raise TieError("Plan.declared: " + inv.outside(path, "Plan.declared"))
    out = list(_declarations(model, inv, "Plan.declared", ancestors))
    # A tie no declaration lists: ``copy.deepcopy(model.dec)`` rebases the copy's slots
    # onto the copy, but the declarations stay on the model the plan was applied to, so
    # Plan.declared(copy) was Plan([]) while tying.ties(copy) listed them. The slot itself
    # says what to re-create, as tying.save writes it.
    covered = {canonical(target) for target, _, _ in out}
    for path, info in inv.slots.items():
        if info.tie is not None and canonical(path) not in covered:
            like = None if "source" in info.tie.storage else info.source
            out.append((path, like, {"like": like, "relation": info.tie.relation.spec()}))
    return out


def _read(inv: Inventory, path: str):
    info = inv.slots[path]
    return getattr(info.module, info.name)


def _how_read(inv: Inventory, path: str) -> str:
    """How the module at ``path`` reads the Parameter stored there: plainly, or through
    a parametrization or a pre-hook that recomputes it (prune, old-style spectral_norm)."""
    info = inv.slots[path]
    mod = info.module
    if isinstance(mod, parametrize.ParametrizationList):
        kinds = ", ".join(type(p).__name__ for p in mod)
        return f"through the parametrization(s) {kinds} (torch.nn.utils.parametrize)"
    for hook in mod._forward_pre_hooks.values():
        name = getattr(hook, "_tensor_name", None) or getattr(hook, "name", None)
        if isinstance(name, str) and info.name in (name, name + ORIG):
            if name + ORIG in mod._parameters:
                return f"as {name}, recomputed from {name}{ORIG} by a {type(hook).__name__} hook"
    return "plainly"


def _aliases(inv, a: str | None, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one parameter of one module registered at two
    paths (T5's ``shared`` is also ``encoder.embed_tokens``): the inventory names a tie's
    source by the module's first path, a plan may name it by another, and verify right
    after apply called the tie broken (stop 38)."""
    sa, sb = inv.slots.get(a) if a else None, inv.slots.get(b)
    return sa is not None and sb is not None and sa.module is sb.module and sa.name == sb.name


def _hand_tie_problems(inv: Inventory, checked: set[str]) -> list[str]:
    """Hand ties whose uses read different values although they hold one Parameter.

    One Parameter under several paths holds by identity, unless a module reads it
    through something: ``torch.nn.utils.prune`` or an old-style ``spectral_norm`` on one
    use re-registers it as ``weight_orig`` and recomputes ``weight`` there, a
    ``parametrize`` on one use reads ``f(original)``, while the other uses read the
    Parameter itself. ``verify`` used to count such a tie as holding (stop 18).
    """
    problems = []
    for group in inv.hand_groups():
        wrappers = [adapter_wrapper(inv, p) for p in group]
        ids = {None if w is None else id(w[1]) for w in wrappers}
        if len(ids) > 1 and not _one_token_delta(wrappers):
            # a peft adapter on some uses only (one module seated twice too)
            ends = ", ".join(
                f"{p} by {'the adapter at ' + repr(w[0]) if w else 'no adapter'}"
                for p, w in zip(group, wrappers)
            )
            problems.append(
                f"{group[1]}: holds the same nn.Parameter as {group[0]} but the uses are wrapped "
                f"by different peft adapters ({ends}): a delta does not reach the other use(s), "
                f"and merging would write each into the one tensor for every use. Use "
                f"tying.interop.lora.get_peft_model (one adapter shared by a module tied whole "
                f"or seated twice)"
            )
            continue
        hows = [_how_read(inv, p) for p in group]
        first = _read(inv, group[0])
        for path, how in zip(group[1:], hows[1:]):
            if path in checked:
                continue  # a declared hand tie: checked by identity above
            if how == hows[0]:
                if how == "plainly" or how.startswith("through"):
                    continue  # the Parameter itself, or the same parametrizations of it
                if same_values(_read(inv, path), first):
                    # both ends recomputed by the same kind of hook, equal (masks); a NaN
                    # in both (a diverged model) is no broken tie (stop 41)
                    continue
            problems.append(
                f"{path}: holds the same nn.Parameter as {group[0]} but the two uses read "
                f"different values ({group[0]} reads it {hows[0]}, {path} {how}); apply the "
                f"same to every use or to none, or undo it and declare the tie "
                f"(tying.Plan([tying.free({path!r})]) then tying.Plan([tying.share({path!r}, "
                f"like={group[0]!r})])), then prune with tying.interop.pruning.prune, which "
                f"masks every use"
            )
    return problems


def _one_token_delta(wrappers: list) -> bool:
    """Whether every use is wrapped by a peft trainable-tokens layer, all holding the same
    delta Parameters for the same rows: peft's ``trainable_token_indices`` on a tied
    embedding gives the tied head a layer that shares the embedding's deltas
    (``tied_adapter``), so every use reads the same rows, and merging (an ``index_copy``
    of those rows) writes the same values whichever layer merges. verify called it two
    adapters whose delta does not reach the other use (stop 39)."""
    mods = [None if w is None else w[1] for w in wrappers]
    deltas = [getattr(m, "trainable_tokens_delta", None) for m in mods]
    if any(not isinstance(d, nn.ParameterDict) for d in deltas):
        return False
    first, rows = dict(deltas[0]), getattr(mods[0], "token_indices", None)
    return all(
        d.keys() == first.keys()
        and all(d[k] is first[k] for k in first)
        and getattr(m, "token_indices", None) == rows
        for m, d in zip(mods[1:], deltas[1:])
    )


def _one_module_seated(inv: Inventory, a: str, b: str | None) -> bool:
    """Whether the modules owning paths ``a`` and ``b`` (same name) are one module object:
    a hand tie of a module seated twice, whose Parameter a quantizer replaced by packed
    weights in that one module (``quantize_dynamic`` of ``Sequential(inner, act, inner)``),
    still holds; verify said "no such parameter any more" and offered retie (stop 39)."""
    if b is None:
        return False
    (ma, _, na), (mb, _, nb) = a.rpartition("."), b.rpartition(".")
    one, two = inv.modules.get(ma), inv.modules.get(mb)
    return na == nb and one is not None and one is two


def _same_object(inv: Inventory, a: str, b: str | None) -> bool:
    if b is None or a not in inv.slots or b not in inv.slots:
        return False
    ia, ib = inv.slots[a], inv.slots[b]
    return getattr(ia.module, ia.name) is getattr(ib.module, ib.name)


def retie(model: nn.Module) -> ApplyReport:
    """Re-apply every tie declared on ``model``: the repair after modules were replaced.

    Returns:
        The :class:`~tying.core.plan.ApplyReport` of the re-application.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> m["b"] = torch.nn.Linear(3, 3)
        >>> len(tying.retie(m).tied), tying.verify(m)
        (2, 2)
    """
    inv = Inventory(model)
    moved = _moved(model, inv)
    moved.update(_moved_under_outer(model, inv))
    if moved:
        # stop 37: after model.insert(2, layer) the declaration of 2.weight named the new
        # layer, and retie tied it (its own weights dropped, no error) while the moved
        # layer at 3 stayed tied as well
        raise TieError(
            "retie: "
            + "; ".join(_moved_note(t, live) for t, live in moved.items())
            + ". retie re-applies ties by path, so it would tie whatever sits at the old "
            "path now; nothing was changed"
        )
    return Plan.declared(model).apply(model)


def _moved_under_outer(model: nn.Module, inv: Inventory) -> dict[str, str]:
    """:func:`_moved` of the plans applied to a model containing ``model``, paths relative
    to ``model``: ``Plan.declared(part)`` lists an outer plan's ties (stop 58), so
    ``retie(part)`` after ``part.insert(2, layer)`` tied the new layer (its weights
    dropped, no error) while ``retie(model)`` refused."""
    roots = {}
    for info in inv.slots.values():
        slot = info.tie
        if slot is not None and slot.anchor is not None:
            root = slot._links()[0][0]
            if root is not model:
                roots[id(root)] = root
    out: dict[str, str] = {}
    for root in roots.values():
        rinv = Inventory(root)
        cut = rinv.path_of(model)
        if cut is None:
            continue
        for target, live in _moved(root, rinv).items():
            t, lv = canonical(target), canonical(live)
            if cut and not t.startswith(cut + "."):
                continue  # a declaration of a slot outside model: retie(model) leaves it
            inside = not cut or lv.startswith(cut + ".")
            out[t[len(cut) + 1 :] if cut else t] = lv[len(cut) + 1 :] if inside else lv
    return out


def _moved(model: nn.Module, inv: Inventory) -> dict[str, str]:
    """``{declared target: the path its tie now sits at}`` for ties declared on ``model``
    whose tied module moved to another path (``nn.Sequential.insert``/``del``, a
    re-ordered ``ModuleList``, a renamed ``ModuleDict`` key): the declaration (by path)
    names whatever sits at the old path now, while the tie still holds at the new one.

    A slot records the path of its module (relative to the module the plan was applied
    to) when it is tied; only slots whose plan was applied to ``model`` itself are
    compared (a slot without links to a root is compared when ``model`` declares its
    recorded path with its relation).
    """
    declared = model.__dict__.get(DECLARED_ATTR) or {}
    if not declared:
        return {}
    now: dict[str, str] = {}  # recorded path -> live path, for slots that moved
    for path, info in inv.slots.items():
        slot = info.tie
        if slot is None:
            continue
        recorded = canonical(join(slot.paths[0], info.name))
        if recorded == canonical(path):
            continue
        spec = declared.get(recorded)
        if spec is None or spec.get("hand"):
            continue
        if slot.anchor is not None:
            if slot._links()[0][0] is not model:
                continue
        elif relation_from_spec(spec["relation"]) != slot.relation:
            continue
        now.setdefault(recorded, path)
    moved = {}
    for target in declared:
        live = now.get(canonical(target))
        if live is None:
            continue
        info = inv.slots.get(target)
        here = None
        if info is not None and info.tie is not None:
            here = canonical(join(info.tie.paths[0], info.name))
        if here != canonical(target):  # the slot at the declared path is not the declared one
            moved[target] = live
    return moved


def _moved_note(target: str, live: str) -> str:
    return (
        f"{target}: its tie now sits at {live} (the tied module moved to another path, e.g. "
        f"nn.Sequential.insert/del or a re-ordered ModuleList, so the declaration names "
        f"whatever sits at {target} now); put the module back at its path, or untie "
        f"(tying.untie(model)) and apply a plan written for the new paths; do not "
        f"tying.retie(model), which would tie {target} instead"
    )


_UNTIE_ATTRS = (SLOTS_ATTR, SLOTS_GENERATION_ATTR, DECLARED_ATTR)  # what untie changes


def untie(model: nn.Module) -> int:
    """Give every tied slot of ``model`` its own independent copy of its current value.

    Hand-made ties (one ``nn.Parameter`` object in several modules) are broken too,
    and declared ties are forgotten.

    Returns:
        The number of slots that got their own tensor.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> tying.untie(m), m["b"].weight is m["a"].weight, torch.equal(m["b"].weight, m["a"].weight)
        (2, False, True)
    """
    inv = Inventory(model)
    todo = []
    successors = []  # (the Parameter a slot read, its own new copy, the slot's path)
    # Every copy is made before the first change, and the modules are restored on any
    # failure (stop 34: a failure part way left some slots untied and the rest tied).
    with torch.no_grad():
        for info in inv.slots.values():
            if info.tie is not None:
                root = inv.tensor(inv.root_of(info.path))
                # contiguous, as in a model built untied (stop 42: see plan._contiguous_copy)
                value = nn.Parameter(
                    _contiguous_copy(getattr(info.module, info.name), root), root.requires_grad
                )
                todo.append((info.module, info.name, value))
                successors.append((root, value, info.path))
        dropped = {
            (id(mod), s) for mod, name, _ in todo for s in slots_of(mod)[name].storage.values()
        }
        seen: set[int] = set()
        copies = []  # (module, name, copy): the second and later seats of one Parameter
        for prefix, mod in model.named_modules():
            for name, p in mod._parameters.items():
                if p is None or (id(mod), name) in dropped:
                    continue
                if id(p) in seen:
                    copy = nn.Parameter(p.detach().clone(), p.requires_grad)
                    copies.append((mod, name, copy))
                    successors.append((p, copy, join(prefix, name)))
                seen.add(id(p))
    if todo or copies:  # a model with no tie has nothing to untie, wrapped or not
        check_not_wrapped(model, "tying.untie")
    mods = list(model.modules())
    snapshot = [
        (
            m,
            m.__class__,
            dict(m._parameters),
            {k: m.__dict__[k] for k in _UNTIE_ATTRS if k in m.__dict__},
        )
        for m in mods
    ]
    try:
        for mod, name, value in todo:
            order = param_order.order_of(slots_of(mod)[name])
            uninstall(mod, name, value)
            param_order.seat(mod, name, order)  # where it was before the tie (stop 42)
        for mod, name, copy in copies:
            mod._parameters[name] = copy
        for mod in mods:
            mod.__dict__.pop(DECLARED_ATTR, None)
        stale.record(successors)  # optimizers built before now must not step on
    except BaseException:
        for m, cls, params, attrs in snapshot:
            m.__class__ = cls
            m._parameters.clear()
            m._parameters.update(params)
            for k in _UNTIE_ATTRS:
                m.__dict__.pop(k, None)
            m.__dict__.update(attrs)
        raise
    n = len(todo) + len(copies)
    return n
