"""Quantizing tied models: the one physical tensor is quantized once and every use reads it.

Plain quantizers walk modules one at a time, so a tie goes wrong in two ways
(measured with torch 2.13):

- ``torch.ao.quantization.quantize_dynamic`` swaps modules by exact class: a
  tied ``TiedLinear`` is silently left in float even when ``nn.Linear`` is
  listed, and when its source is quantized, the tied module keeps reading a
  float weight that is no longer in ``parameters()`` or the state dict (a
  stale copy; ``tying.verify`` reports it, nothing else does).
- torchao's ``quantize_`` quantizes the source's weight in place, then tries to
  quantize the tied module's (the same, already-int8) weight again and fails
  half-way with ``NotImplementedError`` (``aten.view``), the source quantized.

:func:`quantize_dynamic` and :func:`quantize_` here decide per tie, before
anything changes:

- a module tied *whole* to another of the same class (every parameter, with
  ``Same``: ALBERT-style layers, shared K/V projections) is quantized once; the
  tied path then holds the very same quantized module (torch.ao) or reads the
  quantized weight through the tie (torchao);
- any other tie that touches a module to be quantized (a partial tie, a
  relation, an ``Embedding`` tied to a ``Linear``) is refused with a
  ``TieError`` naming the tie and the fix (exclude the module, or untie).

Example:
    >>> import torch, tying
    >>> from tying.interop.quantization import quantize_dynamic
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
    >>> q = quantize_dynamic(m, {torch.nn.Linear})
    >>> q[2] is q[0], q[0]._get_name()
    (True, 'DynamicQuantizedLinear')
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.plan import DECLARED_ATTR
from tying.core.slots import base_class
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


def _ties_touching(inv: Inventory, selected: set[str]):
    """Every (target, source, relation) tie whose target or root source module is in ``selected``."""
    for info in inv.slots.values():
        if not info.is_tied:
            continue
        root = inv.root_of(info.path)
        src_mod = inv.slots[root].module_path if root in inv.slots else root.rsplit(".", 1)[0]
        if info.module_path in selected or src_mod in selected:
            yield info, src_mod


def _check_hand(inv: Inventory, selected: set[str], what: str, exclude=()) -> None:
    """Refuse a hand-made tie (one Parameter in two modules) that touches a selected module.

    Both quantizers quantize each module on its own: the two modules came out with two
    quantized copies, and the tie was gone with no error (``verify`` counted 0 ties).
    One module object reached under two paths is no such tie (kept by the callers).
    Every selected module holding the Parameter is named for exclusion: naming the one
    touched first looped when both ends were selected (an HF-tied head and embedding under
    one filter_fn: excluding the head was refused for the embedding; stop 61).
    """
    for target, source, t, s, touched in hand_ties_touching(inv, selected):
        fix = hand_tie_fix(target, t.module, s.module, t.module_path, s.module_path)
        # every module holding this one Parameter is named at once: each was refused at the
        # next try, one per try, for the exclusion too (a Parameter in 3 Linears: 3 tries)
        group = hand_group(inv, source)
        also = ""
        mods = {s.module_path, t.module_path} | {inv.slots[tt].module_path for tt, _ in group}
        paths = sorted(mods & selected)
        if len(group) > 1:
            others = ", ".join(tt for tt, _ in group if tt != target)
            also = f" (the same nn.Parameter is also at {others})"
            fix = hand_group_fix(inv, group)
        raise TieError(
            f"{what}: the hand-made tie {target} <- {source} (one nn.Parameter in two "
            f"modules){also} touches {touched!r}, which would be quantized: each module would "
            f"get its own quantized copy and the tie would be lost. Exclude "
            f"{'it' if len(paths) == 1 else 'them'} from quantization "
            f"({_exclude_fix(what, *paths, exclude=exclude)}), or {fix}"
        )


def _exclude_fix(what: str, *paths: str, exclude=()) -> str:
    """How ``what`` (``quantize_dynamic`` / ``quantize_``) leaves modules ``paths`` in float:
    each takes its own argument (the refusals named ``exclude=`` to ``quantize_``, which has
    none, and ``filter_fn`` to ``quantize_dynamic``, which has none). The printed
    ``exclude=`` keeps the caller's own (printed alone, following it quantized a module the
    caller had excluded, and the same tie was refused again; stop 61)."""
    if what == "quantize_":
        fqns = " or ".join(repr(p) for p in paths)
        return f"quantize_(..., filter_fn=...) returning False for the fqn {fqns}"
    keep = sorted(set(exclude) | set(paths))
    return f"quantize_dynamic(..., exclude={{{', '.join(repr(p) for p in keep)}}})"


def _check_pruned(inv: Inventory, selected: set[str], what: str) -> None:
    """Refuse a selected module that ``torch.nn.utils.prune`` left reparametrized.

    Such a module holds ``weight_orig`` and ``weight_mask`` and recomputes ``weight``
    in a forward pre-hook. The module swap copies that hook onto the quantized
    module, which has no mask: its first call failed with ``AttributeError:
    'Linear' object has no attribute 'weight_mask'`` (inplace=True, the model
    already swapped), and the deep copy (inplace=False) failed earlier with torch's
    "Only Tensors created explicitly by the user" (stop 25 review).
    """
    from torch.nn.utils.prune import BasePruningMethod

    for path in sorted(selected):
        hooks = inv.modules[path]._forward_pre_hooks.values()
        names = [h._tensor_name for h in hooks if isinstance(h, BasePruningMethod)]
        if names:
            raise TieError(
                f"{what}: {path!r} is pruned and not yet made permanent ({names[0]}_orig and "
                f"{names[0]}_mask, recomputed in a forward hook that the quantized module "
                f"cannot run); make the mask permanent first: torch.nn.utils.prune.remove("
                f"model.get_submodule({path!r}), {names[0]!r}) (a tie holds through it), "
                f"then quantize"
            )


def _check_groups(
    whole: dict[str, str], selected: set[str], what: str, exclude: Iterable[str] = ()
) -> None:
    """Refuse a selection holding some paths of a module tied whole but not all of them.

    Named pair by pair, the advice "select both or neither" looped on a group of three or
    more: excluding the pair's other path named the next one (an ALBERT-style stack of 24
    layers took 23 tries), and it named neither ``exclude=`` nor ``filter_fn`` (stop 58).
    Every such group is named at once (one by one, a layer left out whole took one try per
    module of it), and the ``exclude=`` printed keeps the caller's own ``exclude``
    (printed alone, following it quantized a head the caller had excluded; review 58).
    """
    groups: dict[str, list[str]] = {}
    for path, src in sorted(whole.items()):
        groups.setdefault(src, [src]).append(path)
    partial = []
    for paths in groups.values():
        hit = [p for p in paths if p in selected]
        if hit and len(hit) < len(paths):
            partial.append((paths, hit, [p for p in paths if p not in selected]))
    if not partial:
        return
    every = sorted({p for paths, _, _ in partial for p in paths})
    if what == "quantize_":
        fix = (
            "a filter_fn that returns the same for every one of these fqns (False for "
            "all leaves them in float)"
        )
    else:
        keep = sorted(set(exclude) | set(every))
        fix = (
            f"quantize_dynamic(..., exclude={{{', '.join(map(repr, keep))}}}) leaves them "
            f"all in float; to quantize them, let exclude= and the qconfig_spec select "
            f"every one"
        )
    paths, hit, out = partial[0]
    more = "".join(
        f"; likewise the modules at {g} ({h} selected, {o} not)" for g, h, o in partial[1:]
    )
    raise TieError(
        f"{what}: the modules at {paths} are one module tied whole (their one weight is "
        f"quantized once), but {hit} are selected for quantization and {out} are not{more}; "
        f"select all of them or none: {fix}. Nothing was changed"
    )


def _check(inv: Inventory, selected: set[str], what: str, exclude=()) -> dict[str, str]:
    _check_pruned(inv, selected, what)
    _check_hand(inv, selected, what, exclude)
    whole = whole_module_ties(inv)
    _check_groups(whole, selected, what, exclude)
    for info, src_mod in _ties_touching(inv, selected):
        group = whole.get(info.module_path)
        if group is not None:  # selected with its whole group (checked above)
            continue
        touched = info.module_path if info.module_path in selected else src_mod
        # every selected module tied to the same tensor, at once: the pair alone looped when
        # a third module read it (a second head, T5's embeddings tied whole to `shared`
        # beside a head tied to it: excluding the pair was refused for the third)
        readers = {i.module_path for i in tied_readers(inv, info.path)}
        ends = sorted(({info.module_path, src_mod} | readers) & selected)
        if len(ends) == 1:
            them = "it"
        elif len(ends) == 2:
            them = "both " + " and ".join(map(repr, ends))
        else:
            them = "all of " + ", ".join(map(repr, ends))
        raise TieError(
            f"{what}: the tie {info.path} <- {info.source or 'its own storage'} "
            f"({info.tie.relation!r}) touches {touched!r} "
            f"which would be quantized; only a module tied whole (every parameter, Same) to another "
            f"of its class can share one quantized module. Exclude "
            f"{them} from "
            f"quantization ({_exclude_fix(what, *ends, exclude=exclude)}), or untie "
            f"it first (tying.Plan([tying.free({info.path!r})]).apply(model))"
        )
    return {t: s for t, s in whole.items() if t in selected}


# torch.ao's dynamic quantization: embeddings are weight-only (quint8, 4-bit for bags),
# the other classes take qint8 or float16; a set spec gives every class the one dtype
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
_EMBEDDING_DTYPES = {nn.Embedding: (torch.quint8,), nn.EmbeddingBag: (torch.quint8, torch.quint4x2)}


def _check_dtype(classes, dtype: torch.dtype) -> None:
    """Refuse a class the dtype cannot quantize, before anything changes.

    With ``{nn.Linear, nn.Embedding}`` and the default ``qint8``, torch failed
    half-way with ``AssertionError: Embedding quantization is only supported with
    float_qparams_weight_only_qconfig`` (``inplace=True``: a tied module's seat
    left as ``nn.Identity``); with ``quint8`` the Linear failed instead.
    """
    emb = sorted((c for c in classes if issubclass(c, _EMBEDDINGS)), key=lambda c: c.__name__)
    other = sorted((c for c in classes if not issubclass(c, _EMBEDDINGS)), key=lambda c: c.__name__)
    for c in emb:
        allowed = _EMBEDDING_DTYPES[
            nn.EmbeddingBag if issubclass(c, nn.EmbeddingBag) else nn.Embedding
        ]
        if dtype not in allowed:
            rest = f"; quantize {[o.__name__ for o in other]} in a separate call" if other else ""
            raise TypeError(
                f"quantize_dynamic: {c.__name__} is quantized weight-only, with dtype "
                f"{' or '.join(map(str, allowed))}, got {dtype}; call quantize_dynamic(model, "
                f"{{nn.{c.__name__}}}, dtype=torch.quint8){rest}"
            )
    if other and not emb and dtype not in (torch.qint8, torch.float16):
        # torch failed with "Unknown dtype" or an AssertionError (stop 35 review)
        raise TypeError(
            f"quantize_dynamic: {[c.__name__ for c in other]} are quantized with dtype "
            f"torch.qint8 or torch.float16, got {dtype!r}; pass dtype=torch.qint8 (or "
            f"torch.float16)"
        )
    if emb and other:
        raise TypeError(
            f"quantize_dynamic: {[c.__name__ for c in other]} cannot take dtype {dtype} "
            f"(qint8 or float16 only), which {emb[0].__name__} needs; quantize them in two calls: "
            f"quantize_dynamic(model, {{nn.{emb[0].__name__}}}, dtype=torch.quint8), then "
            f"quantize_dynamic(model, {{{', '.join('nn.' + c.__name__ for c in other)}}})"
        )


# embedding settings a quantized embedding does not read: they act on gradients only
# (padding_idx in nn.Embedding, sparse, scale_grad_by_freq) or with max_norm (norm_type),
# which is refused on its own; a non-zero padding row of a bag is refused below
_GRAD_ONLY = frozenset({"padding_idx", "sparse", "scale_grad_by_freq", "norm_type"})


def _check_embedding(path: str, mod: nn.Module) -> None:
    """Refuse an embedding whose settings torch's quantized module ignores, before any change.

    Each came back computing something else, with no error: ``max_norm`` is dropped
    (a 0.5-capped table: row norms 2.5, outputs 1.7 away; stop 26); a quantized
    ``EmbeddingBag`` always sums (torch passes mode 0 to its kernel whatever ``mode``
    says: ``mode="mean"`` 1.8 away, ``"max"`` 1.6 away) and reads the ``padding_idx``
    row into the bag (a non-zero one: 1.0 away; stop 35).
    """
    if not isinstance(mod, _EMBEDDINGS):
        return
    kind = type(mod).__name__
    if mod.max_norm is not None:
        raise TypeError(
            f"quantize_dynamic: {path!r} is an {kind} with max_norm="
            f"{mod.max_norm}, which torch's quantized embedding ignores (its rows would "
            f"no longer be capped); exclude it (exclude={{{path!r}}}), or renormalize its "
            f"weight and set max_norm=None first"
        )
    if not isinstance(mod, nn.EmbeddingBag):
        return
    if mod.mode != "sum":
        raise TypeError(
            f"quantize_dynamic: {path!r} is an EmbeddingBag with mode={mod.mode!r}, but "
            f"torch's quantized EmbeddingBag always sums (expected mode='sum', got "
            f"{mod.mode!r}): its bags would come back as sums, not as the {mod.mode} it "
            f"computes now. Exclude it "
            f"(exclude={{{path!r}}})"
        )
    pad = mod.padding_idx
    if pad is not None and bool(mod.weight[pad].detach().ne(0).any()):
        raise TypeError(
            f"quantize_dynamic: {path!r} is an EmbeddingBag with padding_idx={pad} whose row "
            f"is not zero, and torch's quantized EmbeddingBag has no padding_idx: that row "
            f"would be added into every bag that holds index {pad}. Exclude it "
            f"(exclude={{{path!r}}}), or zero the row first "
            f"(with torch.no_grad(): model.get_submodule({path!r}).weight[{pad}] = 0)"
        )


def _check_swappable(model: nn.Module, classes) -> None:
    """Refuse what torch would leave in float without a word, before anything changes.

    torch.ao swaps only the classes it has a dynamic module for, and only children:
    ``{nn.Conv2d, nn.LayerNorm, nn.Linear}`` quantized the Linear and left the
    others float, and a model that *is* an ``nn.Linear`` came back float (stop 26
    review; the stop 25 review saw the same with an ``nn.Embedding`` model).
    """
    from torch.ao.quantization.quantization_mappings import (
        get_default_dynamic_quant_module_mappings,
    )

    known = get_default_dynamic_quant_module_mappings()
    missing = sorted(c.__name__ for c in classes if c not in known)
    if missing:
        raise TypeError(
            f"quantize_dynamic: torch has no dynamically quantized module for {missing}; they "
            f"would stay float without a word. Leave them out of qconfig_spec (dynamic "
            f"quantization takes {sorted({c.__name__ for c in known if isinstance(c, type)})})"
        )
    if base_class(model) in classes:
        raise TypeError(
            f"quantize_dynamic: the model itself is a {base_class(model).__name__}, and torch "
            f"swaps child modules only: it would stay float without a word. Wrap it: "
            f"quantize_dynamic(torch.nn.Sequential(model), ...)[0]"
        )


def _later_seats(
    inv: Inventory, selected: set[str], candidates: set[str], what: str, why: str, fix: str
) -> dict[str, str]:
    """``{later path: first path}`` of each selected module seated at several paths.

    A module reached twice (``Sequential(lin, act, lin)``, or one layer in two
    blocks) is quantized once and re-seated at its later paths. Selecting some of its
    paths only is refused, naming them: it would run quantized at one use and float at
    the other, yet it is one module.
    """
    seats: dict[int, list[str]] = {}
    for p in inv.modules:
        if p in candidates:
            seats.setdefault(id(inv.modules[p]), []).append(p)
    again: dict[str, str] = {}
    for paths in seats.values():
        chosen = [p for p in paths if p in selected]
        if chosen and len(chosen) != len(paths):
            raise TieError(
                f"{what}: the module at {chosen[0]!r} is also seated at "
                f"{', '.join(repr(p) for p in paths if p not in selected)} (one module reached "
                f"twice), which {why}: it would run quantized at one use and float "
                f"at the other. {fix} ({paths}) or none"
            )
        again.update({p: chosen[0] for p in chosen[1:]})
    return again


def _drop_declared(model: nn.Module, paths: set[str]) -> None:
    # the ties of a module that now *is* its source are structural; nothing to re-apply
    for prefix, mod in model.named_modules():
        declared = mod.__dict__.get(DECLARED_ATTR)
        if declared:
            mod.__dict__[DECLARED_ATTR] = {
                k: v for k, v in declared.items() if join(prefix, k).rsplit(".", 1)[0] not in paths
            }


def quantize_dynamic(
    model: nn.Module,
    qconfig_spec: set | dict | None = None,
    dtype: torch.dtype = torch.qint8,
    inplace: bool = False,
    exclude: Iterable[str] = (),
) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` that keeps ties right or refuses.

    Args:
        model: a (possibly tied) float model.
        qconfig_spec: module classes (a set) to quantize; default ``{nn.Linear}``.
        dtype: ``torch.qint8`` or ``torch.float16``; ``torch.quint8`` for
            ``{nn.Embedding}`` (weight-only; a whole-module tie of embeddings
            is quantized once, like a Linear's).
        inplace: change ``model`` itself (default: a deep copy).
        exclude: module paths left in float, with everything inside them
            (e.g. ``{"lm_head"}`` when the head is tied to the embedding).

    Returns:
        The quantized model: a module tied whole to another is the very same
        quantized module object; ``tying.verify`` passes.

    Raises:
        TieError: a tie that touches a module to be quantized and is not a
            whole-module ``Same`` tie between two selected modules (named, with
            the fix). Raised before anything changes.
        TypeError: when ``qconfig_spec`` is not a set of module classes, or
            holds a class ``dtype`` cannot quantize (``nn.Embedding`` takes
            ``torch.quint8`` only, ``nn.Linear`` ``qint8``/``float16``), before
            any change; also a class torch has no dynamic module for
            (``nn.Conv2d``) and a model that is itself of a selected class (torch
            swaps children only): both would stay float without a word; and a
            selected embedding whose settings torch's quantized module ignores
            (``max_norm``; an ``EmbeddingBag`` with ``mode`` other than ``"sum"``,
            or a non-zero ``padding_idx`` row). Any failure inside torch leaves ``model`` as it was, and so does a
            selected module torch left in float (``TieError``, a safety net).
        TieError: when a module tied whole and its source carry different hooks
            or settings (``batch_first`` of an ``nn.LSTM``; one quantized module will
            serve both), before any change.
        TieError: when an ``exclude`` path is not a module of ``model`` (naming
            the closest), or covers some paths only of a module reached under several.
            ``TypeError`` for an ``exclude`` item that is not a str. A path inside
            another excluded one (``exclude=["0.0", "0"]``) is excluded with it.

    Example:
        >>> import torch, tying
        >>> from tying.interop.quantization import quantize_dynamic
        >>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 4),
        ...                          "head": torch.nn.Linear(4, 10, bias=False)})
        >>> _ = tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
        >>> quantize_dynamic(m, {torch.nn.Linear})
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: quantize_dynamic: the tie head.weight <- emb.weight (Same()) ...
    """
    from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

    classes = {nn.Linear} if qconfig_spec is None else qconfig_spec
    if not isinstance(classes, (set, frozenset)) or not all(isinstance(c, type) for c in classes):
        raise TypeError(
            f"quantize_dynamic: qconfig_spec must be a set of module classes (e.g. {{nn.Linear}}), "
            f"got {qconfig_spec!r}"
        )
    _check_dtype(classes, dtype)
    _check_swappable(model, classes)
    inv = Inventory(model)
    if isinstance(exclude, str):
        exclude = [exclude]
    exclude = list(exclude)
    for path in exclude:
        if not isinstance(path, str):
            raise TypeError(
                f"quantize_dynamic: exclude must hold module paths (str), got "
                f"{type(path).__name__} {path!r}; pass e.g. exclude={{'lm_head'}}"
            )
        if path not in inv.modules or not path:
            raise TieError(
                f"quantize_dynamic: exclude={path!r} is not a module path of the model"
                f"{inv.closest(path)}"
            )
    # a path inside another excluded one is excluded with it: setting it aside on its own
    # too, after its parent, put the nn.Identity placeholder back instead of the module
    # (exclude=["0.0", "0"]: the Linear became an Identity, outputs 0.76 away; stop 39)
    exclude = [p for p in dict.fromkeys(exclude) if not any(p.startswith(e + ".") for e in exclude)]

    def excluded(p: str) -> bool:
        return any(p == e or p.startswith(e + ".") for e in exclude)

    selected = {
        p for p, m in inv.modules.items() if p and base_class(m) in classes and not excluded(p)
    }
    groups = _check(inv, selected, "quantize_dynamic", exclude)
    for path, src in groups.items():  # one quantized module will serve both: one set of hooks
        refuse_other_hooks("quantize_dynamic", path, src, inv.modules[path], inv.modules[src])
        refuse_other_settings(
            "quantize_dynamic", path, src, inv.modules[path], inv.modules[src], _GRAD_ONLY
        )
    for p in sorted(selected):
        _check_embedding(p, inv.modules[p])
    # one module reached under several paths (Sequential(lin, act, lin)): torch lists
    # children without duplicates and quantizes the first reference only, the later ones
    # stayed float; they are re-seated with the quantized module below. An exclude= that
    # covers some of its paths only would leave it float at one use, quantized at another.
    again = _later_seats(
        inv,
        selected,
        {p for p, m in inv.modules.items() if p and base_class(m) in classes},
        "quantize_dynamic",
        "exclude= covers",
        "Exclude every seat",
    )
    target = model if inplace else copy.deepcopy(model)
    # anything torch fails on half-way (inplace=True) is undone: the seats emptied below
    # and the modules torch swapped or gave a qconfig stayed changed (stop 26 review)
    undo = [(m, dict(m._modules), "qconfig" in m.__dict__) for m in target.modules()]
    # the tied modules leave (they come back as their quantized source), and so do the
    # excluded ones (they come back untouched)
    kept = {p: target.get_submodule(p) for p in exclude}
    try:
        for path in [*groups, *exclude]:
            set_module(target, path, nn.Identity())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            out = ao_quantize_dynamic(target, set(classes), dtype=dtype, inplace=True)
        for path, module in kept.items():
            set_module(out, path, module)
        for path, src in groups.items():
            set_module(out, path, out.get_submodule(src))
        for path, src in again.items():
            set_module(out, path, out.get_submodule(src))
        # a safety net for what the checks before cannot foresee: a selected module that
        # torch left in float would be reported quantized by nobody (stop 26 review)
        floats = sorted(p for p in selected if base_class(out.get_submodule(p)) in classes)
        if floats:
            raise TieError(
                f"quantize_dynamic: torch left {', '.join(map(repr, floats[:4]))} in float "
                f"though {type(out.get_submodule(floats[0])).__name__} was selected; nothing "
                f"was quantized (the model is as it was). Exclude it (exclude={{{floats[0]!r}}})"
            )
    except BaseException:
        for mod, children, had_qconfig in undo:
            mod._modules.clear()
            mod._modules.update(children)
            if not had_qconfig:
                mod.__dict__.pop("qconfig", None)
        raise
    _drop_declared(out, set(groups))
    return out


def quantize_(
    model: nn.Module,
    config,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """torchao's ``quantize_`` (e.g. ``Int8WeightOnlyConfig()``) that keeps ties right or refuses.

    A module tied whole to a selected module of its class is skipped: it reads
    the source's quantized weight through the tie (one int8 tensor, every use). A
    config that replaces the module (torchao's ``QATConfig``, ``FakeQuantizedLinear``)
    seats the one new module at both paths. All or nothing: if torchao fails on a
    layer, the model is put back as it was and the error names the layer.

    Args:
        model: a (possibly tied) float model, changed in place.
        config: a torchao config (``Int8WeightOnlyConfig()``, ...).
        filter_fn: ``(module, fqn) -> bool``; default: every ``nn.Linear``.

    Returns:
        ``model``, quantized; ``tying.verify`` passes.

    Raises:
        TieError: a tie that touches a selected module other than a whole-module
            ``Same`` tie between two selected modules; raised before any change.
        TypeError: for a ``FqnToConfig`` (``ModuleFqnToConfig``): torchao takes no
            ``filter_fn`` with it, which the skip of a tied module needs; one call per
            config with a ``filter_fn`` does the same. Raised before any change.
        TieError: a module swap (QAT) where the two ends of a whole tie carry other
            hooks or settings; the model is put back as it was.

    Example:
        >>> import torch, tying
        >>> from torchao.quantization import Int8WeightOnlyConfig
        >>> from tying.interop.quantization import quantize_
        >>> m = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> q = quantize_(m, Int8WeightOnlyConfig())
        >>> q[2].weight is q[0].weight, type(q[0].weight).__name__
        (True, 'Int8Tensor')
    """
    try:
        from torchao.quantization import quantize_ as ao_quantize_
    except ImportError as err:  # pragma: no cover - exercised only without torchao
        raise ImportError(
            "tying.interop.quantization.quantize_ needs torchao: pip install torchao"
        ) from err

    from torchao.quantization import FqnToConfig

    if isinstance(config, FqnToConfig):
        # torchao takes no filter_fn with it, and the skip of a tied module is one: it
        # failed with "Custom filter_fn and FqnToConfig were both specified", a filter_fn
        # the caller never passed (stop 42)
        raise TypeError(
            f"quantize_: a {type(config).__name__} (one config per module name) cannot be "
            f"applied here: the tied modules are skipped through filter_fn, which torchao "
            f"does not take with it. Call quantize_ once per config, with filter_fn selecting "
            f"its modules, e.g. quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, "
            f"fqn: fqn in {{'0', '2'}}); the model is unchanged"
        )

    def default(mod, fqn):
        return isinstance(mod, nn.Linear)

    choose = filter_fn or default
    inv = Inventory(model)
    selected = {p for p, m in inv.modules.items() if p and choose(m, p)}
    groups = _check(inv, selected, "quantize_")
    # a module seated in two parents (one layer in two blocks): torchao visited it at each
    # and failed at the second on the weight it had just quantized (NotImplementedError
    # aten.view, half-way); it is quantized at its first seat only and seated again after
    again = _later_seats(
        inv,
        selected,
        {p for p in inv.modules if p},
        "quantize_",
        "filter_fn leaves out",
        "Select every seat",
    )
    skip = {id(inv.modules[p]) for p in groups}
    sources = {src: inv.modules[src] for src in groups.values()}
    # torchao changes the model in place with no undo of its own: the children and the
    # parameters of every module are put back if anything below fails
    # (torchao failing half-way, e.g. a group size that does not divide one layer's
    # width, left the layers before it quantized and named no layer)
    undo = [(m, dict(m._modules), dict(m._parameters), set(m.__dict__)) for m in model.modules()]
    reached: list[str] = []

    def pick(m: nn.Module, fqn: str) -> bool:
        chosen = id(m) not in skip and fqn not in again and choose(m, fqn)
        if chosen:
            reached.append(fqn)
        return chosen

    try:
        ao_quantize_(model, config, filter_fn=pick)
        swapped = _reseat_swapped(model, groups, sources, inv)
    except BaseException as err:
        for mod, children, params, attrs in undo:
            mod._modules.clear()
            mod._modules.update(children)
            mod._parameters.clear()
            mod._parameters.update(params)
            for name in set(mod.__dict__) - attrs:  # torchao's extra_repr of a quantized weight
                del mod.__dict__[name]
        if reached and not isinstance(err, TieError):
            err.add_note(
                f"tying.interop.quantization.quantize_: torchao failed at {reached[-1]!r}; "
                f"the model is as it was (nothing quantized). Leave {reached[-1]!r} out with "
                f"filter_fn, or pick a config it fits"
            )
        raise
    for path, first in again.items():
        set_module(model, path, model.get_submodule(first))
    _drop_declared(model, swapped)
    return model


def _reseat_swapped(
    model: nn.Module, groups: dict[str, str], sources: dict[str, nn.Module], inv: Inventory
) -> set[str]:
    """Seat a source module that torchao *replaced* at each path tied whole to it.

    A weight config (``Int8WeightOnlyConfig``) swaps the source's weight in place and the
    skipped tied module reads it through the tie. A QAT config (``QATConfig(...,
    step="prepare")``) replaces the module (``FakeQuantizedLinear``): the tied module then
    read a module no longer in the model, and every forward was refused, telling the user
    to call the very function they had called (stop 57). The one new module now serves
    both paths, as torch.ao's does in :func:`quantize_dynamic`; hooks or settings that
    differ between the two would be lost, so they are refused (the caller undoes).

    Returns:
        the tied paths that now hold their source's module (their ties are structural).
    """
    done = set()
    for path, src in groups.items():
        new = model.get_submodule(src)
        if new is sources[src]:
            continue
        refuse_other_hooks("quantize_", path, src, inv.modules[path], sources[src])
        refuse_other_settings("quantize_", path, src, inv.modules[path], sources[src])
        set_module(model, path, new)
        done.add(path)
    return done
