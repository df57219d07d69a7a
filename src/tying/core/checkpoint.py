"""Files: ``save``/``load`` tied models as safetensors, ties in the metadata, no pickle.

Only physical tensors are written (each once); the ties go into the file's
metadata, so loading into a fresh, untied model re-creates them. Writing is
atomic (temporary file, fsync, rename): a crash mid-save leaves the previous
file intact. A SHA-256 of the tensor bytes is stored and checked on load, so a
truncated or altered file is refused with a clear error, before the model is
touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.plan import Plan, _mutate, _resolve
from tying.core.relations import relation_from_spec
from tying.core.rules import share
from tying.core.verify import ties

FORMAT = "tying/1"


def _physical_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state, each tensor once, and the aliases of hand-made duplicates."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            aliases[key] = first[id(t)]
            continue
        first[id(t)] = key
        tensors[key] = t.detach()
    return tensors, aliases


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> pathlib.Path:
    """Write ``model``'s physical tensors and its ties to a safetensors file, atomically.

    Args:
        model: the (tied) model.
        path: the file to write; its previous content survives any failure.
        metadata: extra str → str entries for the file header.

    Returns:
        The path written.

    Raises:
        TypeError: when ``metadata`` is not str → str.

    Example:
        >>> import torch, tying, tempfile, os
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b", like="a")]).apply(m)
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> _ = tying.save(m, path)
        >>> fresh = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.load(fresh, path)
        >>> fresh["b"].weight is fresh["a"].weight, torch.equal(fresh["a"].weight, m["a"].weight)
        (True, True)
    """
    tensors, aliases = _physical_state(model)
    return save_state(tensors, ties(model), path, metadata, aliases)


def save_state(
    tensors: dict[str, torch.Tensor],
    tie_list,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
) -> pathlib.Path:
    """Write ``tensors`` (each physical tensor once) and ``tie_list`` atomically.

    The file format behind :func:`save`; :mod:`tying.distributed` uses it to
    write a gathered state from rank 0.
    """
    from safetensors.torch import save_file

    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"save: metadata must map str to str, got {k!r}: {v!r}")
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    meta.update(
        {
            "tying.format": FORMAT,
            "tying.ties": json.dumps(
                [
                    {"target": t.target, "like": t.source, "relation": t.relation.spec()}
                    for t in tie_list
                ]
            ),
            "tying.aliases": json.dumps(aliases or {}),
            "tying.sha256": _digest(tensors),
        }
    )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _read(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if not path.exists():
        raise FileNotFoundError(f"load: no file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise TieError(
            f"load: {str(path)!r} is truncated or not a safetensors file ({err}); "
            f"restore it from a good copy"
        ) from None
    return tensors, meta


def load(model: nn.Module, path: str | os.PathLike, verify_hash: bool = True) -> Plan:
    """Load a file written by :func:`save` into ``model``, re-creating its ties.

    All or nothing: the file is read and checked (hash, ties, names, shapes,
    dtypes) before the model is changed; on any mismatch the model is unchanged.

    Args:
        model: a model of the same architecture, tied or not.
        path: the file.
        verify_hash: check the stored SHA-256 of the tensor bytes (default True).

    Returns:
        The :class:`~tying.Plan` of the file's ties (applied to ``model``).

    Raises:
        FileNotFoundError: no file at ``path``.
        TieError: truncated or altered file, ties that do not fit the model,
            missing/unexpected tensors, shape or dtype mismatches.
    """
    path = pathlib.Path(path)
    tensors, meta = _read(path)
    if verify_hash and "tying.sha256" in meta and _digest(tensors) != meta["tying.sha256"]:
        raise TieError(
            f"load: {str(path)!r} fails its SHA-256 check: the tensor bytes were altered or "
            f"corrupted after saving; restore it from a good copy (or pass verify_hash=False)"
        )
    try:
        specs = json.loads(meta.get("tying.ties", "[]"))
        aliases = json.loads(meta.get("tying.aliases", "{}"))
        plan = Plan(
            [share(s["target"], s["like"], relation_from_spec(s["relation"])) for s in specs]
        )
    except (ValueError, KeyError, TypeError) as err:
        raise TieError(f"load: {str(path)!r} has malformed tie metadata ({err})") from None
    inv = Inventory(model)
    try:
        changes, _ = _resolve(plan.rules, inv)
    except TieError as err:
        raise TieError(f"load: the ties in {str(path)!r} do not fit this model: {err}") from None

    expected = {k: (tuple(t.shape), t.dtype) for k, t in model.state_dict(keep_vars=True).items()}
    for ch in changes:
        info = inv.slots[ch.path]
        if ch.old is not None:
            for sname in info.tie.storage.values():
                expected.pop(f"{info.module_path}.{sname}" if info.module_path else sname, None)
        if ch.new is None:
            expected[ch.path] = (info.shape, _dtype(inv, ch.path))
            continue
        expected.pop(ch.path, None)
        prefix = f"{info.module_path}." if info.module_path else ""
        dt = _dtype(inv, ch.path)
        if ch.new.source is None:
            expected[f"{prefix}{info.name}_physical"] = (
                tuple(ch.new.relation.source_shape(info.shape)),
                dt,
            )
        for role, t in ch.new.relation.extras(info.shape, torch.empty(0, dtype=dt)).items():
            expected[f"{prefix}{info.name}_{role}"] = (tuple(t.shape), dt)
    full = dict(tensors)
    for alias, key in aliases.items():
        if key in full:
            full[alias] = full[key]
    missing = sorted(set(expected) - set(full))
    unexpected = sorted(set(full) - set(expected))
    bad = [
        f"{k}: file {tuple(full[k].shape)} {full[k].dtype}, model {expected[k][0]} {expected[k][1]}"
        for k in sorted(set(full) & set(expected))
        if tuple(full[k].shape) != expected[k][0] or full[k].dtype != expected[k][1]
    ]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing in file: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"not in model: {', '.join(unexpected[:10])}")
        if bad:
            parts.append(f"shape/dtype mismatch: {'; '.join(bad[:10])}")
        raise TieError(
            f"load: {str(path)!r} does not fit this model ({'; '.join(parts)}); "
            f"build the model with the architecture and dtype the file was saved from"
        )
    _mutate(model, inv, changes)
    with torch.no_grad():
        model.load_state_dict(full, strict=True)
    return plan


def _dtype(inv: Inventory, path: str) -> torch.dtype:
    return inv.tensor(inv.root_of(path)).dtype
