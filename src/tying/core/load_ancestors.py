"""The modules above a tied one, so that a load into any of them is checked before it copies.

``load_state_dict`` copies module after module and reports errors at the end, so a tie
refused at its own module leaves every module loaded before it changed. A load is checked
first only where the module it is called on has the check as a pre-hook (see
:func:`tying.core.slot_loads.guard_loading`). A plan knows the modules under the one it is
applied to; the modules *above* it (a ``tying.nn`` layer that ties itself, then put in an
``nn.Sequential``; a plan applied to ``model.encoder``) are found here (stop 51: a refused
load into such a container had loaded every module before the tie, and said "nothing was
loaded").

torch tells every registration of a child module to a global hook
(``register_module_module_registration_hook``: ``add_module``, attribute assignment,
``nn.Sequential``/``ModuleList``/``ModuleDict``). The hook costs nothing measurable for a
model without ties (stop 52: keeping a weak record of every link made building 5,000
``nn.Linear`` 1.1x to 2x slower, the garbage collector walking the records): it keeps
only ``id(child) -> id(type(child))`` (plain integers, which the collector does not
track), and calls the guard only when the child holds a tie or a load check. The parents
of a module are looked up when a tie needs them (a plan applied, a tied module
registered): from one walk of the collector's modules, kept (weakly, checked against
each parent's ``_modules`` when read) until a module met on the way up was registered
again since. A link made past torch's registration (``model._modules[name] = m``, the
copies ``copy.deepcopy`` makes) after that walk is not seen: such a load is refused by the
tie itself, after the modules before it were loaded, with an error that says so, and the
module loaded into is guarded for the next load.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ancestors", "install"]

#: ``id(child) -> id(type(child))`` for every registration since the last walk: integers
#: only (no object the garbage collector tracks, no reference to the module). A dead
#: module's id given to a new module of the same class costs one walk, never a missed
#: parent.
_NEW: dict[int, int] = {}
#: above this many records they are dropped and the next look-up walks (memory bound)
_MAX_NEW = 200_000
#: ``id(child) -> weak references to its parents`` at the last walk; None: no walk yet,
#: or the records of registrations since were dropped
_MAP: list = [None]
#: where a module keeps its ties (``tying.core.slots.SLOTS_ATTR``) and the method a layer
#: checks a load with (``tying.core.slot_loads.LOAD_CHECK``); named here, not imported:
#: both modules import this one
TIE_ATTR = "_tying_slots"
CHECK_ATTR = "_tying_check_load"
_HOOK: list = []  # the handle of the installed hook (installed once)
#: where the tying layers live: a load into one (tied or not) or into a module holding one
#: is checked before it copies (stop 53: an untied ``GroupConv2d`` was half-loaded)
LAYERS = "tying.nn."


def is_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a ``tying.nn`` layer (tied or not)."""
    return type(module).__module__.startswith(LAYERS)


def _walk() -> dict[int, list[weakref.ref]]:
    """Every parent link of every live module: one walk of the collector's objects (about
    0.05 s in a process with torch imported). Reads ``type`` and ``__dict__`` only: it may
    run inside a registration, beside half-built modules (it never hashes, compares or calls
    a method of one)."""
    _NEW.clear()
    found: dict[int, list[weakref.ref]] = {}
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance asks a lazy module's __class__, which may
        # import (and warn)
        if not issubclass(type(obj), nn.Module):
            continue
        children = getattr(obj, "__dict__", {}).get("_modules")
        if type(children) is not dict or not children:
            continue
        try:
            ref = weakref.ref(obj)
        except TypeError:  # a module class without __weakref__ (its own __slots__)
            continue
        for child in children.values():
            if child is not None and issubclass(type(child), nn.Module):
                found.setdefault(id(child), []).append(ref)
    _MAP[0] = found
    return found


def _holds(parent: nn.Module, child: nn.Module) -> bool:
    children = parent.__dict__.get("_modules")
    return type(children) is dict and any(c is child for c in children.values())


def _parents(module: nn.Module, links: dict) -> list[nn.Module]:
    refs = links.get(id(module), ())
    return [p for p in (r() for r in refs) if p is not None and _holds(p, module)]


def _registered_since(module: nn.Module) -> bool:
    # a plan ties a module by giving it a class of its own over the one it was registered
    # with (``Linear`` -> ``TiedLinear``): the record holds the plain class's id (stop 59:
    # a tied layer put in a container after the last walk had no parents)
    # a tied slot's module given a parametrization on another tensor (``bias``) has
    # parametrize's class over that one (``ParametrizedTiedLinear``): any class of its MRO
    # (a dead module's id taken by a subclass's costs one walk, never a missed parent)
    seen = _NEW.get(id(module))
    return seen is not None and any(id(cls) == seen for cls in type(module).__mro__)


def ancestors(module: nn.Module) -> list[nn.Module]:
    """Every module that holds ``module`` (directly or through others), nearest first.

    Args:
        module: any module.

    Returns:
        The modules above it, each once; empty for a module no other holds.

    Example:
        >>> from torch import nn
        >>> inner = nn.Linear(2, 2)
        >>> outer = nn.Sequential(nn.Sequential(inner))
        >>> [type(m).__name__ for m in ancestors(inner)]
        ['Sequential', 'Sequential']
    """
    links = _MAP[0]
    if links is None:
        links = _walk()
    while True:
        out: list[nn.Module] = []
        seen = {id(module)}
        todo = [module]
        stale = False
        while todo and not stale:
            here = todo.pop(0)
            if _registered_since(here):
                stale = True  # a link made since the last walk
                break
            for parent in _parents(here, links):
                if id(parent) not in seen:
                    seen.add(id(parent))
                    out.append(parent)
                    todo.append(parent)
        if not stale:
            return out
        links = _walk()


def install(on_child: Callable[[nn.Module, nn.Module], None]) -> None:
    """Install the global registration hook once; ``on_child(parent, child)`` is called when
    ``child`` holds a load pre-hook, a tie (``_tying_slots``) or a load check
    (``_tying_check_load``), or either is a ``tying.nn`` layer (:func:`is_layer`): it guards
    ``parent`` and the modules above it."""
    if _HOOK:
        return
    new = _NEW

    def hook(parent, name, child):
        # runs inside every registration of every module in the process (other
        # libraries' too, on half-built modules): it never raises into it, hashes nothing,
        # and allocates nothing the collector tracks. A module made inside a compiled
        # forward is not recorded: adding a load hook there is nothing torch.compile can
        # trace (fullgraph=True failed on it), and a load never runs there
        if torch.compiler.is_compiling() or child is None:
            return
        try:
            own = child.__dict__
            if (
                own.get("_load_state_dict_pre_hooks")
                or TIE_ATTR in own
                or hasattr(type(child), CHECK_ATTR)
                or is_layer(child)
                or is_layer(parent)
            ):
                on_child(parent, child)
        except Exception:  # noqa: BLE001 - a load then is checked by the tie itself
            pass
        # after on_child: a walk it made ran before torch puts the child in its parent
        new[id(child)] = id(type(child))
        if len(new) > _MAX_NEW:
            new.clear()
            _MAP[0] = None
        # returns None: the child is registered as given

    _HOOK.append(nn.modules.module.register_module_module_registration_hook(hook))
