"""The file format of :func:`~tying.save`: its header fields, hash, and their checks.

A file is a safetensors file whose metadata holds ``tying.format``, ``tying.ties`` (the
plan's rules, each with its target's logical shape and dtype), ``tying.aliases`` (hand-made
ties: a key stored once under another) and ``tying.sha256``, a SHA-256 over every other
header entry and the tensor bytes. Reading a file (:func:`_read`), checking its hash
(:func:`_check_integrity`) and parsing its ties (:func:`_parse`) live here, apart from
writing (:mod:`tying.core.file_writing`) and loading into a model
(:mod:`tying.core.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re

import torch

from tying.core.errors import TieError
from tying.core.relations import relation_from_spec
from tying.core.rules import share

FORMAT = "tying/2"  # tying/1: the hash covered the tensors only
HASH_KEY = "tying.sha256"
_KEYS = ("tying.format", "tying.ties", "tying.aliases", HASH_KEY)


def _digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """SHA-256 over every metadata entry but the hash itself, then every tensor."""
    h = hashlib.sha256()
    entries = sorted((k, v) for k, v in meta.items() if k != HASH_KEY)
    h.update(json.dumps(entries).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


def _tie_entry(t) -> dict:
    """One tie of the file's ``tying.ties``: target, source, relation and, when known, the
    target's logical shape and dtype (a relation such as ``Mirrored`` or ``Hashed`` serves
    slots of several shapes from one source shape: ``SymmetricConv1d(2, 3, 5)`` and ``(2, 3,
    6)`` both store 3 taps, so the physical tensors alone cannot tell them apart; stop 32).
    Files without them (written before) load as before."""
    entry = {"target": t.target, "like": t.source, "relation": t.relation.spec()}
    shape, dtype = getattr(t, "shape", None), getattr(t, "dtype", None)
    if shape is not None:
        entry["shape"] = [int(n) for n in shape]
    if dtype is not None:
        entry["dtype"] = str(dtype).removeprefix("torch.")
    return entry


def _read(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import safe_open

    if not path.exists():
        raise FileNotFoundError(f"load: no file at {str(path)!r}")
    from tying.core.plain_files import read_sharded

    sharded = read_sharded(path)  # transformers' sharded folder, or its index file
    if sharded is not None:
        return sharded
    if path.is_dir():
        # name a file that is there (stop 58: 'model.safetensors' was named in a folder
        # without one, and following the advice gave FileNotFoundError)
        files = sorted(p.name for p in path.glob("*.safetensors"))
        there = (
            f"e.g. {str(path / files[0])!r}"
            if files
            else "this folder holds no .safetensors file and no sharded checkpoint's "
            "index (*.safetensors.index.json)"
        )
        raise IsADirectoryError(
            f"load: {str(path)!r} is a folder; give the file tying.save wrote, {there}"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as err:  # SafetensorError, OSError, a Rust panic on a mangled header
        _refuse_pickle(path)
        raise TieError(
            f"load: {str(path)!r} is truncated or not a safetensors file "
            f"({type(err).__name__}: {err}); restore it from a good copy"
        ) from None
    return tensors, meta


def _refuse_pickle(path: pathlib.Path) -> None:
    """A ``torch.save`` file (a zip archive, or a bare pickle) is named as one: "truncated,
    restore it from a good copy" sent the user hunting for a good copy of a good file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return
    if head == b"PK\x03\x04" or head[:1] == b"\x80":
        raise TieError(
            f"load: {str(path)!r} is a torch.save (pickle) file, not safetensors; tying.load "
            f"reads safetensors only (no pickle); load it with "
            f"model.load_state_dict(torch.load(path, weights_only=True)), then tying.save(model, "
            f"...) writes a file tying.load reads"
        )


def _newer(fmt) -> str | None:
    """The message for a file written by a newer tying (format ``tying/N``, N > 2), or None."""
    m = re.fullmatch(r"tying/([0-9]{1,6})", fmt) if isinstance(fmt, str) else None
    if m is None or int(m[1]) <= int(FORMAT.split("/")[1]):
        return None
    return (
        f"it was written by a newer version of tying (format {fmt!r}; this version reads "
        f"'tying/1' and {FORMAT!r}); upgrade tying (pip install -U tying) to load it"
    )


def _check_integrity(path: pathlib.Path, tensors, meta: dict[str, str], verify_hash: bool):
    where = f"load: {str(path)!r}"
    if not verify_hash:
        return
    newer = _newer(meta.get("tying.format"))
    if newer:  # before the hash: a newer format may keep its hash elsewhere
        raise TieError(f"{where}: {newer}; the model was left as it was")
    if HASH_KEY not in meta:
        if any(k.startswith("tying.") for k in meta):
            raise TieError(
                f"{where} carries tying metadata but no {HASH_KEY!r}: its ties cannot be "
                f"trusted (the hash was removed or the file was edited); restore it from a "
                f"good copy, or pass verify_hash=False to load it unchecked"
            )
        raise TieError(
            f"{where} carries no tying metadata and no SHA-256: it was not written by "
            f"tying.save (or its metadata was stripped); pass verify_hash=False to load its "
            f"tensors unchecked"
        )
    if meta.get("tying.format") != FORMAT:
        raise TieError(
            f"{where}: field 'tying.format' is {meta.get('tying.format')!r}, expected "
            f"{FORMAT!r} (a tying/1 file's hash does not cover its ties); re-save it with "
            f"this version, or pass verify_hash=False to load it unchecked"
        )
    if _digest(tensors, meta) != meta[HASH_KEY]:
        raise TieError(
            f"{where} fails its SHA-256 check: its tensor bytes or its tie metadata were "
            f"altered or corrupted after saving; restore it from a good copy (or pass "
            f"verify_hash=False)"
        )


_TIE_KEYS = {"target", "like", "relation"}
_TIE_RECORD = {"shape", "dtype"}  # optional: files written before stop 32 have neither


def _parse(
    path: pathlib.Path, meta: dict[str, str], saving: bool = False
) -> tuple[list, dict[str, str], dict[str, tuple]]:
    """The file's plan rules, aliases and recorded logical ``{target: (shape, dtype)}``
    (either None when not recorded); TieError naming the file and field otherwise.

    ``save`` runs it on the metadata it is about to write (``saving=True``), so a file
    that ``load`` would refuse is never written, let alone over a good one.
    """

    def bad(field: str, msg: str) -> TieError:
        if saving:
            return TieError(
                f"save: refusing to write {str(path)!r}: its tie metadata would not load "
                f"back (field {field}: {msg}); tying.verify(model) names the broken tie; "
                f"nothing was written"
            )
        return TieError(
            f"load: {str(path)!r} has malformed tie metadata: field {field}: {msg}; "
            f"restore the file from a good copy"
        )

    def decode(key: str, default: str, kind: type):
        try:
            value = json.loads(meta.get(key, default))
        except (TypeError, ValueError) as err:
            raise bad(repr(key), f"not valid JSON ({err})") from None
        if not isinstance(value, kind):
            raise bad(repr(key), f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return value

    fmt = meta.get("tying.format", FORMAT)
    if not saving and _newer(fmt):
        raise TieError(f"load: {str(path)!r}: {_newer(fmt)}; the model was left as it was")
    if fmt not in (FORMAT, "tying/1"):
        raise bad("'tying.format'", f"unknown format {fmt!r}, expected {FORMAT!r}")
    specs = decode("tying.ties", "[]", list)
    aliases = decode("tying.aliases", "{}", dict)
    for k, v in aliases.items():
        if not isinstance(v, str) or not k:
            raise bad(f"'tying.aliases'[{k!r}]", f"expected a non-empty key and a str, got {v!r}")
    rules = []
    logical: dict[str, tuple] = {}
    for i, s in enumerate(specs):
        field = f"'tying.ties'[{i}]"
        if not isinstance(s, dict) or not _TIE_KEYS <= set(s) <= _TIE_KEYS | _TIE_RECORD:
            raise bad(
                field,
                f"expected an object with target, like, relation (and optionally shape, "
                f"dtype); got {s!r}",
            )
        target, like = s["target"], s["like"]
        for tied in (target, like):
            if saving and isinstance(tied, str) and "*" in tied:
                # stop 53: "tying.verify(model) names the broken tie" sent the user to a
                # tie that was not broken: the path's own name is what a file cannot hold
                raise TieError(
                    f"save: refusing to write {str(path)!r}: its tie metadata would not load "
                    f"back: the tied path {tied!r} holds '*', which a load reads as a "
                    f"wildcard (it would tie every path it matches); rename the module (a "
                    f"ModuleDict key) to a name without '*'; nothing was written"
                )
        if not isinstance(target, str) or not target or "*" in target:
            raise bad(f"{field}.target", f"expected a parameter path, got {target!r}")
        if like is not None and (not isinstance(like, str) or not like or "*" in like):
            raise bad(f"{field}.like", f"expected a parameter path or null, got {like!r}")
        try:
            relation = relation_from_spec(s["relation"])
            rules.append(share(target, like, relation))
        except (TypeError, ValueError) as err:
            raise bad(f"{field}.relation", str(err)) from None
        shape, dtype = s.get("shape"), s.get("dtype")
        if "shape" in s and (
            not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise bad(f"{field}.shape", f"expected a list of sizes >= 0, got {shape!r}")
        if "dtype" in s and not (
            isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)
        ):
            raise bad(
                f"{field}.dtype", f"expected a torch dtype name such as 'float32', got {dtype!r}"
            )
        logical[target] = (
            None if shape is None else tuple(shape),
            None if dtype is None else getattr(torch, dtype),
        )
    return rules, aliases, logical


def mismatched(full: dict[str, torch.Tensor], expected: dict[str, tuple]) -> list[str]:
    """``"key: file shape dtype, model shape dtype"`` for each tensor of ``full`` whose
    shape or dtype differs from ``expected`` (key -> (shape, dtype)), sorted by key."""
    return [
        f"{k}: file {tuple(full[k].shape)} {full[k].dtype}, model {expected[k][0]} {expected[k][1]}"
        for k in sorted(set(full) & set(expected))
        if tuple(full[k].shape) != expected[k][0] or full[k].dtype != expected[k][1]
    ]


#: the header entry holding the state dict's own metadata (``state_dict()._metadata``:
#: each module's version, a group conv's group), by module path without wrapper segments
STATE_METADATA_KEY = "tying.state_metadata"


def _state_metadata_entry(metadata) -> str:
    """``state_dict()._metadata`` as the JSON of :data:`STATE_METADATA_KEY` (stop 57).

    ``torch.save(model.state_dict())`` keeps it and ``load_state_dict`` hands each module
    its own entry, so a module's load checks what it was saved as (a group conv's group,
    a module's layout version). Entries JSON cannot hold (none of torch's own) are left
    out; a load uses the model's own for them, as for files written before.
    """
    from tying.core.outside import canonical

    out: dict[str, dict] = {}
    for prefix, entries in (metadata or {}).items():
        if not isinstance(prefix, str) or not isinstance(entries, dict):
            continue
        kept = {}
        for k, v in entries.items():
            # only what JSON gives back as it was: a tuple read back as a list failed the
            # module's own check of its own file (saved layout [3, 2] != (3, 2))
            try:
                same = json.loads(json.dumps(v, allow_nan=False)) == v
            except (TypeError, ValueError):
                same = False
            if same and isinstance(k, str):
                kept[k] = v
        out.setdefault(canonical(prefix), {}).update(kept)
    return json.dumps(out, sort_keys=True)


def _state_metadata(path: pathlib.Path, meta: dict[str, str]) -> dict[str, dict] | None:
    """The state dict's metadata a file recorded (by canonical module path), or None for a
    file without the record (written before stop 57, or not by :func:`~tying.save`)."""
    raw = meta.get(STATE_METADATA_KEY)
    if raw is None:
        return None
    field = f"field {STATE_METADATA_KEY!r}"
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as err:
        value, why = None, f"not valid JSON ({err})"
    else:
        why = "expected a JSON object of module path -> object"
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
    ):
        raise TieError(
            f"load: {str(path)!r} has malformed tie metadata: {field}: {why}; restore the "
            f"file from a good copy"
        )
    return value
