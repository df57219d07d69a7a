"""Plans: an ordered list of rules, resolved against a model and applied all or nothing.

A plan is data. Applying it resolves every rule to slot-level ties (the last
matching rule wins), validates all of them (existence, pairing, shapes, dtypes,
devices, cycles, buffers), and only then changes the model. Applying the same
plan again is a no-op, so it can be re-applied after anything that rebuilds
modules (quantization, adapters, sharding wrappers).

Applying is two phases, and both are available on their own (``tying.load``
uses them to add the checks of a file between the two):

1. **resolve** (:meth:`Plan.resolve` → :class:`Resolution`): reads the model
   through one :class:`~tying.core.inventory.Inventory` snapshot and computes the
   slot :class:`Change` list. It raises :class:`~tying.TieError` for anything
   that cannot be done and **changes nothing**: no attribute, class, parameter or
   value of the model is touched.
2. **commit** (:meth:`Resolution.commit`): performs exactly those changes. Every
   value it needs is computed before the first mutation; the classes, parameter
   dicts and tie bookkeeping of every module it touches are snapshotted, and any
   exception during the mutation restores them, so the model is bit-identical to
   before. It refuses a model that changed since it was resolved.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from tying.core import declared_roots, param_order, resolver, stale, tie_record, unreached
from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.outside import ORIG, check_not_wrapped
from tying.core.patterns import Pattern
from tying.core.relations import Relation, Same, relation_from_spec
from tying.core.reparametrized import one_sided
from tying.core.rules import Rule, share
from tying.core.slot_loads import ancestors
from tying.core.slots import (
    SLOTS_ATTR,
    SLOTS_GENERATION_ATTR,
    Slot,
    guard_loading,
    install,
    slots_of,
    uninstall,
)

DECLARED_ATTR = "_tying_declared"


@dataclasses.dataclass(frozen=True)
class Tie:
    """The resolved state of one slot: tied to ``source`` (None: to its own storage)."""

    source: str | None
    relation: Relation
    rule: int = -1
    # a hand tie: the target registers the source's very Parameter object (no slot)
    hand: bool = False

    def same_as(self, other: Tie | None) -> bool:
        return other is not None and (self.source, self.relation) == (other.source, other.relation)


@dataclasses.dataclass
class Change:
    """One slot whose state the plan changes."""

    path: str
    old: Tie | None
    new: Tie | None


@dataclasses.dataclass
class ApplyReport:
    """What :meth:`Plan.apply` did.

    Attributes:
        tied: slot paths newly tied, with their source (None: own storage).
        freed: slot paths made independent.
        unchanged: slots the plan matched that already were as declared.
        logical, physical: parameter counts after applying.
    """

    tied: dict[str, str | None]
    freed: list[str]
    unchanged: int
    logical: int
    physical: int

    @property
    def changed(self) -> bool:
        return bool(self.tied or self.freed)

    def __str__(self) -> str:
        lines = [
            f"tied {len(self.tied)} slot(s), freed {len(self.freed)}, unchanged {self.unchanged}; "
            f"parameters logical {self.logical:,} / physical {self.physical:,}"
        ]
        for target, source in self.tied.items():
            lines.append(f"  {target} <- {source if source is not None else '(own storage)'}")
        for path in self.freed:
            lines.append(f"  {path} freed")
        return "\n".join(lines)


class Plan:
    """An ordered list of tie rules; the last matching rule wins for each slot.

    Args:
        rules: :func:`tying.share` / :func:`tying.free` rules.

    Raises:
        TypeError: when ``rules`` is not an ordered sequence (a set, a str, a bare
            rule) or an element is not a rule.

    Example:
        >>> import torch, tying
        >>> model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4),
        ...                              "lm_head": torch.nn.Linear(4, 10, bias=False)})
        >>> report = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(model)
        >>> model.lm_head.weight is model.embed.weight
        True
        >>> report.logical, report.physical
        (80, 40)
    """

    def __init__(self, rules: Sequence[Rule]):
        # stop 34: a set of rules was taken in its hash order, so which of two overlapping
        # rules won (last match wins) changed between runs; a bare rule failed in
        # Python's words ("'Rule' object is not iterable")
        if isinstance(rules, Rule):
            raise TypeError(
                f"Plan takes a list of rules, got the single rule {rules!r}; wrap it: Plan([rule])"
            )
        if isinstance(rules, (set, frozenset, str, bytes)) or not isinstance(rules, Iterable):
            raise TypeError(
                f"Plan takes an ordered sequence of rules (the last matching rule wins), got "
                f"{type(rules).__name__} {rules!r}; pass a list, e.g. Plan([share(...), free(...)])"
            )
        rules = list(rules)
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise TypeError(
                    f"Plan rule {i} must be tying.share(...) or tying.free(...), got {rule!r}"
                )
        self.rules = rules

    def __repr__(self) -> str:
        return f"Plan({self.rules!r})"

    # -- resolution -----------------------------------------------------------------

    def resolve(self, model: nn.Module) -> Resolution:
        """Phase 1: validate the plan against ``model`` and compute its changes, changing nothing.

        Args:
            model: the model to tie.

        Returns:
            A :class:`Resolution`; its :meth:`~Resolution.commit` performs the changes.

        Raises:
            TieError: naming the rule, the path(s), expected vs found, and the fix.

        Example:
            >>> import torch, tying
            >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
            >>> res = tying.Plan([tying.share("b", like="a")]).resolve(m)
            >>> [c.path for c in res.changes], m["b"].weight is m["a"].weight
            (['b.weight', 'b.bias'], False)
            >>> res.commit(); m["b"].weight is m["a"].weight
            True
        """
        inv = Inventory(model)
        changes, unchanged = _resolve_rules(self.rules, inv)
        return Resolution(model, inv, changes, unchanged)

    def apply(self, model: nn.Module) -> ApplyReport:
        """Tie ``model`` as declared. All or nothing: on error the model is unchanged.

        Returns:
            An :class:`ApplyReport`.

        Raises:
            TieError: a pattern that matches nothing, an ambiguous pairing, a source
                that does not exist, a shape/dtype/device mismatch, a cycle, a buffer.
        """
        from tying.core.count import count

        res = self.resolve(model)
        counted = []
        # counted inside the commit: a count that fails rolls the ties back (stop 34: the
        # model was left tied while apply raised)
        res.commit(_then=lambda: counted.append(count(model)))
        changes, unchanged, c = res.changes, res.unchanged, counted[0]
        return ApplyReport(
            tied={ch.path: ch.new.source for ch in changes if ch.new is not None},
            freed=[ch.path for ch in changes if ch.new is None],
            unchanged=unchanged,
            logical=c.logical,
            physical=c.physical,
        )

    @classmethod
    def declared(cls, model: nn.Module) -> Plan:
        """The plan that re-creates every tie declared on ``model`` (and its submodules).

        Args:
            model: a model tied by :meth:`apply` (or :func:`~tying.load`), or a part of
                one: the ties a plan over the whole model declared inside the part are
                included, relative to the part.

        Returns:
            A plan of one exact rule per declared tie.

        Raises:
            TieError: a tied path holds ``*`` (a ``ModuleDict`` key such as ``"a*"``): a
                rule reads it as a wildcard, so the plan would also tie every path it
                matches (``"ab"``) in the model it is applied to (stop 53); or ``model``
                is a part whose tie reads a module outside it.

        Example:
            >>> import torch, tying
            >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
            >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
            >>> tying.Plan.declared(m)
            Plan([share('b.weight', like='a.weight')])
        """
        from tying.core.verify import declarations_for_plan  # verify imports this module

        rules = []
        for target, like, spec in declarations_for_plan(model):  # a part's too (stop 58)
            for path in (target, like):
                if path is not None and "*" in path:
                    raise TieError(
                        f"Plan.declared: the tied path {path!r} holds '*', which a rule "
                        f"reads as a wildcard (it matches one or more characters), so the "
                        f"plan would also tie every other path it matches; rename the "
                        f"module (a ModuleDict key) to a name without '*'"
                    )
            rules.append(share(target, like, relation_from_spec(spec["relation"])))
        return cls(rules)


def _fingerprint(inv: Inventory) -> tuple:
    """What commit relies on being as resolved: each module's class and parameter objects."""
    return tuple(
        (path, type(m), tuple((k, id(v)) for k, v in m._parameters.items()))
        for path, m in inv.modules.items()
    )


class Resolution:
    """A resolved plan: the changes committing will make to one model (phase 1's result).

    Invariants: built from an :class:`~tying.core.inventory.Inventory` snapshot of
    ``model``; resolving changed nothing; :meth:`commit` changes only the slots in
    ``changes`` (plus the model's tie bookkeeping) and is all or nothing.

    Attributes:
        model: the model it was resolved against.
        inventory: the snapshot the changes refer to.
        changes: one :class:`Change` per slot whose state changes (``new=None``: freed).
        unchanged: slots a rule matched that already were as declared.
    """

    def __init__(
        self, model: nn.Module, inventory: Inventory, changes: list[Change], unchanged: int
    ):
        self.model = model
        self.inventory = inventory
        self.changes = changes
        self.unchanged = unchanged
        self._fingerprint = _fingerprint(inventory)
        self._committed = False

    def commit(self, _then=None, _values_follow: bool = False) -> None:
        """Phase 2: make the changes, all or nothing.

        (``_then``, private: a callable run after the changes and inside the same all or
        nothing, e.g. :func:`tying.load`'s ``load_state_dict``; if it raises, the ties are
        restored as for a failed commit. ``_values_follow``, private: ``_then`` overwrites
        every value, so a re-parametrisation of the current values that overflows is not
        refused: :func:`tying.load` ties a fresh model, then loads the file.)

        Raises:
            TieError: when the model changed since it was resolved (resolve again),
                or this resolution was already committed.
            Exception: whatever failed during the mutation, after the model was
                restored bit-identically.
        """
        if self._committed:
            raise TieError("this Resolution was already committed; resolve the plan again")
        if _fingerprint(Inventory(self.model)) != self._fingerprint:
            raise TieError(
                "the model changed between Plan.resolve and Resolution.commit (a module or "
                "parameter was replaced); resolve the plan again, then commit"
            )
        if self.changes:  # a no-op re-application stays allowed on a wrapped model
            check_not_wrapped(self.model, "Plan.apply")
        _commit(self.model, self.inventory, self.changes, _then, _values_follow)
        self._committed = True

    def __repr__(self) -> str:
        return f"Resolution({len(self.changes)} change(s), {self.unchanged} unchanged)"


def _fail(rule_index: int, rule: Rule, msg: str) -> TieError:
    return resolver.rule_error(rule_index, rule, msg)


def _resolve_rules(rules: list[Rule], inv: Inventory) -> tuple[list[Change], int]:
    """Phase 1's work: rules → the slot changes (last match wins), validated; reads only.

    Steps: the current state of every slot; each rule in order overrides the desired
    state of the slots it matches (module matches expand to their parameters);
    then cycles, hand ties that a rule would split, and every new tie (shapes,
    dtypes, devices, storage names, TorchScript) are checked. Returns the changes
    and the number of matched slots already as declared.
    """
    current: dict[str, Tie | None] = {}
    for path, info in inv.slots.items():
        if info.tie is None:
            current[path] = None
        else:
            own = "source" in info.tie.storage
            current[path] = Tie(None if own else info.source, info.tie.relation)
    desired: dict[str, Tie | None] = dict(current)
    touched: set[str] = set()
    freed: set[str] = set()
    # A slot a relation rule ties to itself, by the rule that did: refused only if no later
    # rule overrides it. ``share("l.*.weight", like="l.0.weight", relation=Scaled())``
    # then ``free("l.0.weight")`` (the last matching rule wins) was refused at rule 0 as a
    # cycle before the free could take l.0.weight out (stop 37).
    loops: dict[str, int] = {}
    # a module registered at two paths (m.a = m.b = lin): a.weight and b.weight are one
    # parameter, so b.weight tied to a.weight through a relation reads itself (stop 55: the
    # commit failed half way, saying a module on the path "was replaced")
    one = _aliases(inv)

    for i, rule in enumerate(rules):
        pat = Pattern(rule.target)
        matched: dict[str, str | None] = {}
        hits = 0
        for mpath in inv.modules:
            caps = pat.match(mpath) if mpath else None
            if caps is None:
                continue
            hits += 1
            src_mod = resolver.source_for(i, rule, mpath, caps)
            if src_mod is not None and src_mod not in inv.modules:
                why = inv.wrong_kind(mpath, src_mod, rule)  # a parameter path: say so (stop 58)
                raise _fail(
                    i,
                    rule,
                    why
                    or f"source module {src_mod!r} (for {mpath!r}) does not exist"
                    f"{inv.closest(src_mod)}",
                )
            for spath in inv.under(mpath):
                suffix = spath[len(mpath) + 1 :]
                src = None if src_mod is None else join(src_mod, suffix)
                if src is not None and src not in inv.slots:
                    raise _fail(
                        i,
                        rule,
                        one_sided(inv.modules, spath, mpath, src, src_mod)
                        or f"{spath!r} has no counterpart {src!r} in {src_mod!r}: the two "
                        f"modules differ in structure; tie the matching parameters one by one",
                    )
                matched[spath] = src
        for spath in inv.slots:
            caps = pat.match(spath)
            if caps is not None:
                hits += 1
                matched[spath] = resolver.source_for(i, rule, spath, caps)
        for bpath in sorted(inv.buffers):
            if pat.match(bpath) is not None:
                raise _fail(
                    i,
                    rule,
                    f"{bpath!r} is a buffer; ties are for parameters (buffers such as running "
                    f"statistics are state, not weights): narrow the pattern",
                )
        if hits == 0:
            raise _fail(
                i,
                rule,
                f"pattern {rule.target!r} matches no parameter or module{inv.closest(rule.target)}",
            )
        if rule.kind == "share" and type(rule.relation) is Same:
            resolver.refuse_all_self(i, rule, list(matched.items()))
        for target, source in matched.items():
            loops.pop(target, None)
            if rule.kind == "free":
                desired[target] = None
                touched.add(target)
                freed.add(target)
                continue
            if source is not None and source not in inv.slots:
                what = "a buffer" if source in inv.buffers else "no parameter"
                why = inv.wrong_kind(target, source, rule)  # a module path: say so (stop 58)
                raise _fail(
                    i,
                    rule,
                    why or f"source {source!r} (for {target!r}) is {what}{inv.closest(source)}",
                )
            if source == target or (
                source is not None and one.get(source, source) == one.get(target, target)
            ):
                if type(rule.relation) is Same:
                    earlier = desired.get(target) if target in touched else None
                    if earlier is not None and earlier.rule >= 0 and earlier.source is not None:
                        raise resolver.self_override_error(
                            i, rule, target, earlier.rule, rules[earlier.rule], earlier.source
                        )
                    continue  # a module tied to itself: layer 0 of an ALBERT stack
                loops[target] = i
            desired[target] = Tie(source, rule.relation, i)
            touched.add(target)
            freed.discard(target)

    if loops:
        target, i = next(iter(loops.items()))
        source = desired[target].source
        alias = (
            ""
            if source == target
            else f" ({target!r} and {source!r} are one parameter of one module registered at "
            f"two paths)"
        )
        raise _fail(
            i,
            rules[i],
            f"{target!r} is tied to itself through {rules[i].relation!r}{alias}: a cycle; take "
            f"it out with a later tying.free({target!r}) (the last matching rule wins)",
        )
    _check_cycles(desired, rules, one)
    _check_hand_ties(inv, desired, touched, rules)
    hand = set(inv.hand) | set(inv.hand.values())
    changes = []
    for path in inv.slots:
        new, old = desired[path], current[path]
        if new is None and old is None:
            if path in freed and path in hand:
                changes.append(Change(path, None, None))  # free one end of a hand tie: a copy
            continue
        if new is not None and new.same_as(old):
            continue
        if new is not None and old is None and _holds_by_hand(inv, path, new, desired, freed):
            continue  # declares a hand tie that already holds: adopted as it is
        changes.append(Change(path, old, new))
    for ch in changes:
        info = inv.slots[ch.path]
        if isinstance(info.module, torch.jit.ScriptModule):
            raise TieError(
                f"{ch.path!r} lives in a TorchScript module ({info.module_path or 'the model'!r}, "
                f"{type(info.module).__name__}) whose parameters tying cannot re-tie; apply the "
                f"plan to the eager module before torch.jit.script, or leave it out of the plan"
            )
        if ch.new is not None:
            _check_tie(ch.path, ch.new, rules, inv)
    return changes, len(touched) - len(changes)


def _holds_by_hand(
    inv: Inventory, path: str, new: Tie, desired: dict[str, Tie | None], freed: set[str]
) -> bool:
    """True when ``path`` already registers the very Parameter ``new`` asks for, and keeps it."""
    src = new.source
    if type(new.relation) is not Same or src is None or src not in inv.slots:
        return False
    if desired.get(src) is not None or src in freed or inv.slots[src].is_tied:
        return False
    info, src_info = inv.slots[path], inv.slots[src]
    # a pruned module holds weight_orig, not weight (a bare KeyError: stop 30 review); a
    # TorchScript module's _parameters has no .get
    mine, theirs = info.module._parameters, src_info.module._parameters
    return (
        info.name in mine and src_info.name in theirs and mine[info.name] is theirs[src_info.name]
    )


def _check_hand_ties(
    inv: Inventory, desired: dict[str, Tie | None], touched: set[str], rules: list[Rule]
) -> None:
    """Refuse a plan that would split a hand tie by re-tying only some of its ends.

    A hand tie (one Parameter registered under several paths) holds because every end
    registers the same object. A rule that ties one end elsewhere leaves the other ends
    holding the old object: the two drift apart with no error. Re-tying is fine when
    the plan also says what every other end does (share or free); ``free`` of one end
    is an explicit split.
    """
    for group in inv.hand_groups():

        def unit(p):  # a module reachable from two paths: its ends cannot part
            return (id(inv.slots[p].module), inv.slots[p].name)

        said = {unit(p) for p in group if p in touched}
        for p in group:
            new = desired[p]
            if p not in touched or new is None:
                continue
            if type(new.relation) is Same and new.source in group:
                continue
            silent = [q for q in group if unit(q) not in said]
            if silent:
                q = silent[0]
                first, later = sorted((p, q), key=group.index)
                raise _fail(
                    new.rule,
                    rules[new.rule],
                    f"{p!r} and {q!r} are one nn.Parameter (a hand-made tie, as in "
                    f"`model.{later} = model.{first}`); re-tying {p!r} alone would silently split "
                    f"them; declare both ends: add tying.share({q!r}, like={p!r}) after this "
                    f"rule to keep them tied, or tying.free({q!r}) to let them part",
                )


def _aliases(inv: Inventory) -> dict[str, str]:
    """Each slot path naming the same parameter of the same module as an earlier path (a
    module registered at two paths) -> that earlier path."""
    first: dict[tuple[int, str], str] = {}
    out: dict[str, str] = {}
    for path, info in inv.slots.items():
        earlier = first.setdefault((id(info.module), info.name), path)
        if earlier != path:
            out[path] = earlier
    return out


def _check_cycles(
    desired: dict[str, Tie | None], rules: list[Rule], one: dict[str, str] | None = None
) -> None:
    """Refuse a cycle of ties; ``one`` (see :func:`_aliases`) merges the paths of a module
    registered twice, whose slots are one slot."""
    one = one or {}
    source_of: dict[str, str | None] = {}
    rule_of: dict[str, tuple[int, Rule]] = {}
    for path, tie in desired.items():
        key = one.get(path, path)
        src = None if tie is None or tie.source is None else one.get(tie.source, tie.source)
        if src is not None or key not in source_of:
            source_of[key] = src
        if tie is not None and tie.rule >= 0:
            rule_of[key] = (tie.rule, rules[tie.rule])
    try:
        resolver.check_cycles(source_of, rule_of)
    except TieError as err:
        said = str(err)
        named = sorted(
            p for p in one if re.search(rf"(?<![\w.]){re.escape(one[p])}(?![\w.])", said)
        )
        if not named:
            raise
        pairs = ", ".join(f"{p} is {one[p]}" for p in named)
        raise TieError(f"{err} ({pairs}: one module registered at two paths)") from None


def _meta(inv: Inventory, path: str) -> tuple[torch.dtype, torch.device]:
    t = inv.tensor(inv.root_of(path))
    return t.dtype, t.device


def _check_tie(target: str, tie: Tie, rules: list[Rule], inv: Inventory) -> None:
    rule = rules[tie.rule]
    info = inv.slots[target]
    if info.name + ORIG in info.module._parameters:
        # stop 30 review: the tie was made, weight_orig stayed behind as a dead parameter,
        # and the next forward raised in the name of prune.global_unstructured
        raise _fail(
            tie.rule,
            rule,
            f"{target!r} is pruned (torch.nn.utils.prune: {info.name}{ORIG} and a mask): a "
            f"tie would leave its {info.name}{ORIG} behind and prune's hook would write over "
            f"the tie; remove the pruning first (prune.remove), or prune the tie's source "
            f"through tying.interop.pruning",
        )
    if tie.source is None:
        try:
            tie.relation.source_shape(info.shape)
        except ValueError as err:
            raise _fail(tie.rule, rule, f"{target!r} of shape {info.shape}: {err}") from None
        try:
            tie.relation.check_reparam()
        except ValueError as err:
            raise _fail(tie.rule, rule, f"{target!r}: {err}") from None
        _check_reparam_dtype(target, tie, info, inv, rules)
        taken = _storage_names(tie, info, inv, rules)
    else:
        src = inv.slots[tie.source]
        try:
            tie.relation.check(src.shape, info.shape)
        except ValueError as err:
            raise _fail(
                tie.rule,
                rule,
                f"{target!r} has shape {info.shape} and its source {tie.source!r} has shape "
                f"{src.shape}: {err}; check the layer sizes or use another relation",
            ) from None
        (tdt, tdev), (sdt, sdev) = _meta(inv, target), _meta(inv, tie.source)
        if tdt != sdt:
            raise _fail(
                tie.rule,
                rule,
                f"{target!r} is {tdt} but its source {tie.source!r} is {sdt}; cast one with .to(dtype) first",
            )
        if tdev != sdev:
            raise _fail(
                tie.rule,
                rule,
                f"{target!r} is on {tdev} but its source {tie.source!r} is on {sdev}; move them "
                f"to one device first"
                + (
                    " (a meta tensor holds no data: weights not loaded yet, or offloaded by "
                    "accelerate; load them first, or with a device_map keep both ends of the "
                    "tie out of the offload, on one device)"
                    if "meta" in (str(tdev), str(sdev))
                    else ""
                ),
            )
        # A tie makes one tensor of two: if one was frozen and the other trained, the
        # merged tensor would silently drop one member's freeze (or its training).
        t_rg = inv.tensor(inv.root_of(target)).requires_grad
        s_rg = inv.tensor(inv.root_of(tie.source)).requires_grad
        if t_rg != s_rg:
            raise _fail(
                tie.rule,
                rule,
                f"{target!r} has requires_grad={t_rg} but its source {tie.source!r} has "
                f"requires_grad={s_rg}; a tied tensor is frozen or trained as one, so set "
                f"requires_grad_() the same on both first",
            )
        taken = _storage_names(tie, info, inv, rules)
    mod = info.module
    own_old = set(info.tie.storage.values()) if info.tie is not None else set()
    for name in taken:
        if name in own_old:
            continue
        if (
            name in mod._parameters
            or name in mod._buffers
            or name in mod._modules
            or name in mod.__dict__
        ):
            raise _fail(
                tie.rule,
                rule,
                f"{target!r} needs attribute {join(info.module_path, name)!r} for its tie, but it exists",
            )


def _check_reparam_dtype(target: str, tie: Tie, info, inv: Inventory, rules: list[Rule]) -> None:
    """Refuse a re-parametrisation whose stored value would change the slot's dtype.

    Stop 31: ``Mirrored``/``Hashed`` average entries, so an int64 slot came back float32
    (with averaged values) and its files no longer fitted the model it came from. Checked
    on the meta device: no data is read or computed.
    """
    dtype = _meta(inv, target)[0]
    try:
        got = tie.relation.right_inverse(torch.empty(info.shape, dtype=dtype, device="meta")).dtype
    except Exception:  # a relation defined elsewhere that meta tensors cannot run
        return
    if got != dtype:
        raise _fail(
            tie.rule,
            rules[tie.rule],
            f"{target!r} is {dtype}, but {tie.relation!r} would store it as {got} "
            f"({dtype} cannot hold the averaged or divided values it stores), changing the "
            f"slot's dtype and values; cast the model with .float() first, or tie it with "
            f"like= to a source of that dtype",
        )


def _check_reparam_finite(path: str, relation: Relation, current, phys) -> None:
    """Refuse a re-parametrisation that turned a finite slot into inf or nan.

    Stop 34: ``Scaled(1e-4)`` on a float16 slot stored ``w / 1e-4``, past float16's
    65504, so the slot read inf; ``Mirrored`` summed two float32 halves near the top of
    the range to inf (float16 ones now sum in float32). Checked before anything changes,
    so the model is left as it was.
    """
    if phys.is_meta or current.is_meta:
        return  # no values (a model built on the meta device): nothing to overflow yet
    if phys.is_floating_point() or phys.is_complex():
        if not bool(torch.isfinite(phys).all()) and bool(torch.isfinite(current).all()):
            raise TieError(
                f"{path!r}: {relation!r} would store this slot's finite {current.dtype} "
                f"values as {phys.dtype} inf or nan (they overflow {phys.dtype}), and the "
                f"slot would read them; cast the model to a wider dtype first (.float(), "
                f".double()), or choose another relation or init"
            )


def _storage_names(tie: Tie, info, inv: Inventory, rules: list[Rule]) -> list[str]:
    """Names of the parameters the tie will own on the target's module."""
    dtype, device = _meta(inv, info.path)
    try:
        extras = tie.relation.extras(info.shape, torch.empty(0, dtype=dtype, device=device))
    except ValueError as err:
        raise _fail(tie.rule, rules[tie.rule], f"{info.path!r}: {err}") from None
    names = [f"{info.name}_{role}" for role in extras]
    return ([f"{info.name}_physical"] if tie.source is None else []) + names


def _commit(
    model: nn.Module, inv: Inventory, changes: list[Change], then=None, values_follow=False
) -> None:
    """Phase 2's work: perform ``changes`` on ``model`` (then call ``then()``, if given);
    on any exception restore it."""
    # Everything that reads the current values happens before the first mutation.
    prepared = []
    successors = []  # (the Parameter a slot read, the new one that replaces it, its path)
    old_roots: dict[str, torch.Tensor] = {}  # the tensor each changed slot read before
    with torch.no_grad():
        for ch in changes:
            info = inv.slots[ch.path]
            current = getattr(info.module, info.name)
            root = inv.tensor(inv.root_of(ch.path))
            old_roots[ch.path] = root
            if ch.new is None:
                # contiguous, as the parameter of a model built untied (stop 42: a freed
                # Transposed/Rotated slot kept the source's transposed strides, and
                # parameters_to_vector, safetensors' save_file and .view() refused it)
                value = nn.Parameter(_contiguous_copy(current, root), root.requires_grad)
                prepared.append((ch, info, value, {}))
                successors.append((root, value, ch.path))
                continue
            storage: dict[str, nn.Parameter] = {}
            if ch.new.source is None:
                phys = _contiguous_copy(ch.new.relation.right_inverse(current.detach()), current)
                if not values_follow:
                    _check_reparam_finite(ch.path, ch.new.relation, current, phys)
                storage[f"{info.name}_physical"] = nn.Parameter(phys, root.requires_grad)
            for role, t in ch.new.relation.extras(info.shape, current).items():
                storage[f"{info.name}_{role}"] = nn.Parameter(t, root.requires_grad)
            prepared.append((ch, info, None, storage))
            successors += [(root, p, join(info.module_path, k)) for k, p in storage.items()]

    touched = {id(info.module): info.module for _, info, _, _ in prepared}
    touched[id(model)] = model
    superseded = _superseded_declarations(inv.modules, {ch.path for ch in changes})
    touched.update((id(m), m) for m, _ in superseded)  # rolled back with the rest
    snapshot = {
        key: (
            m.__class__,
            dict(m._parameters),
            m.__dict__.get(SLOTS_ATTR),
            m.__dict__.get(DECLARED_ATTR),
            m.__dict__.get(SLOTS_GENERATION_ATTR),
            m._parameters,  # the dict itself: a tie makes it a TiedParams (stop 56b)
        )
        for key, m in touched.items()
    }
    # guard_loading adds load pre-hooks to the model and the modules above a tied one;
    # a failure after it must take them back too (stop 34)
    # (and to the modules known to hold the model: slot_loads.ancestors)
    above = [m for m in ancestors(model) if hasattr(m, "_load_state_dict_pre_hooks")]
    hooks = {id(m): (m, dict(m._load_state_dict_pre_hooks)) for m in [*model.modules(), *above]}
    sd_hooks = {id(m): (m, dict(m._state_dict_hooks)) for m in model.modules()}  # tie_record
    where = None  # the change being made, named in a failure's note
    recorded: list = []
    try:
        old_declared = model.__dict__.get(DECLARED_ATTR)
        declared = dict(old_declared or {})
        by_hand = []
        for ch, info, value, storage in prepared:
            where = ch
            mod, name = info.module, info.name
            previous = slots_of(mod).get(name)
            if previous is not None:
                uninstall(mod, name, value)
                param_order.seat(mod, name, param_order.order_of(previous))
            elif value is not None:
                mod._parameters[name] = value
            if ch.new is None:
                declared.pop(ch.path, None)
                continue
            if ch.new.hand:
                by_hand.append((ch, param_order.order_of(previous)))
                continue
            for sname, p in storage.items():
                mod._parameters[sname] = p
            roles = {}
            if ch.new.source is None:
                src_mod, src_name = mod, f"{name}_physical"
                roles["source"] = src_name
            else:
                src = inv.slots[ch.new.source]
                src_mod, src_name = src.module, src.name
            for sname in storage:
                if sname != f"{name}_physical":
                    roles[sname[len(name) + 1 :]] = sname
            paths = (info.module_path, ch.new.source)
            anchor = None
            if ch.new.source is not None and src.module_path:
                names = src.module_path.split(".")  # every link from the root to the source
                anchor = tuple(
                    (
                        inv.modules[".".join(names[:i])],
                        names[i],
                        inv.modules[".".join(names[: i + 1])],
                    )
                    for i in range(len(names))
                )
            slot = Slot(src_mod, src_name, ch.new.relation, info.shape, roles, paths, anchor)
            param_order.remember(slot, mod, name, previous)
            install(mod, name, slot)
            declared[ch.path] = {"like": ch.new.source, "relation": ch.new.relation.spec()}
        for ch, order in by_hand:  # after the rest, so each source is in its final place
            info, src = inv.slots[ch.path], inv.slots[ch.new.source]
            info.module._parameters[info.name] = src.module._parameters[src.name]
            param_order.seat(info.module, info.name, order)
        # Hand ties become declared ties too, so verify() notices when one is broken.
        declared = {k: v for k, v in declared.items() if not v.get("hand")}
        for target, source in Inventory(model).hand.items():
            declared[target] = {"like": source, "relation": Same().spec(), "hand": True}
        if declared != (old_declared or {}):
            model.__dict__[DECLARED_ATTR] = declared
        declared_roots.remember(model)  # its parts find these declarations (stop 59)
        for mod, kept in superseded:
            mod.__dict__[DECLARED_ATTR] = kept
        guard_loading(model)
        tie_record.install(model)  # the tied slots in state_dict()'s metadata (stop 59)
        where = None
        successors += _dropped_for_sources(model, old_roots, changes)
        # optimizers built before now must not step on (tying.core.stale); a record whose
        # new Parameter a rollback drops dies with it, so this may come before then()
        recorded = stale.record(successors)
        # an optimizer built after now over a tied module alone (tying.core.unreached)
        unreached.watch(model.modules())  # a copy re-applied or loaded into: indexed too
        if unreached.watching():
            stale.install_hook()
        if then is not None:
            then()  # last: load's values cannot be taken back on a plain model
    except BaseException as err:
        stale.withdraw(recorded)
        if (
            where is not None
            and isinstance(err, Exception)
            and not isinstance(err, TieError)
            and hasattr(err, "add_note")
        ):
            # an error from inside the module (a class whose __setattr__ renames attributes,
            # Opacus' DPLSTM: "KeyError: attribute 'weight_ih_l0' already exists") named
            # neither the tie nor the state the model was left in (stop 31)
            what = (
                "untying"
                if where.new is None
                else f"tying it to {where.new.source or 'its own storage'} via {where.new.relation!r}"
            )
            err.add_note(
                f"tying: raised while {what} at {where.path} "
                f"({type(inv.slots[where.path].module).__name__}); the model was left as it "
                f"was. A module class that manages its own attributes may not take a tie: "
                f"tie the modules around it, or leave it untied"
            )
        for key, (cls, params, slots, decl, generation, own) in snapshot.items():
            m = touched[key]
            m.__class__ = cls
            m.__dict__["_parameters"] = own
            m._parameters.clear()
            m._parameters.update(params)
            restore = (
                (SLOTS_ATTR, slots),
                (DECLARED_ATTR, decl),
                (SLOTS_GENERATION_ATTR, generation),
            )
            for attr, val in restore:
                if val is None:
                    m.__dict__.pop(attr, None)
                else:
                    m.__dict__[attr] = val
        for m, pre in hooks.values():
            if dict(m._load_state_dict_pre_hooks) != pre:
                m._load_state_dict_pre_hooks.clear()
                m._load_state_dict_pre_hooks.update(pre)
        for m, post in sd_hooks.values():
            if dict(m._state_dict_hooks) != post:
                m._state_dict_hooks.clear()
                m._state_dict_hooks.update(post)
        raise


def _superseded_declarations(
    modules: dict[str, nn.Module], paths: set[str]
) -> list[tuple[nn.Module, dict]]:
    """Each submodule (``modules``: the model's, by every path, as the inventory holds
    them) that declared a tie of its own for one of ``paths`` (the slots this plan
    re-ties or frees), with the declarations it keeps.

    Stop 55: ``share("y", like="x")`` over a ``y`` that had applied a plan of its own kept
    ``y``'s declaration (``b.weight`` Transposed of ``a.weight``), which no longer
    described the model: ``tying.verify`` refused a correct model ("relation is Same(),
    declared Transposed"), ``tying.retie`` would have re-made the old tie, and
    ``Plan.declared`` listed both (the old one last, so it won on a re-apply).
    """
    out: dict[int, tuple[nn.Module, dict]] = {}
    for prefix, mod in modules.items():
        declared = mod.__dict__.get(DECLARED_ATTR)
        if not prefix or not declared:
            continue
        kept = out[id(mod)][1] if id(mod) in out else dict(declared)
        for target in declared:
            if join(prefix, target) in paths:
                kept.pop(target, None)
        if len(kept) < len(declared):
            out[id(mod)] = (mod, kept)
    return list(out.values())


_DENSE_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def _contiguous_copy(t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """A new tensor of ``t``'s values in the layout a freshly built module has.

    A plain ``clone()`` keeps the strides of a view (``Transposed``/``Rotated`` compute
    one), and a parameter with such strides is refused by torch's flat-vector tools
    (``parameters_to_vector``) and by ``safetensors.torch.save_file``. Row-major, unless
    ``like`` (the tie's physical tensor) is ``channels_last``: a model the user converted
    with ``.to(memory_format=torch.channels_last)`` keeps that layout.
    """
    if t.layout != torch.strided:  # sparse: no strides to fix, and no memory_format
        return t.detach().clone()
    fmt = torch.contiguous_format
    if like is not None and t.dim() == like.dim() and like.dim() in _DENSE_FORMATS:
        dense = _DENSE_FORMATS[like.dim()]
        if like.is_contiguous(memory_format=dense) and not like.is_contiguous():
            fmt = dense
    return t.detach().clone(memory_format=fmt)


def _dropped_for_sources(
    model: nn.Module, old_roots: dict[str, torch.Tensor], changes: list[Change]
) -> list:
    """``(old, source, what)`` for each slot tied to a source that dropped its own Parameter.

    Stop 31 (round 2): a tie to a source makes no new Parameter, so none was recorded, and
    an optimizer built before over the target's module alone (fine-tuning the decoder, then
    tying it to the encoder) kept stepping the dropped Parameter: the weight the slot now
    reads was never trained, with no error. Only a Parameter the model no longer holds
    counts: one still read elsewhere (a re-tie from one source to another) is no sign.
    """
    tied = [ch for ch in changes if ch.new is not None and ch.new.source is not None]
    if not tied:
        return []
    live = {id(p) for _, p in model.named_parameters(remove_duplicate=False)}
    after = Inventory(model)
    out = []
    for ch in tied:
        old = old_roots[ch.path]
        if id(old) in live:
            continue
        try:
            root = after.root_of(ch.path)
            new = after.tensor(root)
        except TieError:  # a model a read check refuses: its own error comes at the next read
            continue
        if new is not old:
            out.append((old, new, f"{root} (which {ch.path} now reads)"))
    return out
