"""What ``torch.func.functional_call`` means for a tied slot, and the prune read refused.

``functional_call(model, params, args, tie_weights=...)`` swaps the tensors named in
``params`` into the model for one call. A tied slot is not a parameter of its own: it reads
its source, so a value given for the source reaches every use of the tie. That is what
plain PyTorch does for a model tied by hand (``b.weight = a.weight``) with
``tie_weights=True`` (the default). With ``tie_weights=False`` plain PyTorch unties: the
name given is replaced alone and its tied partner keeps the model's own tensor (and gets
no gradient from the given one). A tied slot cannot keep a value of its own, so a call
with ``tie_weights=False`` that replaces a tie's source with another tensor is refused at
the slot's first read (stop 47: the slot used to read the new value silently, so outputs
and gradients differed from the same call on a hand-tied model). Given the model's own
source tensor (``dict(model.named_parameters())``), both readings agree and the call runs.
A pruned source is swapped as ``<name>_orig`` and watched as such; a copied or unpickled
model knows its own source tensor from the start (stop 49). torch's
``stateless._reparametrize_module`` used directly (a context manager whose default is
``tie_weights=False``) is held to the same rule (stop 50).

Both checks walk Python frames, so each runs only behind a cheap gate (an identity check
of the source, one frame's module name).
"""

from __future__ import annotations

import gc
import sys

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.relations import Same

__all__ = [
    "check_global_prune_read",
    "check_source_swap",
    "in_functional_swap",
    "own_seen",
    "slot_value_refusal",
]

_STATELESS = "torch.nn.utils.stateless"
_PRUNE = "torch.nn.utils.prune"
_ACCESSOR = "torch.nn.utils._named_member_accessor"


def in_functional_swap() -> bool:
    """Whether the caller's caller is torch's ``swap_tensor`` (``torch.func.functional_call``
    and ``torch.nn.utils.stateless`` swapping the model's tensors in or out)."""
    frame = sys._getframe(2)  # in_functional_swap <- _guarded_setattr <- its caller
    for _ in range(4):  # swap_tensor calls setattr(module, name, tensor) itself
        if frame is None:
            return False
        if frame.f_code.co_name == "swap_tensor" and frame.f_globals.get("__name__") == _ACCESSOR:
            return True
        frame = frame.f_back
    return False


def _functional_call_frame():
    """The frame of the innermost ``functional_call`` running now (torch's
    ``stateless._functional_call``); None outside one."""
    frame = sys._getframe(2)
    while frame is not None and not (
        frame.f_code.co_name == "_functional_call" and frame.f_globals.get("__name__") == _STATELESS
    ):
        frame = frame.f_back
    return frame


def _functional_tie_weights() -> bool | None:
    """``tie_weights`` of the innermost ``functional_call`` running now; None outside one."""
    frame = _functional_call_frame()
    return None if frame is None else bool(frame.f_locals.get("tie_weights", True))


def check_source_swap(slot, module: nn.Module, src: torch.Tensor) -> None:
    """Refuse a read of ``slot`` whose source ``functional_call(..., tie_weights=False)`` replaced.

    The slot remembers the source tensor it last read outside ``functional_call``; only
    when the source is another tensor are the frames walked. (A strong reference: a weak
    one would stop ``torch.utils.swap_tensors`` converting the source, and the tensor is
    the model's own parameter, alive anyway until it is replaced.)

    Raises:
        TieError: naming the slot, its source and relation, and the two ways out; torch's
            ``functional_call`` swaps the model's own tensors back, so the model is unchanged.

    Example:
        >>> import torch, tying
        >>> from torch.func import functional_call
        >>> m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
        >>> x, w = torch.ones(1, 3), torch.zeros(3, 3)
        >>> _ = functional_call(m, {"0.weight": w}, (x,))  # tie_weights=True: both read w
        >>> functional_call(m, {"0.weight": w}, (x,), tie_weights=False)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: torch.func.functional_call(..., tie_weights=False) ...
    """
    seen = slot._seen
    if seen is src:
        return
    smod, name = slot.source_module, slot.source_name
    if smod is module and name in slot.storage.values():
        return  # the slot's own storage (a self re-parametrisation): no partner to keep
    params, buffers = smod._parameters, smod._buffers  # a scripted source: dict-like wrappers
    held = params[name] if name in params else buffers[name] if name in buffers else None
    if held is not src:
        if held is not None or name + "_orig" not in params:
            return
        # A pruned source is computed (orig * mask): functional_call swaps what the module
        # holds, ``<name>_orig``, so that is what is watched (stop 49: a swapped
        # weight_orig under tie_weights=False reached the slot silently).
        src = held = params[name + "_orig"]
        if seen is src:
            return
    tie_weights = _functional_tie_weights()
    if tie_weights is None:
        # outside functional_call: the model's own source, unless torch's
        # _reparametrize_module, used directly as a context manager (its generator is
        # suspended, so no frame of it is on the stack), swapped it in (stop 50: a read
        # under tie_weights=False served the given value silently)
        held_by = (
            _suspended_reparametrize(src)
            if type(src) in _PLAIN
            and not _materialized(seen, src)
            and _held_elsewhere(slot, seen, module)
            else None
        )
        if held_by is None:
            slot._seen = src
            return
        tie_weights, own = held_by
        if own:
            slot._seen = src
        if tie_weights or own:
            return
        _refuse_untied_swap(slot, module, "torch.nn.utils.stateless._reparametrize_module")
    if tie_weights:  # every use reads the given source, as in plain torch
        return
    if _reading_to_swap():
        return  # a value given for the slot itself: its own refusal follows, more precise
    own = _given_in_its_own_place(src)
    if own:
        # the model's own tensor, replaced outside any call since the last read
        # (load_state_dict(assign=True), model.a.weight = nn.Parameter(...)): the record
        # was stale, and the call that gives the model's own tensors was refused (stop 49)
        slot._seen = src
        return
    if own is None and seen is None and type(src) is nn.Parameter:
        return  # torch's swap not found, never read before: a Parameter is taken as own
    _refuse_untied_swap(slot, module, "torch.func.functional_call")


#: where a module keeps its slots (``tying.core.slots.SLOTS_ATTR``; slots imports this module)
_SLOTS_ATTR = "_tying_slots"
_PLAIN = (torch.Tensor, nn.Parameter)  # tracers' tensors (fake, functional) are never checked


def _materialized(seen, src) -> bool:
    """Whether the slot last read a meta tensor and now reads one with storage: the model
    was materialised (``to_empty``, an assign load), not swapped. Each slot of a D4
    ``GroupConv2d`` after ``to_empty`` still searched the garbage collector's objects once
    (0.09 s each with 720k live objects, 39 searches for one forward; the old meta source
    was counted as held elsewhere): a meta tensor holds no value a swap could hide (stop 57).
    """
    # same type: to_empty and an assign load keep a Parameter a Parameter, while
    # _reparametrize_module swaps in the caller's tensor (plain, usually): that one is still
    # looked for, or a first read under tie_weights=False served it silently
    return (
        isinstance(seen, torch.Tensor)
        and seen.is_meta
        and not src.is_meta
        and type(src) is type(seen)
    )


def _held_elsewhere(slot, seen, module: nn.Module | None = None) -> bool:
    """Whether the source the slot last read is still held by more than this slot.

    A swap by ``_reparametrize_module`` keeps the model's own tensor alive (it swaps it
    back at the end); ``model.a.weight = nn.Parameter(...)`` and an FSDP1 view set at each
    forward usually leave it to the slot alone. Only then is the costly search skipped
    (a holder such as an optimizer costs one search, after which the new source is read
    as the model's own).

    What ``sys.getrefcount`` counts for a tensor held by the slot alone depends on the
    interpreter (3.14 may borrow the references of locals and arguments), so it is measured
    on this one (:data:`_ALONE`) through a call of the same shape; a fixed count tuned to
    3.11 would skip the search where it is needed, a missed refusal (stop 51).

    The other slots of ``module`` that read the same source hold it too (their own
    ``_seen`` and records), and are not counted either (stop 54: after ``to_empty`` each of
    a D4 ``GroupConv2d``'s 56 slots found the old source held by its siblings and searched,
    30 searches, 2.2 s, for one forward).
    """
    if seen is None:
        return False
    return _references(slot, seen, module) > _ALONE


def _references(slot, seen, module: nn.Module | None = None) -> int:
    """``sys.getrefcount(seen)`` less the references the slots' own records hold: ``slot``'s,
    and the records and last read of every other slot of ``module``."""
    ours = 0
    slots = [slot]
    if module is not None:
        for other in (module.__dict__.get(_SLOTS_ATTR) or {}).values():
            if other is not slot:
                slots.append(other)
                ours += getattr(other, "_seen", None) is seen
    for one in slots:
        for record in (one._handed, *(one._kept or ())):
            if record is not None and isinstance(record[3], list):
                ours += sum(t is seen for t, _, _ in record[3])
    return sys.getrefcount(seen) - ours


class _Alone:
    """A stand-in slot for :func:`_references_when_alone`: what a Slot holds that counts."""

    _handed = None
    _kept = ()

    def __init__(self):
        self._seen = object()


def _references_when_alone() -> int:
    """:func:`_references` of an object held by a slot and the caller's local alone, through
    calls of the same shape as ``check_source_swap`` -> ``_held_elsewhere`` (a local, then
    an argument twice), measured on this interpreter."""
    slot = _Alone()
    seen = slot._seen
    return _as_held_elsewhere(slot, seen)


def _as_held_elsewhere(slot, seen) -> int:
    # the frame of _held_elsewhere: the object is an argument here and in _references
    return _references(slot, seen)


#: what :func:`_references` counts for a source held by the slot alone (4 on 3.11: the
#: slot, the caller's local, the argument, getrefcount's own)
_ALONE = _references_when_alone()


def _suspended_reparametrize(src: torch.Tensor):
    """``(tie_weights, given in its own place)`` of a suspended ``_reparametrize_module``
    that swapped ``src`` into the model; None when none did.

    Only when the source changed since the slot's last read outside ``functional_call``
    and the one read then is still held elsewhere (see :func:`_held_elsewhere`; ``commit``
    records the source and an assign load forgets it, so neither asks): it asks the
    garbage collector who holds ``src``, which walks every object (about 0.1 s).
    """
    for given in gc.get_referrers(src):
        if type(given) is not dict:
            continue
        for gen in gc.get_referrers(given):
            swap = _swap_dicts(gen)
            if swap is None:
                continue
            new, orig, local = swap
            names = [k for k, v in new.items() if v is src]
            if names:
                return bool(local.get("tie_weights")), all(orig.get(k) is src for k in names)
    return None


def _swap_dicts(gen) -> tuple[dict, dict, dict] | None:
    """``(given, swapped out, its locals)`` of a suspended torch ``_reparametrize_module``
    generator ``gen`` (the dicts it holds by the same names), or None for anything else."""
    code = getattr(gen, "gi_code", None)
    if code is None or code.co_name != "_reparametrize_module" or gen.gi_frame is None:
        return None
    local = gen.gi_frame.f_locals
    new, orig = local.get("untied_parameters_and_buffers"), local.get("orig_parameters_and_buffers")
    if not (isinstance(new, dict) and isinstance(orig, dict)):
        return None
    return new, orig, local


def _refuse_untied_swap(slot, module: nn.Module, how: str):
    target, source = slot.target_and_source(_name_in(module, slot))
    default = "the default: " if how.endswith("functional_call") else ""
    called = _functional_call_module()
    key = None if called is None else _key_in(called, slot.source_module, slot.source_name)
    given = source if key in (None, source) else f"{key!r} ({source})"  # a part's own key
    raise TieError(
        f"{how}(..., tie_weights=False) replaced {given}, the source "
        f"the tied slot {target} reads via {slot.relation!r}; plain PyTorch would keep "
        f"{target} at the model's own value there, but a tie is one tensor, so {target} "
        f"would silently read the given value (and pass its gradient to it). Call "
        f"{how.rsplit('.', 1)[-1]} with tie_weights=True ({default}every use of the tie reads "
        f"the given {source}), or untie a copy first (c = copy.deepcopy(model); "
        f"tying.untie(c)) to give each use its own value; the model is unchanged"
    )


def _functional_call_module() -> nn.Module | None:
    """The module the innermost running ``functional_call`` was given, or None."""
    frame = _functional_call_frame()
    module = None if frame is None else frame.f_locals.get("module")
    return module if isinstance(module, nn.Module) else None


def own_seen(slot, mapped):
    """``mapped(the tensor slot's source module holds)`` as the model's own source, for a
    copied (``mapped`` looks it up in deepcopy's memo) or unpickled slot; None when the
    source module is not rebuilt yet (pickle rebuilds it first unless it holds the slot).

    Without it, a copy's first ``functional_call(..., tie_weights=False)`` took any
    Parameter given for the source for the model's own and served it silently (stop 49).
    """
    params = getattr(slot.source_module, "__dict__", {}).get("_parameters")
    if params is None:
        return None
    name, orig = slot.source_name, slot.source_name + "_orig"
    held = params[name] if name in params else params[orig] if orig in params else None
    return None if held is None else mapped(held)


def _given_in_its_own_place(src: torch.Tensor) -> bool | None:
    """Whether the innermost ``functional_call`` swapped ``src`` in for ``src`` itself
    (None: torch's swap was not found).

    Only on the way to a refusal (it searches the garbage collector's referrers): torch's
    ``_reparametrize_module`` generator, suspended while the call runs, holds both the
    dict given (``untied_parameters_and_buffers``) and what it swapped out
    (``orig_parameters_and_buffers``), by the same names."""
    frame = _functional_call_frame()
    if frame is None:
        return None
    given = frame.f_locals.get("parameters_and_buffers")
    for gen in gc.get_referrers(given) if isinstance(given, dict) else ():
        swap = _swap_dicts(gen)
        if swap is not None:
            new, orig, _ = swap
            names = [k for k, v in new.items() if v is src]
            if not names:  # not given to this call (an outer call's, or the model's own)
                return None
            return all(orig.get(k) is src for k in names)
    return None


def _reading_to_swap() -> bool:
    """Whether the slot is read by torch's ``swap_tensor`` (the old value, before it sets a
    value given for the slot, which ``_guarded_setattr`` refuses by the slot's name)."""
    frame = sys._getframe(4)  # _reading_to_swap <- check_source_swap <- value <- fget <- ?
    return frame is not None and frame.f_globals.get("__name__") == _ACCESSOR


def _name_in(module: nn.Module, slot) -> str:
    from tying.core.slots import _name_in  # slots imports this module: a lazy import

    return _name_in(module, slot)


def check_global_prune_read(module: nn.Module, slot, frame) -> None:
    """Refuse ``torch.nn.utils.prune.global_unstructured`` reading the tied ``slot``.

    ``global_unstructured`` flattens every listed tensor (``parameters_to_vector``) before
    it asks for any ``<name>_mask`` (where :func:`tying.core.outside.check_prune_query`
    refuses): a ``Transposed`` slot, a view with transposed strides, failed there with
    torch's own "view size is not compatible" (stop 47). ``frame`` is the reader's frame,
    already known to lie in torch's prune module; single-module pruning reads the slot too
    and is refused at ``register_parameter`` instead, so only ``global_unstructured`` is
    refused here.
    """
    for _ in range(2):  # the comprehension, then global_unstructured itself
        if frame is None or frame.f_globals.get("__name__") != _PRUNE:
            return
        if frame.f_code.co_name == "global_unstructured":
            break
        frame = frame.f_back
    else:
        return
    name = _name_in(module, slot)
    where, src = slot.target_and_source(name)
    raise TieError(
        f"torch.nn.utils.prune.global_unstructured: {where!r} is a tied slot (reads {src} via "
        f"{slot.relation!r}); pruning it would give it a private copy and break the tie, so "
        f"nothing was pruned. List the physical tensor ({src}) once instead of {where!r}, or "
        f"untie first (tying.untie(model))"
    )


def slot_value_refusal(module: nn.Module, name: str, slot, served: str) -> TieError:
    """The refusal of a value given to ``functional_call`` for the tied slot ``name`` of
    ``module``, naming the keys of the module actually called.

    The slot's paths run from the module the plan was applied to; a call on a part of it
    (``functional_call(model.head, {"weight": w})``) takes keys relative to that part, so
    before stop 60 the advice "pass the value under embed.weight" failed when followed
    (``AttributeError: TiedLinear has no attribute `embed```), and under ``body.0.weight``
    where the part's key is ``0.weight``. When the source lies outside the part no key of
    the call reaches it: the advice is the untied copy that ``copy.deepcopy`` of a part
    names too.
    """
    target, source = slot.target_and_source(name)
    called, given = _called_module_and_key()
    key = source
    if called is not None:
        key = _key_in(called, slot.source_module, slot.source_name)
    head = (
        f"torch.func.functional_call was given a value for "
        f"{target if given in (None, target) else f'{given!r} ({target})'}, a tied slot "
        f"served from {served} via {slot.relation!r}; a tied slot takes no value of its own, "
        f"even one equal to its source's: "
    )
    if key is None:
        return TieError(
            f"{head}its source {source} lies outside the module called "
            f"({type(called).__name__}), so no key of this call reaches it. Call the model "
            f"that holds both with the value under {source!r}, or for this part with a value "
            f"of its own untie a copy first: c = copy.deepcopy(model); tying.untie(c); then "
            f"call the part of c; the model is unchanged"
        )
    # stop 61: under a relation the value under the source's key is not the slot's (a
    # Scaled slot read 2 * v for the v it was told to pass), and "untie a copy first
    # (tying.untie(model))" named a call that unties the model itself, not a copy
    what = (
        "pass the value under"
        if isinstance(slot.relation, Same)
        else f"pass the source's value (the slot computes its own from it through "
        f"{slot.relation!r}, so not the slot's value) under"
    )
    return TieError(
        f"{head}{what} {key} only (the slot reads it), or for a value of its own untie a "
        f"copy first: c = copy.deepcopy(model); tying.untie(c); then call c; the model is "
        f"unchanged"
    )


def _called_module_and_key() -> tuple[nn.Module | None, str | None]:
    """The module torch's ``NamedMemberAccessor.swap_tensor`` works on now and the key it
    was given (``(None, None)`` outside one)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "swap_tensor" and frame.f_globals.get("__name__") == _ACCESSOR:
            accessor = frame.f_locals.get("self")
            called = getattr(accessor, "module", None)
            if isinstance(called, nn.Module):
                key = frame.f_locals.get("name")
                return called, key if isinstance(key, str) else None
        frame = frame.f_back
    return None, None


def _key_in(called: nn.Module, owner: nn.Module, name: str) -> str | None:
    """The key of ``owner``'s tensor ``name`` in ``called``; None when ``owner`` lies outside."""
    for path, mod in called.named_modules(remove_duplicate=False):
        if mod is owner:
            return f"{path}.{name}" if path else name
    return None
