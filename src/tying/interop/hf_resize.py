"""Resizing the vocabulary of a Plan-tied Hugging Face model: :func:`resize_token_embeddings`.

HF's ``resize_token_embeddings`` gives the embeddings new, larger (or smaller)
tables and re-ties only what its config declares; a ``tying`` tie on an embedding
would then read a table of the old shape, or be replaced. :func:`resize_token_embeddings`
frees every tie on the embeddings, lets HF resize, re-applies the ties, and checks
that the kept tokens read what they read before; all or nothing.

Importable as ``tying.hf.resize_token_embeddings`` and
``tying.interop.hf.resize_token_embeddings`` (split out of :mod:`tying.interop.hf`
at stop 53; the name is re-exported there).

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory, join
from tying.core.plan import Plan
from tying.core.relations import relation_from_spec
from tying.core.rules import share
from tying.core.slots import slots_of
from tying.core.verify import own_declarations, verify
from tying.interop.hf_head_bias import bias_beside, follow_head, owner_bias
from tying.interop.hf_plan import (
    _UNTIED_FIX,
    _config_ties,
    _config_ties_not_held,
    _list_pairs,
    _value_at,
)
from tying.interop.hf_resize_heads import (
    output_embeddings_hidden,
    resize_unnamed_head,
    square_output,
    unnamed_head,
)


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
        **kwargs: ``pad_to_multiple_of``, ``mean_resizing``, passed on. With
            ``pad_to_multiple_of``, a ``final_logits_bias`` (BART family) gets one entry
            per row of the padded head, zeros added, as BART's own resize gives it (Marian
            and MVP sized it to the unpadded count: every forward failed after). A
            vocabulary bias on the module holding a bias-free head (ESM's ``lm_head.bias``
            beside ``lm_head.decoder``, left at the old size by HF) follows the head the
            same way (:mod:`tying.interop.hf_head_bias`). DeBERTa(-v2) with ``legacy=False``
            keeps its hidden-to-hidden ``lm_head.dense`` (HF made it a vocabulary projection)
            and LXMERT's untied or Plan-tied head gets the new rows (HF left it behind):
            :mod:`tying.interop.hf_resize_heads`.

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
    if (
        new_num_tokens is None
        and kwargs.get("pad_to_multiple_of") is not None
        and emb_in is not None
    ):
        # HF's base class pads the current size then; Marian/MVP pass None on to their
        # final_logits_bias and crashed there (TypeError '<=' ... 'NoneType', stop 61)
        new_num_tokens = int(emb_in.weight.shape[0])
    # DeBERTa(-v2) with legacy=False names its hidden-to-hidden lm_head.dense as the output
    # embedding: HF made it (vocab x hidden) and every forward failed. Its vocabulary
    # projection is the word embedding itself; HF resizes that alone, the bias follows it
    square = square_output(emb_in, emb_out)
    square_bias = bias_beside(model, emb_out, emb_in.weight.shape[0]) if square else None
    emb_out = None if square else emb_out
    # LXMERT names no head: found by its weight (tied) or beside its bias (untied), resized
    # when HF leaves it at the old rows (untied, or freed from a Plan: every forward failed)
    head = unnamed_head(model, emb_in) if emb_out is None and not square else None
    head_slots = {
        join(p, "weight") for p, m in model.named_modules(remove_duplicate=False) if m is head
    }
    bias_before = _bias_follows_head(model, emb_out)
    # ESM adds lm_head.bias beside lm_head.decoder: HF left it at the old size (stop 62)
    owner_bias_before = square_bias or owner_bias(model, emb_out or head, emb_in)
    embed_slots = _resized_slots(model, emb_in, emb_out or head)
    # the ties declared on this model itself: a tie a plan over a model containing it
    # declared cannot be freed and re-made here (Plan.declared of a part lists those too
    # since stop 58, which let such a resize go ahead)
    rules = [
        share(target, like, relation_from_spec(spec["relation"]))
        for target, like, spec in own_declarations(model)
    ]
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
        with output_embeddings_hidden(model) if square else contextlib.nullcontext():
            out = model.resize_token_embeddings(new_num_tokens, **kwargs)
        mean_resizing = kwargs.get("mean_resizing", True)
        if head is not None:
            rows = model.get_input_embeddings().weight.shape[0]
            retied = any(r.target in head_slots for r in involved)
            resize_unnamed_head(model, head, rows, mean_resizing, retied)
        if bias_before is not None:
            _follow_head_with_bias(model, bias_before)
        if owner_bias_before is not None:
            reads = None if square else model.get_output_embeddings()
            # no output embedding named (LXMERT), or not the vocabulary projection (DeBERTa):
            # the head reads the resized input embedding
            reads = reads if reads is not None else model.get_input_embeddings()
            follow_head(owner_bias_before, reads.weight.shape[0], mean_resizing)
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


def _bias_follows_head(model: nn.Module, emb_out) -> torch.Tensor | None:
    """``model.final_logits_bias`` (BART-family) when it has one entry per row of the head."""
    bias = getattr(model, "final_logits_bias", None)
    weight = getattr(emb_out, "weight", None)
    if isinstance(bias, torch.Tensor) and isinstance(weight, torch.Tensor):
        if bias.shape[-1] == weight.shape[0]:
            return bias
    return None


def _follow_head_with_bias(model: nn.Module, before: torch.Tensor) -> None:
    """Give ``final_logits_bias`` one entry per row of the resized head, as BART does.

    Marian and MVP resize their ``final_logits_bias`` to ``new_num_tokens`` before the
    ``pad_to_multiple_of`` rounding, so a padded head (96 rows for 84 tokens) met a bias
    of 84 and every forward failed (``RuntimeError: The size of tensor a (96) must match
    the size of tensor b (84)``), and a shrink then pad (71 -> 66 -> 80) dropped the
    entries of rows the head kept. Built from the bias before HF's call, as BART's
    ``_resize_final_logits_bias(rows)``: kept entries unchanged, added ones zero, in the
    bias's own dtype and device (HF's grow made a bfloat16 bias float32).
    """
    rows = model.get_output_embeddings().weight.shape[0]
    now = model.final_logits_bias
    # HF's zeros for the added entries are float32 on every family: torch.cat made a
    # bfloat16 bias float32 on a grow (then the logits), unpadded or padded
    if now.shape[-1] == rows and now.dtype == before.dtype and now.device == before.device:
        return
    keep = min(rows, before.shape[-1])
    new = torch.zeros((*before.shape[:-1], rows), dtype=before.dtype, device=before.device)
    new[..., :keep] = before[..., :keep]
    model.final_logits_bias = new  # an existing buffer: registered as it was


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
    from tying.core.outside import live_wrapper, plain_ddp_holding

    found = live_wrapper(model)
    if found is None:  # a plain DistributedDataParallel(model) leaves no mark (stop 53)
        held = plain_ddp_holding(model)
        if held is None:
            return
        found = (held[0], "plain ddp")
    path, helper = found
    at = f" (at {path!r})" if path else ""
    if helper == "plain ddp":
        what = (
            "held by a torch DistributedDataParallel wrapper, which all-reduces only the "
            "tensors its module held when it was built, with the shapes they had"
        )
        fix = _rewrap("resize before wrapping", "wrap inner again")
    elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        what = (
            f"a {type(model).__name__} wrapper, which reduces (or replicates) only the tensors "
            f"its module held when it was built, with the shapes they had"
        )
        fix = _rewrap(
            "resize the model inside before wrapping it", "wrap inner again (td.ddp(inner))"
        )
    elif helper == "ddp":
        what = (
            "wrapped by td.ddp (DistributedDataParallel), which all-reduces only the tensors "
            "it was wrapped with, in buckets of the shapes they had: the resized embeddings "
            "could not train under it (its next training forward would be refused)"
        )
        fix = _rewrap("resize before wrapping", "td.ddp(inner) again")
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


def _rewrap(lead: str, wrap: str) -> str:
    """The fix for a resize under a DDP wrapper: drop it, resize the model inside, wrap again."""
    return (
        f"{lead}: drop the wrapper (inner = wrapped.module; del wrapped), call "
        f"tying.hf.resize_token_embeddings(inner, n), then {wrap} and build the optimizer anew"
    )


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
