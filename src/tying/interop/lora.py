"""peft adapters (LoRA) on tied weights: one adapter per tied group, merged once, or refused.

A LoRA adapter adds ``ΔW = B·A`` to one module's weight. On a tied weight this
goes wrong with plain peft (measured, peft 0.21): the adapter on ``lm_head``
changes only that use (the embedding reads the weight without ``ΔW`` while
training), and ``merge_and_unload`` writes ``ΔW`` into the one shared tensor,
so every use gets it (merged logits 2.8 away from the adapter model's). With
an ALBERT-style stack each layer gets its own adapter, and merging sums all
of them into the shared weight.

The policy here:

- **A module tied whole** to another of its class (every parameter, ``Same``)
  gets **one adapter shared by every use**: :func:`get_peft_model` lets peft wrap
  the source only and puts the same wrapper at every tied path, so ``ΔW``
  reaches every use; :func:`merge_and_unload` merges it once and puts the tied
  modules back.
- **Any other adapter on a tied weight** (a partial tie such as ``lm_head`` <-
  embedding, a relation, an adapter on one end only) is refused with a
  ``TieError`` naming the tie, before peft changes anything. So is a
  ``modules_to_save`` entry in a tie, except on HF's own embedding tie with peft's
  ``ensure_weight_tying=True``, which keeps one trained copy for both, and
  ``trainable_token_indices`` (or a ``TrainableTokensConfig`` on the input embedding) on
  that tie, where the head reads the embedding's token delta
  (:mod:`tying.interop.lora_saved`). LoRA on that tie stays refused: peft's
  ``merge_and_unload`` writes its delta into the one shared weight twice.
- peft's own ``pm.merge_and_unload()`` / ``pm.unload()`` on a model made here run
  :func:`merge_and_unload` / :func:`unload`.
- ``tying.verify`` sees through adapter wrappers (``base_layer``): a shared
  adapter passes; plain peft's adapter on a tied weight is reported, naming the
  tie, so it is never silently wrong.

Needs the ``interop`` extra (peft).
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any

from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.outside import is_adapter
from tying.interop.groups import (
    hand_group,
    hand_group_fix,
    hand_tie_fix,
    hand_ties_touching,
    refuse_other_hooks,
    refuse_other_settings,
    set_module,
    tied_readers,
    whole_module_ties,
)
from tying.interop.lora_saved import (
    HEAD_BIAS_DROPPED,
    _input_embedding_path,
    _peft_tied_paths,
    base_of,
    embedding_tie_pairs,
    ensured_entry,
    is_prompt_learning,
    redeclare_through_copies,
    refuse_config_tie_apart,
    refuse_copies_trained_apart,
    refuse_saved_copies,
    restore_declarations,
    tokens_tuner_ties,
)
from tying.interop.lora_targets import (
    SHARED_GROUP,
    WeightedAdapter,
    quiet_own_exclusions,
    refuse_partial_groups,
    refuse_tied_parameters,
    warn_unmatched_exclusions,
)
from tying.interop.lora_token_hint import tokens_hint
from tying.interop.lora_unload import SHARED_ATTR, _Unloading, merge_and_unload, unload

__all__ = ["from_pretrained", "get_peft_model", "merge_and_unload", "unload"]


def _peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "tying.interop.lora needs peft; install the extra: pip install 'tying[interop]'"
        ) from err
    return peft


def _default_targets(config, model: nn.Module):
    """``config`` with ``target_modules`` filled in as peft fills it when it is ``None``
    (from the tuner's table for the model's ``config.model_type``: ``c_attn`` for GPT-2).

    Without it every ``LoraConfig()`` that leaves the targets to peft crashed here with
    ``TypeError: argument of type 'NoneType' is not iterable`` (stop 35 review); a
    config that has no ``target_modules`` (prompt tuning) or no table entry is left as
    it is (peft then says what is missing).
    """
    if not hasattr(config, "target_modules") or config.target_modules is not None:
        return config
    if str(getattr(config, "peft_type", "")).endswith("TRAINABLE_TOKENS"):
        # peft's TrainableTokensModel._prepare_adapter_config: the input embedding
        from peft.utils.other import _get_input_embeddings_name

        config = copy.deepcopy(config)
        config.target_modules = _get_input_embeddings_name(model, "embed_tokens")
        return config
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTuner

    table = getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(config.peft_type), "target_module_mapping", None)
    found = (table or {}).get(BaseTuner.get_model_config(model).get("model_type"))
    if found is None:
        return config
    config = copy.deepcopy(config)
    config.target_modules = found if isinstance(found, str) else set(found)
    return config


def _targets(config, model: nn.Module, inv: Inventory) -> set[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    config = _default_targets(config, model)
    if getattr(config, "target_modules", None) is None:
        return set()  # nothing named (prompt tuning): the verify after wrapping checks
    try:  # "all-linear" is expanded by peft at injection time; expand it here the same way
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

        config = _maybe_include_all_linear_layers(copy.deepcopy(config), model)
    except (ImportError, AttributeError, ValueError):
        pass  # the check after wrapping still catches what this misses
    return {p for p in inv.modules if p and check_target_module_exists(config, p)}


def _refuse_other_ranks(config, shared: dict[str, str]) -> None:
    """Refuse a ``rank_pattern`` or ``alpha_pattern`` that names a tied module with another
    rank or alpha than its source's: it shares the source's one adapter, so the setting
    would be ignored (stop 30 review: it was, silently). A tied module the patterns do
    not name follows its source."""
    from peft.utils.other import get_pattern_key

    for attr, default in (("rank_pattern", "r"), ("alpha_pattern", "lora_alpha")):
        pattern = getattr(config, attr, None) or {}
        if not pattern:
            continue
        base = getattr(config, default, None)
        for path, src in shared.items():
            key = get_pattern_key(list(pattern), path)
            if key not in pattern:  # nothing asked of the tied module: it follows its source
                continue
            mine = pattern[key]
            theirs = pattern.get(get_pattern_key(list(pattern), src), base)
            if mine != theirs:
                raise TieError(
                    f"get_peft_model: {attr} gives {path!r} {mine} but {src!r}, whose adapter "
                    f"it shares (it is tied to it whole), {theirs}: one adapter has one "
                    f"{default}; give both the same, or untie {path!r} first"
                )


def get_peft_model(model: nn.Module, peft_config, **kwargs: Any):
    """``peft.get_peft_model`` that keeps ties right: one adapter per whole-module tie group.

    Args:
        model: a (possibly Plan-tied) model.
        peft_config: a peft config (``LoraConfig(target_modules=[...])``).
        **kwargs: passed to ``peft.get_peft_model``.

    Returns:
        The ``PeftModel``. Every module tied whole to a targeted source holds the
        source's very adapter wrapper, so the delta reaches every use. Its
        ``add_adapter`` (and ``load_adapter``) is all or nothing: a new adapter that
        would break a tie is refused (``TieError``) with the model left as it was; one
        on modules tied whole that no adapter wraps yet gives them one shared wrapper.

    Raises:
        TieError: when a targeted module takes part in any other tie (a partial
            or relation tie, or its source/tied partner is not targeted too),
            naming the tie; also a module tied whole whose hooks or settings
            (``padding_mode``, ``dilation``, ``padding_idx``) differ from its source's
            (one wrapper will run the source's module at both); raised before peft
            changes the model.
            For a ``TrainableTokensConfig`` on a tied head, or on a Plan-tied embedding, the
            message also says what peft would do and names the accepted way (on HF's own
            embedding tie, the input embedding alone is accepted: peft gives every tied
            module its token delta). Also a config that peft ties across the input
            embedding and a module ``config.tie_word_embeddings=True`` calls tied but that
            holds another tensor (a head trained apart; token adapters,
            ``ensure_weight_tying``), naming the fix; and a token adapter peft would tie
            to a ``Linear`` head with a bias (a masked-LM head: peft's token layer drops
            the bias), naming the untie that works.

    Example:
        >>> import torch, tying, peft
        >>> from tying.interop.lora import get_peft_model
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> pm = get_peft_model(m, peft.LoraConfig(r=2, target_modules=["0", "2"]))
        >>> pm.base_model.model[2] is pm.base_model.model[0], tying.verify(pm)
        (True, 6)
    """
    try:
        return _get_peft_model(model, peft_config, **kwargs)
    except TieError as err:
        tokens = str(getattr(peft_config, "peft_type", "")).endswith("TRAINABLE_TOKENS")
        if tokens and HEAD_BIAS_DROPPED not in str(err):  # (its advice would not work there)
            # each variant named only where these checks accept it (Marian: none; BART:
            # 'shared', not 'embed_tokens'), or following the hint was refused again (stop 60)
            raise TieError(f"{err} {tokens_hint(model, peft_config, _checked)}") from None
        raise


def _get_peft_model(model: nn.Module, peft_config, **kwargs: Any):
    peft = _peft()
    inv, shared, seated = _checked(model, peft_config)
    config = _excluding(peft_config, shared, model)
    return _wrap(
        model,
        lambda: peft.get_peft_model(model, config, **kwargs),
        {**shared, **seated},
        "get_peft_model",
    )


def _checked(model: nn.Module, peft_config):
    """Every check :func:`get_peft_model` makes before peft runs (nothing changed):
    ``(inventory, {tied path: source path} sharing one adapter, {later seat: first})``."""
    inv = Inventory(model)
    targets = _targets(peft_config, model, inv)
    refuse_config_tie_apart(peft_config, model, targets, "get_peft_model")
    whole = whole_module_ties(inv)
    refuse_partial_groups(peft_config, whole, targets)
    refuse_tied_parameters(peft_config, inv, whole)
    shared = {}
    for info in inv.slots.values():
        if not info.is_tied:
            continue
        src_mod = info.source.rpartition(".")[0] if info.source else info.module_path
        ends = {info.module_path, src_mod}
        hit = {p for p in targets if any(e == p or e.startswith(p + ".") for e in ends)}
        if not hit:
            continue
        group = whole.get(info.module_path)
        if group is not None and info.module_path in targets and group in targets:
            shared[info.module_path] = group
            continue
        # every targeted module reading the same tensor, at once: the pair alone looped
        # when a module tied whole to the source was targeted too (T5's embeddings tied
        # whole to `shared`, the head tied to its weight: leaving `shared` out was refused
        # as a partial group, whose advice was to target `shared` again)
        readers = ends | {i.module_path for i in tied_readers(inv, info.path)}
        met, hit = (
            sorted(hit)[0],
            {p for p in targets if any(e == p or e.startswith(p + ".") for e in readers)},
        )
        raise TieError(
            f"get_peft_model: target module {met!r} takes part in the tie {info.path} <- "
            f"{info.source or 'its own storage'} ({info.tie.relation!r}); an adapter there would "
            f"change one use of the tied tensor and merging would write its delta into every use. "
            f"Only modules tied whole (every parameter, Same) can share one adapter, with their "
            f"source targeted too; leave {' and '.join(map(repr, sorted(hit)))} out of "
            f"target_modules, or untie it first"
        )
    for path, src in shared.items():  # one wrapper will run the source's module at both
        refuse_other_hooks("get_peft_model", path, src, inv.modules[path], inv.modules[src])
        refuse_other_settings("get_peft_model", path, src, inv.modules[path], inv.modules[src])
    _refuse_other_ranks(peft_config, shared)
    refuse_saved_copies(peft_config, model, inv)
    seated = _seats(model, inv, targets, peft_config)  # peft lists no later seats: no exclude
    return inv, shared, seated


def _excluding(peft_config, shared: dict[str, str], model: nn.Module):
    """A copy of ``peft_config`` whose ``exclude_modules`` also excludes the tied paths of
    ``shared`` (``{tied path: source path}``): peft wraps the source alone, and the tied
    paths then get the source's wrapper.

    Exactly the tied paths, as one regex (peft fullmatches a str): as a list they were
    matched as suffixes, so excluding the tied "2" also excluded an untied, targeted "3.2"
    (stop 30 review); the user's own list keeps peft's list rule (the name, or the end of a
    name after a dot). The tied paths sit in a named group, which the saved
    adapter_config.json keeps: from_pretrained checks each is shared again.
    """
    config = copy.deepcopy(peft_config)
    if shared:
        old = getattr(config, "exclude_modules", None)
        if not (isinstance(old, str) and f"(?P<{SHARED_GROUP}>" in old):
            # the tied paths added below always match, so peft would not say that the
            # user's own exclusion matched nothing (review 58)
            warn_unmatched_exclusions(old, model)
        paths = set(shared)
        if isinstance(old, str) and f"(?P<{SHARED_GROUP}>" in old:
            # a config saved by this function (load_adapter passes it to add_adapter): its
            # group is kept as one (a regex cannot name two groups alike)
            paths |= set(_shared_when_saved(config, model))
            old = old.replace(f"(?P<{SHARED_GROUP}>", "(?:")
        exact = f"(?P<{SHARED_GROUP}>{'|'.join(re.escape(p) for p in sorted(paths))})"
        if isinstance(old, str):
            config.exclude_modules = "|".join([f"(?:{old})", exact])
        else:
            theirs = [rf"(?:.*\.)?{re.escape(x)}" for x in sorted(old or [])]
            config.exclude_modules = "|".join([*theirs, exact])
    return config


def from_pretrained(model: nn.Module, adapter_path: str, **kwargs: Any):
    """``peft.PeftModel.from_pretrained`` for a tied model: shared adapters are shared again.

    An adapter saved from :func:`get_peft_model` holds one set of LoRA weights
    per whole-module tie group (peft saves the shared wrapper once, and its
    config excludes the tied paths). Plain peft loading wraps the source only,
    so the tied uses would miss the delta (``tying.verify`` reports it); this
    puts the source's wrapper at every tied path again. The same holds for one
    module seated at several paths (``Sequential(lin, act, lin)``): its later
    seats get the first seat's wrapper. A saved config that excludes nothing (a
    config class without ``exclude_modules``, as ``VeraConfig``; an adapter plain
    peft made on the model tied by hand) is read the same way when the file holds
    the source's weights only. Prompt-learning adapters (prompt tuning, prefix
    tuning) load as with peft.

    Args:
        model: the tied base model (the plan applied, as when the adapter was made).
        adapter_path: a folder written by ``PeftModel.save_pretrained``.
        **kwargs: passed to ``peft.PeftModel.from_pretrained``.

    Returns:
        The ``PeftModel``; ``tying.verify`` passes.

    Raises:
        TieError: when the loaded adapter sits on a tie it cannot serve (named); when
            ``model`` lacks the sharing the adapter was made on (a path that shared its
            source's adapter is not tied whole here, or the file holds no weights for a
            module peft wraps here, e.g. one seated twice when it was made); the model
            is put back as it was.

    Example:
        >>> import tempfile, torch, tying, peft
        >>> from tying.interop.lora import get_peft_model, from_pretrained
        >>> def tied():
        ...     m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        ...     _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        ...     return m
        >>> folder = tempfile.mkdtemp()
        >>> get_peft_model(tied(), peft.LoraConfig(r=2, target_modules=["0", "2"])).save_pretrained(folder)
        >>> pm = from_pretrained(tied(), folder)
        >>> pm.base_model.model[2] is pm.base_model.model[0], tying.verify(pm)
        (True, 6)
    """
    peft = _peft()
    inv = Inventory(model)
    # {later path: first path}: modules tied whole, and one module seated at several paths
    # (peft wraps the first seat only; the later ones ran without the delta)
    pairs = dict(whole_module_ties(inv))
    for paths in _seat_groups(inv):
        pairs.update({p: paths[0] for p in paths[1:]})

    def load():
        try:  # the adapter's config, to check before peft changes the model
            config = kwargs.get("config") or peft.PeftConfig.from_pretrained(
                adapter_path, subfolder=kwargs.get("subfolder")
            )
        except Exception:  # noqa: BLE001 - peft's own load below says what is wrong
            config = None
        load_kwargs = kwargs
        if config is not None:
            targets = _targets(config, model, inv)
            refuse_config_tie_apart(config, model, targets, "from_pretrained")
            saved = getattr(config, "exclude_modules", None)
            if isinstance(saved, str) and f"(?P<{SHARED_GROUP}>" in saved:
                warn_unmatched_exclusions(saved, model)  # the tied paths always match
            refuse_copies_trained_apart(config, model, adapter_path)
            rebuilt = _exclusions_not_saved(config, inv, targets, adapter_path, kwargs)
            if rebuilt is not None:
                load_kwargs = {**kwargs, "config": rebuilt}
        with warnings.catch_warnings():
            # peft only warns when the file lacks a wrapped module's weights (that adapter
            # keeps its initial values): one module seated twice when the adapter was made,
            # two modules here
            warnings.filterwarnings("error", message="Found missing adapter keys")
            try:
                pm = peft.PeftModel.from_pretrained(model, adapter_path, **load_kwargs)
            except UserWarning as warning:
                raise TieError(
                    f"from_pretrained: {warning} The file holds no weights for these adapters, "
                    f"so they would keep their initial values (outputs off). Was one module "
                    f"seated at several paths, or were modules tied whole, in the model the "
                    f"adapter was made on? Give this model the same sharing (apply the plan, or "
                    f"load it with tying.hf.from_pretrained) and load again; the model was left "
                    f"as it was"
                ) from None
        base = base_of(pm)
        for path, src in pairs.items():
            if is_adapter(base.get_submodule(src)) and not is_adapter(base.get_submodule(path)):
                refuse_other_hooks(
                    "from_pretrained", path, src, inv.modules[path], inv.modules[src]
                )
                refuse_other_settings(
                    "from_pretrained", path, src, inv.modules[path], inv.modules[src]
                )
                shared[path] = src
        return pm

    def check(pm) -> None:
        config = pm.peft_config.get(kwargs.get("adapter_name", "default"))
        base = base_of(pm)
        for path in _shared_when_saved(config, base):
            if path not in shared and not is_adapter(base.get_submodule(path)):
                raise TieError(
                    f"from_pretrained: the adapter in {str(adapter_path)!r} was made on a model in "
                    f"which {path!r} is tied whole to another module and shares its adapter (so "
                    f"the file holds no adapter for it), but in this model {path!r} is not tied "
                    f"whole to a module the adapter wraps: it would run without the adapter's "
                    f"delta (outputs off, no error). Give the base model the ties it was trained "
                    f"with (tying.hf.from_pretrained, or apply the plan) and load the adapter "
                    f"again; the model was left as it was"
                )

    shared: dict[str, str] = {}
    return _wrap(model, load, shared, "from_pretrained", check)


def _exclusions_not_saved(config, inv: Inventory, targets: set[str], adapter_path, kwargs):
    """A copy of ``config`` that excludes the modules tied whole to a targeted source, when the
    saved config excludes nothing and the file holds no adapter weights under those paths;
    None otherwise.

    :func:`get_peft_model` shares a source's adapter by excluding its tied paths. A config
    class without an ``exclude_modules`` field (``VeraConfig``, ``RandLoraConfig``,
    ``ShiraConfig``, ...) drops that from ``adapter_config.json``, so peft's load wrapped the
    tied paths apart and the round trip was refused (stop 52: VeRA on GPT-2's shared stack,
    ``save_pretrained`` then ``from_pretrained``); so was an adapter plain peft made on the
    same model tied by hand (one module at every layer: one set of weights in the file). Both
    files hold the source's weights only, which is what a shared adapter is. A file with
    weights under a tied path (an adapter made on an untied model) keeps its refusal: sharing
    would drop those weights silently.
    """
    if getattr(config, "exclude_modules", None):
        return None  # saved with the config (tying's group, or the user's own): peft reads it
    whole = whole_module_ties(inv)
    tied = sorted(p for p, group in whole.items() if p in targets and group in targets)
    keys = _adapter_file_keys(adapter_path, kwargs.get("subfolder")) if tied else None
    if keys is None or any(f".{p}." in f".{k}" for p in tied for k in keys):
        return None
    config = copy.deepcopy(config)
    config.exclude_modules = f"(?P<{SHARED_GROUP}>{'|'.join(re.escape(p) for p in tied)})"
    return config


def _adapter_file_keys(adapter_path, subfolder: str | None) -> list[str] | None:
    """The tensor names in a local adapter folder's ``adapter_model.safetensors``; None when
    there is no such file (a hub id, a ``.bin``): nothing is assumed then."""
    import os

    from safetensors import safe_open

    folder = os.path.join(str(adapter_path), subfolder or "")
    file = os.path.join(folder, "adapter_model.safetensors")
    if not os.path.isfile(file):
        return None
    with safe_open(file, framework="pt") as f:
        return list(f.keys())


def _shared_when_saved(config, model: nn.Module) -> list[str]:
    """The module paths that shared their source's adapter when the adapter was made by
    :func:`get_peft_model`: the ones its ``exclude_modules`` matches in the named group
    (an adapter made otherwise, or by an older tying, has none)."""
    pattern = getattr(config, "exclude_modules", None)
    if not isinstance(pattern, str) or f"(?P<{SHARED_GROUP}>" not in pattern:
        return []
    rx = re.compile(pattern)
    out = []
    for path, _ in model.named_modules(remove_duplicate=False):
        hit = rx.fullmatch(path) if path else None
        if hit is not None and hit.group(SHARED_GROUP) is not None:
            out.append(path)
    return out


def _seats(model: nn.Module, inv: Inventory, targets: set[str], config=None) -> dict[str, str]:
    """``{later path: first path}`` for a targeted module seated at several paths; refuses
    a targeted module in a hand-made tie with another module.

    peft lists modules without duplicates, so a module seated twice (``Sequential(lin,
    act, lin)``) got its adapter at the first path only: the second use ran without the
    delta, and merging wrote the delta into the one module for both (merged outputs
    differed from the adapter model's, no error). Every seat of it must be targeted; the
    later seats then hold the first one's wrapper, as for a module tied whole. A module
    reached twice through one shared parent needs nothing: peft wraps it in that parent.
    """
    out = {}
    token_kept = tokens_tuner_ties(config, model, targets)
    for paths in _seat_groups(inv):
        hit = [p for p in paths if p in targets]
        if not hit:
            continue
        if len(hit) != len(paths) and all(
            frozenset((hit[0], p)) in token_kept for p in paths if p not in hit
        ):
            # T5's/BART's `shared` after resize_token_embeddings, seated in the encoder and
            # decoder too: peft gives those seats the embedding's one token delta
            continue
        if len(hit) != len(paths):
            raise TieError(
                f"get_peft_model: the module at {hit[0]!r} is also seated at "
                f"{', '.join(repr(p) for p in paths if p not in hit)} (one module reached "
                f"twice), which target_modules leaves out: peft would wrap one seat only, "
                f"so one use would run without the adapter and merging would write it into "
                f"both. Target every seat ({paths}), one adapter then serves them all, or none"
            )
        out.update({p: paths[0] for p in paths[1:]})
    for target, source, t, s, hit in hand_ties_touching(inv, targets):
        if frozenset((t.module_path, s.module_path)) in token_kept:
            continue  # peft gives every tied module the embedding's one token delta
        fix = hand_tie_fix(target, t.module, s.module, t.module_path, s.module_path)
        both = " and target both" if fix.startswith("declare") else ""
        why = ""
        pair = frozenset((t.module_path, s.module_path))
        if getattr(config, "ensure_weight_tying", False) and pair in embedding_tie_pairs(model)[0]:
            # the entry peft's ensure_weight_tying acts on (Whisper: not 'proj_out', stop 57)
            entry = ensured_entry(pair, model)
            copy_fix = (
                f"pass modules_to_save=[{entry!r}] with ensure_weight_tying=True (one trained "
                f"copy for both), or "
                if entry
                else ""
            )
            why = (
                f" This is HF's embedding tie, and ensure_weight_tying=True does not keep it "
                f"for target_modules: {_ENSURED_TARGETS_BREAK} To train the tied embedding, "
                f"{copy_fix}pass trainable_token_indices (one token delta for both)"
            )
        # every other module holding this one Parameter is named now too: each was refused
        # at the next try, one per try (M2M100's shared table: 3 tries, stop 60)
        group = [
            (tt, ss)
            for tt, ss in hand_group(inv, source)
            if frozenset((inv.slots[tt].module_path, s.module_path)) not in token_kept
        ]
        also = ""
        # every targeted module holding the Parameter is left out at once: naming the one
        # met first looped when both ends were targeted (an HF-tied embedding and head:
        # leaving the head out was refused for the embedding; stop 61)
        held = {t.module_path, s.module_path}
        # (a head given its own copy touches no other module: its one-tie fix stands)
        if len(group) > 1 and (s.module_path in targets or both):
            others = ", ".join(tt for tt, _ in group if tt != target)
            also = f" (the same nn.Parameter is also at {others})"
            fix, both = hand_group_fix(inv, group, targets), ""
            held |= {inv.slots[tt].module_path for tt, _ in group}
        out_of = " and ".join(repr(p) for p in sorted(held & targets))
        raise TieError(
            f"get_peft_model: target module {hit!r} takes part in the hand-made tie "
            f"{target} <- {source} (one nn.Parameter in two modules){also}; an adapter there "
            f"would change one use of the tensor and merging would write its delta into "
            f"every use. Leave {out_of} out of target_modules, or {fix}{both}.{why}"
        )
    return out


# measured, peft 0.21, a tiny tied Llama, LoRA r=2 on embed_tokens (or lm_head) with
# ensure_weight_tying=True, 3 steps at lr 0.05 (stop 42)
_ENSURED_TARGETS_BREAK = (
    "peft's ensure_weight_tying=True gives the head's LoRA factors the embedding's (one delta "
    "in the forward), but its merge_and_unload then writes that delta into the one shared "
    "weight twice, once per wrapper: the merged model computes other logits than the adapter "
    "model (2.0 away after 3 SGD steps of a tiny Llama, 4.8 after 3 Adam steps)."
)


def _seat_groups(inv: Inventory) -> list[list[str]]:
    """The paths of each module seated at two or more places (distinct parent, name)."""
    seats: dict[int, list[str]] = {}
    taken: set[tuple[int, str]] = set()
    for path, mod in inv.modules.items():
        if not path:
            continue
        parent_path, _, name = path.rpartition(".")
        seat = (id(inv.modules[parent_path]), name)
        if seat not in taken:
            taken.add(seat)
            seats.setdefault(id(mod), []).append(path)
    return [paths for paths in seats.values() if len(paths) > 1]


def _wrap(model: nn.Module, make, shared: dict[str, str], what: str, check=None):
    """Run peft's ``make()``, put each shared wrapper at its tied paths, ``check`` the result
    (its refusal is raised as it is), verify; undo on error."""
    inv = Inventory(model)
    # peft changes the model in place; keep what undoing it needs
    tree = [(p, m) for p, m in model.named_modules(remove_duplicate=False) if p]
    grads = [(p, p.requires_grad) for p in model.parameters()]

    def undo() -> None:
        if pm is not None:
            restore_declarations(pm)
        for path, mod in tree:  # parents first: every path gets its original module back
            set_module(model, path, mod)
        for param, flag in grads:
            param.requires_grad_(flag)

    from tying.core.verify import verify

    verifying = False
    pm = None
    try:
        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            pm = make()
        base = base_of(pm)
        for path, src in shared.items():
            set_module(base, path, base.get_submodule(src))
        pm.__dict__[SHARED_ATTR] = {p: inv.modules[p] for p in shared}
        # a tie peft keeps through modules_to_save (ensure_weight_tying): declared where
        # its tensor now lives, so verify checks it there
        redeclare_through_copies(pm)
        if check is not None:
            check(pm)
        verifying = True
        verify(pm)  # a safety net for what the checks before cannot foresee
    except TieError as err:
        undo()
        if not verifying:  # a refusal of make() or check(): it says what it is
            raise
        raise TieError(f"{what}: wrapping broke a tie, undone: {err}") from None
    except BaseException:
        undo()
        raise
    # peft's own add_adapter on this model, all or nothing (stop 40): a new adapter on a
    # tie's source was accepted, and every later forward refused the moved module
    pm.__dict__["add_adapter"] = _AddAdapter(pm)
    pm.__dict__["load_adapter"] = _LoadAdapter(pm)
    # peft's own merge_and_unload / unload (pm.merge_and_unload(), as peft's docs call it)
    # took a shared wrapper off one of its paths only and left the declarations pointing
    # into peft's wrappers: tying.verify then reported ties broken on a right model
    # (stop 42). They run as this module's functions
    # (on the tuner too: pm.base_model.unload() left the delta at one tied path, silently)
    for how in ("merge_and_unload", "unload"):
        pm.__dict__[how] = _Unloading(pm, how)
        if not is_prompt_learning(pm):  # there pm.base_model is the user's own model
            pm.base_model.__dict__[how] = pm.__dict__[how]
    if callable(getattr(type(pm.base_model), "add_weighted_adapter", None)):
        pm.base_model.__dict__["add_weighted_adapter"] = WeightedAdapter(pm.base_model)
    return pm


class _AddAdapter:
    """``pm.add_adapter`` through :func:`_add_adapter`; a plain object holding the model, so
    pickling and deep copies keep it bound to their own copy (a bound method pickles as a
    name lookup, which failed on the half-built copy)."""

    def __init__(self, pm) -> None:
        self.pm = pm

    def __call__(self, adapter_name: str, peft_config, *args: Any, **kwargs: Any):
        return _add_adapter(self.pm, adapter_name, peft_config, *args, **kwargs)


class _LoadAdapter:
    """``pm.load_adapter`` with the adapter file's tensor names at hand: peft's load adds the
    adapter through ``pm.add_adapter`` (:func:`_add_adapter`), which must not share a tied
    path the file holds weights of its own for (sharing would drop them)."""

    def __init__(self, pm) -> None:
        self.pm = pm

    def __call__(self, *args: Any, **kwargs: Any):
        pm = self.pm
        model_id = args[0] if args else kwargs.get("model_id")
        pm.__dict__[_LOADING_KEYS] = _adapter_file_keys(model_id, kwargs.get("subfolder"))
        try:
            return type(pm).load_adapter(pm, *args, **kwargs)
        finally:
            pm.__dict__.pop(_LOADING_KEYS, None)


_LOADING_KEYS = "_tying_loading_keys"  # on the PeftModel while load_adapter runs


def _add_adapter(self, adapter_name: str, peft_config, *args: Any, **kwargs: Any):
    """``PeftModel.add_adapter`` on a model from :func:`get_peft_model` / :func:`from_pretrained`:
    refused, with the model left exactly as it was, when the new adapter breaks a tie.

    peft wraps the new targets in place; an adapter on a module whose weight another module
    reads through a tie (a ``Transposed`` source, say) moved that weight under the wrapper,
    so the call returned and every later forward (and ``tying.verify``) raised. Here the
    result is verified, and on a refusal the modules go back to their paths and the new
    adapter's entries leave the wrappers that were there before. Modules tied whole that no
    adapter wraps yet, both targeted, get one shared wrapper as in :func:`get_peft_model`
    (:func:`_new_shared_wrappers`, stop 53).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    from tying.core.verify import verify

    base = base_of(self)
    # before peft runs, as get_peft_model and from_pretrained do: a token adapter on a tied
    # head with a bias was refused only after peft ran, for a wrong cause, and one on a head
    # trained apart under tie_word_embeddings=True was accepted (logits moved, no error)
    if not _embedding_tie_wrapped(base):  # (wrapped, an earlier adapter's call checked it)
        refuse_config_tie_apart(
            peft_config, base, _targets(peft_config, base, Inventory(base)),
            f"add_adapter({adapter_name!r})",
        )  # fmt: skip
    shared = _new_shared_wrappers(self, base, adapter_name, peft_config)
    tree = [(p, m) for p, m in base.named_modules(remove_duplicate=False) if p]
    grads = [(p, p.requires_grad) for p in base.parameters()]
    had = adapter_name in self.peft_config
    had_shared = dict(self.__dict__.get(SHARED_ATTR, {}))
    try:
        # the tied paths the new adapter reaches through a wrapper shared already are excluded
        # too: the saved config must say they share their source's adapter, or loading it on
        # a fresh model wrapped them apart and was refused (stop 59)
        riding = _riding_shared(base, peft_config, had_shared)
        config = _excluding(peft_config, {**riding, **shared}, base)
        with quiet_own_exclusions(config):  # a saved config of ours (load_adapter)
            out = type(self).add_adapter(self, adapter_name, config, *args, **kwargs)
        originals = {p: base.get_submodule(p) for p in shared}
        for path, src in shared.items():  # the source's new wrapper serves every use
            set_module(base, path, base.get_submodule(src))
        self.__dict__[SHARED_ATTR] = {**had_shared, **originals}
        verify(self)
        _verify_as_active(self, base, adapter_name)
    except BaseException as err:
        self.__dict__[SHARED_ATTR] = had_shared
        for path, mod in tree:  # parents first: every path gets its original module back
            set_module(base, path, mod)
        if not had:
            for mod in base.modules():
                names = getattr(mod, "adapter_layer_names", ())
                if isinstance(mod, BaseTunerLayer) and any(
                    adapter_name in getattr(mod, n, {}) for n in names
                ):
                    mod.delete_adapter(adapter_name)
                elif isinstance(mod, AuxiliaryTrainingWrapper) and adapter_name in mod._adapters:
                    # a modules_to_save wrapper of an earlier adapter kept the new copy
                    mod.delete_adapter(adapter_name, list(mod.active_adapters))
            self.peft_config.pop(adapter_name, None)
        for param, flag in grads:
            param.requires_grad_(flag)
        if isinstance(err, TieError):
            raise TieError(
                f"add_adapter({adapter_name!r}): {err}; the adapter was not added and the "
                f"model was left as it was"
            ) from None
        raise
    return out


def _embedding_tie_wrapped(base: nn.Module) -> bool:
    """True when an earlier adapter wraps the input embedding or a module peft ties to it
    (token or modules_to_save wrappers): their paths and ``weight`` then are peft's, and
    the model was checked by the call that added that adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    emb_path = _input_embedding_path(base)
    paths = {emb_path, *_peft_tied_paths(base)} - {None}
    return any(
        isinstance(base.get_submodule(p), (BaseTunerLayer, AuxiliaryTrainingWrapper))
        or any(n in p.split(".") for n in ("base_layer", "original_module", "token_adapter"))
        for p in paths
    )


def _riding_shared(base: nn.Module, peft_config, had_shared: dict) -> dict[str, str]:
    """``{tied path: source path}`` for the paths that hold a shared wrapper already (an
    earlier adapter's, ``had_shared``) and that ``peft_config`` targets with their source.

    peft lists one module once, so the new adapter lands in the shared wrapper at the source
    and serves every tied path in memory; but its config excluded only the pairs no adapter
    wrapped yet, so ``adapter_config.json`` did not mark these paths as sharing. Loaded alone
    (``from_pretrained(..., subfolder=name)``), peft then wrapped them apart and the load was
    refused with an error about moved modules (stop 59).
    """
    inv = Inventory(base)
    targets = _targets(peft_config, base, inv)
    out = {}
    for path in had_shared:
        wrapper = inv.modules.get(path)
        if wrapper is None or path not in targets:
            continue
        src = next(
            (p for p, m in inv.modules.items() if m is wrapper and p not in had_shared), None
        )
        if src is not None and src in targets:
            out[path] = src
    return out


def _verify_as_active(pm, base: nn.Module, adapter_name: str) -> None:
    """``tying.verify`` of ``pm`` as its forward runs once ``pm.set_adapter(adapter_name)``.

    peft's ``add_adapter`` leaves the earlier adapter active, so the verify before passes
    while a new ``modules_to_save`` copy of a head tied to the embedding (HF's own
    ``tie_word_embeddings``) waits for ``set_adapter``: then the head ran its copy and the
    embedding the original, trained apart with no error (stop 55: a second adapter without
    ``ensure_weight_tying``, or with it after a first adapter's copies, where peft gives the
    head a copy and the embedding none). Only the adapter names the wrappers read are
    switched, and put back (``requires_grad`` is not touched).
    """
    from tying.core.verify import verify

    switched = [
        (m, m.__dict__["_active_adapter"])
        for m in base.modules()
        if "_active_adapter" in m.__dict__ and hasattr(type(m), "active_adapters")
    ]
    try:
        for mod, _ in switched:
            mod.__dict__["_active_adapter"] = [adapter_name]
        verify(pm)
    except TieError as err:
        raise TieError(
            f"with the new adapter active (pm.set_adapter({adapter_name!r})), {err} (peft's "
            f"add_adapter / load_adapter ties modules_to_save copies across HF's embedding tie "
            f"only where no earlier adapter copied the head or the embedding; make or load "
            f"this adapter on a fresh model instead: tying.interop.lora.get_peft_model / "
            f"tying.interop.lora.from_pretrained)"
        ) from None
    finally:
        for mod, active in switched:
            mod.__dict__["_active_adapter"] = active


def _new_shared_wrappers(pm, base: nn.Module, adapter_name: str, peft_config) -> dict[str, str]:
    """``{tied path: source path}`` for the modules tied whole that the new adapter targets
    and that no adapter wraps yet: they get one shared wrapper, as in :func:`get_peft_model`.

    A second adapter on modules tied whole that the first adapter left unwrapped (a first
    LoRA on ``q_proj``, a second on the shared MLP's ``gate_proj``) was wrapped by peft at
    each path apart, and refused with "'0', which held it, moved to '0.base_layer'", which
    named neither the adapter nor a fix (stop 52, open). A group of which the new adapter
    targets some paths only is refused here, naming the adapter, the whole group and the
    fixes (:func:`~tying.interop.lora_targets.refuse_partial_groups`; pair by pair, the
    advice "target both" looped on a group of three, stop 58).
    """
    inv = Inventory(base)
    # the paths a saved config excludes as sharing their source's adapter (load_adapter of
    # an adapter added here) count as targeted: they are shared again
    saved = _shared_when_saved(peft_config, base)
    targets = _targets(peft_config, base, inv) | set(saved)
    whole = whole_module_ties(inv)
    for path in saved:
        if path not in whole and not is_adapter(inv.modules[path]):
            raise TieError(
                f"add_adapter({adapter_name!r}): the adapter's config marks {path!r} as sharing "
                f"its source's adapter (it was tied whole to another module when the adapter "
                f"was made, so the adapter holds no weights of its own there), but in this "
                f"model {path!r} is not tied whole to another module: it would run without "
                f"the adapter's delta (outputs off, no error). Give the base model the ties "
                f"the adapter was made with (tying.hf.from_pretrained, or apply the plan) "
                f"before get_peft_model, then add the adapter; the adapter was not added and "
                f"the model was left as it was"
            )
    what = f"add_adapter({adapter_name!r})"
    fresh = {  # pairs no adapter wraps yet; in one that does, a new adapter lands shared
        path: src
        for path, src in whole.items()
        if not (is_adapter(inv.modules[path]) or is_adapter(inv.modules[src]))
        and inv.modules[path] is not inv.modules[src]
    }
    refuse_partial_groups(peft_config, fresh, targets, what)
    refuse_tied_parameters(peft_config, inv, whole, what)
    shared = {}
    for path, src in whole.items():
        mod, src_mod = inv.modules[path], inv.modules[src]
        if is_adapter(mod) or is_adapter(src_mod) or mod is src_mod:
            continue  # already one shared wrapper (a new adapter lands in it), or untouched
        if {path, src} <= targets:  # (a pair targeted in part was refused above)
            shared[path] = src
    keys = pm.__dict__.get(_LOADING_KEYS) or []
    own = [p for p in shared if any(f".{p}." in f".{k}" for k in keys)]
    if own:
        raise TieError(
            f"add_adapter({adapter_name!r}): the adapter file holds weights of its own for "
            f"{own[0]!r}, which is tied whole to {shared[own[0]]!r} in this model (the adapter "
            f"was made on a model where they were apart); one shared adapter would drop "
            f"{own[0]!r}'s weights (outputs off, no error). Load it into a model where "
            f"{own[0]!r} is not tied (tying.Plan([tying.free({own[0]!r})]).apply(model) before "
            f"get_peft_model), or make the adapter on the tied model; the adapter was not "
            f"added and the model was left as it was"
        )
    for path, src in shared.items():
        refuse_other_hooks(
            f"add_adapter({adapter_name!r})", path, src, inv.modules[path], inv.modules[src]
        )
        refuse_other_settings(
            f"add_adapter({adapter_name!r})", path, src, inv.modules[path], inv.modules[src]
        )
    try:
        _refuse_other_ranks(peft_config, shared)
    except TieError as err:
        said = str(err).replace("get_peft_model:", f"add_adapter({adapter_name!r}):", 1)
        raise TieError(
            f"{said}; the adapter was not added and the model was left as it was"
        ) from None
    return shared
