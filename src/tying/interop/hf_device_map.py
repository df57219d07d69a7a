"""A ``device_map`` that offloads one end of a tie, refused by ``tying.hf.from_pretrained``.

accelerate's offload hooks (``"disk"``, or ``"cpu"`` beside an accelerator) load a
module's own weights for that module's own forward only, from the tensors HF offloaded
while loading. HF offloads before tying re-creates the ties, so a tied slot in an
offloaded module keeps a hook that looks for its own weight in the offload index, where
the file (which holds each tie once) never put it, and a tie's source in an offloaded
module is a meta placeholder outside its own forward, which the tied reader cannot use:
a Plan-tied stack loaded with its blocks on ``"disk"`` failed at its first forward. A
hand tie (HF's ``tie_word_embeddings``) with one end offloaded and the other not failed
at every forward inside accelerate (``KeyError: 'lm_head.weight'``), naming neither the
tie nor the device map (stop 58); with both ends offloaded accelerate serves it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory

_OFFLOAD = ("disk", "cpu")


def _entry(device_map: dict, path: str) -> str | None:
    """The ``device_map`` key that places ``path`` (the longest module prefix), or None."""
    best = None
    for key in device_map:
        if key == "" or path == key or path.startswith(key + "."):
            if best is None or len(key) > len(best):
                best = key
    return best


def _offloaded(device_map: dict) -> set:
    """The values of ``device_map`` that mean offload: ``"disk"`` always, ``"cpu"`` when
    some module runs on an accelerator (on a CPU-only map, ``"cpu"`` is where it runs)."""
    runs_elsewhere = any(str(v) not in _OFFLOAD for v in device_map.values())
    return {"disk", "cpu"} if runs_elsewhere else {"disk"}


def _offloading(model: nn.Module) -> tuple[dict, set, Any] | None:
    """``(device_map, offloaded devices, the device the model runs on)`` of a model that
    accelerate loaded with some entries offloaded; None when nothing is offloaded."""
    device_map: Any = getattr(model, "hf_device_map", None)
    if not isinstance(device_map, dict) or not device_map:
        return None
    offload = _offloaded(device_map)
    if not any(str(v) in offload for v in device_map.values()):
        return None
    return (
        device_map,
        offload,
        next((v for v in device_map.values() if str(v) not in offload), "cpu"),
    )


def refuse_offloaded_ties(model: nn.Module, inv: Inventory | None = None) -> None:
    """Refuse a model HF dispatched with a tie's slot or source in an offloaded module.

    Args:
        model: the model ``cls.from_pretrained(..., device_map=...)`` returned, tied.
        inv: its inventory (taken here when not given).

    Raises:
        TieError: naming the tie, the ``device_map`` entry that offloads it, and the
            entries to change (both ends on the device the model runs on).
    """
    found = _offloading(model)
    if found is None:
        return
    device_map, offload, runs_on = found
    inv = inv if inv is not None else Inventory(model)
    bad: dict = {}
    for slot, info in inv.slots.items():
        if not info.is_tied or not info.source:
            continue
        ends = [_entry(device_map, slot), _entry(device_map, info.source)]
        off = [k for k in ends if k is not None and str(device_map[k]) in offload]
        if off:
            bad.setdefault(tuple(dict.fromkeys(off)), []).append((slot, info.source))
    # A hand tie (one Parameter at two paths, HF's tie_word_embeddings): accelerate serves
    # it when both ends are offloaded (its tied_params_map), not when one end is
    seen: dict = {}
    for path, param in model.named_parameters(remove_duplicate=False):
        seen.setdefault(id(param), []).append(path)
    for paths in seen.values():
        keys = [_entry(device_map, p) for p in paths]
        off = [k for k in keys if k is not None and str(device_map[k]) in offload]
        if off and len(off) < len(keys):
            bad.setdefault(tuple(dict.fromkeys(off)), []).append((paths[1], paths[0]))
    _raise(device_map, bad, runs_on)


def refuse_offloaded_plan(model: nn.Module, plan) -> None:
    """Refuse a plan whose ties would have one end in an offloaded module, by its rules.

    Called where ``plan.apply`` refused the model HF dispatched: with a stack split by
    ``device_map="auto"`` (``transformer.h.0`` on ``"cpu"``, ``transformer.h.1`` on
    ``"disk"``) the plan met a meta tensor beside a real one and said "move them to one
    device first", naming no ``device_map`` entry (review stop 58).

    Args:
        model: the model ``cls.from_pretrained(..., device_map=...)`` returned, untied.
        plan: the :class:`~tying.Plan` about to be applied.

    Raises:
        TieError: as :func:`refuse_offloaded_ties`, when a rule's end is offloaded.
    """
    from tying.core.patterns import Pattern

    found = _offloading(model)
    if found is None:
        return
    device_map, offload, runs_on = found
    paths = [n for n, _ in model.named_modules() if n]
    paths += [n for n, _ in model.named_parameters(remove_duplicate=False)]
    bad: dict = {}
    for rule in plan.rules:
        if rule.kind != "share" or not isinstance(rule.like, str):
            continue
        target, like = Pattern(rule.target), Pattern(rule.like)
        for path in paths:
            caps = target.match(path)
            if caps is None:
                continue
            source = like.substitute(caps) if len(like.wildcards) == len(caps) else rule.like
            ends = [_entry(device_map, path), _entry(device_map, source)]
            off = [k for k in ends if k is not None and str(device_map[k]) in offload]
            if off:
                bad.setdefault(tuple(dict.fromkeys(off)), []).append((path, source))
    _raise(device_map, bad, runs_on)


def _raise(device_map: dict, bad: dict, runs_on) -> None:
    """The refusal for ``bad`` (``{offloaded entries: [(slot, source), ...]}``), if any."""
    if not bad:
        return
    keys, ties = next(iter(bad.items()))
    slot, source = ties[0]
    everything = sorted({k for ks in bad for k in ks})
    if "" in everything:
        fix = (
            "the whole model is offloaded; give max_memory room for the tied modules, or "
            "load without device_map"
        )
    else:
        fix = "pass device_map with " + ", ".join(f"{k!r}: {runs_on!r}" for k in everything)
    more = sum(len(v) for v in bad.values()) - 1
    raise TieError(
        f"tying.hf.from_pretrained: device_map offloads {', '.join(repr(k) for k in keys)} "
        f"({device_map[keys[0]]!r}), which holds {slot!r} tied to {source!r}"
        f"{f' (and {more} more tied slot(s))' if more > 0 else ''}; accelerate loads an "
        f"offloaded module's own weights for its own forward only, and the file holds each "
        f"tie once, so the model would fail or read no data at its forward. Keep both ends "
        f"of every tie on the device the model runs on: {fix} (or, to offload them, load "
        f"without device_map, tying.untie(model), then accelerate.dispatch_model)"
    )
