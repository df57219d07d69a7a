"""A snapshot of a model's logical slots, physical parameters and buffers.

Every part of the engine (plans, counting, verification, untying, files) reads
the model through this one inventory, so they agree on what a slot is:

- a *slot* is a logical parameter path a model reads (``lm_head.weight``);
- it is *physical* when its module stores it, *tied* when a :class:`~tying.core.slots.Slot`
  serves it from a source;
- parameters that exist only to serve a tie (``conv.weight_physical``,
  ``lm_head.weight_scale``) are *storage*, not slots;
- a *hand tie* is one ``nn.Parameter`` object registered as a physical slot under
  several paths (``lm_head.weight = embed.weight``, Hugging Face's
  ``tie_word_embeddings``, a module reachable from two paths). The first path in
  module order (the key ``state_dict`` keeps) is its source; :attr:`Inventory.hand`
  maps every other path to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.outside import ORIG, pruned_names
from tying.core.relations import Relation, Same
from tying.core.reparametrized import reparametrized_advice
from tying.core.slots import Slot, slots_of, storage_names

#: what to do when the module holding a tie's source was replaced after the plan: neither
#: re-applying the plan nor untying can start from a source outside the model (both used
#: to be advised, and both refused with the same advice, stop 49)
REPLACED_SOURCE_FIX = (
    "a tie cannot be moved onto the module that replaced its source: put the module it "
    "replaced back at its path, then tying.untie(model) (every slot keeps its value), "
    "then put the new module in and apply a plan to it"
)


@dataclasses.dataclass
class SlotInfo:
    """One logical slot of the model."""

    path: str
    module_path: str
    name: str
    module: nn.Module
    shape: tuple[int, ...]
    tie: Slot | None  # None: physical
    source: str | None = None  # path of the tie's source slot ("" when outside the model)

    @property
    def is_tied(self) -> bool:
        return self.tie is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Inventory:
    """Slots, storage parameters, buffers and modules of ``model``, by path."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules: dict[str, nn.Module] = dict(model.named_modules(remove_duplicate=False))
        self._path_of: dict[int, str] = {}
        for path, mod in self.modules.items():
            self._path_of.setdefault(id(mod), path)
        self.slots: dict[str, SlotInfo] = _SlotTable(self)
        self.storage: dict[str, nn.Parameter] = {}
        self.buffers: set[str] = set()
        own: dict[str, nn.Parameter] = {}  # slot path -> the Parameter it holds (pruned: *_orig)
        for mpath, mod in self.modules.items():
            stores = storage_names(mod)
            pruned = pruned_names(mod)  # torch.nn.utils.prune: weight_orig stores weight
            for name, p in mod._parameters.items():
                if p is None:
                    continue
                if isinstance(p, nn.parameter.UninitializedParameter):
                    _refuse_lazy(join(mpath, name), mod)
                name = pruned.get(name, name)
                path = join(mpath, name)
                if name in stores:
                    self.storage[path] = p
                else:
                    self.slots[path] = SlotInfo(path, mpath, name, mod, tuple(p.shape), None)
                    own[path] = p
            for name, slot in slots_of(mod).items():
                path = join(mpath, name)
                # a source resized under the tie: refuse (any relation, stop 31 round 2:
                # a resized Transposed/Scaled source was counted and verified at the old shape)
                p = getattr(slot.source_module, "_parameters", {})
                p = p[slot.source_name] if slot.source_name in p else None
                if p is not None and tuple(p.shape) != (slot.source_shape() or tuple(p.shape)):
                    slot._resized(mod, p)
                src_mod = self._path_of.get(id(slot.source_module))
                source = "" if src_mod is None else join(src_mod, slot.source_name)
                self.slots[path] = SlotInfo(path, mpath, name, mod, tuple(slot.shape), slot, source)
            for name, b in mod._buffers.items():
                if b is not None:
                    self.buffers.add(join(mpath, name))
        # hand ties: the same Parameter object as a physical slot under several paths
        self.hand: dict[str, str] = {}
        first: dict[int, str] = {}
        for path, info in self.slots.items():
            if info.tie is None and path in own:
                p = own[path]
                src = first.setdefault(id(p), path)
                if src != path:
                    self.hand[path] = src

    def hand_groups(self) -> list[list[str]]:
        """Paths that hold one Parameter object, source first (groups of 2 or more)."""
        groups: dict[str, list[str]] = {}
        for target, source in self.hand.items():
            groups.setdefault(source, [source]).append(target)
        return list(groups.values())

    def path_of(self, module: nn.Module) -> str | None:
        return self._path_of.get(id(module))

    def under(self, module_path: str) -> list[str]:
        """Slot paths inside the module at ``module_path`` (recursively), in slot order.

        From an index of every module path above each slot, made on first use (and
        again if slots were added since): a scan of every slot per call made a plan over
        a stack of N tied blocks cost N^2 (1,024 blocks: 7 s of 16, stop 52).
        """
        index = self.__dict__.get("_under")
        if index is None or index[0] != len(self.slots):
            by_module: dict[str, list[str]] = {}
            for path in self.slots:
                dot = path.find(".")
                while dot != -1:
                    by_module.setdefault(path[:dot], []).append(path)
                    dot = path.find(".", dot + 1)
            index = self._under = (len(self.slots), by_module)
        return list(index[1].get(module_path, ()))

    def closest(self, path: str) -> str:
        """A hint naming the closest existing slot or module path."""
        names = list(self.slots) + [p for p in self.modules if p]
        close = difflib.get_close_matches(path, names, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        # torch.nn.utils.parametrize hides the parameter under parametrizations.<name>:
        # say so, rather than only that the path matches nothing.
        owner, _, name = path.rpartition(".")
        mod = self.modules.get(owner)
        params = getattr(mod, "parametrizations", None)
        if isinstance(params, nn.ModuleDict) and name in params:
            # the module named by its path, and no 'closest' list (stop 60: "call
            # remove_parametrizations(module, 'weight') first; closest: b.weight" named
            # neither the module nor a path that helps; b.weight was the rule's target)
            where = f"model.get_submodule({owner!r})" if owner else "model"
            hint = (
                f"; {path!r} is under torch.nn.utils.parametrize, which ties cannot serve: "
                f"call torch.nn.utils.parametrize.remove_parametrizations({where}, {name!r}) "
                f"first (it keeps the parametrized value as a plain parameter), then apply "
                f"the plan"
            )
        return hint

    def wrong_kind(self, target: str, source: str, rule=None) -> str | None:
        """Why ``source`` cannot serve ``target`` when one is a module and the other is not.

        Stop 58: ``share("l.1", like="l.0.weight")`` was refused as "source module
        'l.0.weight' does not exist; closest: l.0.weight" (the path the user typed), and
        ``share("l.1.weight", like="l.0")`` as "'l.0' is no parameter; closest: l.0".
        Returns the reason and the rules that work (each offered only if its paths
        exist, its shapes fit ``rule``'s relation and it ties no path to itself; a fix
        that is a new rule keeps that relation), or None when ``source`` is of
        ``target``'s kind or does not exist.
        """
        relation = getattr(rule, "relation", None) or Same()
        rel = "" if type(relation) is Same else f", relation={relation!r}"
        pattern = getattr(rule, "target", target)
        if target in self.modules:
            if source in self.modules or (source not in self.slots and source not in self.buffers):
                return None
            what = "a parameter" if source in self.slots else "a buffer (ties are for parameters)"
            owner, _, leaf = source.rpartition(".")
            fixes = []
            param = join(target, leaf)
            if (
                source in self.slots
                and param in self.slots
                and param != source
                and self._fit(param, source, relation)
            ):
                fixes.append(f"share({param!r}, like={source!r}{rel}) ties that parameter")
            if owner and owner in self.modules and self._fits(target, owner, relation):
                if owner != target:
                    fixes.append(f"share({target!r}, like={owner!r}{rel}) ties the whole module")
                elif pattern != target and getattr(rule, "like", None) == source:
                    # the pattern's first match holds the source (share("l.*", like=
                    # "l.0.weight")): tying l.0 to itself is no fix, like=its module is
                    fixes.append(f"like={owner!r} ties each module it matches to {owner!r}")
            return (
                f"{target!r} is a module, so its source must be a module, but {source!r} is "
                f"{what}; " + ("; or ".join(fixes) if fixes else "name a module in like=")
            )
        if target in self.slots and source in self.modules:
            owner, _, leaf = target.rpartition(".")
            fixes = []
            param = join(source, leaf)
            if (
                param in self.slots
                and (param != target or pattern != target)
                and self._fit(target, param, relation)
            ):
                fixes.append(f"like={param!r} ties that parameter")
            if (
                owner
                and owner != source
                and owner in self.modules
                and self._fits(owner, source, relation)
            ):
                fixes.append(f"share({owner!r}, like={source!r}{rel}) ties the whole module")
            return (
                f"{target!r} is a parameter, so its source must be a parameter, but {source!r} "
                f"is a module; " + ("; or ".join(fixes) if fixes else "name a parameter in like=")
            )
        return None

    def _fit(self, target: str, source: str, relation: Relation) -> bool:
        """Whether slot ``source``'s shape is the one ``relation`` needs for ``target``."""
        try:
            need = relation.source_shape(tuple(self.slots[target].shape))
        except NotImplementedError:
            return True  # a relation that cannot say: the apply checks it
        except ValueError:  # TieError: no source shape serves this target
            return False
        return tuple(need) == tuple(self.slots[source].shape)

    def _fits(self, target: str, source: str, relation: Relation | None = None) -> bool:
        """Whether every slot under module ``target`` has a counterpart under ``source``
        of the shape ``relation`` needs."""
        relation = relation or Same()
        n = len(target) + 1
        return all(
            join(source, path[n:]) in self.slots
            and self._fit(path, join(source, path[n:]), relation)
            for path in self.under(target)
        )

    def missing(self, path: str) -> str:
        """Why ``path`` is not a slot, naming the ties that read it and the fix."""
        readers = sorted(p for p, info in self.items_reading(path))
        who = (
            f" ({', '.join(readers)} read{'s' if len(readers) == 1 else ''} it)" if readers else ""
        )
        owner, _, name = path.rpartition(".")
        mod = self.modules.get(owner)
        if mod is not None and hasattr(mod, name):
            holders = sorted(n for n in mod._parameters if n.startswith(name))
            nested = getattr(mod, "parametrizations", None)
            if isinstance(nested, nn.ModuleDict) and name in nested:
                holders.append(f"parametrizations.{name}.original")
            return (
                f"{path} is no longer a parameter of its module{who}: torch.nn.utils.parametrize, "
                f"weight_norm or spectral_norm re-parametrised it after the tie was made (its "
                f"parameters now: {', '.join(holders) or 'none'}), and a tie cannot follow "
                f"that: " + reparametrized_advice(mod, name, owner)
            )
        from tying.core.reparametrized import removed_source

        for _, info in self.items_reading(path):  # remove_weight_norm on the source
            removed = removed_source(info.tie, info.module) if info.tie is not None else None
            if removed is not None:
                return f"{path} is not a parameter of the model{who}: {removed}"
        return f"{path} is not a parameter of the model{who}{self.closest(path)}"

    def items_reading(self, path: str):
        """``(slot path, info)`` of the ties whose source is ``path``."""
        return [(p, info) for p, info in self.slots.items() if info.source == path]

    def root_of(self, path: str) -> str:
        """The physical tensor a slot's value comes from (following chains of ties)."""
        seen = set()
        while True:
            info = self.slots[path]
            if info.tie is None:
                return path
            if "source" in info.tie.storage:
                return join(info.module_path, info.tie.storage["source"])
            if info.source == "":
                raise TieError(self.outside(path))
            if not info.source or path in seen:
                return path
            seen.add(path)
            path = info.source

    def outside(self, path: str, what: str = "") -> str:
        """Why the tie at ``path`` reads a module that is not in this model, and the fix.

        Either the module given is a part of the model the plan was applied to
        (``tying.count(model.decoder)`` where the decoder reads the encoder), or the
        module that held the source was replaced after the plan. Both used to be told
        as the second, from a check that was about something else (stop 36).
        """
        info = self.slots[path]
        slot = info.tie
        src = slot.paths[1] or slot.source_name
        links = slot._links() if slot.anchor is not None else None
        if links is not None and all(p._modules.get(c) is held for p, c, held in links):
            where = f"tying.{what}" if what else "the call"
            return (
                f"{path} is tied to {src} (via {slot.relation!r}), which lies outside the "
                f"module given to {where}: it is a part of the model the plan was applied "
                f"to, and a tie is counted, checked, saved and untied there; pass that "
                f"model (or a parent of it) instead"
            )
        from tying.core.reparametrized import removed_source

        removed = removed_source(slot, info.module) if links is not None else None
        if removed is not None:
            return f"{path} is tied to {src} (via {slot.relation!r}), but {removed}"
        return (
            f"{path} is tied to a tensor outside the model: the module that held its "
            f"source ({src}) was replaced after the plan was applied (e.g. "
            f"model.emb = nn.Embedding(...)); {REPLACED_SOURCE_FIX}"
        )

    def tensor(self, path: str) -> torch.Tensor:
        """The physical tensor at ``path`` (a physical slot or a storage parameter)."""
        if path in self.storage:
            return self.storage[path]
        info = self.slots[path]
        params = info.module._parameters
        if info.name in params:
            return params[info.name]
        if info.name + ORIG in params:
            return params[info.name + ORIG]
        # stop 30 review: a bare KeyError('weight_orig') when the module holding a tie's source
        # (or a module above it) was replaced, so that the path no longer names a parameter
        raise TieError(
            f"{path} is not a parameter of this model any more (its module holds "
            f"{sorted(params) or 'no parameters'} under that name): a module on its path was "
            f"replaced or re-parametrised after the plan was applied; tying.verify(model) says "
            f"which tie it breaks; re-apply the plan, or untie first"
        )

    def relation_of(self, path: str) -> Relation | None:
        info = self.slots[path]
        return None if info.tie is None else info.tie.relation


def _refuse_lazy(path: str, module: nn.Module) -> None:
    # torch's own error ("Can't access the shape of an uninitialized parameter") named no
    # parameter: on a model of many layers, which lazy one had not run (stop 33)
    raise TieError(
        f"{path} is an uninitialized parameter of a lazy {type(module).__name__}: its shape is "
        f"not known until the module's first forward, so it cannot be tied, counted, verified "
        f"or saved; run one forward with an example input first (model(example)), then ask "
        f"again"
    )


class _SlotTable(dict):
    """``Inventory.slots``: a missing path is a :class:`TieError` that says why.

    A tie's source that torch.nn.utils.parametrize or weight_norm moved out of the
    module's parameters used to surface as a bare ``KeyError('a.weight')`` from
    ``count``, ``untie`` and ``verify``.
    """

    def __init__(self, inventory: Inventory):
        super().__init__()
        self._inventory = inventory

    def __missing__(self, path: str):
        raise TieError(self._inventory.missing(path))
