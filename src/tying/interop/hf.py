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

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import pathlib
import warnings
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.patterns import Pattern
from tying.core.plan import Plan
from tying.core.relations import Same, relation_from_spec
from tying.core.rules import share
from tying.core.slots import slots_of
from tying.core.verify import verify

CONFIG_KEY = "tying"
PLAN_FORMAT = "tying.plan/1"


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "tying.hf needs Hugging Face transformers; install the extra: pip install 'tying[interop]'"
        ) from err
    return transformers


# -- the plan as JSON -------------------------------------------------------------------


def plan_to_json(model: nn.Module) -> dict[str, Any]:
    """The ties declared on ``model`` (by any :class:`~tying.Plan` applied to it) as JSON data.

    Every tie is written resolved, one entry per slot, so mappings and callables
    in the original rules need not be serialisable.

    Args:
        model: a model a plan was applied to.

    Returns:
        ``{"format": "tying.plan/1", "ties": [{"target", "like", "relation"}, ...]}``.

    Example:
        >>> import torch, tying
        >>> from tying.interop.hf import plan_to_json, plan_from_json
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 3), "b": torch.nn.Linear(3, 3)})
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
        >>> plan_to_json(m)["ties"]
        [{'target': 'b.weight', 'like': 'a.weight', 'relation': {'type': 'Same'}}]
        >>> plan_from_json(plan_to_json(m))
        Plan([share('b.weight', like='a.weight')])
    """
    ties = []
    for rule in Plan.declared(model).rules:
        ties.append({"target": rule.target, "like": rule.like, "relation": rule.relation.spec()})
    return {"format": PLAN_FORMAT, "ties": ties}


def plan_from_json(data: Any, where: str = "plan") -> Plan:
    """Rebuild the :class:`~tying.Plan` written by :func:`plan_to_json`.

    Args:
        data: the JSON data (a dict, or a JSON string).
        where: names the origin in error messages (e.g. the config file).

    Returns:
        A plan with one ``share`` rule per recorded tie.

    Raises:
        TieError: naming the field when the data is not a recorded plan.

    Example:
        >>> from tying.interop.hf import plan_from_json
        >>> plan_from_json({"format": "tying.plan/1", "ties": [
        ...     {"target": "b", "like": "a", "relation": {"type": "Transposed", "dims": [0, 1]}}]})
        Plan([share('b', like='a', relation=Transposed(dims=(0, 1)))])
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise TieError(
                f"{where}: not JSON ({err}); expected the output of plan_to_json"
            ) from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise TieError(
            f"{where}: expected a dict with format {PLAN_FORMAT!r}, got {got!r}; "
            f"write it with tying.hf.plan_to_json(model)"
        )
    entries = data.get("ties")
    if not isinstance(entries, list):
        raise TieError(f"{where}: field 'ties' must be a list, got {type(entries).__name__}")
    rules = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TieError(f"{where}: ties[{i}] must be a dict, got {type(entry).__name__}")
        target, like, rel = entry.get("target"), entry.get("like"), entry.get("relation")
        if not isinstance(target, str) or not target:
            raise TieError(f"{where}: ties[{i}].target must be a path str, got {target!r}")
        if like is not None and not isinstance(like, str):
            raise TieError(f"{where}: ties[{i}].like must be a path str or null, got {like!r}")
        if not isinstance(rel, dict):
            raise TieError(f"{where}: ties[{i}].relation must be a dict, got {rel!r}")
        try:
            relation = relation_from_spec(rel)
            rules.append(share(target, like, relation))
        except (TypeError, ValueError) as err:
            raise TieError(f"{where}: ties[{i}] ({target!r}): {err}") from None
    return Plan(rules)


def hf_ties_plan(model: nn.Module) -> Plan:
    """HF's own declared ties (``_tied_weights_keys`` under ``tie_word_embeddings``) as a Plan.

    Applying it makes HF's hand tie a declared ``tying`` tie: listed by
    ``tying.ties``, checked by ``tying.verify``, recorded by ``tying.save`` and
    re-created by ``tying.load`` into an untied model.

    Args:
        model: a ``transformers.PreTrainedModel``.

    Returns:
        A plan with one ``share(target, like=source)`` per tie HF declares (empty
        when the config does not tie).

    Raises:
        TypeError: when ``model`` is not a transformers 5 ``PreTrainedModel``.
        TieError: when a tie the config declares does not hold in ``model`` with
            equal values (HF loaded a checkpoint holding both ends, different, and
            left them untied): applying it would overwrite the target. Set
            ``model.config.tie_word_embeddings = False`` if they are meant to differ.
            Also when a config in ``model`` sets ``tie_encoder_decoder=True``, which
            transformers 5 ignores (the encoder and decoder are not tied): declare that
            tie with a Plan and set the flag to False.

    Example:
        >>> import tying, tying.hf
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        ...                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
        >>> model = GPT2LMHeadModel(cfg)
        >>> plan = tying.hf.hf_ties_plan(model)
        >>> plan
        Plan([share('lm_head.weight', like='transformer.wte.weight')])
        >>> _ = plan.apply(model)
        >>> [(t.target, t.source) for t in tying.ties(model)]
        [('lm_head.weight', 'transformer.wte.weight')]
    """
    expand = getattr(model, "get_expanded_tied_weights_keys", None)
    if expand is None:
        raise TypeError(
            f"hf_ties_plan: expected a transformers PreTrainedModel (5.x), got {type(model).__name__}"
        )
    ignored = _ignored_tie_flags(model)
    if ignored:
        raise TieError(
            f"hf_ties_plan: {' and '.join(ignored)} is True, but transformers 5 no longer ties by that "
            f"flag: the encoder's and the decoder's weights are independent copies in this "
            f"model (HF ties none of them, and says nothing), and a plan of HF's ties would not "
            f"tie them either. Declare the tie with a Plan on the model (e.g. "
            f"tying.share('decoder.<part>', like='encoder.<part>') per shared part) and say so: "
            f"set it to False (on every config named); nothing was changed"
        )
    mapping = expand(all_submodels=True)
    differ = _config_ties_not_held(model, mapping)
    if differ:
        raise TieError(
            f"hf_ties_plan: the config declares {_list_pairs(differ)}, but the model holds "
            f"different values there (HF loads a checkpoint that holds both untied, and says "
            f"so in a warning); applying the tie would replace the first by the second's "
            f"values. {_UNTIED_FIX}"
        )
    return Plan([share(t, like=s) for t, s in sorted(mapping.items())])


_UNTIED_FIX = (
    "If they are meant to differ, say so: model.config.tie_word_embeddings = False (HF "
    "then neither ties nor re-ties them); to tie them on purpose, with the source's "
    "values, apply tying.Plan([tying.share(target, like=source)]); nothing was changed"
)


def _ignored_tie_flags(model: nn.Module) -> list[str]:
    """``config.tie_encoder_decoder`` set true on ``model`` or a sub-model, as
    ``"<path>.config.tie_encoder_decoder"``: transformers 4 tied the decoder's weights to
    the encoder's under it; transformers 5 keeps the key and ties nothing (stop 34 review:
    a BERT2BERT ``EncoderDecoderModel`` built with it has every encoder and decoder layer
    apart, and ``hf_ties_plan`` returned only the head ties, no error)."""
    found, seen = [], set()
    for prefix, sub in model.named_modules():
        config = getattr(sub, "config", None)
        if getattr(sub, "get_expanded_tied_weights_keys", None) is None or id(config) in seen:
            continue
        seen.add(id(config))  # BART's sub-models share the model's config: named once
        if getattr(config, "tie_encoder_decoder", False) is True:
            found.append(f"{f'model.{prefix}' if prefix else 'model'}.config.tie_encoder_decoder")
    return found


def _config_ties_not_held(model: nn.Module, mapping: dict[str, str]) -> list[tuple[str, str, str]]:
    """The ``(target, source, how they differ)`` of HF's config-declared ties whose two
    paths hold different values in ``model`` (not one tensor, and not equal).

    transformers 5 loads a checkpoint that holds both ends of a declared tie with
    different values untied (a fine-tuned head with ``tie_word_embeddings`` left true),
    but its ``tie_weights()`` (which ``resize_token_embeddings`` calls) re-ties them from
    the config, and a plan from the config would too: the head's values were replaced by
    the embedding's, logits 2.05 away on a tiny Llama, no error (stop 32 review).
    """
    out = []
    with torch.no_grad():
        for target, source in sorted(mapping.items()):
            a, b = _value_at(model, target), _value_at(model, source)
            if a is None or b is None or a is b:
                continue
            if tuple(a.shape) != tuple(b.shape):
                out.append((target, source, f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"))
            elif a.is_meta or b.is_meta:
                out.append((target, source, "two tensors on the meta device"))
            elif not torch.equal(a, b.to(a.dtype)):
                diff = (a.detach().float() - b.detach().float()).abs().max().item()
                out.append((target, source, f"max |diff| {diff:.3g}"))
    return out


def _list_pairs(pairs: list[tuple[str, str, str]]) -> str:
    shown = "; ".join(f"{t} <- {s} ({how})" for t, s, how in pairs[:4])
    return f"{shown}{' ...' if len(pairs) > 4 else ''}"


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


def _expand_over_slots(model: nn.Module) -> dict[str, str] | None:
    """HF's ``get_expanded_tied_weights_keys(all_submodels=True)``, its patterns matched
    against every slot path (a Plan-tied slot included), or None when they do not fit.

    HF matches a pattern mapping (XLM-R's ``lm_head.decoder.bias`` <- ``lm_head.bias``)
    against ``named_parameters()`` only, and refuses when a name it ties is not there,
    as a Plan-tied slot is not.
    """
    import itertools
    import re

    transformers = _transformers()
    everything = set(Inventory(model).slots)
    everything |= {n for n, _ in model.named_parameters(remove_duplicate=False)}
    everything |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    out: dict[str, str] = {}
    for prefix, sub in model.named_modules(remove_duplicate=False):
        if not isinstance(sub, transformers.PreTrainedModel):
            continue
        mapping = sub._tied_weights_keys
        if not getattr(sub.config, "tie_word_embeddings", False) or not mapping:
            continue
        pre = f"{prefix}." if prefix else ""
        names = sorted(n[len(pre) :] for n in everything if n.startswith(pre))
        for target, source in mapping.items():
            sources = [n for n in names if re.search("^" + source, n)]
            targets = [n for n in names if re.search("^" + target, n)]
            if not sources or not targets or len(targets) % len(sources):
                return None
            for t, s in zip(targets, itertools.cycle(sources)):
                out[pre + t] = out.get(pre + s, pre + s)  # as HF: a source that is a target
    return out


def _value_at(model: nn.Module, path: str):
    """The tensor the model reads at ``path`` (a tied slot gives its source's), or None."""
    mod, _, name = path.rpartition(".")
    try:
        return getattr(model.get_submodule(mod) if mod else model, name)
    except AttributeError:
        return None


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
    left as it was.

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
        _save_all_or_nothing(model, pathlib.Path(path), state, kwargs)
    finally:
        if had_key:
            setattr(config, CONFIG_KEY, old_plan)
        else:
            with contextlib.suppress(AttributeError):
                delattr(config, CONFIG_KEY)
        if old_tie is not None:
            config.tie_word_embeddings = old_tie
    return pathlib.Path(path)


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
        shard = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
        gone = {n for n in old - written if shard.fullmatch(n)}  # as HF: its old shards
        shadowing = []
        for n in sorted(old - written):
            if n in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
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


# -- loading ----------------------------------------------------------------------------


def _variant(name: str, variant: str | None) -> str:
    """HF's naming of a weights ``variant``: ``model.safetensors`` -> ``model.fp16.safetensors``."""
    if not variant:
        return name
    parts = name.split(".")
    return ".".join([*parts[:-1], variant, parts[-1]])


def _checkpoint_files(folder: pathlib.Path, variant: str | None = None) -> list[pathlib.Path]:
    index = folder / _variant("model.safetensors.index.json", variant)
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    single = folder / _variant("model.safetensors", variant)
    if single.is_file():
        return [single]
    raise FileNotFoundError(
        f"tying.hf.from_pretrained: {folder} holds no {single.name} (or its index); "
        f"tying reads safetensors only (no pickle): re-save with save_pretrained(safe_serialization=True)"
    )


def _file_keys(files: list[pathlib.Path]) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            keys.update(handle.keys())
    return keys


def _saved_names(model: nn.Module, keys) -> dict[str, str | None]:
    """``{model key: the key HF's save_pretrained writes it under}``, for ``keys``.

    transformers 5 renames some models' weights on save and back on load (its
    checkpoint conversion mapping: ViT's ``vit.layers.0.mlp.fc1`` is written as
    ``vit.encoder.layer.0.intermediate.dense``). The map is HF's own reverse
    conversion, run on meta tensors and followed by identity; a key that a
    converter merges or splits (no one-to-one name) maps to None.
    """
    state = model.state_dict()
    meta = {}
    for k in keys:
        t = state.get(k)
        if t is None:  # a tied slot: not in state_dict, same shape as its value
            mod, _, name = k.rpartition(".")
            t = getattr(model.get_submodule(mod) if mod else model, name)
        meta[k] = torch.empty(tuple(t.shape), device="meta")
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # an older transformers without conversion mappings: names kept
        return {k: k for k in meta}
    reverted = revert_weight_conversion(model, dict(meta))
    by_id = {id(t): k for k, t in reverted.items()}
    return {k: by_id.get(id(t)) for k, t in meta.items()}


def _locate(names: dict[str, str | None], present: set[str], prefix: str = ""):
    """The file key holding model key ``k`` (its saved name, else its own), or None.

    Like HF, a key is also found with the base model's prefix added or removed (a
    ``...ForCausalLM`` folder loaded as its base model, or the other way round).
    """

    def where(k: str) -> str | None:
        for cand in (names.get(k), k):
            if cand is None:
                continue
            alts = [cand]
            if prefix:
                alts.append(f"{prefix}.{cand}")
                if cand.startswith(prefix + "."):
                    alts.append(cand[len(prefix) + 1 :])
            for alt in alts:
                if alt in present:
                    return alt
        return None

    return where


def _rebase(plan: Plan, model: nn.Module) -> Plan:
    """``plan`` with its paths moved by the base model's prefix where HF moved the weights.

    HF loads a ``...ForCausalLM`` folder into its base model (``AutoModel``) by
    dropping the ``model.`` prefix, and the other way round; a recorded plan names
    the saving model's paths. Only a plan of exact paths (as recorded) whose paths
    all miss the model is moved; ties to a part the model lacks (the base model has
    no ``lm_head``) are dropped with it. Anything else is returned unchanged.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    paths = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    paths |= {n for n, _ in model.named_modules(remove_duplicate=False)}
    rules = plan.rules
    if not prefix or any(any(c in r.target + (r.like or "") for c in "*?[{") for r in rules):
        return plan

    def ok(rule_list) -> bool:
        return all(r.target in paths and (r.like is None or r.like in paths) for r in rule_list)

    if ok(rules):
        return plan
    head = prefix in dict(model.named_children())

    def move(path: str | None) -> str | None:
        if path is None:
            return None
        if head:  # a base model's folder into the head model: add the prefix
            return path if path in paths else f"{prefix}.{path}"
        return path[len(prefix) + 1 :] if path.startswith(prefix + ".") else path

    moved = [
        share(move(r.target), like=move(r.like), relation=r.relation)
        for r in rules
        # into the base model, a tie of the head (lm_head <- embedding) goes with the head
        if head or r.target.startswith(prefix + ".")
    ]
    return Plan(moved) if moved and ok(moved) else plan


def _read_checkpoint(files: list[pathlib.Path], wanted: dict[str, str]) -> dict[str, torch.Tensor]:
    """``{model key: tensor}`` for ``wanted`` (model key -> file key), read lazily from the files."""
    from safetensors import safe_open

    by_file_key: dict[str, list[str]] = {}
    for k, fk in wanted.items():
        by_file_key.setdefault(fk, []).append(k)
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for fk in handle.keys():
                for k in by_file_key.get(fk, ()):
                    out[k] = handle.get_tensor(fk)
    return out


def _tie_checks(inv: Inventory, where) -> dict[str, list[str]]:
    """For each tied slot stored in the file: the model keys its check reads (itself first)."""
    out = {}
    for path, info in inv.slots.items():
        if not info.is_tied or where(path) is None:
            continue
        src, extras = _computed_from(info)
        out[path] = [path, *(k for k in [src, *extras.values()] if k and where(k) is not None)]
    return out


def _computed_from(info) -> tuple[str | None, dict[str, str]]:
    """The keys a tied slot's value is computed from: its source, and its extras by role."""
    storage = info.tie.storage
    src = join(info.module_path, storage["source"]) if "source" in storage else info.source
    return src, {r: join(info.module_path, n) for r, n in storage.items() if r != "source"}


def _check_tied_values(inv: Inventory, checks, tensors, folder: pathlib.Path) -> None:
    bad = []
    with torch.no_grad():
        for path in checks:
            info = inv.slots[path]
            slot, incoming = info.tie, tensors[path]
            src, keys = _computed_from(info)
            extras = {r: tensors.get(k) for r, k in keys.items()}
            if src in tensors and all(v is not None for v in extras.values()):
                want = slot.relation(tensors[src], shape=slot.shape, **extras)
            else:  # the source is not in the file: compare with the model's value
                want = getattr(info.module, info.name).detach().to(incoming.dtype)
            if tuple(incoming.shape) != tuple(slot.shape) or not torch.equal(
                incoming, want.to(incoming.dtype)
            ):
                bad.append(
                    f"{path} (tied to {info.source or 'its own storage'} via {slot.relation!r})"
                )
    if bad:
        raise TieError(
            f"{folder}: the file holds value(s) for tied slot(s) that disagree with the tie: "
            f"{'; '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}. The file was edited or saved "
            f"from another model; load it untied (cls.from_pretrained) to inspect it"
        )


def _missing(expected: set[str], where, model: nn.Module) -> list[str]:
    """Keys the tied model needs that the file lacks and HF does not tie by itself."""
    return sorted(k for k in expected - _hf_tied_targets(model) if where(k) is None)


@contextlib.contextmanager
def _quiet(name: str = "transformers"):
    # HF logs a LOAD REPORT naming the tied slots as MISSING; they are not (the plan
    # re-creates them), and a real gap is reported by from_pretrained itself.
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def from_pretrained(cls: Any, path: str | os.PathLike, *, plan: Plan | None = None, **kwargs: Any):
    """Load a folder saved from a Plan-tied model and re-create every tie, exactly.

    The plan is read from ``config.json`` (written by :func:`save_pretrained`) or
    given as ``plan=`` (for a folder written by HF's own ``save_pretrained``,
    which records no plan and omits the tied slots). The model is built and
    loaded by ``cls.from_pretrained``, the plan is applied, and the file's
    tensors are loaded once more through the tied model: a tied slot's value in
    the file must equal the value the tie computes, else the load is refused.

    Args:
        cls: a ``transformers`` model class (``GPT2LMHeadModel``, an ``AutoModel...``).
        path: a local folder (safetensors weights).
        plan: the plan to re-apply; default: the one recorded in ``config=`` when
            given and holding one, else the one in the folder's ``config.json``. A
            plan given here replaces the recorded one; a ``UserWarning`` names each
            recorded tie it neither makes nor frees (those load as untied copies).
        **kwargs: passed to ``cls.from_pretrained`` (``dtype``, ``config``, config
            attributes such as ``tie_word_embeddings=False``, ...).

    Returns:
        The loaded model, tied as saved (``tying.verify`` passes).

    Raises:
        TieError: when the folder's tied values disagree with the plan, when the
            file lacks weights that no tie explains (e.g. a Plan-tied folder
            without its plan: pass ``plan=``), or the recorded plan is malformed.
        FileNotFoundError: when the folder holds no safetensors weights.

    Example:
        >>> import tempfile, torch, tying, tying.hf
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
        ...                  intermediate_size=32, vocab_size=50, max_position_embeddings=16)
        >>> bert = BertModel(cfg).eval()
        >>> _ = tying.Plan([tying.share("encoder.layer.*", like="encoder.layer.0")]).apply(bert)
        >>> folder = tempfile.mkdtemp()
        >>> bert.save_pretrained(folder)          # HF's own save: tied layers not in the file
        >>> again = tying.hf.from_pretrained(BertModel, folder,
        ...     plan=tying.Plan([tying.share("encoder.layer.*", like="encoder.layer.0")])).eval()
        >>> x = torch.arange(6)[None]
        >>> torch.equal(again(x).last_hidden_state, bert(x).last_hidden_state)
        True
    """
    _transformers()
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"tying.hf.from_pretrained: {folder} is not a local folder; download it first "
            f"(tying reads local safetensors folders)"
        )
    sub = kwargs.get("subfolder") or ""
    files = _checkpoint_files(folder / sub, kwargs.get("variant"))  # refuse before building
    # The recorded plan belongs to the weights: read from the folder's config.json unless
    # a config= given holds one (a config built by hand has none, and every tie was
    # dropped, silently). HF builds the model's config itself, so that config attributes
    # among kwargs (tie_word_embeddings=False) update it as in cls.from_pretrained; passed
    # with config=, they went to the model's __init__ (TypeError).
    recorded, where_recorded = getattr(kwargs.get("config"), CONFIG_KEY, None), "config="
    if recorded is None:
        where_recorded = folder / sub / "config.json"
        recorded = _recorded_plan(where_recorded)
    given_plan = plan
    if plan is None and recorded is not None:
        plan = plan_from_json(recorded, where=f"{where_recorded}: key {CONFIG_KEY!r}")
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"from_pretrained: plan must be a tying.Plan, got {type(plan).__name__}")
    if kwargs.pop("output_loading_info", False):
        raise TypeError(
            "tying.hf.from_pretrained: output_loading_info is not supported (tying checks "
            "the loading itself); call cls.from_pretrained for HF's report"
        )
    with _quiet():
        model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    # A causal-LM folder loaded into ...ForSequenceClassification (the usual fine-tuning
    # start): the paths of the class the folder was saved from tell a fresh head (score,
    # newly initialised as HF does) from a tied slot the file omits (refused below).
    saved_paths = _saved_class_paths(model)
    skipped: list = []
    hf_values = model.state_dict()  # as HF loaded them (references, no copies)
    loaded_by_hf = set(hf_values) - set(info.get("missing_keys", ()))
    if plan is not None:
        # the recorded ties at this model's paths, read before the given plan ties any
        recorded_rules = _recorded_rules(recorded, model) if given_plan is not None else []
        if given_plan is None:  # the recorded plan: its ties of a part this class lacks go
            plan, skipped = _without_lacking_parts(plan, model, saved_paths)
        plan = _rebase(plan, model)
        if plan.rules:
            plan.apply(model)
    # HF loaded every tensor the untied model has. Left: the storage of relation ties
    # (weight_physical, weight_scale), which HF does not know, and each tied slot's value
    # in the file, which must agree with its tie, compared in the file's own dtype (a
    # dtype= cast would round the two sides differently). File keys are found under the
    # name HF saves each model key with (transformers 5 renames some models' weights).
    inv = Inventory(model)
    expected = set(model.state_dict())
    tied = {p for p, i in inv.slots.items() if i.is_tied}
    names = _saved_names(model, expected | tied)
    where = _locate(names, _file_keys(files), getattr(model, "base_model_prefix", "") or "")
    _check_as_loaded(tied, where, loaded_by_hf, hf_values, inv, model, folder)
    storage = {k for k in expected - loaded_by_hf if where(k) is not None}
    checks = _tie_checks(inv, where)
    wanted = storage | {k for keys in checks.values() for k in keys}
    tensors = _read_checkpoint(files, {k: where(k) for k in wanted})
    model.load_state_dict({k: tensors[k] for k in storage}, strict=False)
    _check_tied_values(inv, checks, tensors, folder)
    missing = _missing(expected - loaded_by_hf, where, model)
    prefix = getattr(model, "base_model_prefix", "") or ""
    fresh = [k for k in missing if saved_paths is not None and not _known(k, saved_paths, prefix)]
    missing = [k for k in missing if k not in fresh]
    if missing:
        if saved_paths is not None:
            arch = model.config.architectures[0]
            hint = (
                f"the folder was saved from {arch}, whose weights do not all reach "
                f"{type(model).__name__} (HF loads the others at random); load it as {arch}, "
                f"or pass plan= if it was saved by HF's own save_pretrained from a tied model"
            )
        elif plan is None:
            hint = "pass plan= (the plan the model was saved with)"
        else:
            hint = "the plan does not match the model that was saved"
        raise TieError(
            f"{folder}: {len(missing)} weight(s) the model needs are not in the file and no tie "
            f"explains them: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; {hint}"
        )
    verify(model)
    if fresh or skipped:
        _note_fresh_parts(model, folder, fresh, skipped)
    if given_plan is not None and recorded_rules:
        _warn_recorded_ties_dropped(model, given_plan, recorded_rules, where_recorded)
    return model


def _model_paths(model: nn.Module) -> set[str]:
    paths = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    paths |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    return paths | {n for n, _ in model.named_modules(remove_duplicate=False)}


def _saved_class_paths(model: nn.Module) -> set[str] | None:
    """The parameter, buffer and module paths of the class the folder was saved from
    (``config.architectures``), built on the meta device; None when it is ``model``'s
    own class or cannot be built (then nothing is taken for a fresh head)."""
    archs = getattr(getattr(model, "config", None), "architectures", None) or []
    if len(archs) != 1 or archs[0] == type(model).__name__:
        return None
    saved_cls = getattr(_transformers(), archs[0], None)
    if not isinstance(saved_cls, type) or not issubclass(saved_cls, nn.Module):
        return None
    try:
        # meta: no memory, no values; fork_rng: the caller's RNG stays as plain HF's load left it
        with torch.random.fork_rng(devices=[]), torch.device("meta"), _quiet():
            skeleton = saved_cls(copy.deepcopy(model.config))
    except Exception:  # a class that needs more than its config: no fresh parts known
        return None
    paths = _model_paths(skeleton)
    # a base model the saving class holds under another name (LlamaForCausalLM's `model`,
    # LlamaForQuestionAnswering's `transformer`): HF finds none of its weights
    saved_prefix = getattr(skeleton, "base_model_prefix", "") or ""
    prefix = getattr(model, "base_model_prefix", "") or ""
    if saved_prefix and prefix and saved_prefix != prefix:
        paths |= {
            f"{prefix}.{p[len(saved_prefix) + 1 :]}"
            for p in paths
            if p.startswith(saved_prefix + ".")
        }
    return paths


def _known(path: str, saved_paths: set[str], prefix: str) -> bool:
    """Whether the saving class had ``path`` (with the base model's prefix added or removed,
    as HF moves weights between a head model and its base model)."""
    alts = {path}
    if prefix:
        alts.add(f"{prefix}.{path}")
        if path.startswith(prefix + "."):
            alts.add(path[len(prefix) + 1 :])
    return bool(alts & saved_paths)


def _without_lacking_parts(plan: Plan, model: nn.Module, saved_paths: set[str] | None):
    """``plan`` (before :func:`_rebase`) less its ties to a part the loading class lacks
    and the saving class had (``lm_head`` of a causal-LM folder loaded into
    ``...ForSequenceClassification``), and those ties. A path neither class has stays
    (the plan then fails, naming it)."""
    if saved_paths is None:
        return plan, []
    paths = _model_paths(model)
    prefix = getattr(model, "base_model_prefix", "") or ""

    def here(p: str) -> bool:  # at p, or where _rebase moves it by the base model's prefix
        alts = {p, f"{prefix}.{p}"} if prefix else {p}
        if prefix and p.startswith(prefix + "."):
            alts.add(p[len(prefix) + 1 :])
        return bool(alts & paths)

    def lacking(r) -> bool:
        return any(
            p is not None and not here(p) and _known(p, saved_paths, prefix)
            for p in (r.target, r.like)
        )

    skipped = [r for r in plan.rules if lacking(r)]
    if not skipped:
        return plan, []
    return Plan([r for r in plan.rules if not lacking(r)]), skipped


def _note_fresh_parts(model: nn.Module, folder: pathlib.Path, fresh: list, skipped: list) -> None:
    """Log, as HF does, the weights newly initialised and the recorded ties skipped
    because the loading class lacks a part the saving class had."""
    arch = (getattr(model.config, "architectures", None) or ["?"])[0]
    parts = []
    if fresh:
        parts.append(
            f"newly initialized (not in the file; train them on a down-stream task): "
            f"{', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}"
        )
    if skipped:
        ties = "; ".join(f"{r.target} <- {r.like}" for r in skipped[:4])
        parts.append(
            f"recorded tie(s) skipped, {type(model).__name__} has no such part: "
            f"{ties}{'; ...' if len(skipped) > 4 else ''}"
        )
    logging.getLogger("tying.hf").warning(
        "tying.hf.from_pretrained: %s was saved from %s, loaded into %s: %s",
        folder,
        arch,
        type(model).__name__,
        "; ".join(parts),
    )


def _recorded_rules(recorded: Any, model: nn.Module) -> list:
    """The ties recorded in the folder, at ``model``'s paths (as :func:`_rebase` moves them),
    less those of a part ``model`` lacks (a head class's ``lm_head``); [] when none is
    recorded or the record is malformed (a ``plan=`` given is then what the caller chose)."""
    if recorded is None:
        return []
    try:
        rules = _rebase(plan_from_json(recorded), model).rules
    except TieError:
        return []
    paths = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    paths |= {n for n, _ in model.named_modules(remove_duplicate=False)}
    return [r for r in rules if r.target in paths]


def _warn_recorded_ties_dropped(
    model: nn.Module, given: Plan, wanted: list, where_recorded
) -> None:
    """Warn when a ``plan=`` given to :func:`from_pretrained` lacks ties the folder recorded.

    The folder's tied slots hold equal values, so such a load runs as saved, but the
    slots are independent copies from then on: a training step moves them apart
    (a GPT-2 stack tied ALBERT-style came back with 2.5x the physical parameters).
    A tie the model holds anyway (one Parameter under both paths, as HF's own
    ``tie_word_embeddings`` makes) is not lost; one the given plan frees is meant.
    """

    def key(r) -> tuple:
        return r.target, r.like, json.dumps(r.relation.spec(), sort_keys=True)

    have = {key(r) for r in Plan.declared(model).rules}
    freed = [Pattern(r.target) for r in given.rules if r.kind == "free"]
    lost = []
    for r in wanted:
        if key(r) in have:
            continue
        if r.like is not None and isinstance(r.relation, Same):
            value = _value_at(model, r.target)
            if value is not None and value is _value_at(model, r.like):
                continue  # held anyway (a hand tie such as HF's own)
        parts = r.target.split(".")
        ancestors = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if any(p.match(a) is not None for p in freed for a in ancestors):
            continue  # freed on purpose by the given plan
        lost.append(r)
    if not lost:
        return
    names = "; ".join(
        f"{r.target} <- {r.like}" + ("" if isinstance(r.relation, Same) else f" ({r.relation!r})")
        for r in lost[:4]
    )
    warnings.warn(
        f"tying.hf.from_pretrained: {where_recorded} records {len(lost)} tie(s) that the given "
        f"plan= does not make: {names}{'; ...' if len(lost) > 4 else ''}. They were loaded as "
        f"independent copies (equal values now, apart after a training step). To keep them, "
        f"pass no plan= (the recorded one is applied) or add them to yours: "
        f"tying.Plan([*tying.hf.plan_from_json(recorded).rules, *plan.rules]) with recorded = "
        f"json.load(open(config.json))[{CONFIG_KEY!r}]; to load them untied on purpose, "
        f"free them in your plan (tying.free('<target>')), or ignore this warning",
        UserWarning,
        stacklevel=3,
    )


def _recorded_plan(config_file: pathlib.Path) -> Any:
    """The plan recorded under ``CONFIG_KEY`` in ``config_file``, or None (no file, no key;
    HF reports an unreadable config itself)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(CONFIG_KEY) if isinstance(data, dict) else None


def _check_as_loaded(tied, where, loaded_by_hf, hf_values, inv: Inventory, model, folder) -> None:
    """Tied slots HF loaded but whose file key tying cannot name: compared as HF loaded them.

    HF converts some weights on load (the experts of Mixtral / Qwen2-MoE are saved
    one tensor per expert and fused on load): no one file key holds the value. The
    untied model HF built held it; it must equal what the tie gives now, else the
    load is refused (dropping it silently would tie copies that differ).
    """
    bad = []
    with torch.no_grad():
        for path in sorted(tied & (loaded_by_hf - _hf_tied_targets(model))):
            if where(path) is not None or path not in hf_values:
                continue
            info = inv.slots[path]
            now = getattr(info.module, info.name)
            if tuple(now.shape) != tuple(hf_values[path].shape) or not torch.equal(
                now.detach(), hf_values[path]
            ):
                bad.append(
                    f"{path} (tied to {info.source or 'its own storage'} via {info.tie.relation!r})"
                )
    if bad:
        raise TieError(
            f"{folder}: the file holds value(s) for tied slot(s) that disagree with the tie: "
            f"{'; '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}. The file was edited or saved "
            f"from another model; load it untied (cls.from_pretrained) to inspect it"
        )


def _hf_tied_targets(model: nn.Module) -> set[str]:
    """Keys HF itself ties on load (e.g. ``lm_head.weight`` with ``tie_word_embeddings``)."""
    keys = getattr(model, "all_tied_weights_keys", None) or {}
    return set(keys)


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
            nothing is changed then.
        TypeError: when ``new_num_tokens`` is not a positive int or None.

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
    if new_num_tokens is not None and (
        isinstance(new_num_tokens, bool)
        or not isinstance(new_num_tokens, int)
        or new_num_tokens <= 0
    ):
        raise TypeError(
            f"resize_token_embeddings: new_num_tokens must be a positive int or None, got {new_num_tokens!r}"
        )
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
    try:
        if involved:
            Plan([free(r.target) for r in involved]).apply(model)
        out = model.resize_token_embeddings(new_num_tokens, **kwargs)
        if involved:
            try:
                Plan(involved).apply(model)
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


def _config_ties(model: nn.Module) -> dict[str, str]:
    """``{target: source}`` of the ties ``model``'s config declares (HF's expansion, matched
    over every slot when a Plan-tied slot is among them), or ``{}``."""
    try:
        return model.get_expanded_tied_weights_keys(all_submodels=True) or {}
    except ValueError:  # HF expands patterns over parameters; a Plan-tied slot is none
        return _expand_over_slots(model) or {}
    except (AttributeError, TypeError):
        return {}


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
