"""Ties through Hugging Face transformers: ``save_pretrained``, ``from_pretrained``, resizing.

HF's ``save_pretrained`` writes ``model.state_dict()``; a ``tying`` tie holds its
value once, so a tied slot (``lm_head.weight``, layer 7 of an ALBERT-style
stack) is not in the file, and HF's own ``from_pretrained`` re-initialises it
at random. This module closes that gap in both directions:

- :func:`save_pretrained` records the model's declared ties in ``config.json``
  (key ``"tying"``), keeps ``config.tie_word_embeddings`` true when the plan ties
  the output embedding to the input embedding and HF's flag re-makes exactly
  that tie and changes nothing else (so HF re-ties it by itself), and
  writes every tied slot's logical value as well, so that **plain**
  ``transformers`` loading of the folder gives a model with the same outputs
  (untied copies, except the embedding tie HF makes itself).
- :func:`from_pretrained` loads such a folder, or one written by HF's own
  ``save_pretrained`` from a Plan-tied model (pass ``plan=`` when its config has
  no recorded plan), re-applies the plan before the weights load, and refuses a
  file whose tied values disagree with the tie.
- :func:`resize_token_embeddings` resizes a Plan-tied model's vocabulary and
  re-creates every tie on the embeddings, all or nothing.

The plan's JSON record and HF's own ties live in :mod:`tying.interop.hf_plan`, the
loading machinery in :mod:`tying.interop.hf_loading`, resizing in
:mod:`tying.interop.hf_resize`; their names are re-exported here.

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.plan import Plan
from tying.core.relations import Same
from tying.core.verify import verify
from tying.interop.hf_loading import (  # noqa: F401  (re-exported: hf.<name> as before)
    _check_as_loaded,
    _check_tied_values,
    _checkpoint_files,
    _computed_from,
    _file_keys,
    _hf_tied_targets,
    _known,
    _locate,
    _missing,
    _model_paths,
    _note_fresh_parts,
    _quiet,
    _read_checkpoint,
    _rebase,
    _recorded_plan,
    _recorded_rules,
    _saved_class_paths,
    _saved_names,
    _tie_checks,
    _variant,
    _warn_recorded_ties_dropped,
    _without_lacking_parts,
    from_pretrained,
)
from tying.interop.hf_plan import (  # noqa: F401  (re-exported: hf.<name> as before)
    _UNTIED_FIX,
    CONFIG_KEY,
    PLAN_FORMAT,
    _config_ties,
    _config_ties_not_held,
    _expand_over_slots,
    _ignored_tie_flags,
    _list_pairs,
    _transformers,
    _value_at,
    hf_ties_plan,
    plan_from_json,
    plan_to_json,
)
from tying.interop.hf_resize import (  # noqa: F401  (re-exported: hf.<name> as before)
    _check_pad_to_multiple_of,
    _embedding_tables,
    _ModuleState,
    _record_replaced,
    _refuse_kept_rows_moved,
    _refuse_tables_joined,
    _refuse_ties_resize_cannot_keep,
    _refuse_wrapped,
    _relation_extras,
    _resized_slots,
    _restore_relation_extras,
    _slot_values,
    resize_token_embeddings,
)

# -- saving -----------------------------------------------------------------------------


def _embedding_tie(model: nn.Module) -> bool:
    """True when the declared ties include the output embedding's weight tied to the input's
    (``Same``) and HF's ``tie_word_embeddings`` re-creates exactly that (:func:`_hf_reties_exactly`);
    else the head's value is written into the file and the flag is left as it is."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return False
    emb_in, emb_out = get_in(), get_out()
    if emb_in is None or emb_out is None:
        return False
    inv = Inventory(model)
    tin, tout = inv.path_of(emb_in), inv.path_of(emb_out)
    # Either direction: a Same tie is one tensor, and a hand tie's direction is the order
    # tying found its two paths in (XLM-R's reads embeddings <- lm_head.decoder).
    want = {f"{tout}.weight", f"{tin}.weight"}
    return any(
        {r.target, r.like} == want and type(r.relation) is Same for r in Plan.declared(model).rules
    ) and _hf_reties_exactly(model, f"{tout}.weight")


def _hf_reties_exactly(model: nn.Module, head: str) -> bool:
    """True when writing ``tie_word_embeddings=True`` (and leaving ``head`` out of the
    file) gives a model that computes what ``model`` computes.

    Two ways it did not (stop 31 review), both silent for plain HF loading:

    - HF ties other slots under that flag than the plan did: Marian with
      ``share_encoder_decoder_embeddings=False`` ties ``lm_head`` to the *decoder*
      embedding; a plan tying it to the encoder's was loaded with the decoder's
      (logits 0.37 away), and ``tying.hf.from_pretrained`` refused its own folder.
      Every tie HF would make must already hold in ``model`` (one tensor).
    - the model's forward reads the flag: SwitchTransformers (and UDOP) scale the
      decoder output by ``d_model ** -0.5`` when ``tie_word_embeddings`` is true, so
      a Plan-tied untied-config model came back with other logits (7.1 away).
      A ``forward`` whose source names the flag (or cannot be read) keeps it as it is.
    """
    config = model.config
    if not hasattr(config, "tie_word_embeddings"):
        return False
    old = config.tie_word_embeddings
    try:
        config.tie_word_embeddings = True
        mapping = _config_ties(model)
    except (AttributeError, TypeError, ValueError):  # HF cannot tie this model by the flag
        return False
    finally:
        config.tie_word_embeddings = old
    if mapping is None or (head not in mapping and head not in mapping.values()):
        return False
    for target, source in mapping.items():
        a, b = _value_at(model, target), _value_at(model, source)
        if a is None or a is not b:
            return False
    return old is True or _forward_reading_tie_flag(model) is None  # True: nothing changes


def _forward_reading_tie_flag(model: nn.Module) -> str | None:
    """The first class in ``model`` whose ``forward`` names ``tie_word_embeddings``
    (or whose source cannot be read), else None. torch's and tying's own are skipped."""
    import inspect

    seen: set[type] = set()
    for mod in model.modules():
        for klass in type(mod).__mro__:
            if klass in seen:
                continue
            seen.add(klass)
            forward = vars(klass).get("forward")
            if forward is None or klass.__module__.split(".")[0] in ("torch", "tying"):
                continue
            try:
                source = inspect.getsource(forward)
            except (OSError, TypeError):
                return klass.__qualname__
            if "tie_word_embeddings" in source:
                return klass.__qualname__
    return None


def logical_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` plus every tied slot's logical value, each an independent tensor.

    This is what a model that does not know ``tying`` needs to reproduce the
    outputs: the tied slots as ordinary weights. Relation storage
    (``weight_physical``, ``weight_scale``) is kept so ``tying`` can rebuild the
    tie exactly.

    Args:
        model: any module.

    Returns:
        A dict of detached tensors; each tied slot's value is a new tensor of its own.

    Example:
        >>> import torch, tying
        >>> from tying.interop.hf import logical_state_dict
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
        >>> "b.weight" in logical_state_dict(m), "b.weight" in m.state_dict()
        (True, False)
    """
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, t in model.state_dict().items():
            out[key] = t.detach()  # HF writes these as they are; only the tied values are new
        for path, info in Inventory(model).slots.items():
            if info.is_tied:
                out[path] = getattr(info.module, info.name).detach().clone().contiguous()
    return out


def save_pretrained(model: nn.Module, path: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
    """Save a Plan-tied HF model so that both ``tying`` and plain ``transformers`` load it right.

    Writes with the model's own ``save_pretrained``, after recording the declared
    ties in the config (``config.tying``) and passing the logical state dict
    (:func:`logical_state_dict`): every tied slot's value is in the file, so
    plain ``from_pretrained`` reproduces the outputs, and :func:`from_pretrained`
    re-creates the ties. When the plan ties the output embedding to the input
    embedding, ``config.tie_word_embeddings`` is written true so HF re-ties it by
    itself, unless HF would tie other slots under that flag or the model's forward
    reads it (Marian with unshared embeddings, SwitchTransformers): then the head is
    written as a copy and the flag left as it was. The model's in-memory config is
    left as it was. A ``torch.compile`` wrapper is saved as the model it wraps; a
    process HF does not save from (``is_main_process=False``, a rank other than 0)
    writes and removes nothing, as in HF.

    Args:
        model: a ``transformers.PreTrainedModel`` (ties from :class:`~tying.Plan`).
        path: the output folder.
        **kwargs: passed to ``model.save_pretrained`` (not ``state_dict``).

    Returns:
        The folder.

    Raises:
        TypeError: when ``model`` has no ``save_pretrained``/``config`` or
            ``state_dict=`` is passed.
        TypeError: ``push_to_hub=True``: save, then upload the folder with
            ``huggingface_hub.upload_folder(repo_id=..., folder_path=folder)``.
        TieError: when a declared tie is broken (run ``tying.retie`` first), or a
            module is pruned by ``torch.nn.utils.prune`` (``prune.remove`` first);
            nothing is written then.
        FileExistsError: when ``path`` is an existing file, not a folder (left as it is).
        PermissionError: when neither ``path``'s parent nor an existing ``path``
            is writable (the files are written into a temporary folder beside
            ``path``, or inside it when only ``path`` is writable, then moved in).

    Example:
        >>> import tempfile, torch, tying, tying.hf
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        ...                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
        >>> model = GPT2LMHeadModel(cfg).eval()
        >>> _ = tying.Plan([tying.share("transformer.h.*", like="transformer.h.0"),
        ...                 tying.share("lm_head.weight", like="transformer.wte.weight")]).apply(model)
        >>> folder = tying.hf.save_pretrained(model, tempfile.mkdtemp())
        >>> again = tying.hf.from_pretrained(GPT2LMHeadModel, folder).eval()
        >>> x = torch.arange(8)[None]
        >>> torch.equal(again(x).logits, model(x).logits), tying.count(again).physical == tying.count(model).physical
        (True, True)
    """
    _transformers()
    model = _unwrap_compiled(model)
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(
            f"tying.hf.save_pretrained: expected a transformers PreTrainedModel, got "
            f"{type(model).__name__}; use tying.save(model, path) for other modules"
        )
    if "state_dict" in kwargs:
        raise TypeError(
            "tying.hf.save_pretrained writes the logical state dict itself; drop state_dict= "
            "(or call model.save_pretrained directly, and load with tying.hf.from_pretrained(plan=...))"
        )
    if kwargs.get("push_to_hub"):
        raise TypeError(
            "tying.hf.save_pretrained does not upload (push_to_hub=True): it saves all or "
            "nothing into a local folder, and an upload could fail half-way. Save, then upload "
            "the finished folder: folder = tying.hf.save_pretrained(model, path); "
            "huggingface_hub.upload_folder(repo_id=..., folder_path=folder); nothing was written"
        )
    if hasattr(model, "peft_config"):
        raise TypeError(
            "tying.hf.save_pretrained: got a peft model; save its adapter with "
            "peft_model.save_pretrained(path) (load it with tying.interop.lora.from_pretrained), "
            "or merge it first (tying.interop.lora.merge_and_unload) and save the merged model"
        )
    folder = pathlib.Path(path)
    if folder.exists() and not folder.is_dir():
        # (plain HF logs an error and returns, having saved nothing; here os.mkdir failed
        # after the whole save was written aside, with a bare "[Errno 17] File exists")
        raise FileExistsError(
            f"tying.hf.save_pretrained: {str(folder)!r} is a file, not a folder; save_pretrained "
            f"writes a folder (config.json and the weights). Pass a folder path instead "
            f"(e.g. {str(folder) + '_saved'!r}); the file was left as it was and nothing "
            f"was written"
        )
    verify(model)
    _refuse_pruned(model)
    _refuse_unwritable(model)
    recorded = plan_to_json(model)
    tie_embed = _embedding_tie(model)
    had_key, old_plan = hasattr(config, CONFIG_KEY), getattr(config, CONFIG_KEY, None)
    old_tie = getattr(config, "tie_word_embeddings", None)
    try:
        setattr(config, CONFIG_KEY, recorded)
        if tie_embed:
            config.tie_word_embeddings = True
        state = logical_state_dict(model)
        if tie_embed:  # HF re-ties it from tie_word_embeddings; a copy would be 154 MB in GPT-2
            state.pop(f"{Inventory(model).path_of(model.get_output_embeddings())}.weight", None)
        _save_all_or_nothing(model, folder, state, kwargs)
    finally:
        if had_key:
            setattr(config, CONFIG_KEY, old_plan)
        else:
            with contextlib.suppress(AttributeError):
                delattr(config, CONFIG_KEY)
        if old_tie is not None:
            config.tie_word_embeddings = old_tie
    return folder


def _unwrap_compiled(model: nn.Module) -> nn.Module:
    """The model ``torch.compile`` wrapped (``OptimizedModule._orig_mod``), else ``model``.

    The wrapper forwards ``save_pretrained`` and ``config`` to the model, but its own
    ``state_dict`` and module paths start with ``_orig_mod.``: the file and the recorded
    plan were written under those names, so plain HF loading of the folder found none of
    the weights and initialised every one at random, and ``tying.hf.from_pretrained``
    refused the folder (stop 38 review). HF's own save writes the inner model's names.
    """
    import sys

    # not imported: nothing was compiled (and importing it costs seconds and warns)
    wrapper = getattr(sys.modules.get("torch._dynamo.eval_frame"), "OptimizedModule", None)
    while wrapper is not None and isinstance(model, wrapper):
        model = model._orig_mod
    return model


def _refuse_pruned(model: nn.Module) -> None:
    """A module pruned by ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask``) is refused.

    HF writes ``weight_orig``/``weight_mask`` and no ``weight``: any fresh model
    loading the folder gets that weight at random (plain ``from_pretrained``
    silently; :func:`from_pretrained` refused it, blaming the tie), and a tied use
    of it saved as its masked value no longer matches.
    """
    from tying.core.outside import pruned_names

    inv = Inventory(model)
    for path, mod in model.named_modules():
        names = pruned_names(mod)
        if names:
            orig, name = next(iter(names.items()))
            slot = join(path, name)
            users = [p for p, i in inv.slots.items() if i.is_tied and i.source == slot]
            serves = f", which tied slot(s) {', '.join(users[:3])} read" if users else ""
            raise TieError(
                f"tying.hf.save_pretrained: {slot} is pruned (torch.nn.utils.prune keeps "
                f"{join(path, orig)} and a mask{serves}); HF would write no {slot!r}, so a model "
                f"loaded from the folder would get it at random. Make the pruning permanent "
                f"first (torch.nn.utils.prune.remove(model.get_submodule({path!r}), {name!r})), "
                f"or save with tying.save(model, path), which keeps the mask; nothing was written"
            )


def _refuse_unwritable(model: nn.Module) -> None:
    """A state dict entry HF's safetensors writer cannot take is refused before writing.

    torch.ao's dynamically quantized modules keep packed parameters (with a
    ``torch.dtype`` entry), torchao keeps tensor subclasses (``Int8Tensor``): HF wrote
    ``config.json`` (with the plan) and then failed on them, leaving a folder
    without weights.
    """
    for key, value in model.state_dict().items():
        data = value.data if isinstance(value, torch.Tensor) else value
        if type(data) is not torch.Tensor:
            raise TypeError(
                f"tying.hf.save_pretrained: {key} is a {type(data).__module__}."
                f"{type(data).__name__}, not a plain tensor (a quantized module?); HF's "
                f"safetensors writer cannot write it. Save the float model before quantizing, "
                f"and quantize again after loading; nothing was written"
            )


def _save_all_or_nothing(model: nn.Module, folder: pathlib.Path, state, kwargs) -> None:
    """``model.save_pretrained`` into a fresh temporary folder beside ``folder``, then moved in.

    HF writes ``config.json`` first and the weights after: a failure half-way left a
    new config beside the old weights. Shards of an earlier sharded save that this one
    does not write (``model-00002-of-00003.safetensors``) are removed, as HF removes
    them, and so is their index when it lists nothing else. An earlier weights file
    that HF's loader would read instead of what this save writes (a single file
    beside new shards, an index listing other files) is not removed (this save did
    not write it): the save is refused, with the folder as it was.
    """
    import re
    import shutil

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_folder(folder)
    try:
        model.save_pretrained(tmp, state_dict=state, **kwargs)
        written = {f.name for f in tmp.iterdir()}
        old = {f.name for f in folder.iterdir() if f.is_file()} if folder.is_dir() else set()
        sharded = any(n.endswith(".index.json") for n in written)
        # As HF: the old shards of *this* weights name (model-00002-of-00003.safetensors);
        # a legacy pickle checkpoint's shards (pytorch_model-00001-of-00002.bin) and their
        # index are kept, as HF keeps them (it reads safetensors first): they were removed,
        # the only copy of an older model gone (stop 38 review).
        shard = re.compile(r"model-\d{5}-of-\d{5}\.(safetensors|bin)")
        gone = {n for n in old - written if shard.fullmatch(n)}
        shadowing = []
        for n in sorted(old - written):
            if n == "model.safetensors.index.json":
                # an old index is read before a single file: it goes with its shards
                index = json.loads((folder / n).read_text())
                listed = set(index.get("weight_map", {}).values())
                if listed <= gone | (listed - old):
                    gone.add(n)
                else:
                    shadowing.append(n)
            elif sharded and n in ("model.safetensors", "pytorch_model.bin"):
                shadowing.append(n)
        if kwargs.get("variant"):  # another variant's files are kept, as HF keeps them
            gone, shadowing = set(), []
        if not _saves_on_this_rank(model, kwargs.get("is_main_process", True)):
            # HF wrote nothing here (another process writes the folder): the files in it are
            # that process's, new or old, and none is this call's to remove (stop 38)
            gone, shadowing = set(), []
        if shadowing:
            raise FileExistsError(
                f"tying.hf.save_pretrained: {folder} holds {shadowing} from an earlier save, "
                f"which from_pretrained would read instead of what this save writes; "
                f"nothing was written. Save into an empty folder, or remove {shadowing[0]} "
                f"first"
            )
        folder.mkdir(exist_ok=True)  # (exists when the temporary folder is inside it)
        for name in sorted(gone):
            (folder / name).unlink()
        for name in sorted(written, key=lambda n: n.endswith(".json")):  # weights first
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _saves_on_this_rank(model: nn.Module, is_main_process: Any) -> bool:
    """Whether HF's ``save_pretrained`` writes files in this process, as HF decides it.

    With ``is_main_process=False``, or on a rank other than 0 of an initialised
    ``torch.distributed`` group, HF writes nothing (and removes nothing). The old-shard
    cleanup of :func:`_save_all_or_nothing` then saw every file in the folder as an
    earlier save's and removed them all: a second process's call deleted the sharded
    checkpoint the main process had just written (stop 38 review).
    """
    decide = getattr(model, "should_save_on_this_rank", None)
    if callable(decide):
        return bool(decide(is_main_process))
    if not is_main_process:
        return False
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def _temporary_folder(folder: pathlib.Path) -> pathlib.Path:
    """A fresh empty folder on ``folder``'s file system, for :func:`_save_all_or_nothing`.

    Beside ``folder`` when its parent is writable; else inside ``folder`` when that
    exists and is writable (a read-only parent holding a writable target, as on a
    shared mount: the save used to fail there with ``PermissionError`` from
    ``mkdtemp``). Either way it is on the same file system, so the final
    ``os.replace`` of each file is atomic, and it is removed after the save.

    Raises:
        PermissionError: when neither place is writable, naming both.
    """
    import errno
    import tempfile

    denied = (errno.EACCES, errno.EPERM, errno.EROFS)
    try:
        return pathlib.Path(tempfile.mkdtemp(prefix=".tying-save-", dir=folder.parent))
    except OSError as beside:
        if beside.errno not in denied:
            raise
        if folder.is_dir():
            try:
                return pathlib.Path(tempfile.mkdtemp(prefix=".tying-save-", dir=folder))
            except OSError as inside:
                if inside.errno not in denied:
                    raise
        raise PermissionError(
            f"tying.hf.save_pretrained: cannot write into {folder.parent} (to save all or "
            f"nothing, the files are written into a temporary folder beside {folder.name} "
            f"or inside it, then moved in) nor into {folder} "
            f"({'not writable' if folder.is_dir() else 'it does not exist'}); create "
            f"{folder} writable, or save to a writable folder; nothing was written ({beside})"
        ) from None
