"""Writing a :func:`~tying.save` file: atomically (temporary file, fsync, rename).

A crash mid-save leaves the previous file intact, and the next save into the folder
removes temporary files that a killed save of this library left behind (only those:
their names carry this library's mark, the host and the writer's process id, and the
process must be gone). A symlink is written through; a file keeps its permission bits;
folders a failed save made are removed again. The header format is
:mod:`tying.core.file_format`'s.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import secrets
import socket
import stat

import torch

from tying.core.errors import TieError
from tying.core.file_format import (
    FORMAT,
    HASH_KEY,
    STATE_METADATA_KEY,
    _digest,
    _parse,
    _state_metadata_entry,
    _tie_entry,
)
from tying.core.inventory import REPLACED_SOURCE_FIX

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


def save_state(
    tensors: dict[str, torch.Tensor],
    tie_list,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    aliases: dict[str, str] | None = None,
    state_metadata=None,
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
        state_metadata: the state dict's ``_metadata`` (module versions, a group conv's
            group), written so that a load hands each module what it was saved with.

    Returns:
        The path written.

    Raises:
        TypeError: when ``metadata`` is not str → str.
        ValueError: when a ``metadata`` key starts with ``tying.``.
        TieError: when a tensor is on the meta device (it has no values).
    """
    from safetensors.torch import save_file

    # stop 59 (review): read through os.fspath, so a bytes path (which os.open and
    # safetensors take) and an os.PathLike that is no pathlib.Path get the checks below;
    # pathlib.Path(b"m.safetensors") failed in pathlib's words, naming neither save nor
    # the fix, and a custom PathLike's "ckpt/" wrote a file "ckpt"
    try:
        raw = os.fsdecode(os.fspath(path))
    except TypeError:
        raw = None  # no path at all: refused by pathlib below, as before
    if raw is not None and not isinstance(path, (str, pathlib.PurePath)):
        path = raw
    if raw == "":
        # stop 59: pathlib.Path("") is ".", so "" was refused as "'.' is a folder"
        raise ValueError(
            "save: the path is empty (''); give a file path, e.g. 'model.safetensors'; "
            "nothing was written"
        )
    _refuse_folder_name(raw)
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
    if state_metadata is not None:
        meta[STATE_METADATA_KEY] = _state_metadata_entry(state_metadata)
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


def _refuse_folder_name(raw: str | None) -> None:
    """Refuse a path whose spelling names a folder: it ends in a separator, or in ``.`` or
    ``..`` (pathlib drops both, and ``"ckpt/."`` wrote a file named ``ckpt``, stop 59
    review). The advice names a file inside that folder, or the file itself when the name
    without the separator is a file (``"m.safetensors/"``: the folder advice failed with
    "'m.safetensors' is a file, not a folder")."""
    if raw is None:
        return
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if raw.endswith(seps):
        tail = raw[-1]
    elif os.path.basename(raw) in (".", ".."):
        tail = os.path.basename(raw)
    else:
        return
    plain = os.path.normpath(raw)
    if tail in seps and os.path.isfile(plain):
        fix = f"to replace the file {plain!r}, pass {plain!r}"
    elif tail in seps:
        fix = f"give a file path, e.g. {raw + 'model.safetensors'!r}"
    else:
        fix = f"give a file path, e.g. {os.path.join(plain, 'model.safetensors')!r}"
    raise IsADirectoryError(
        errno.EISDIR,
        f"save: {raw!r} ends in {tail!r}, so it names a folder; {fix}; nothing was written",
    )


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
    if mode is not None:
        # before the read-only check (stop 59 review): a read-only pickle or FIFO was told
        # to "make it writable (chmod u+w)", and once it was, the save refused it anyway
        _refuse_foreign(path, target)
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


def _refuse_foreign(path: pathlib.Path, target: pathlib.Path) -> None:
    """Refuse to replace a file that holds something other than a safetensors file.

    Stop 59: ``save(model, "notes.txt")`` (or onto a ``.pt`` pickle, a script) replaced
    the user's file with no word, where nothing may delete a file it did not write. An
    empty file (``tempfile.mkstemp``'s) and any safetensors file (a save of this library,
    ``safetensors.torch.save_file``'s, ``save_pretrained``'s) are replaced as before.
    """
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        # stop 59: the temporary file was renamed over the node: save(model, "/dev/null")
        # replaced the device with a plain file (as root), a FIFO lost its readers
        raise FileExistsError(
            errno.EEXIST,
            f"save: {os.fspath(path)!r} is not a regular file (a device, a FIFO or a "
            f"socket), which saving would replace; give a file path, e.g. "
            f"'model.safetensors'; it was left as it was",
        )
    size = st.st_size
    if size == 0:
        return
    try:  # a FIFO is refused above: opening one would block
        with open(target, "rb") as fh:
            head = fh.read(9)
    except OSError:  # unreadable (no read permission): not ours to judge
        return
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if 0 < n <= size - 8 and head[8:9] == b"{":
        return
    raise FileExistsError(
        errno.EEXIST,
        f"save: {os.fspath(path)!r} exists and is not a safetensors file ({size} bytes), so "
        f"saving would replace a file this library did not write; save to another path, "
        f"or remove it first (os.remove({os.fspath(path)!r})); it was left as it was",
    )


def _remove_created(created: list[pathlib.Path]) -> None:
    """Remove the folders a failed save made, deepest first; never one that holds anything
    (stop 35: a failed save left the folders it had made for the file). ``rmdir`` removes
    only empty folders, so a folder another process wrote into in the meantime stays."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return
