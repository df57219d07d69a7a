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
``nn.Sequential``/``ModuleList``/``ModuleDict``); each parent is recorded (weakly), and a
guarded child guards its new parent and, through the records, every module above it. The
links made before the hook was installed are recorded once, when the first plan is applied. A link
made past torch's registration (``model._modules[name] = m``, ``copy.deepcopy`` of an
unguarded container) is not seen: such a load is refused by the tie itself, after the
modules before it were loaded, with an error that says so, and the module loaded into is
guarded for the next load.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ancestors", "install", "record_below", "record_from_before"]

#: ``id(child) -> (a weak reference to the child, weak references to the modules it was
#: registered into)``. Keyed by ``id``, never by the module: a weak dictionary or set
#: hashes its keys, and a module class may define ``__hash__`` from attributes it sets
#: after its children (e2cnn's ``BlocksBasisExpansion`` does: building an ``R2Conv``
#: after any plan raised ``AttributeError`` from inside this hook, stop 51). The child's
#: weak reference removes its entry when the child is collected, before its id can be
#: given to another object.
_PARENTS: dict[int, tuple[weakref.ref, list[weakref.ref]]] = {}
_HOOK: list = []  # the handle of the installed hook (installed once)
_SWEPT: list = []  # True once the modules from before the hook are recorded


def _forget(key: int) -> Callable[[weakref.ref], None]:
    table = _PARENTS  # bound here: at interpreter exit the module's globals are None

    def gone(_ref: weakref.ref) -> None:
        table.pop(key, None)

    return gone


def _link(parent: nn.Module, child: nn.Module) -> None:
    key = id(child)
    entry = _PARENTS.get(key)
    try:
        if entry is None or entry[0]() is not child:
            entry = _PARENTS[key] = (weakref.ref(child, _forget(key)), [])
        refs = entry[1]
        if not any(r() is parent for r in refs):
            refs[:] = [r for r in refs if r() is not None]  # parents collected meanwhile
            refs.append(weakref.ref(parent))
    except TypeError:  # a module class without __weakref__ (its own __slots__): not recorded
        pass


def _parents(module: nn.Module) -> list[nn.Module]:
    entry = _PARENTS.get(id(module))
    if entry is None or entry[0]() is not module:
        return []
    return [p for p in (r() for r in entry[1]) if p is not None]


def record_below(root: nn.Module) -> None:
    """Record the parent of every module under ``root`` (links made before the hook, or
    past torch's registration, become known)."""
    for mod in root.modules():
        for child in mod._modules.values():
            if child is not None:
                _link(mod, child)


def ancestors(module: nn.Module) -> list[nn.Module]:
    """Every module known to hold ``module`` (directly or through others), nearest first."""
    out: list[nn.Module] = []
    seen = {id(module)}
    todo = [module]
    while todo:
        for parent in _parents(todo.pop(0)):
            if id(parent) not in seen:
                seen.add(id(parent))
                out.append(parent)
                todo.append(parent)
    return out


def install(on_child: Callable[[nn.Module, nn.Module], None]) -> None:
    """Install the global registration hook once; ``on_child(parent, child)`` is called after
    each registration is recorded (it guards ``parent`` when ``child`` is guarded)."""
    if _HOOK:
        return

    def hook(parent, name, child):
        # runs inside every registration of every module in the process (other
        # libraries' too, on half-built modules): it never raises into it. A module made
        # inside a compiled forward is not recorded: adding a load hook there is nothing
        # torch.compile can trace (fullgraph=True failed on it), and a load never runs there
        if torch.compiler.is_compiling():
            return
        try:
            if isinstance(child, nn.Module):
                _link(parent, child)
                on_child(parent, child)
        except Exception:  # noqa: BLE001 - a load then is checked by the tie itself
            pass
        # returns None: the child is registered as given

    _HOOK.append(nn.modules.module.register_module_module_registration_hook(hook))


def record_from_before() -> None:
    """Record, once per process, the parents of the modules that were registered before the
    hook was installed (a model built before the first plan was applied): one walk of the
    garbage collector's objects (about 0.1 s), at the first plan, not at import."""
    if _SWEPT:
        return
    _SWEPT.append(True)
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance asks a lazy module's __class__, which may
        # import (and warn)
        if issubclass(type(obj), nn.Module):
            children = getattr(obj, "__dict__", {}).get("_modules")
            for child in children.values() if isinstance(children, dict) else ():
                if isinstance(child, nn.Module):
                    _link(obj, child)
