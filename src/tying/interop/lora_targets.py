"""What a peft config targets on a tied model, refused before peft runs when it cannot be shared.

Two ways a config reached a tie that :func:`tying.interop.lora.get_peft_model` refused with
advice that did not work when followed (stop 58):

- **Some paths of a module tied whole**, the others left out by ``exclude_modules``,
  ``layers_to_transform`` or ``target_modules`` (an ALBERT-style stack with
  ``layers_to_transform=[1]``). The refusal named one path and said "leave it out of
  target_modules"; doing so named the next path, and so on, until no adapter was left.
  :func:`refuse_partial_groups` names the whole group, what the config leaves out, and
  the two ways that work: target every path (one adapter serves them all), or give the
  paths that should differ their own copy first (``tying.free``).
- **``target_parameters``** (peft's ``ParamWrapper``, LoRA on an ``nn.Parameter``) on a
  tied tensor: peft wraps the one module holding the Parameter, the other uses run
  without the delta, and the refusal came from ``verify`` after wrapping, saying "use
  tying.interop.lora.get_peft_model", the very call that refused.
  :func:`refuse_tied_parameters` refuses it first, naming the entry, the tie, and the
  module to put in ``target_modules`` instead where one adapter can serve every use.

Also here: :func:`quiet_own_exclusions`, so peft does not warn about the tied paths that
``get_peft_model`` itself put in ``exclude_modules`` when a later adapter is added.

Example:
    >>> import torch, tying, peft
    >>> from tying.interop.lora import get_peft_model
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
    >>> try:
    ...     get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0"]))
    ... except tying.TieError as err:
    ...     print(str(err)[:76])
    get_peft_model: the modules at ['0', '2'] are one module tied whole, but the
"""

from __future__ import annotations

import contextlib
import re
import warnings

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.interop.groups import hand_group, hand_group_fix, hand_tie_fix, tied_readers


def _groups(whole: dict[str, str]) -> dict[str, list[str]]:
    """``{source path: [source, tied paths...]}`` of the modules tied whole."""
    out: dict[str, list[str]] = {}
    for path, src in sorted(whole.items()):
        out.setdefault(src, [src]).append(path)
    return out


def _leaving_out(config) -> str:
    """The config settings that can leave a path out of the targets, as the user set them."""
    names = [
        n
        for n in ("exclude_modules", "layers_to_transform", "layers_pattern")
        if getattr(config, n, None) not in (None, [], ())
    ]
    return " / ".join(names + ["target_modules"])


def refuse_partial_groups(
    config, whole: dict[str, str], targets: set[str], what: str = "get_peft_model"
) -> None:
    """Refuse a config that targets some paths of a module tied whole but not all of them.

    Args:
        config: the peft config (its settings are named in the message).
        whole: :func:`tying.interop.groups.whole_module_ties` of the model.
        targets: the module paths the config targets, as peft matches them.
        what: the call named in the message (``"add_adapter('b')"``).

    Raises:
        TieError: naming the group, the paths targeted and left out, the settings that
            left them out, and the fixes: target every path, or free the paths that are to
            differ (a runnable ``tying.Plan([tying.free(...)])``), then call again.
    """
    partial = []  # every group targeted in part, named at once: one by one, a stack whose
    # layers hold q, k, v, o and an MLP tied whole took one refusal per module (review 58)
    for src, paths in _groups(whole).items():
        hit = [p for p in paths if p in targets]
        if hit and len(hit) < len(paths):
            partial.append((src, paths, hit, [p for p in paths if p not in targets]))
    if not partial:
        return
    to_free = []
    for src, _paths, hit, out in partial:
        # free the paths that are not the source: the left-out ones when the source keeps
        # its adapter, else the targeted ones (a source cannot be freed from its users)
        to_free += [p for p in out if p != src] if src in targets else hit
    free = ", ".join(f"tying.free({p!r})" for p in to_free)
    _, paths, hit, out = partial[0]
    more = "".join(
        f"; likewise the modules at {g} (targets {h}, leaves out {o})" for _, g, h, o in partial[1:]
    )
    raise TieError(
        f"{what}: the modules at {paths} are one module tied whole, but the "
        f"config targets {hit} and leaves out {out} ({_leaving_out(config)}){more}: one "
        f"adapter serves every path of such a tie, so an adapter at some of them only "
        f"would change one use of the shared weights, and merging would write its delta "
        f"into every use. Target every path of {'each' if more else 'it'} (one adapter then "
        f"serves them all), or give {to_free} their own copy first: "
        f"tying.Plan([{free}]).apply(model); nothing was changed"
    )


def _lora_wraps(module) -> bool:
    """Whether peft's LoRA wraps ``module`` when ``target_modules`` names it (its dispatchers:
    a module of another class, as MoE experts holding a raw Parameter, is refused by peft
    with "Target module ... is not supported")."""
    from torch import nn

    kinds: tuple = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:
        pass
    return isinstance(module, kinds)


def _matches(key: str, names: list[str]) -> bool:
    # as peft's _inject_parameters: the full name, or its end after a dot
    return key in names or any(key.endswith(f".{n}") for n in names)


def refuse_tied_parameters(
    config, inv: Inventory, whole: dict[str, str], what: str = "get_peft_model"
) -> None:
    """Refuse a ``target_parameters`` entry that names a tensor taking part in a tie.

    Args:
        config: the peft config (``target_parameters``: peft's LoRA on a Parameter).
        inv: the model's :class:`~tying.core.inventory.Inventory`.
        whole: :func:`tying.interop.groups.whole_module_ties` of the model.
        what: the call named in the message (``"add_adapter('b')"``).

    Raises:
        TieError: naming the entry, the slot it matches, the tie, and the fix: leave it
            out of ``target_parameters``; for a module tied whole, name every path of it in
            ``target_modules`` instead (one adapter serves every use); for a hand-made tie,
            the way :func:`tying.interop.groups.hand_tie_fix` gives.
    """
    names = list(getattr(config, "target_parameters", None) or [])
    if not names:
        return
    groups = _groups(whole)
    sources = {i.source: i.path for i in inv.slots.values() if i.is_tied and i.source}
    hand = {**inv.hand, **{s: t for t, s in inv.hand.items()}}
    for path, info in sorted(inv.slots.items()):
        if not _matches(path, names):
            continue
        entry = next(n for n in names if path == n or path.endswith(f".{n}"))
        if path in hand:
            target, source = (path, hand[path]) if path in inv.hand else (hand[path], path)
            t, s = inv.slots[target], inv.slots[source]
            fix = hand_tie_fix(target, t.module, s.module, t.module_path, s.module_path)
            tie = f"the hand-made tie {target} <- {source} (one nn.Parameter in two modules)"
            group = hand_group(inv, source)
            ends = {target, source} | {tt for tt, _ in group}
            if len(group) > 1:  # every module holding it at once: one try each (stop 60 review)
                others = ", ".join(tt for tt, _ in group if tt != target)
                tie += f" (the same nn.Parameter is also at {others})"
                wraps = _lora_wraps(s.module)
                fix = hand_group_fix(inv, group, set() if wraps else None)
                if wraps and "target_modules=" in fix:
                    fix += f" instead of target_parameters={[entry]}"
        elif info.is_tied or path in sources:
            target, source = (path, info.source) if info.is_tied else (sources[path], path)
            tie = f"the tie {target} <- {source} ({inv.slots[target].tie.relation!r})"
            # every slot reading the same tensor: the pair alone was refused again for a
            # second tie to it (two heads tied to one embedding: two tries)
            ends = {target, source} | {i.path for i in tied_readers(inv, target)}
            group = next((g for g in groups.values() if info.module_path in g), None)
            free = f"tying.Plan([tying.free({target!r})]).apply(model)"
            if group and _lora_wraps(inv.modules[info.module_path]):
                fix = (
                    f"name the module tied whole in target_modules instead, every path of it "
                    f"(target_modules={group}): one adapter then serves every use"
                )
            elif group:  # peft's LoRA takes no such module in target_modules (MoE experts)
                others = ", ".join(f"tying.free({p!r})" for p in group[1:])
                fix = (
                    f"give {group[1:]} their own copy first (tying.Plan([{others}])"
                    f".apply(model)): peft's LoRA does not take a module of class "
                    f"{type(inv.modules[info.module_path]).__name__} in target_modules"
                )
            else:
                fix = f"give {target!r} its own copy first ({free})"
        else:
            continue
        # every entry naming an end of this tie is left out at once: the one met first
        # only looped when both ends were listed (the head, then the embedding; stop 61)
        hits = sorted({n for n in names for p in ends if p == n or p.endswith(f".{n}")})
        raise TieError(
            f"{what}: target_parameters entry {entry!r} matches {path!r}, which takes "
            f"part in {tie}; peft's LoRA on a parameter wraps the one module that holds it, "
            f"so the other use(s) would run without the delta and merging would write it "
            f"into every use. Leave {' and '.join(map(repr, hits))} out of "
            f"target_parameters, or {fix}; nothing "
            f"was changed"
        )


# the regex group that marks, in a config's exclude_modules (and the saved
# adapter_config.json), the tied paths that share their source's adapter, so from_pretrained
# can tell them from the user's own exclusions (re-exported by tying.interop.lora)
SHARED_GROUP = "tying_shared"


@contextlib.contextmanager
def quiet_own_exclusions(config):
    """Silence peft's "no modules were excluded" for an ``exclude_modules`` that is ours alone.

    A config made by :func:`tying.interop.lora.get_peft_model` excludes the tied paths of a
    module tied whole (peft wraps the source once, the wrapper is then seated at every
    path). Once they hold that wrapper, peft no longer lists them (it lists modules without
    duplicates), so adding an adapter with such a config (``load_adapter`` of a saved one,
    ``add_weighted_adapter``, which copies the first adapter's config) warned "You have
    passed exclude_modules=(?P<tying_shared>...) but no modules were excluded. Please check
    that exclude_modules was set correctly": about a setting the user never made, and an
    error where warnings are errors, as in this project's tests (stop 58). A user's own
    ``exclude_modules`` in the config keeps the warning.
    """
    old = getattr(config, "exclude_modules", None)
    ours = isinstance(old, str) and re.fullmatch(rf"\(\?P<{SHARED_GROUP}>[^()]*\)", old)
    with warnings.catch_warnings():
        if ours:
            warnings.filterwarnings(
                "ignore",
                message=r"You have passed exclude_modules=.* but no modules were excluded",
                category=UserWarning,
            )
        yield


def warn_unmatched_exclusions(value, model) -> None:
    """Warn as peft does when the user's own ``exclude_modules`` matches no module of ``model``.

    peft warns "no modules were excluded" only when nothing at all was excluded; the tied
    paths that :func:`tying.interop.lora.get_peft_model` adds to ``exclude_modules`` always
    match, so a user's own exclusion that matched nothing (a typo) went unreported by
    ``get_peft_model``, ``add_adapter`` and ``from_pretrained`` on a model with a module tied
    whole, where plain peft warns (review 58). ``value``: the user's setting, or a saved
    one that holds the tied paths in the ``tying_shared`` group (left out here).
    """
    if not value:
        return
    if isinstance(value, str):
        mine = re.sub(rf"\|?\(\?P<{SHARED_GROUP}>[^()]*\)$", "", value)
        if not mine:
            return
        hit = any(re.fullmatch(mine, k) for k, _ in model.named_modules())
    else:
        names = list(value)
        hit = any(_matches(k, names) for k, _ in model.named_modules())
    if not hit:
        warnings.warn(
            f"You have passed exclude_modules={value} but no modules were excluded. Please "
            f"check that exclude_modules was set correctly.",
            UserWarning,
            stacklevel=4,
        )


class WeightedAdapter:
    """``tuner.add_weighted_adapter`` with :func:`quiet_own_exclusions` (the new adapter's config
    is a copy of the first adapter's); a plain object holding the tuner, as ``_AddAdapter``."""

    def __init__(self, tuner) -> None:
        self.tuner = tuner

    def __call__(self, adapters, *args, **kwargs):
        first = self.tuner.peft_config[adapters[0]] if adapters else None
        with quiet_own_exclusions(first):
            return type(self.tuner).add_weighted_adapter(self.tuner, adapters, *args, **kwargs)
