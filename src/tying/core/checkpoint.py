"""Files: ``save``/``load`` tied models as safetensors, ties in the metadata, no pickle.

Only physical tensors are written (each once); the ties go into the file's
metadata, so loading into a fresh, untied model re-creates them, hand-made ties
(one ``nn.Parameter`` under two paths) included. Writing is atomic (temporary
file, fsync, rename): a crash mid-save leaves the previous file intact, and the
next save into the folder removes temporary files that a killed save of this
library left behind (only those: their names carry this library's mark, the
host and the writer's process id, and the process must be gone).

Integrity: a SHA-256 over the tie metadata (every header entry) *and* the tensor
bytes is stored in the file and checked on load, before the model is touched.
A truncated or altered file, a file with ``tying`` metadata but no hash, and
metadata of the wrong types are all refused with a :class:`~tying.TieError`
naming the file (and the field).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import re
import secrets
import socket
import stat

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import REPLACED_SOURCE_FIX, Inventory, join
from tying.core.load_guards import (
    _check_logical_shapes,
    _check_overlapping_memory,
    _check_shared_buffers,
    _read_shared_records,
    _refuse_meta_device,
    _restore,
    _values_kept_until_loaded,
)
from tying.core.load_guards import _may_overlap_itself as _may_overlap_itself
from tying.core.load_guards import _play as _play
from tying.core.load_guards import _refuse_unwritable as _refuse_unwritable
from tying.core.load_guards import _span as _span
from tying.core.load_guards import check_before_load as check_before_load
from tying.core.load_guards import check_before_load_into_part as check_before_load_into_part
from tying.core.load_guards import slots_load_from_state_dict as slots_load_from_state_dict
from tying.core.outside import WRAPPER_SEGMENTS, canonical, canonical_index
from tying.core.plan import Change, Plan, Tie
from tying.core.relations import Same, relation_from_spec
from tying.core.rules import share
from tying.core.slots import check_writes
from tying.core.verify import dropped_ties, ties

FORMAT = "tying/2"  # tying/1: the hash covered the tensors only
HASH_KEY = "tying.sha256"
_KEYS = ("tying.format", "tying.ties", "tying.aliases", HASH_KEY)


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
        # a quantized module's state holds non-tensors (its packed params' dtype): kept
        # as they are for save_state to refuse by name (t.detach() raised AttributeError)
        tensors[key] = t.detach() if isinstance(t, torch.Tensor) else t
    return tensors, aliases


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


# -- temporary files ------------------------------------------------------------------

_TMP = re.compile(
    r"\A\..+\.tying-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]{1,10})-[0-9a-f]{16}\.tmp\Z", re.S
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_name(target: pathlib.Path) -> pathlib.Path:
    """``.<name>.tying-<host>-<pid>-<16 hex>.tmp`` beside ``target``: ours, and whose."""
    name = f".{target.name}.tying-{_host()}-{os.getpid()}-{secrets.token_hex(8)}.tmp"
    return target.parent / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _remove_stale_temps(folder: pathlib.Path) -> list[pathlib.Path]:
    """Delete temporary files a killed :func:`save` on this host left in ``folder``.

    Only regular files named by :func:`_temp_name` whose writer process no longer
    exists are removed; anything else (a user's file of a similar name, a save
    still running in another process, another host's file) is left alone.
    """
    removed = []
    host, me = _host(), os.getpid()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m is None or m["host"] != host or int(m["pid"]) == me:
            continue
        if not entry.is_file(follow_symlinks=False) or _alive(int(m["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(pathlib.Path(entry.path))
        except OSError:
            pass
    return removed


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
        ValueError: when a ``metadata`` key starts with ``tying.`` (reserved).
        TieError: when a tensor is on the meta device (it has no values), a
            computed slot was written to since it was last read (the write was lost),
            a tie reads a module that was replaced after the plan was applied, or the
            ties would not load back. Nothing is written then.
        IsADirectoryError, PermissionError: ``path`` is a folder or a read-only file,
            or its folder cannot be written; nothing is written.
        NotADirectoryError: a folder on ``path`` is a file; nothing is written.

    A symlink is written through (its target is replaced, the link stays), and an
    existing file keeps its permission bits.

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
    check_writes(model)  # before any read: a lost write to a computed slot is refused
    tie_list = ties(model)  # first: its inventory names a lazy parameter (torch's error did not)
    tensors, aliases = _physical_state(model)
    inv = Inventory(model)
    for t in tie_list:
        if t.source:  # a source re-parametrised under the tie: TieError naming it and the fix
            inv.slots[t.source]  # noqa: B018
        elif t.source == "":  # a part of the tied model, or a source module replaced
            raise TieError(
                f"save: {inv.outside(t.target, 'save')}; nothing was written to {os.fspath(path)!r}"
            )
    dropped = dropped_ties(model, inv)
    if dropped:
        raise TieError(
            f"save: {len(dropped)} tie(s) a plan declared no longer hold: {', '.join(dropped)} "
            f"is now an independent parameter (the module holding it was replaced after the "
            f"plan, e.g. model.lm_head = nn.Linear(...)), so the file would hold it as a tensor "
            f"of its own and a load would not re-create the tie; re-create it with "
            f"tying.retie(model), or keep it untied with tying.untie(model) and a plan without "
            f"that rule; nothing was written to {os.fspath(path)!r}"
        )
    # Written without wrapper segments (apply_activation_checkpointing, torch.compile,
    # FSDP1), as torch's own state-dict hooks write checkpoint_wrapper's tensors: the file
    # loads into the model wrapped or not (its ties kept the segment while its tensors did
    # not, and it loaded into neither: stop 36)
    where = f"save: nothing was written to {os.fspath(path)!r}"
    canonical_index(tensors, where)
    canonical_index([t.target for t in tie_list], where)
    tensors = {canonical(k): t for k, t in tensors.items()}
    aliases = {canonical(k): canonical(v) for k, v in aliases.items()}
    tie_list = [
        dataclasses.replace(t, target=canonical(t.target), source=t.source and canonical(t.source))
        for t in tie_list
    ]
    return save_state(tensors, tie_list, path, metadata, aliases)


def save_state(
    tensors: dict[str, torch.Tensor],
    tie_list,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
) -> pathlib.Path:
    """Write ``tensors`` (each physical tensor once) and ``tie_list`` atomically.

    The file format behind :func:`save`; :mod:`tying.distributed` uses it to
    write a gathered state from rank 0. Hand-made ties in ``tie_list``
    (``TieInfo.hand``) are written as aliases: their target's tensor is not stored.

    Args:
        tensors: state dict entries, by key.
        tie_list: :class:`~tying.TieInfo` entries (``tying.ties(model)``).
        path: the file to write.
        metadata: extra str → str header entries (keys may not start with ``tying.``).
        aliases: ``{duplicate key: stored key}`` for tensors stored once.

    Returns:
        The path written.

    Raises:
        TypeError: when ``metadata`` is not str → str.
        ValueError: when a ``metadata`` key starts with ``tying.``.
        TieError: when a tensor is on the meta device (it has no values).
    """
    from safetensors.torch import save_file

    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"save: metadata must map str to str, got {k!r}: {v!r}")
        if k.startswith("tying."):
            raise ValueError(
                f"save: metadata key {k!r} is reserved (keys starting with 'tying.' hold the "
                f"ties and the hash); rename it"
            )
    aliases = dict(aliases or {})
    tensors = dict(tensors)
    plan_ties = []
    for t in tie_list:
        if t.source == "":  # the tie reads a tensor that is no longer in the model
            raise TieError(
                f"save: {t.target} is tied to a tensor outside the model: the module that "
                f"held its source was replaced after the plan was applied (e.g. "
                f"model.emb = nn.Embedding(...)); {REPLACED_SOURCE_FIX}; nothing was written "
                f"to {os.fspath(path)!r}"
            )
        if getattr(t, "hand", False):
            aliases[t.target] = t.source
            tensors.pop(t.target, None)
        else:
            plan_ties.append(t)
    for k, t in tensors.items():
        _refuse_unsavable(k, t, path)
        if t.device.type == "meta":
            raise TieError(
                f"save: {k} is on the meta device and has no values to write; materialise "
                f"the model (model.to_empty(device=...) and initialise or load it) first"
            )
    # stop 34: a complex128 model failed inside safetensors with a bare KeyError naming
    # neither the tensor nor the fix (the dtypes it writes are its private _SIZE table)
    import safetensors.torch

    writable = getattr(safetensors.torch, "_SIZE", None)
    if isinstance(writable, dict):
        for k, t in tensors.items():
            if t.dtype not in writable:
                known = ", ".join(sorted(str(d).removeprefix("torch.") for d in writable))
                raise TieError(
                    f"save: {k} is {t.dtype}, which safetensors cannot write (it writes "
                    f"{known}); cast the model to one of those first (a complex128 one "
                    f"with .to(torch.complex64)); nothing was written to "
                    f"{os.fspath(path)!r}"
                )
    tensors = _own_memory({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()})
    meta.update(
        {
            "tying.format": FORMAT,
            "tying.ties": json.dumps([_tie_entry(t) for t in plan_ties]),
            "tying.aliases": json.dumps(aliases),
        }
    )
    meta[HASH_KEY] = _digest(tensors, meta)
    path = pathlib.Path(path)
    _parse(path, meta, saving=True)  # what load would refuse is never written
    target, mode, created = _writable_target(path)
    tmp = _temp_name(target)
    try:
        _remove_stale_temps(target.parent)
        save_file(tensors, str(tmp), metadata=meta)
        if mode is not None:  # the file keeps the permission bits it had
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_created(created)
        raise
    _sync_folder(target)
    return path


def _refuse_unsavable(key: str, value, path) -> None:
    """Refuse a state entry a safetensors file cannot hold, by name (stop 39).

    A quantized model's state (``torch.ao``'s dynamic or static modules) holds a
    ``torch.dtype`` and packed-parameter tuples, and quantized or sparse tensors: save
    failed with ``AttributeError: 'torch.dtype' object has no attribute 'detach'`` (or
    inside safetensors), naming neither the entry nor the fix.
    """
    what = None
    if not isinstance(value, torch.Tensor):
        what = f"a {type(value).__name__}, not a tensor"
    elif value.is_quantized:
        what = f"a quantized tensor ({value.dtype})"
    elif value.layout != torch.strided:
        what = f"a {value.layout} tensor"
    if what is None:
        return
    raise TieError(
        f"save: state entry {key!r} is {what}, which a safetensors file cannot hold (a "
        f"quantized or sparse module's state); save the float model before quantizing "
        f"(tying.save, then quantize after tying.load), or save this one with "
        f"torch.save(model.state_dict(), f); nothing was written to {os.fspath(path)!r}"
    )


def _own_memory(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with every one that shares its storage with another cloned.

    Stop 35: a model whose parameters are overlapping views of one storage
    (``c.weight = nn.Parameter(b.weight.data[2:])``) failed inside safetensors ("Some
    tensors share memory ... use save_model"), while a transposed view of the same kind
    (copied by ``.contiguous()``) saved. Each tensor's values are written as the model
    reads them; the file does not record that they share memory (the model does: a
    :func:`load` into a model that builds the same views plays the writes and refuses
    values that differ where they meet). The bytes written are the same as before.
    """
    owners: dict[tuple, int] = {}
    for t in tensors.values():
        if t.numel():
            key = (t.device, t.untyped_storage().data_ptr())
            owners[key] = owners.get(key, 0) + 1
    return {
        k: t.clone() if t.numel() and owners[(t.device, t.untyped_storage().data_ptr())] > 1 else t
        for k, t in tensors.items()
    }


# a folder fsync these errors refuse is one the file system does not offer (some network
# and FUSE file systems): the rename is as durable as that file system makes it
_NO_FOLDER_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES}


def _sync_folder(target: pathlib.Path) -> None:
    """fsync the folder after the rename, so the new name survives a power loss.

    The new file is in place by now: a raise here must say so (stop 34: an ``EINVAL`` from a
    file system without folder fsync made every save raise after it had replaced the file).
    """
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError as err:
        if err.errno in _NO_FOLDER_SYNC:
            return
        raise _synced_late(target, err) from err
    try:
        os.fsync(dir_fd)
    except OSError as err:
        if err.errno not in _NO_FOLDER_SYNC:
            raise _synced_late(target, err) from err
    finally:
        os.close(dir_fd)


def _synced_late(target: pathlib.Path, err: OSError) -> OSError:
    return OSError(
        err.errno,
        f"save: the new file is in place at {str(target)!r}, but syncing its folder failed "
        f"({err.strerror or err}): the rename may not survive a power loss; check the disk, "
        f"then save again",
    )


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


def _writable_target(path: pathlib.Path) -> tuple[pathlib.Path, int | None, list[pathlib.Path]]:
    """The file ``save`` replaces (a symlink's final target), its permission bits, and the
    folders made for it (missing parents are made, as ``save_pretrained`` does; deepest
    last).

    Refuses, before anything is written, a folder, a read-only file and a folder it
    cannot write in. Replacing the link itself would turn a symlink into a plain file
    (the file it pointed to kept the old model) and would drop a file's mode.
    """
    target = pathlib.Path(os.path.realpath(path))
    for folder in reversed(target.parents):  # outermost first: the file in the way
        if folder.exists() and not folder.is_dir():
            # stop 35: os.stat/mkdir raised a bare NotADirectoryError naming the whole path
            raise NotADirectoryError(
                errno.ENOTDIR,
                f"save: cannot write {os.fspath(path)!r}: {os.fspath(folder)!r} is a file, "
                f"not a folder; save to another path, or move that file away first; "
                f"nothing was written",
            )
    if target.is_dir():
        raise IsADirectoryError(
            f"save: {os.fspath(path)!r} is a folder; give a file path, e.g. "
            f"{os.fspath(path / 'model.safetensors')!r}"
        )
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    if mode is not None and not mode & 0o222:
        raise PermissionError(
            f"save: {os.fspath(path)!r} is read-only (mode {mode:o}); make it writable "
            f"(chmod u+w) or save to another path; it was left as it was"
        )
    created: list[pathlib.Path] = []
    try:
        for folder in reversed(target.parents):
            if not folder.exists():
                try:
                    folder.mkdir()
                except FileExistsError:
                    continue  # made by someone else meanwhile: not ours to remove
                created.append(folder)
    except BaseException:
        _remove_created(created)
        raise
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(
            f"save: cannot write in the folder {os.fspath(target.parent)!r}; make it "
            f"writable or save to another path"
        )
    return target, mode, created


def _remove_created(created: list[pathlib.Path]) -> None:
    """Remove the folders a failed save made, deepest first; never one that holds anything
    (stop 35: a failed save left the folders it had made for the file). ``rmdir`` removes
    only empty folders, so a folder another process wrote into in the meantime stays."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def _read(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import safe_open

    if not path.exists():
        raise FileNotFoundError(f"load: no file at {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(
            f"load: {str(path)!r} is a folder; give the file tying.save wrote, e.g. "
            f"{str(path / 'model.safetensors')!r}"
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


def load(model: nn.Module, path: str | os.PathLike, verify_hash: bool = True) -> Plan:
    """Load a file written by :func:`save` into ``model``, re-creating its ties.

    All or nothing: the file is read and checked (hash, metadata, ties, names,
    shapes, dtypes) before the model is changed; on any mismatch the model is
    unchanged. Ties in the file that the model lacks are created, hand-made ties
    (one ``nn.Parameter`` under two paths) as hand-made ties. A tie the model has
    but the file does not (the file stores that slot as its own tensor) is
    refused, never dropped: free it first if the file is what you want.

    Args:
        model: a model of the same architecture, untied or tied as the file, on a
            real device (not ``meta``: call ``model.to_empty(device=...)`` first).
        path: the file.
        verify_hash: check the stored SHA-256 of the metadata and tensor bytes
            (default True); False also accepts plain safetensors files.

    Returns:
        The :class:`~tying.Plan` of the file's ties (applied to ``model``).

    Raises:
        FileNotFoundError: no file at ``path``.
        TieError: truncated or altered file, missing hash, malformed metadata,
            ties that do not fit the model, missing/unexpected tensors, shape or
            dtype mismatches, a tied slot whose logical shape differs from the one
            recorded in the file (``Mirrored`` 5 vs 6 taps from 3 stored), a model on
            the meta device.

    Example:
        >>> import torch, tying, tempfile, os
        >>> m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3),
        ...                          "head": torch.nn.Linear(3, 5, bias=False)})
        >>> m["head"].weight = m["embed"].weight          # a hand-made tie
        >>> path = tying.save(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
        >>> fresh = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3),
        ...                              "head": torch.nn.Linear(3, 5, bias=False)})
        >>> _ = tying.load(fresh, path)
        >>> fresh["head"].weight is fresh["embed"].weight, tying.count(fresh).physical
        (True, 15)
    """
    path = pathlib.Path(path)
    tensors, meta = _read(path)
    _check_integrity(path, tensors, meta, verify_hash)
    rules, aliases, logical = _parse(path, meta)
    _refuse_meta_device(model)
    # Paths on either side of a wrapper that inserts a segment (apply_activation_
    # checkpointing, torch.compile, FSDP1) name the same slots once it is left out: the
    # file's keys and ties are matched to the model's by that canonical form (a file saved
    # from a wrapped model was refused by a bare one and the other way round, and a wrapped
    # model's own file did not load back into it: stop 36)
    C = canonical
    slot_at = canonical_index(Inventory(model).slots, "load")
    tensors = _canonical_keys(tensors, path)
    aliases = {C(k): C(v) for k, v in aliases.items()}
    rules = [
        dataclasses.replace(
            r,
            target=slot_at.get(C(r.target), r.target),
            like=r.like if r.like is None else slot_at.get(C(r.like), r.like),
        )
        for r in rules
    ]
    logical = {slot_at.get(C(k), k): v for k, v in logical.items()}
    plan = Plan(rules)
    try:
        res = plan.resolve(model)  # phase 1: changes nothing
    except TieError as err:
        raise TieError(
            f"load: the ties in {str(path)!r} do not fit this model: {err}"
            f"{_wrapper_hint(tensors, model)}"
        ) from None
    inv, changes = res.inventory, res.changes

    final: dict[str, Tie | None] = {}
    for p, info in inv.slots.items():
        if info.tie is not None:
            own = "source" in info.tie.storage
            final[p] = Tie(None if own else info.source, info.tie.relation)
        else:
            final[p] = None
    for ch in changes:
        final[ch.path] = ch.new
        if ch.old is not None and ch.new is not None and not (ch.old.hand or ch.new.hand):
            # stop 36: the file's tie replaced the model's (another source or relation)
            # without a word, while a hand tie the file ties otherwise was refused below
            was, now = (
                f"{t.source or 'its own storage'} via {t.relation!r}" for t in (ch.old, ch.new)
            )
            raise TieError(
                f"load: {ch.path} is tied in this model (to {was}) but {str(path)!r} ties it "
                f"to {now}; loading would replace this model's tie with the file's. Free it "
                f"first with tying.Plan([tying.free({ch.path!r})]).apply(model) to take the "
                f"file's tie, or load a file saved from a model tied as this one"
            )

    def tied_here(key: str, what: str) -> TieError:
        t = final[key]
        src = t.source or "its own storage"
        return TieError(
            f"load: {key} is tied in this model (to {src} via {t.relation!r}) but {str(path)!r} "
            f"{what}; untie it first with tying.Plan([tying.free({key!r})]).apply(model), or "
            f"load into a model without that tie"
        )

    if not any(k.startswith("tying.") for k in meta):
        # a plain safetensors file stores a tied weight once: transformers' model.safetensors
        # and safetensors.torch.save_model leave the tied key out (save_model names it in its
        # metadata); where this model ties it by hand to a stored tensor, the file's value is
        # the tie's value, as transformers and safetensors.torch.load_model read it (stop 34:
        # refused, saying the file "stores it as its own tensor")
        for target, source in inv.hand.items():
            ct, cs = C(target), C(source)
            if ct not in tensors and cs in tensors and meta.get(target, source) == source:
                aliases.setdefault(ct, cs)
        _read_shared_records(tensors, meta, final, slot_at, path)
    full = dict(tensors)
    for calias, ckey in aliases.items():
        alias, key = slot_at.get(calias, calias), slot_at.get(ckey, ckey)
        if alias in inv.slots and key in inv.slots:  # a hand-made tie between parameters
            if final[key] is not None:
                raise tied_here(key, "stores it as its own tensor")
            t = final[alias]
            if t is not None:
                if t.source == key and type(t.relation) is Same:
                    continue  # the model ties it as a declared tie: the same thing
                raise tied_here(alias, f"stores it as the same tensor as {key} (a hand-made tie)")
            a, k = inv.slots[alias], inv.slots[key]
            if a.module._parameters[a.name] is not k.module._parameters[k.name]:
                changes.append(Change(alias, None, Tie(key, Same(), hand=True)))
        if ckey in full:
            full[calias] = full[ckey]
    for target, source in inv.hand.items():
        if aliases.get(C(target)) != C(source) and final[target] is None:
            how = "stores it as its own tensor" if C(target) in full else "has no value for it"
            raise TieError(
                f"load: {target} is the same nn.Parameter as {source} in this model (a "
                f"hand-made tie) but {str(path)!r} {how}; let them part "
                f"first with tying.Plan([tying.free({target!r})]).apply(model), or load into a "
                f"model without that tie"
            )

    expected = {
        C(k): (tuple(t.shape), t.dtype) for k, t in model.state_dict(keep_vars=True).items()
    }
    for ch in changes:
        info = inv.slots[ch.path]
        if ch.new is not None and ch.new.hand:
            continue  # stays a physical entry of the state dict
        if ch.old is not None:
            for sname in info.tie.storage.values():
                expected.pop(C(join(info.module_path, sname)), None)
        if ch.new is None:
            expected[C(ch.path)] = (info.shape, _dtype(inv, ch.path))
            continue
        expected.pop(C(ch.path), None)
        prefix = f"{C(info.module_path)}." if C(info.module_path) else ""
        dt = _dtype(inv, ch.path)
        if ch.new.source is None:
            expected[f"{prefix}{info.name}_physical"] = (
                tuple(ch.new.relation.source_shape(info.shape)),
                dt,
            )
        for role, t in ch.new.relation.extras(info.shape, torch.empty(0, dtype=dt)).items():
            expected[f"{prefix}{info.name}_{role}"] = (tuple(t.shape), dt)
    missing = sorted(set(expected) - set(full))
    unexpected = sorted(set(full) - set(expected))
    for key in unexpected:
        key = slot_at.get(key, key)
        if key in final and final[key] is not None:
            raise tied_here(key, "stores it as its own tensor (the saved model did not tie it)")
    bad = mismatched(full, expected)
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing in file: {', '.join(missing[:10])}")
            shared = [k for k in missing if meta.get(k) in full]
            if shared:  # safetensors.torch.save_model's record of a tensor it stored once
                k = shared[0]
                parts.append(
                    f"the file stores {k} as the same tensor as {meta[k]} (saved from a model "
                    f"that tied them): tie them in this model first (model.{k} = "
                    f"model.{meta[k]}, or tying.share({k!r}, like={meta[k]!r})), then load"
                )
        if unexpected:
            parts.append(f"not in model: {', '.join(unexpected[:10])}")
        if bad:
            parts.append(f"shape/dtype mismatch: {'; '.join(bad[:10])}")
        raise TieError(
            f"load: {str(path)!r} does not fit this model ({'; '.join(parts)}); "
            f"build the model with the architecture and dtype the file was saved from"
            f"{_wrapper_hint(tensors, model)}"
        )
    _check_logical_shapes(inv, logical, path)
    _check_shared_buffers(model, inv, full, path)
    _check_overlapping_memory(model, expected, full, path)
    kept = _values_kept_until_loaded(model)

    def load_values() -> None:
        # the keys the model's state dict has now (the file's ties are in place)
        now = canonical_index(model.state_dict(keep_vars=True), "load")
        with torch.no_grad():
            model.load_state_dict({now.get(k, k): v for k, v in full.items()}, strict=True)

    # phase 2: all or nothing, with the file's hand ties among the changes and the values.
    # Everything the file and the model say was checked above, but a module's own load
    # hook may still refuse (a hashed layer tied through another hash, a user's hook) once
    # the modules before it were loaded: the ties are then restored by the commit, and
    # the values from the copy kept here (stop 31: the model was left re-tied with the
    # file's relations and partly loaded).
    try:
        res.commit(_then=load_values, _values_follow=True)
    except BaseException as err:
        _restore(kept, err)
        raise
    return plan


def _canonical_keys(tensors: dict, path: pathlib.Path) -> dict:
    """``tensors`` keyed without wrapper segments; a file holding two keys that differ only
    by them is refused by name (which of the two values is meant cannot be told)."""
    out: dict = {}
    for k, t in tensors.items():
        c = canonical(k)
        if c in out:
            other = next(o for o in tensors if o != k and canonical(o) == c)
            raise TieError(
                f"load: {str(path)!r} holds both {other} and {k}, which name the same tensor "
                f"once the wrapper segments {'/'.join(WRAPPER_SEGMENTS)} are left out; "
                f"save the model again with this version of tying.save (it writes each "
                f"tensor once, without wrapper segments); the model was left as it was"
            )
        out[c] = t
    return out


def _wrapper_hint(tensors, model: nn.Module) -> str:
    """Why no key fits when one side was saved or built inside a wrapper, or ``""``.

    ``tying.save(torch.compile(model))`` writes ``_orig_mod.*`` keys, DataParallel and
    DDP ``module.*``; the refusal listed every key as missing (stop 36).
    """
    try:
        here = set(model.state_dict(keep_vars=True))
    except TieError:  # a lost write to a computed slot: the load's own checks name it
        return ""
    there = set(tensors)
    if not there or not here or there & here:
        return ""
    for keys, other, saved in ((there, here, True), (here, there, False)):
        heads = {k.split(".", 1)[0] for k in keys}
        if len(heads) != 1 or not all("." in k for k in keys):
            continue
        (head,) = heads
        inner = {k.split(".", 1)[1] for k in keys}
        if saved and inner <= other:
            wrap = {"module": "nn.DataParallel(model)", "_orig_mod": "torch.compile(model)"}
            return (
                f". Every key in the file starts with '{head}.': it was saved from a wrapped "
                f"model (DataParallel/DDP keep it under 'module', torch.compile under "
                f"'_orig_mod'); load into the same wrapper (tying.load("
                f"{wrap.get(head, f'nn.ModuleDict({{{head!r}: model}})')}, path)), and save "
                f"the inner model next time (tying.save(wrapped.{head}, path))"
            )
        if not saved and other <= inner:
            return (
                f". Every key of this model starts with '{head}.' and the file's keys fit "
                f"without it: it is a wrapper (DataParallel/DDP, torch.compile); load into "
                f"the model inside it, tying.load(model.{head}, path)"
            )
    return ""


def _dtype(inv: Inventory, path: str) -> torch.dtype:
    return inv.tensor(inv.root_of(path)).dtype
