"""The ``tying`` plan in a Hugging Face config, and HF's own declared ties.

:func:`plan_to_json` / :func:`plan_from_json` write and read the ties recorded in
``config.json`` (key ``"tying"``); :func:`hf_ties_plan` turns the ties HF declares
(``_tied_weights_keys`` under ``tie_word_embeddings``) into a :class:`~tying.Plan`.
The helpers here that read HF's config ties are shared by saving
(:mod:`tying.interop.hf`), loading (:mod:`tying.interop.hf_loading`) and resizing.
All names are re-exported from :mod:`tying.interop.hf` (and :mod:`tying.hf`).

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.plan import Plan
from tying.core.relations import relation_from_spec
from tying.core.rules import share

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


# -- HF's own declared ties -------------------------------------------------------------


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


def _config_ties(model: nn.Module) -> dict[str, str]:
    """``{target: source}`` of the ties ``model``'s config declares (HF's expansion, matched
    over every slot when a Plan-tied slot is among them), or ``{}``."""
    try:
        return model.get_expanded_tied_weights_keys(all_submodels=True) or {}
    except ValueError:  # HF expands patterns over parameters; a Plan-tied slot is none
        return _expand_over_slots(model) or {}
    except (AttributeError, TypeError):
        return {}
