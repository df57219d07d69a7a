"""Loading a Plan-tied Hugging Face folder: :func:`from_pretrained` and its machinery.

HF's ``from_pretrained`` builds and loads the untied model; this module re-applies
the plan (recorded in ``config.json`` or given as ``plan=``), finds each model key
under the name HF saved it with, loads the storage HF does not know, and refuses a
file whose tied values disagree with the tie. A class that lacks a part the saving
class had (a fresh head) is told apart from a tied slot the file omits.
All names are re-exported from :mod:`tying.interop.hf` (and :mod:`tying.hf`).

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
from tying.core.relations import Same
from tying.core.rules import share
from tying.core.verify import verify
from tying.interop.hf_device_map import refuse_offloaded_plan, refuse_offloaded_ties
from tying.interop.hf_plan import CONFIG_KEY, _transformers, _value_at, plan_from_json


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
            attributes such as ``tie_word_embeddings=False``, ``device_map``, ...).

    Returns:
        The loaded model, tied as saved (``tying.verify`` passes).

    Raises:
        TieError: when the folder's tied values disagree with the plan, when the
            file lacks weights that no tie explains (e.g. a Plan-tied folder
            without its plan: pass ``plan=``), or the recorded plan is malformed;
            when ``device_map`` offloads (``"disk"``) a module holding one end of a
            tie (for HF's own tie: one end only), naming the entry to change.
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
            try:
                plan.apply(model)
            except TieError as unfit:
                # device_map=: an offloaded end is a meta tensor, refused by the plan in
                # words that name no device_map entry (review stop 58)
                try:
                    refuse_offloaded_plan(model, plan)
                except TieError as named:
                    raise named from None
                if given_plan is None:
                    _refuse_recorded_plan_unfit(model, where_recorded, kwargs, unfit)
                raise
    # HF loaded every tensor the untied model has. Left: the storage of relation ties
    # (weight_physical, weight_scale), which HF does not know, and each tied slot's value
    # in the file, which must agree with its tie, compared in the file's own dtype (a
    # dtype= cast would round the two sides differently). File keys are found under the
    # name HF saves each model key with (transformers 5 renames some models' weights).
    inv = Inventory(model)
    refuse_offloaded_ties(model, inv)  # device_map=: HF offloaded before the ties were made
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
        untied = _untied_by_caller(model, folder / sub / "config.json", missing)
        if untied:
            raise TieError(
                f"{folder}: {', '.join(untied[:4])} is not in the file: the folder's config.json "
                f"has tie_word_embeddings=true, so it was saved as the embedding itself and left "
                f"out, but this load sets tie_word_embeddings=False, which gives it no value "
                f"(plain HF initialises it at random). Load without tie_word_embeddings=False "
                f"to get it tied as saved; to train it apart from the embedding, load it tied, "
                f"then untie it keeping its values: tying.Plan([tying.free({untied[0]!r})])"
                f".apply(model); model.config.tie_word_embeddings = False"
            )
        if saved_paths is not None:
            arch = model.config.architectures[0]
            hint = (
                f"the folder was saved from {arch}, whose weights do not all reach "
                f"{type(model).__name__} (HF loads the others at random); load it as {arch}, "
                f"or pass plan= if it was saved by HF's own save_pretrained from a tied model"
            )
        elif plan is None:
            hint = "pass plan= (the plan the model was saved with)"
            head = _left_out_by_flag(model, missing)
            if head:
                # the weight, not a tied bias (BERT's decoder.bias was named "the embedding")
                name = next((k for k in head if k.endswith("weight")), head[0])
                hint = (
                    f"the file was likely written from a model whose {name} is the "
                    f"embedding (HF leaves a tied head out), but the config says "
                    f"tie_word_embeddings=False, which gives it no value (plain HF loads it "
                    f"at random); if so, load with tie_word_embeddings=True to tie it, else "
                    f"{hint}"
                )
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


def _refuse_recorded_plan_unfit(model: nn.Module, where_recorded, kwargs: dict, err) -> None:
    """Name the cause when the recorded plan does not fit the model HF built (stop 61).

    Config attributes among ``kwargs`` (``n_layer=2``, ``num_hidden_layers=...``) build a
    model of another layout than the one saved, whose recorded ties name paths it lacks:
    the refusal was core's ``pattern 'transformer.h.2.ln_1.weight' matches no parameter``,
    naming neither the recorded plan nor the override.
    """
    overrides = sorted(
        k
        for k in kwargs
        if k != "config" and _may_change_layout(k, kwargs[k], model, where_recorded)
    )
    cause = (
        f"the config override(s) {', '.join(f'{k}={kwargs[k]!r}' for k in overrides)} "
        f"built a model of another layout than the one saved"
        if overrides
        else "the model built here is not the one the plan was saved from"
    )
    drop = f"load without {', '.join(overrides)}, or " if overrides else ""
    raise TieError(
        f"tying.hf.from_pretrained: the plan recorded in {where_recorded} (key {CONFIG_KEY!r}) "
        f"does not fit {type(model).__name__}: {cause} ({err}). {drop.capitalize()}call "
        f"tying.hf.from_pretrained(..., plan=tying.Plan([...])) with the ties this model "
        f"should have (it replaces the recorded plan; tied values the file holds are still "
        f"checked)"
    ) from None


def _may_change_layout(key: str, value: Any, model: nn.Module, where_recorded) -> bool:
    """Whether the ``from_pretrained`` keyword ``key=value`` can be what changed the layout.

    Every keyword HF also keeps on the config counted (``dtype=torch.bfloat16``,
    ``use_cache=False``, ``output_attentions=False``): the refusal told the caller to load
    without their dtype. Sizes are ints (``n_layer``, ``vocab_size``) or lists
    (``layer_types``); one equal to the saved value changed nothing.
    """
    if not hasattr(model.config, key) or isinstance(value, bool):
        return False
    if not isinstance(value, (int, list, tuple, dict)):
        return False
    if isinstance(where_recorded, pathlib.Path):
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(where_recorded.read_text())
            if key in saved and saved[key] == (list(value) if isinstance(value, tuple) else value):
                return False
    return True


def _untied_by_caller(model: nn.Module, config_file: pathlib.Path, missing: list) -> list[str]:
    """The ``missing`` keys HF leaves out of a folder because its ``config.json`` ties them
    (``tie_word_embeddings: true``) while the load turned the flag off
    (``tie_word_embeddings=False`` or a ``config=`` saying so); [] otherwise.

    Plain HF then loads the head at random with a LOAD REPORT; tying refused it too, but
    told the caller to pass ``plan=``, which does not bring the head back (stop 38 review).
    """
    config = getattr(model, "config", None)
    if getattr(config, "tie_word_embeddings", None) is not False:
        return []
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict) or saved.get("tie_word_embeddings") is not True:
        return []
    return _left_out_by_flag(model, missing)


def _left_out_by_flag(model: nn.Module, missing: list) -> list[str]:
    """The ``missing`` keys that ``tie_word_embeddings=True`` would make from the embedding
    when the loaded config says False; [] otherwise.

    A folder whose config.json was edited (or written by other code) to say false while its
    file holds the embedding alone: plain HF loads the head at random with a LOAD REPORT,
    and tying refused it telling the caller to pass ``plan=`` only (stop 56), which names
    neither the flag nor that the head is the one tensor HF leaves out.
    """
    config = getattr(model, "config", None)
    if getattr(config, "tie_word_embeddings", None) is not False:
        return []
    from tying.interop.hf_plan import _config_ties

    try:
        config.tie_word_embeddings = True
        tied = _config_ties(model)
    finally:
        config.tie_word_embeddings = False
    return [k for k in missing if k in tied]


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
