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
loading machinery in :mod:`tying.interop.hf_loading`; their names are re-exported here.

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import pathlib
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.plan import Plan
from tying.core.relations import Same
from tying.core.slots import slots_of
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


# -- resizing ---------------------------------------------------------------------------


def _resized_slots(model: nn.Module, emb_in, emb_out) -> set[str]:
    """The slots HF's ``resize_token_embeddings`` resizes (and re-ties) together.

    The parameters of the input and output embeddings under every path that
    reaches them (BART's ``model.encoder.embed_tokens`` is ``model.shared``),
    closed over the ties HF declares and re-makes after resizing
    (``_tied_weights_keys``: T5's ``encoder.embed_tokens`` <- ``shared``, XLM-R's
    ``lm_head.decoder.bias`` <- ``lm_head.bias``).
    """
    wanted = {id(m) for m in (emb_in, emb_out) if m is not None}
    paths = {p for p, m in model.named_modules(remove_duplicate=False) if id(m) in wanted}
    inv = Inventory(model)
    slots = {p for p in inv.slots if p.rpartition(".")[0] in paths}
    for p in paths:  # an alias path's parameters, also when Inventory lists them once
        mod = model.get_submodule(p)
        slots.update(join(p, n) for n, _ in mod.named_parameters(recurse=False))
        slots.update(join(p, n) for n in slots_of(mod))
    hf_ties = dict(getattr(model, "all_tied_weights_keys", None) or {})
    grew = True
    while grew:
        grew = False
        for t, s in hf_ties.items():
            if (t in slots) != (s in slots):
                slots.update((t, s))
                grew = True
    return slots


def resize_token_embeddings(model: nn.Module, new_num_tokens: int | None = None, **kwargs: Any):
    """``model.resize_token_embeddings`` for a Plan-tied model: every tie on the embeddings follows.

    The ties whose target or source is a parameter of the input or output
    embedding are freed, HF resizes (and re-ties ``tie_word_embeddings`` itself),
    and the ties are re-applied: a tied output embedding then reads the resized
    source (new rows included), and ``tying.count`` and ``load_state_dict`` see
    the new shape. All or nothing: on error the model is restored.

    Args:
        model: a ``transformers.PreTrainedModel``.
        new_num_tokens: the new vocabulary size (see HF's ``resize_token_embeddings``).
        **kwargs: ``pad_to_multiple_of``, ``mean_resizing``, passed on.

    Returns:
        The input embedding module, as HF returns it.

    Raises:
        TieError: when a tie joins an embedding parameter to a parameter outside
            the embeddings (its shape would no longer fit), naming the tie; when an
            embedding is tied by a plan applied to a model containing ``model`` (resize
            through that one, or free the tie there first); or when a tie the config
            declares holds different values (a checkpoint HF loaded untied: HF's resize
            would re-tie it, overwriting the head); or when HF's resize would seat one
            embedding module at paths that held different tables (BART-family models
            with ``tie_word_embeddings=False``: ``shared`` at the encoder and decoder);
            when the model (or a module of it) is wrapped by ``td.ddp`` or sharded by
            ``td.fully_shard`` (resize before wrapping, then wrap again); nothing is
            changed then.
        TypeError: when ``new_num_tokens`` is not a positive int or None, or
            ``pad_to_multiple_of`` is not an int or None (integral scalars such as
            ``numpy.int64`` are taken as ints, as HF takes them).
        ValueError: when ``pad_to_multiple_of`` is 0 or negative (HF rounded the size
            down then, dropping rows, or divided by zero).

    Example:
        >>> import torch, tying, tying.hf
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        ...                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
        >>> model = GPT2LMHeadModel(cfg)
        >>> _ = tying.Plan([tying.share("lm_head.weight", like="transformer.wte.weight")]).apply(model)
        >>> _ = tying.hf.resize_token_embeddings(model, 80, mean_resizing=False)
        >>> model.lm_head.weight is model.transformer.wte.weight, tuple(model.lm_head.weight.shape)
        (True, (80, 16))
        >>> tying.count(model).logical - tying.count(model).physical
        1280
    """
    # numpy / other integral scalars are sizes as HF takes them; passed on as int, so the
    # config (vocab_size) is written to JSON as HF writes it
    if isinstance(new_num_tokens, numbers.Integral) and not isinstance(new_num_tokens, bool):
        new_num_tokens = int(new_num_tokens)
    pad = kwargs.get("pad_to_multiple_of")
    if isinstance(pad, numbers.Integral) and not isinstance(pad, bool):
        kwargs["pad_to_multiple_of"] = int(pad)
    if new_num_tokens is not None and (
        isinstance(new_num_tokens, bool)
        or not isinstance(new_num_tokens, int)
        or new_num_tokens <= 0
    ):
        raise TypeError(
            f"resize_token_embeddings: new_num_tokens must be a positive int or None, got {new_num_tokens!r}"
        )
    _check_pad_to_multiple_of(kwargs.get("pad_to_multiple_of"))
    _refuse_wrapped(model)
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    embed_slots = _resized_slots(model, emb_in, emb_out)
    rules = Plan.declared(model).rules
    _refuse_ties_resize_cannot_keep(model, embed_slots, {r.target for r in rules})
    involved = [r for r in rules if r.target in embed_slots or r.like in embed_slots]
    # Ties whose other end HF is not known to resize: tried, and refused (model restored)
    # when their shapes no longer fit after the resize (BART's Plan-tied encoder.embed_tokens
    # does fit: HF's set_input_embeddings seats the resized shared module there).
    outside = [
        r for r in involved if r.target not in embed_slots or (r.like and r.like not in embed_slots)
    ]
    from tying.core.rules import free

    text_config = model.config.get_text_config()
    old_vocab = text_config.vocab_size
    had_attr, old_attr = hasattr(model, "vocab_size"), getattr(model, "vocab_size", None)
    state = _ModuleState(model)  # everything HF and the plan change, for the rollback
    params_before = dict(model.named_parameters(remove_duplicate=False))
    tables_before = _embedding_tables(model, emb_in, emb_out)
    kept_before = _slot_values(model, embed_slots) if involved else {}
    extras_before = _relation_extras(model, {r.target for r in involved})
    try:
        if involved:
            Plan([free(r.target) for r in involved]).apply(model)
        out = model.resize_token_embeddings(new_num_tokens, **kwargs)
        if involved:
            try:
                Plan(involved).apply(model)
                _restore_relation_extras(model, extras_before)
            except TieError as err:
                named = "; ".join(
                    f"{r.target} <- {r.like} ({r.relation!r})" for r in outside or involved
                )
                raise TieError(
                    f"resize_token_embeddings: the tie {named} joins an embedding parameter to one "
                    f"outside the embeddings, which HF did not resize with them, so its shape no "
                    f"longer fits ({err}); the model is unchanged. Untie it first "
                    f"(tying.Plan([tying.free({(outside or involved)[0].target!r})]).apply(model))"
                ) from None
        _refuse_kept_rows_moved(model, kept_before, involved)
        _refuse_tables_joined(model, tables_before)
        verify(model)
        _record_replaced(model, params_before)
        return out
    except BaseException:
        state.restore()
        text_config.vocab_size = old_vocab
        if had_attr:
            model.vocab_size = old_attr
        elif hasattr(model, "vocab_size"):
            with contextlib.suppress(AttributeError):
                delattr(model, "vocab_size")
        raise


def _refuse_wrapped(model: nn.Module) -> None:
    """Refuse, before any change, a model a data-parallel wrapper holds (stop 52).

    DDP all-reduces the tensors it was built with, in buckets of the shapes they had, and
    FSDP2 holds each parameter as a shard (a DTensor). Under ``td.ddp`` HF's resize swapped
    the embeddings' data for larger tables (an HF-tied model), or a Plan-tied model's untied
    head for a new Parameter, and the call returned: the wrapped model was refused at its
    next training forward, with the resize kept, so the model could not be used as it was
    nor trained as it now is. Under ``td.fully_shard`` HF's resize failed inside HF
    (``aten.copy_.default got mixed torch.Tensor and DTensor``), naming neither the
    wrapper nor the fix.
    """
    from tying.core.outside import live_wrapper

    found = live_wrapper(model)
    if found is None:
        return
    path, helper = found
    at = f" (at {path!r})" if path else ""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        what = (
            f"a {type(model).__name__} wrapper, which reduces (or replicates) only the tensors "
            f"its module held when it was built, with the shapes they had"
        )
        fix = (
            "resize the model inside before wrapping it: drop the wrapper (inner = "
            "wrapped.module; del wrapped), call tying.hf.resize_token_embeddings(inner, n), "
            "then wrap inner again (td.ddp(inner)) and build the optimizer anew"
        )
    elif helper == "ddp":
        what = (
            "wrapped by td.ddp (DistributedDataParallel), which all-reduces only the tensors "
            "it was wrapped with, in buckets of the shapes they had: the resized embeddings "
            "could not train under it (its next training forward would be refused)"
        )
        fix = (
            "resize before wrapping: drop the wrapper (inner = wrapped.module; del wrapped), "
            "call tying.hf.resize_token_embeddings(inner, n), then td.ddp(inner) again and "
            "build the optimizer anew"
        )
    else:
        what = (
            "sharded by FSDP2 (td.fully_shard), which holds each parameter as a shard (a "
            "DTensor) that HF's resize cannot grow"
        )
        fix = (
            "resize before sharding: build the model again (or tying.load a td.save file of "
            "this one into a new, unsharded model), call tying.hf.resize_token_embeddings on "
            "it, then td.fully_shard it"
        )
    raise TieError(f"resize_token_embeddings: the model{at} is {what}; {fix}; nothing was changed")


def _check_pad_to_multiple_of(pad: Any) -> None:
    """``pad_to_multiple_of`` must be None or a positive int, checked before any change.

    HF rounds the size up with ``ceil(n / pad) * pad``: a negative value rounded it
    *down* (60 tokens with ``-8`` gave a 56-row table: four rows of the vocabulary
    gone, no error; plain HF the same), and 0 failed inside HF with a bare
    ``ZeroDivisionError`` (stop 37 review).
    """
    if pad is None:
        return
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise TypeError(
            f"resize_token_embeddings: pad_to_multiple_of must be a positive int or None, got "
            f"{pad!r} ({type(pad).__name__}); pass e.g. pad_to_multiple_of=8, or None to keep "
            f"new_num_tokens as it is; nothing was changed"
        )
    if pad <= 0:
        raise ValueError(
            f"resize_token_embeddings: pad_to_multiple_of must be a positive int or None, got "
            f"{pad!r} (HF rounds the size to a multiple of it: a value <= 0 would drop rows or "
            f"divide by zero); pass e.g. pad_to_multiple_of=8, or None; nothing was changed"
        )


def _embedding_tables(
    model: nn.Module, emb_in, emb_out
) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """``{path: (module, weight data)}`` of every embedding module (``nn.Embedding`` or the
    model's input / output embedding) under every path, as it is now: HF's resize gives
    the modules new tensors, so these references keep the values from before."""
    out = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        if not (isinstance(mod, nn.Embedding) or mod is emb_in or mod is emb_out):
            continue
        weight = getattr(mod, "weight", None)
        if isinstance(weight, torch.Tensor):
            out[path] = (mod, weight.data)
    return out


def _relation_extras(model: nn.Module, targets: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    """``{target: {role: a copy of the value}}`` of each tied target's relation extras (the
    learned ``scale`` of ``Scaled``, stored as ``weight_scale``) where the tie reads another
    slot. A self re-parametrisation (no source) is left out: re-applying it re-makes its
    physical storage from the resized value for the extras' initial values, so the logical
    values come back exactly (a restored scale would multiply them by scale / init)."""
    inv = Inventory(model)
    out: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for target in sorted(targets):
            info = inv.slots.get(target)
            if info is None or not info.is_tied or "source" in info.tie.storage:
                continue
            roles = {}
            for role, name in info.tie.storage.items():
                value = getattr(info.module, name, None)
                if role != "source" and isinstance(value, torch.Tensor):
                    roles[role] = value.detach().clone()
            if roles:
                out[target] = roles
    return out


def _restore_relation_extras(model: nn.Module, before: dict[str, dict[str, torch.Tensor]]) -> None:
    """Give the re-applied ties their relation extras' values from before the resize.

    Re-applying a ``Scaled`` tie made its scale anew at ``init``: a scale trained to 3.0
    came back as 2.0, and every logit of the kept tokens moved (0.075 on a tiny GPT-2,
    no error; stop 39 review). The values are copied into the new extras (HF replaced
    the module; an optimizer built before is refused as for every replaced parameter).
    """
    inv = Inventory(model)
    with torch.no_grad():
        for target, roles in before.items():
            info = inv.slots.get(target)
            if info is None or not info.is_tied:
                continue
            for role, old in roles.items():
                name = info.tie.storage.get(role)
                new = getattr(info.module, name, None) if name else None
                if isinstance(new, torch.Tensor) and new.shape == old.shape:
                    new.copy_(old.to(new.dtype))


def _slot_values(model: nn.Module, paths: set[str]) -> dict[str, torch.Tensor]:
    """``{path: a copy of the value the model reads there}`` for each floating-point slot in
    ``paths`` (a tied slot's logical value, computed by its relation); meta tensors and a
    tie's own storage (``weight_physical``, ``weight_scale``: not values the model reads as
    they are) skipped."""
    inv = Inventory(model)
    storage = {
        join(info.module_path, name)
        for info in inv.slots.values()
        if info.is_tied
        for name in info.tie.storage.values()
    }
    out = {}
    with torch.no_grad():
        for path in sorted(paths - storage):
            value = _value_at(model, path)
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not value.is_meta:
                out[path] = value.detach().clone()
    return out


def _refuse_kept_rows_moved(model: nn.Module, before: dict[str, torch.Tensor], involved) -> None:
    """Refuse when an embedding slot's kept tokens read other values after the resize.

    HF's resize keeps the first ``min(old, new)`` rows of every embedding table as they
    were; the re-applied ties must too. A relation that does not keep each row where it
    was did not: ``lm_head.weight`` tied to ``wte.weight`` by ``Flipped(dims=(0,))`` or
    ``Rotated(k=2)`` read the *new* rows for the first tokens after growing 50 -> 60
    (kept-token logits 0.39 away), ``Mirrored(dim=0)`` re-averaged the table (0.15 away),
    ``Hashed`` re-bucketed the new random rows into the old ones (0.025 away), all with
    no error (stop 39 review). Compared over the overlap of the old and new shapes, to a
    few units of rounding (``Hashed``'s buckets are re-averaged when re-applied).
    """
    moved = []
    with torch.no_grad():
        for path, old in before.items():
            new = _value_at(model, path)
            if not isinstance(new, torch.Tensor) or new.ndim != old.ndim:
                continue
            overlap = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape))
            # in the table's own dtype (float32 for halves): a float64 copy of a 128k-token
            # table would cost 4 GB
            work = torch.float32 if old.dtype in (torch.float16, torch.bfloat16) else old.dtype
            a, b = old[overlap].to(work), new[overlap].detach().to(work)
            if torch.equal(a, b):
                continue
            eps = torch.finfo(old.dtype).eps
            scale = float(a.abs().nan_to_num(0.0, 0.0, 0.0).max()) if a.numel() else 0.0
            if not torch.allclose(b, a, rtol=8 * eps, atol=8 * eps * scale, equal_nan=True):
                diff = (a - b).abs().nan_to_num(float("inf")).max().item()
                moved.append((path, overlap, diff))
    if not moved:
        return
    path, overlap, diff = moved[0]
    ties = [r for r in involved if path in (r.target, r.like)] or list(involved)
    named = "; ".join(f"{r.target} <- {r.like or 'its own storage'} ({r.relation!r})" for r in ties)
    kept = "x".join(str(s.stop) for s in overlap)
    raise TieError(
        f"resize_token_embeddings: after the resize, {path} no longer holds its kept values "
        f"(the first {kept} entries, which HF's resize keeps as they were; max |diff| "
        f"{diff:.3g}): the tie {named} does not keep each token's row where it was when the "
        f"vocabulary changes size, so kept tokens would read other values, silently. Free it "
        f"first (tying.Plan([tying.free({ties[0].target!r})]).apply(model)), resize, then tie "
        f"again with a relation that keeps rows in place (Same, Scaled); nothing was changed"
    )


def _refuse_tables_joined(
    model: nn.Module, before: dict[str, tuple[nn.Module, torch.Tensor]]
) -> None:
    """Refuse when HF's resize seated one embedding module at paths that held different
    tables before.

    transformers 5 keeps BART's (mBART's, Pegasus', Marian's) encoder and decoder
    embeddings apart from ``model.shared`` when ``tie_word_embeddings`` is False, but its
    ``resize_token_embeddings`` calls ``set_input_embeddings``, which seats ``shared``
    at both: the encoder and decoder then read another table, kept-token logits 0.28
    away on a tiny BART, no error (plain HF alike; stop 34 review). A path that held the
    same values before (a tie, a freed copy) may be joined.
    """
    now: dict[int, list[str]] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        if path in before:
            now.setdefault(id(mod), []).append(path)
    joined = []
    for paths in now.values():
        first = paths[0]
        for other in paths[1:]:
            (a_mod, a), (b_mod, b) = before[first], before[other]
            if a_mod is b_mod or a is b:
                continue
            if tuple(a.shape) != tuple(b.shape):
                joined.append((first, other, f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"))
            elif not torch.equal(a, b.to(a.dtype)):
                diff = (a.float() - b.float()).abs().max().item()
                joined.append((first, other, f"max |diff| {diff:.3g}"))
    if joined:
        first, other, _ = joined[0]
        raise TieError(
            f"resize_token_embeddings: HF's resize seats one embedding module at paths that "
            f"held different tables before: {_list_pairs(joined).replace(' <- ', ' and ')}; "
            f"from then on they would read one table's values, silently. If they are meant "
            f"to be one table, tie them first, keeping the values the model computes with "
            f"(e.g. tying.Plan([tying.share({first + '.weight'!r}, like={other + '.weight'!r})])"
            f".apply(model) keeps {other}'s); if they are meant to differ, resize each table "
            f"yourself (this model's resize cannot keep them apart); nothing was changed"
        )


def _refuse_ties_resize_cannot_keep(model: nn.Module, embed_slots: set[str], declared) -> None:
    """Refuse, before any change, the ties a resize of ``model`` would break or overwrite.

    Two kinds, both found in the stop 32 review:

    - a Plan tie on an embedding that was declared on a model *containing* ``model``
      (``tying.hf.resize_token_embeddings(encdec.decoder, n)`` with the decoder's
      embedding tied to the encoder's by a plan on the ``EncoderDecoderModel``): this
      call cannot free and re-make it, and HF resized the outside source in place
      (the encoder's table became (120, 32), not put back when the call failed);
    - a tie the config declares that does not hold with equal values (a checkpoint
      HF loaded untied): HF's resize re-ties it by its ``tie_weights()``, replacing
      the head by the embedding (kept-token logits 2.05 away, no error).
    """
    inv = Inventory(model)
    for path, info in inv.slots.items():
        if not info.is_tied or path in declared:
            continue
        if path in embed_slots or info.source in embed_slots:
            where, src = info.tie.paths
            outer = f"{where}.{info.name}" if where else info.name
            raise TieError(
                f"resize_token_embeddings: {path} is tied to "
                f"{info.source or f'{src} (outside this model)'} by a plan applied to a "
                f"model that contains this one (there: {outer} <- {src}); resizing this "
                f"part alone cannot re-make that tie. Free it on that model "
                f"(tying.Plan([tying.free({outer!r})]).apply(outer_model)), resize every "
                f"part that shares the table, then apply the tie again; nothing was changed"
            )
    differ = _config_ties_not_held(model, _config_ties(model))
    if differ:
        raise TieError(
            f"resize_token_embeddings: the config declares {_list_pairs(differ)}, but the "
            f"model holds different values there (HF loads a checkpoint that holds both "
            f"untied); HF's resize re-ties every tie its config declares, which would "
            f"replace the first by the second's values. {_UNTIED_FIX}"
        )


def _record_replaced(model: nn.Module, before: dict[str, nn.Parameter]) -> None:
    """Parameters HF replaced while resizing (DistilBERT's head bias, XLM-R's tied
    embedding) are noted, so that an optimizer built before refuses its step (it
    would keep stepping the old Parameter and never train the new one, silently)."""
    from tying.core import stale

    after = dict(model.named_parameters(remove_duplicate=False))
    stale.record(
        [
            (old, after[path], f"{path} (replaced by resize_token_embeddings)")
            for path, old in before.items()
            if path in after and after[path] is not old
        ]
    )


class _ModuleState:
    """Every module's attributes (parameters, buffers, children, class, tie slots) and every
    parameter's data, as they are now; :meth:`restore` puts them back (a rollback)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = []
        for mod in model.modules():
            attrs = {k: (type(v)(v) if isinstance(v, dict) else v) for k, v in mod.__dict__.items()}
            self.modules.append((mod, attrs, mod.__class__))
        self.data = [
            (p, p.data)
            for mod in model.modules()
            for p in mod._parameters.values()
            if p is not None
        ]

    def restore(self) -> None:
        with torch.no_grad():
            for mod, attrs, cls in self.modules:
                mod.__dict__.clear()
                mod.__dict__.update(
                    {k: (type(v)(v) if isinstance(v, dict) else v) for k, v in attrs.items()}
                )
                mod.__class__ = cls
            for p, data in self.data:
                p.data = data
