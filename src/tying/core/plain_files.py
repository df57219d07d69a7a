"""Files that :func:`~tying.save` did not write, as :func:`~tying.load` reads them.

Two kinds of file other tools write are read here:

- a plain safetensors file that stores *both* ends of a tie
  (``safetensors.torch.save_file(model.state_dict())`` of an untied model, a ``.bin``
  converted key by key): where the tie gives the stored target back exactly from the
  stored source, the target's entry is the tie's value and the file loads, as
  ``load_state_dict`` loads it into the same model (stop 58: ``tying.load`` refused it,
  saying "the saved model did not tie it"). Where the two ends differ, which one the
  model should read cannot be told: the refusal gives the difference;
- a sharded folder (transformers' ``save_pretrained`` with ``max_shard_size``): its
  ``model.safetensors.index.json`` names the shard of every tensor, and the shards are
  read as one file (stop 58: the folder was refused with advice naming a
  ``model.safetensors`` that was not there, the index as "truncated").
"""

from __future__ import annotations

import json
import pathlib

import torch

from tying.core.errors import TieError
from tying.core.outside import canonical
from tying.core.sharded_check import same_values

INDEX = "model.safetensors.index.json"


def tie_gives_back(inv, final: dict, tensors: dict, aliases: dict) -> dict[str, str]:
    """Fold the stored target of each tie of the model into an alias of its stored source
    where the tie gives it back exactly; returns ``{target: why}`` for the ties whose two
    stored ends differ (the refusal's words: the largest difference).

    ``tensors`` (canonical keys) and ``aliases`` are changed in place: a folded target
    leaves ``tensors``; a hand-made tie's target becomes an alias of its source.
    """
    differ: dict[str, str] = {}
    pairs = [(t, s, None) for t, s in inv.hand.items()]
    for target, tie in final.items():
        if tie is not None and tie.source and not tie.hand and target not in inv.hand:
            pairs.append((target, tie.source, inv.slots[target]))
    for target, source, info in pairs:
        ct, cs = canonical(target), canonical(source)
        if ct not in tensors or cs not in tensors:
            continue
        stored, src = tensors[ct], tensors[cs]
        back = _given_back(info, src)
        if back is None:
            continue  # a relation with parameters of its own: the usual checks decide
        if tuple(back.shape) == tuple(stored.shape) and back.dtype == stored.dtype:
            if same_values(back, stored):
                del tensors[ct]
                if info is None:  # a hand-made tie: the target reads the source's tensor
                    aliases[ct] = cs
                continue
            gap = (back.double() - stored.double()).abs().nan_to_num(nan=float("inf")).max()
            differ[target] = (
                f"holds a value for it that differs from the one the tie gives from the "
                f"file's {source} (largest difference {gap.item():.4g}), so which end this "
                f"model should read cannot be told"
            )
    return differ


def _given_back(info, src: torch.Tensor) -> torch.Tensor | None:
    """The value the tie of ``info`` (None: a hand-made tie) computes from ``src``, or None
    when its relation keeps parameters of its own (a scale: the file's value of it is not
    known here)."""
    if info is None:
        return src
    slot = info.tie
    if set(slot.storage) - {"source"} or "source" in slot.storage:
        return None
    try:
        with torch.no_grad():
            return slot.relation(src, shape=info.shape)
    except Exception:  # noqa: BLE001 - the relation cannot read this value: checks below decide
        return None


def read_sharded(path: pathlib.Path):
    """``(tensors, metadata)`` of a sharded folder or its ``*.safetensors.index.json``,
    or None when ``path`` is neither. The shards' metadata is kept when all agree (a
    shard of transformers holds ``{"format": "pt"}``)."""
    from safetensors.torch import safe_open

    index = path / INDEX if path.is_dir() else path
    if path.is_dir() and not index.is_file():
        found = sorted(path.glob("*.safetensors.index.json"))
        if len(found) != 1:
            return None
        index = found[0]
    if not index.name.endswith(".safetensors.index.json") or not index.is_file():
        return None
    if path.is_dir() and (path / "model.safetensors").is_file():
        raise TieError(
            f"load: {str(path)!r} holds both model.safetensors and the sharded checkpoint "
            f"index {index.name} (left from another save?): give the one to load, "
            f"{str(path / 'model.safetensors')!r} or {str(index)!r}; the model was left as it was"
        )
    where = f"load: {str(index)!r}"
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (OSError, ValueError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise TieError(
            f"{where} is not a sharded checkpoint's index (a JSON object whose 'weight_map' "
            f"maps each tensor to its shard file); restore it from a good copy"
        )
    tensors: dict[str, torch.Tensor] = {}
    metas = []
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise TieError(
                f"{where} names the shard {shard!r}, which is not in {str(index.parent)!r}; "
                f"copy every shard the index names next to it; the model was left as it was"
            )
        with safe_open(str(file), framework="pt") as f:
            metas.append(f.metadata() or {})
            for k in f.keys():
                if weight_map.get(k) != shard:
                    raise TieError(
                        f"{where}: the shard {shard!r} holds {k}, which the index "
                        f"{'puts in ' + repr(weight_map[k]) if k in weight_map else 'does not name'};"
                        f" the folder mixes shards of two saves: save the model again"
                    )
                tensors[k] = f.get_tensor(k)
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise TieError(
            f"{where} names {', '.join(missing[:5])} but no shard holds it; the folder mixes "
            f"shards of two saves: save the model again"
        )
    meta = metas[0] if metas and all(m == metas[0] for m in metas) else {}
    return tensors, meta


def shard_hint(path: pathlib.Path) -> str:
    """Why a file misses most of the model's tensors when it is one shard of a sharded
    checkpoint (its folder's index names it), or ``""``."""
    for index in sorted(path.parent.glob("*.safetensors.index.json")):
        try:
            names = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        if path.name in names:
            return (
                f". {path.name} is one of the {len(names)} shards {index.name} names: give the "
                f"folder, tying.load(model, {str(path.parent)!r}, verify_hash=False), and the "
                f"shards are read as one file"
            )
    return ""
