"""peft's ``modules_to_save`` on a tied module: refused, or kept tied by ``ensure_weight_tying``.

peft replaces a ``modules_to_save`` module with a wrapper that keeps the module as
``original_module`` and trains a private copy of it (``modules_to_save.<adapter>``).
On a tied module the copy is no longer the tied tensor, so the tie breaks.

One case holds (measured, peft 0.21): HF's own ``tie_word_embeddings`` (one
``nn.Parameter`` in the input embedding and the output head) with
``LoraConfig(ensure_weight_tying=True)``. peft then copies the embedding once and
gives the head's wrapper a ``Linear`` whose weight *is* that copy: one tensor through
training, ``save_pretrained`` / ``from_pretrained`` and ``merge_and_unload``. That is
accepted; every other ``modules_to_save`` entry in a tie is refused, naming the tie.

``trainable_token_indices`` on that tie is accepted too, with or without the option: peft
gives the head's wrapper the embedding's very token delta (one ``nn.Parameter``), so
both read one tensor. A head named alone, or with other indices, trains a delta of its
own and is refused.

An accepted model keeps its declared ties: the paths that now lie under a wrapper
are declared through ``original_module`` (still one ``nn.Parameter``), and
``tying.verify`` checks that the copies the forward runs are one tensor too.
"""

from __future__ import annotations

from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.plan import DECLARED_ATTR
from tying.interop.groups import hand_ties_touching

REDECLARED_ATTR = "_tying_redeclared"  # on the PeftModel: [(module, its old declarations)]


def peft_embedding_ties(config, model: nn.Module) -> tuple[set[frozenset[str]], list[str]]:
    """The module pairs ``{input embedding path, tied module path}`` that peft's
    ``ensure_weight_tying=True`` ties again after copying (none without it), and the
    tied modules that are no ``Linear``.

    peft seats a plain ``Linear`` on the embedding's copy for every module tied to the
    input embedding: right for a head, wrong for a second embedding (BART's encoder and
    decoder ``embed_tokens`` got a ``Linear``; the forward failed), so then none is kept.
    peft acts only when a ``modules_to_save`` entry ends in one of its embedding names
    (:func:`_ensured_names`): Whisper's ``"proj_out"``, GPT-2's ``"wte"`` or BERT's
    ``"decoder"`` are copied alone, the tie broken (stop 57), so none is kept then either.
    """
    if not getattr(config, "ensure_weight_tying", False) or not _names_an_embedding(config):
        return set(), []
    return embedding_tie_pairs(model)


def embedding_tie_pairs(model: nn.Module) -> tuple[set[frozenset[str]], list[str]]:
    """The pairs ``{input embedding path, tied module path}`` of HF's own embedding tie (as
    peft's ``_get_module_names_tied_with_embedding`` names them), and the tied modules that
    are no ``Linear`` (then no pair: peft cannot keep that tie)."""
    from peft.utils.other import _get_module_names_tied_with_embedding

    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    emb_path = next((p for p, m in model.named_modules() if m is emb), None)
    if emb_path is None:
        return set(), []
    modules = dict(model.named_modules())
    tied = _get_module_names_tied_with_embedding(model)
    odd = sorted(t for t in tied if type(modules.get(t)) is not nn.Linear)
    if odd:
        return set(), odd
    return {frozenset((emb_path, t)) for t in tied}, []


def _ensured_names() -> list[str]:
    """The last path components that make peft's ``ensure_weight_tying`` act on a
    ``modules_to_save`` entry (peft 0.21: ``EMBEDDING_LAYER_NAMES``, embed_tokens/lm_head)."""
    try:
        from peft.utils.constants import EMBEDDING_LAYER_NAMES
    except ImportError:  # pragma: no cover - an older/newer peft without the constant
        return ["embed_tokens", "lm_head"]
    return list(EMBEDDING_LAYER_NAMES)


def _names_an_embedding(config) -> bool:
    """True when a ``modules_to_save`` entry ends in a name peft's ``ensure_weight_tying``
    acts on (``m.split(".")[-1] in EMBEDDING_LAYER_NAMES``, as peft tests it)."""
    names = _ensured_names()
    return any(
        str(m).split(".")[-1] in names for m in getattr(config, "modules_to_save", None) or []
    )


def ensured_entry(pair: frozenset[str], model: nn.Module | None = None) -> str | None:
    """A ``modules_to_save`` entry naming a module of ``pair`` that peft's
    ``ensure_weight_tying`` acts on (the input embedding's path first), or None when neither
    module's name is one peft knows (no ``modules_to_save`` keeps that tie).

    peft saves the entry as the *input embedding's* path (``_add_modules_to_save_to_tie``):
    GPT-2's ``"lm_head"`` is saved as ``"transformer.wte"``, on which peft no longer acts
    when the adapter is loaded (the copy is untied again). So with ``model`` given, an
    entry is named only when the input embedding's own name is one peft knows."""
    names = _ensured_names()
    if model is not None:
        get_in = getattr(model, "get_input_embeddings", None)
        emb = get_in() if callable(get_in) else None
        emb_path = next((p for p, m in model.named_modules() if m is emb), None)
        if emb_path is not None and emb_path.split(".")[-1] not in names:
            return None  # no entry survives save_pretrained -> from_pretrained
    hits = sorted(
        (p for p in pair if p.split(".")[-1] in names), key=lambda p: not p.endswith("embed_tokens")
    )
    return hits[0] if hits else None


def refuse_copies_trained_apart(config, model: nn.Module, adapter_path) -> None:
    """A saved adapter whose ``modules_to_save`` copy of one end of HF's embedding tie peft
    does not tie to the other end: refused before peft loads it (stop 57).

    Plain peft made such an adapter from an entry its ``ensure_weight_tying`` does not act on
    (Whisper's ``"proj_out"``, with or without the option) or without the option: the copy
    trained apart from the embedding, so it cannot be served by the one tied tensor. It was
    refused after loading, by the check that every declared tie holds, advising
    ``ensure_weight_tying=True`` (which the adapter may already have had).

    Raises:
        TieError: naming the entry, the module, the tie and the way to make the adapter again.
    """
    entries = [str(e) for e in getattr(config, "modules_to_save", None) or []]
    if not entries:
        return
    kept = peft_embedding_ties(config, model)[0]
    modules = dict(model.named_modules())
    for pair in sorted(embedding_tie_pairs(model)[0] - kept, key=sorted):
        for path in sorted(pair):
            entry = next((e for e in entries if path.endswith(e)), None)
            if entry is None:
                continue
            (other,) = pair - {path}
            weight = getattr(modules.get(path), "weight", None)
            if weight is None or weight is not getattr(modules.get(other), "weight", None):
                continue  # not one tensor here: the config check and verify speak for it
            good = ensured_entry(pair, model)
            remake = (
                f"make the adapter again with modules_to_save=[{good!r}] and "
                f"ensure_weight_tying=True (peft then trains one copy for both)"
                if good
                else "make the adapter again without that entry (no modules_to_save entry "
                "keeps this tie in peft)"
            )
            raise TieError(
                f"from_pretrained: the adapter in {str(adapter_path)!r} holds a modules_to_save "
                f"copy of {path!r} (entry {entry!r}), which holds one nn.Parameter with "
                f"{other!r} here (HF's tie_word_embeddings), and peft does not tie that copy to "
                f"{other!r} (ensure_weight_tying="
                f"{bool(getattr(config, 'ensure_weight_tying', False))}; peft acts only on an "
                f"entry ending in {' or '.join(repr(n) for n in _ensured_names())}): the copy "
                f"was trained apart, and the tied model would read two tensors where it has "
                f"one. Use it with plain peft on a base whose head is untied, or {remake}; "
                f"the model was left as it was"
            )


def _token_ties(config, model: nn.Module) -> set[frozenset[str]]:
    """The module pairs ``{input embedding path, tied head path}`` whose ``trainable_token_indices``
    peft keeps tied (none where it does not).

    peft (0.21, ``utils.other._set_trainable`` for trainable tokens) wraps the input embedding
    and, when ``config.tie_word_embeddings`` is true, gives every module tied to it a wrapper
    that reads the embedding's very token delta (``tied_adapter``): embedding and head read
    one value through training, saving, loading and merging. It does not when the embedding
    is not named (a dict naming the head only: the head trains a delta of its own) or a tied
    module is named with other indices than the embedding's (then each trains its own delta
    unless ``ensure_weight_tying=True``, where peft raises). The tied modules may be
    ``Linear`` heads or ``Embedding`` tables (T5's encoder and decoder ``embed_tokens``,
    BART's: measured stop 59, adapter and merged logits equal plain PyTorch writing those
    rows into HF's one ``shared`` tensor, Δ = 0; they were refused as a hand-made tie);
    other module types are not kept (peft's token layer computes these two only).
    """
    tokens = getattr(config, "trainable_token_indices", None)
    model_config = getattr(model, "config", None)
    if not tokens or getattr(model_config, "tie_word_embeddings", False) is not True:
        return set()
    from peft.utils.other import _get_module_names_tied_with_embedding

    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    emb_path = next((p for p, m in model.named_modules() if m is emb), None) if emb else None
    if not emb_path:
        return set()
    tied = _get_module_names_tied_with_embedding(model)
    # duplicates kept: after resize_token_embeddings, T5's and BART's encoder and decoder
    # seat the one new `shared` module itself, and a deduplicated walk lost those paths
    modules = dict(model.named_modules(remove_duplicate=False))
    # (subclasses too, as peft's isinstance: BART's BartScaledWordEmbedding, whose scale
    # peft's token layer applies)
    if not tied or any(not isinstance(modules.get(t), (nn.Linear, nn.Embedding)) for t in tied):
        return set()
    if isinstance(tokens, dict):
        mine = [k for k in tokens if emb_path.endswith(k)]
        if not mine:
            return set()  # the embedding is not wrapped: a named head trains its own delta
        indices = list(tokens[mine[0]])
        for key, value in tokens.items():
            names_tied = any(t.endswith(key) or key in t.split(".") for t in tied)
            if names_tied and list(value) != indices:
                return set()
    return {frozenset((emb_path, t)) for t in tied}


def refuse_saved_copies(config, model: nn.Module, inv: Inventory) -> None:
    """``modules_to_save`` / ``trainable_token_indices`` on a module in a tie: refused
    before peft runs, naming the entry and the tie, unless peft keeps that tie itself
    (``ensure_weight_tying=True`` on HF's ``tie_word_embeddings``).

    peft matches a name as a plain suffix of every module path (``"norm"`` matches
    ``input_layernorm``), as here; a list of token indices names the input embedding.

    Raises:
        TieError: naming the entry, the module, the tie and what to do instead.
    """
    entries = [("modules_to_save", n) for n in getattr(config, "modules_to_save", None) or []]
    tokens = getattr(config, "trainable_token_indices", None)
    if isinstance(tokens, dict):
        entries += [("trainable_token_indices", n) for n in tokens]
    elif tokens:
        get_in = getattr(model, "get_input_embeddings", None)
        emb = get_in() if callable(get_in) else None
        path = inv.path_of(emb) if emb is not None else None
        if path:
            entries.append(("trainable_token_indices", path))
    if not entries:
        return
    saved = {}  # module path -> (option, the entry naming it)
    for p, _ in model.named_modules(remove_duplicate=False):
        entry = next(((k, n) for k, n in entries if p and p.endswith(n)), None)
        if entry is not None:
            saved[p] = entry

    def inside(path: str | None) -> str | None:
        if path is None:
            return None
        return next((m for m in sorted(saved) if path == m or path.startswith(m + ".")), None)

    def what(hit: str) -> str:
        option, entry = saved[hit]
        return f"{option} {entry!r} (module {hit!r})"

    kept, odd = peft_embedding_ties(config, model)
    token_kept = _token_ties(config, model)
    hf_pairs = embedding_tie_pairs(model)[0]  # HF's embedding tie, whatever the entry's name
    # what ensure_weight_tying=True would keep with these very entries
    could = peft_embedding_ties(_Ensured(config), model)[0]
    why_not = ""
    if getattr(config, "ensure_weight_tying", False):
        why_not = (
            " ensure_weight_tying=True does not keep it: peft ties the copies only for HF's "
            "own tie_word_embeddings (one nn.Parameter in the input embedding and the Linear "
            "heads that config.tie_word_embeddings=True and _tied_weights_keys name) with "
            "modules_to_save, and this tie is not that."
        )
        if odd:
            why_not += (
                f" Here peft would also seat a Linear in place of the tied embedding(s) "
                f"{', '.join(repr(t) for t in odd)} (the forward fails)."
            )
    for info in inv.slots.values():
        if not info.is_tied:
            continue
        src_mod = info.source.rpartition(".")[0] if info.source else None
        hit = inside(info.module_path) or inside(src_mod)
        if hit:
            raise TieError(
                f"get_peft_model: {what(hit)} takes part in the tie {info.path} <- "
                f"{info.source or 'its own storage'} ({info.tie.relation!r}); peft would train a "
                f"private copy of it, so the tie would no longer hold.{why_not} Leave "
                f"{saved[hit][1]!r} out of {saved[hit][0]}, or untie it first "
                f"(tying.Plan([tying.free({info.path!r})]).apply(model))"
            )
    for target, source, t, s, hit in hand_ties_touching(inv, set(saved)):
        pair = frozenset((t.module_path, s.module_path))
        if pair in kept and all(saved[p][0] == "modules_to_save" for p in pair & set(saved)):
            continue  # peft's ensure_weight_tying gives both one trained copy
        if pair in token_kept and all(
            saved[p][0] == "trainable_token_indices" for p in pair & set(saved)
        ):
            continue  # peft gives the tied head the embedding's own token delta
        fix = (
            ", or pass ensure_weight_tying=True to the LoraConfig (peft then trains one copy "
            "for both)"
            if pair in could and saved[hit][0] == "modules_to_save"
            else ""
        )
        if pair in hf_pairs and pair not in could and saved[hit][0] == "modules_to_save":
            # peft's ensure_weight_tying ignores an entry not named like its embedding names:
            # it copies the module alone (Whisper's 'proj_out', GPT-2's 'wte'), so the
            # option is no fix; name the entry it acts on, if any (stop 57)
            entry = ensured_entry(pair, model)
            fix = (
                f". peft's ensure_weight_tying acts only on a modules_to_save entry ending in "
                f"{' or '.join(repr(n) for n in _ensured_names())}, and {saved[hit][1]!r} does "
                f"not (with it, peft copies {hit!r} alone and the tie breaks); "
                + (
                    f"pass modules_to_save=[{entry!r}] with ensure_weight_tying=True instead "
                    f"(peft then trains one copy for both)"
                    if entry
                    else "neither module of this tie has such a name, so no modules_to_save "
                    "entry keeps it"
                )
            )
        if saved[hit][0] == "trainable_token_indices" and pair in hf_pairs:
            fix = (
                "; peft keeps this tie for trainable_token_indices only when they name the "
                "input embedding, and name its tied head with the same indices or not at all "
                "(the head then reads the embedding's token delta)"
            )
        raise TieError(
            f"get_peft_model: {what(hit)} takes part in the hand-made tie {target} <- {source} "
            f"(one nn.Parameter in two modules); peft would train a private copy of it, so the "
            f"tie would no longer hold.{why_not if pair not in kept | hf_pairs else ''} Leave "
            f"{saved[hit][1]!r} out of {saved[hit][0]}{fix}"
        )


class _Ensured:
    """``config``'s ``modules_to_save`` with ``ensure_weight_tying`` asked for (to name it as
    the fix only where peft would act on these entries)."""

    ensure_weight_tying = True

    def __init__(self, config=None) -> None:
        self.modules_to_save = list(getattr(config, "modules_to_save", None) or [])


def _is_copy_wrapper(module: nn.Module) -> bool:
    return "original_module" in module._modules and isinstance(
        module._modules.get("modules_to_save"), nn.ModuleDict
    )


def _is_token_wrapper(module: nn.Module) -> bool:
    """peft's ``TrainableTokensWrapper``: the module under ``token_adapter.base_layer``."""
    layer = module._modules.get("token_adapter")
    return layer is not None and isinstance(layer._modules.get("base_layer"), nn.Module)


def _is_tokens_layer(module: nn.Module) -> bool:
    """peft's ``TrainableTokensLayer`` itself (what ``TrainableTokensConfig`` seats): the
    module under ``base_layer``, token deltas in ``trainable_tokens_delta``."""
    return isinstance(module._modules.get("base_layer"), nn.Module) and hasattr(
        module, "trainable_tokens_delta"
    )


def _through(base: nn.Module, path: str) -> str:
    """``path`` with ``original_module`` put after every peft ``modules_to_save`` wrapper
    (``token_adapter.base_layer`` after every ``trainable_token_indices`` wrapper) that now
    sits on it (the path as it was no longer names a parameter)."""
    parts, out, mod = path.split("."), [], base
    for i, name in enumerate(parts):
        out.append(name)
        if i == len(parts) - 1:
            break
        mod = mod._modules.get(name) if mod is not None else None
        if mod is not None and _is_copy_wrapper(mod):
            if parts[i + 1] not in ("original_module", "modules_to_save"):
                out.append("original_module")
                mod = mod._modules["original_module"]
        elif mod is not None and _is_token_wrapper(mod) and parts[i + 1] != "token_adapter":
            out += ["token_adapter", "base_layer"]
            mod = mod._modules["token_adapter"]._modules["base_layer"]
        elif mod is not None and _is_tokens_layer(mod) and parts[i + 1] != "base_layer":
            out.append("base_layer")
            mod = mod._modules["base_layer"]
    return ".".join(out)


def is_prompt_learning(pm) -> bool:
    """True when ``pm``'s active adapter is prompt learning (prompt, prefix, p-tuning)."""
    active = getattr(pm, "active_adapter", "default")  # a list in a PeftMixedModel
    names = active if isinstance(active, (list, tuple)) else [active]
    return any(getattr(pm.peft_config.get(n), "is_prompt_learning", False) for n in names)


def base_of(pm) -> nn.Module:
    """The model under ``pm``'s adapters: the tuner's ``model`` for LoRA, IA3, ... (also in a
    ``PeftMixedModel``, which has no ``get_base_model``); ``pm.base_model`` itself for prompt
    learning, where ``pm.base_model.model`` is the model's own inner module (stop 52:
    ``from_pretrained`` of a prompt-tuning adapter on a model with a whole-module tie crashed
    with ``AttributeError: LlamaModel has no attribute `model```)."""
    return pm.base_model if is_prompt_learning(pm) else pm.base_model.model


def redeclare_through_copies(pm) -> None:
    """Declare every tie whose ends peft's ``modules_to_save`` wrapped at the wrapped
    ``original_module`` paths (the same ``nn.Parameter`` as before); the old declarations
    are kept on ``pm`` for :func:`restore_declarations`."""
    base = base_of(pm)
    changed = pm.__dict__.setdefault(REDECLARED_ATTR, [])
    for prefix, mod in base.named_modules():
        declared = mod.__dict__.get(DECLARED_ATTR)
        if not declared:
            continue
        new = {}
        for target, spec in declared.items():
            if _one_token_delta(base, join(prefix, target), spec.get("like"), prefix):
                continue  # held by peft's one token delta; checked there, back on unload
            t = _through(base, join(prefix, target))[len(prefix) + 1 if prefix else 0 :]
            spec = dict(spec)
            if spec.get("like") is not None:
                like = _through(base, join(prefix, spec["like"]))
                spec["like"] = like[len(prefix) + 1 if prefix else 0 :]
            new[t] = spec
        if new != declared:
            changed.append((mod, declared))
            mod.__dict__[DECLARED_ATTR] = new


def _token_layer(base: nn.Module, path: str) -> nn.Module | None:
    """The ``TrainableTokensLayer`` that ``path``'s module now is (``TrainableTokensConfig``) or
    holds (a ``trainable_token_indices`` wrapper), else None."""
    mpath = path.rpartition(".")[0]
    try:
        mod = base.get_submodule(mpath) if mpath else base
    except AttributeError:
        return None
    if _is_tokens_layer(mod):
        return mod
    return mod._modules["token_adapter"] if _is_token_wrapper(mod) else None


def _one_token_delta(base: nn.Module, target: str, like: str | None, prefix: str) -> bool:
    """True when the declared tie ``target <- like`` has both ends wrapped by peft's
    ``trainable_token_indices`` wrappers that read one tensor: the same base ``nn.Parameter``
    and one layer reading the other's token delta (``tied_adapter``).

    ``tying.verify`` reports any adapter on one end of a tie that is not the very module on
    the other end; these are two modules that hold one delta, so the tie holds (peft keeps
    it through training, saving and merging). The declaration is set aside while they are
    wrapped (``restore_declarations`` puts it back) and this check stands in for it.

    Raises:
        TieError: when both ends are wrapped but read different deltas or base tensors
            (the head would train apart from the embedding).
    """
    if like is None:
        return False
    source = join(prefix, like)
    tl, sl = _token_layer(base, target), _token_layer(base, source)
    if tl is None or sl is None:
        return False
    name = target.rpartition(".")[2]
    t_base, s_base = tl.base_layer, sl.base_layer
    same_base = getattr(t_base, name, None) is getattr(s_base, source.rpartition(".")[2], None)
    # both read one delta: each its own, or the one of the layer it is tied to (T5's encoder
    # and decoder embeddings and head all read the delta of ``shared``)
    linked = (getattr(tl, "tied_adapter", None) or tl) is (getattr(sl, "tied_adapter", None) or sl)
    if not (same_base and linked):
        raise TieError(
            f"get_peft_model: trainable_token_indices wraps both ends of the tie {target} <- "
            f"{source}, but the two wrappers train separate token deltas, so the tie would no "
            f"longer hold; name the input embedding (and the tied head with the same indices, "
            f"or not at all) so that peft gives the head the embedding's delta"
        )
    return True


def restore_declarations(pm) -> None:
    """Put back the declarations :func:`redeclare_through_copies` changed (peft's unload
    puts each wrapped module back at its path)."""
    for mod, declared in reversed(pm.__dict__.pop(REDECLARED_ATTR, [])):
        mod.__dict__[DECLARED_ATTR] = declared


def _is_tokens_tuner(config) -> bool:
    return str(getattr(config, "peft_type", "")).endswith("TRAINABLE_TOKENS")


def _input_embedding_path(model: nn.Module) -> str | None:
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    if emb is None:
        return None
    return next((p for p, m in model.named_modules() if m is emb), None) or None


def _peft_tied_paths(model: nn.Module) -> set[str]:
    """The module paths peft treats as tied to the input embedding: every path (duplicates
    kept) ending with a name of ``_get_module_names_tied_with_embedding``, as peft matches
    them. Empty unless ``config.tie_word_embeddings`` is true."""
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False) is not True:
        return set()
    from peft.utils.other import _get_module_names_tied_with_embedding

    names = _get_module_names_tied_with_embedding(model)
    return {
        p
        for p, _ in model.named_modules(remove_duplicate=False)
        if p and any(p == n or p.endswith("." + n) for n in names)
    }


def tokens_tuner_ties(config, model: nn.Module, targets: set[str]) -> set[frozenset[str]]:
    """The module pairs that peft's ``TrainableTokensConfig`` keeps tied (none where it
    does not).

    peft (0.21, ``TrainableTokensModel.inject_adapter``) wraps the targeted input embedding
    and, when ``config.tie_word_embeddings`` is true, gives every module tied to it a
    layer reading the embedding's very token delta (``tied_adapter``): trained, every
    use reads one value, and merging writes it once (measured: Llama, Qwen2, Gemma, GPT-2,
    BART and T5, whose encoder and decoder embeddings and head all read ``shared``;
    logits and merged logits equal plain PyTorch training those rows of HF's tied tensor,
    Δ = 0). It does not when the embedding is not targeted (the head trains rows of its
    own), and a target list naming a tied module too fails in peft's forward, so neither
    is kept.
    """
    if not _is_tokens_tuner(config):
        return set()
    emb_path = _input_embedding_path(model)
    tied = _peft_tied_paths(model)
    if emb_path is None or emb_path not in targets or not tied or tied & targets:
        return set()
    modules = dict(model.named_modules(remove_duplicate=False))
    if any(not isinstance(modules[p], (nn.Linear, nn.Embedding)) for p in tied):
        return set()  # peft's layer computes a Linear or an Embedding only
    ends = sorted({emb_path, *tied})
    return {frozenset((a, b)) for i, a in enumerate(ends) for b in ends[i + 1 :]}


def refuse_config_tie_apart(config, model: nn.Module, targets: set[str], what: str) -> None:
    """Refuse a peft config that peft ties across the input embedding and a module that
    ``config.tie_word_embeddings=True`` calls tied but that holds another tensor.

    peft decides "tied" from the config and ``_tied_weights_keys``, not from the tensors.
    A head trained apart under a config that says tied (transformers 5 loads such a
    checkpoint untied, with a warning) then reads the embedding's rows: a fresh
    ``TrainableTokensConfig`` or ``trainable_token_indices`` adapter, or
    ``modules_to_save`` with ``ensure_weight_tying=True``, moved a tiny Llama's logits
    0.99 before any training, no error (stop 50).

    Raises:
        TieError: naming the module, the embedding, their largest difference and the fix
            (``model.config.tie_word_embeddings = False``); also for a token adapter on a
            tie to a ``Linear`` head with a bias (:func:`_refuse_head_bias_dropped`).
    """
    tied = _peft_tied_paths(model)
    emb_path = _input_embedding_path(model)
    if not tied or emb_path is None:
        return
    ends = {emb_path} | tied
    tokens = getattr(config, "trainable_token_indices", None)
    if _is_tokens_tuner(config):
        ties = emb_path in targets
    elif isinstance(tokens, dict):
        ties = any(emb_path == k or emb_path.endswith("." + k) for k in tokens)
    elif tokens:
        ties = True
    else:
        saved = {
            p
            for p, _ in model.named_modules(remove_duplicate=False)
            for n in getattr(config, "modules_to_save", None) or []
            if p and (p == n or p.endswith("." + n))
        }
        ties = bool(getattr(config, "ensure_weight_tying", False) and ends & (targets | saved))
    if not ties:
        return
    if tokens or _is_tokens_tuner(config):
        _refuse_head_bias_dropped(model, emb_path, tied, what)
    weight = model.get_submodule(emb_path).weight
    for path in sorted(tied):
        other = getattr(model.get_submodule(path), "weight", None)
        if other is weight:
            continue
        diff = (
            f"max |diff| {(other.detach().float() - weight.detach().float()).abs().max().item():.3g}"
            if other is not None and tuple(other.shape) == tuple(weight.shape)
            else "another tensor"
        )
        raise TieError(
            f"{what}: model.config.tie_word_embeddings is True, so peft ties this adapter of "
            f"{emb_path!r} to {path!r}, but {path}.weight is not {emb_path}.weight ({diff}; "
            f"a head trained apart, which transformers loads untied): peft would give "
            f"{path!r} the embedding's adapter (trainable tokens or a modules_to_save copy "
            f"replace its rows before any training; LoRA trains it with the embedding's "
            f"delta). Set "
            f"model.config.tie_word_embeddings = False to say they differ (peft then adapts "
            f"{emb_path!r} alone), or tie them first; the model was left as it was"
        )


HEAD_BIAS_DROPPED = "F.linear(x, W) without"  # (lora.py leaves its tokens hint off then)


def _refuse_head_bias_dropped(model: nn.Module, emb_path: str, tied: set[str], what: str) -> None:
    """Refuse a token adapter peft ties across the input embedding and a ``Linear`` head
    with a bias.

    peft 0.21's token layer computes a tied ``Linear`` as ``F.linear(x, W)``: the head's
    bias is dropped. On a masked LM (BERT, DistilBERT, RoBERTa: ``decoder.bias``) plain
    peft's logits were 2.59 off plain PyTorch writing the same rows (tiny BERT MLM, a
    trained bias), and tying refused only after peft ran, saying "use
    tying.interop.lora.get_peft_model" (the call made) and "target the input embedding
    alone" (what was done) (stop 59).
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    for path in sorted(tied):
        head = modules.get(path)
        if isinstance(head, nn.Linear) and head.bias is not None:
            raise TieError(
                f"{what}: model.config.tie_word_embeddings is True, so peft gives the head "
                f"{path!r} the token delta of {emb_path!r}, but its token layer computes a "
                f"Linear head as {HEAD_BIAS_DROPPED} the head's bias ({path}.bias), so "
                f"every logit would lose it (a tiny BERT MLM: 2.59 off plain PyTorch, no "
                f"error). No token adapter keeps this tie; leave trainable tokens out, or "
                f"let the head keep its current rows: untie it "
                f"(tying.Plan([tying.free({path + '.weight'!r})]).apply(model)) and set "
                f"model.config.tie_word_embeddings = False (peft then trains the rows of "
                f"{emb_path!r} alone); the model was left as it was"
            )
