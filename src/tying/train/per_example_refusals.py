"""What per-example gradients refuse, and the errors that name the layer (claim D10).

:class:`~tying.train.per_example._PerExample` runs these around each call: before it, a
full backward hook or a parameter's gradient hook (:func:`_refuse_backward_hooks`) and an
``nn.Embedding`` that renormalises or is sparse (:func:`_refuse_in_place_renorm`); while
one example's forward and loss run, an output or a loss with the whole batch's rows
(:func:`_refuse_batch_sized_output`, :func:`_refuse_batch_sized_loss`); after torch
failed under ``vmap``, an error that names the recurrent layer
(:func:`_refuse_recurrent_kernels`), the module whose buffer was written in place
(:func:`_refuse_buffer_in_place`) or the custom ``autograd.Function`` vmap cannot run
(:func:`_refuse_function_without_vmap`), the original chained.

Split from ``per_example.py`` (house rule 1: under 1,000 lines); every name here is
still importable from :mod:`tying.train.per_example`.
"""

from __future__ import annotations

import torch
from torch import nn

from tying.train._vetting import BUFFER_FIX, refuse_parameter_hooks


def _refuse_backward_hooks(modules, names, params) -> None:
    """Refuse the hooks that no way to per-example gradients runs right (checked per call).

    A full backward hook (module or global, ``register_full_backward_hook`` and its
    ``_pre_hook``) wraps the module's inputs and outputs in an autograd.Function:
    ``vmap(grad(...))`` fails on it with torch's "must override the setup_context
    staticmethod", and the expanded way runs it on the whole batch's gradients, which
    gave wrong per-example gradients (0.76 off on a 6-8-3 MLP, found here). A gradient
    hook on a parameter (``Tensor.register_hook``) never runs, because the parameters
    are swapped for substitutes: whatever it changes would be missing from every example.
    """
    g = nn.modules.module
    if g._global_backward_pre_hooks or (
        g._global_backward_hooks and g._global_is_full_backward_hook
    ):
        raise ValueError(
            "a global full backward hook is registered "
            "(torch.nn.modules.module.register_module_full_backward_hook or ..._pre_hook): "
            "per-example gradients cannot run it right (torch.func fails on it, a batched "
            "backward would hand it the whole batch); remove it (handle.remove()) while "
            "taking DP steps"
        )
    for path, mod in modules:
        if mod._backward_pre_hooks or (mod._backward_hooks and mod._is_full_backward_hook):
            raise ValueError(
                f"{path or '<root>'} ({type(mod).__name__}) has a full backward hook "
                f"(register_full_backward_hook or register_full_backward_pre_hook): "
                f"per-example gradients cannot run it right (torch.func fails on it, a "
                f"batched backward would hand it the whole batch); remove it "
                f"(handle.remove()) while taking DP steps"
            )
    refuse_parameter_hooks(names, params)


def _refuse_recurrent_kernels(modules, err: RuntimeError) -> None:
    """Name the recurrent layer when ``vmap(grad(...))`` failed inside torch's RNN kernels.

    ``nn.LSTM``/``nn.GRU``/``nn.RNN`` run fused kernels that write into buffers of one
    example's shape in place; with per-example weights under ``vmap`` most of them fail
    with torch's "output with shape [1, 20] doesn't match the broadcast shape [6, 1, 20]"
    (a float64 LSTM, every GRU and RNN tried at stop 23; a float32 LSTM runs, and its
    gradients equal a per-example loop). The cells (``nn.RNNCell``/``GRUCell``/``LSTMCell``)
    fail the same way in every dtype (stop 33: torch's message named no layer). A
    ``PackedSequence`` (``pack_padded_sequence``) fails under ``vmap`` in any way, the
    expanded one too ("stack expects each tensor to be equal size", ".item()"; stop 57:
    a RuntimeError naming no layer). Only a failure of a model holding one is turned
    into this error; the original is chained.
    """
    rnns = [(path, m) for path, m in modules if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]
    if not rnns:
        return
    path, mod = rnns[0]
    kind = type(mod).__name__
    dp_kind = "DPRNN" + kind[3:] if kind.startswith("RNN") else "DP" + kind
    where = "opacus.layers.dp_rnn" if kind.endswith("Cell") else "opacus.layers"
    # a frozen LSTM fails too (torch has no batching rule for aten::lstm.input): to
    # advise freezing a layer that is already frozen sends the user round in a circle
    frozen = not any(p.requires_grad for p in mod.parameters())
    freeze = (
        " (it is frozen and still failed: its kernel cannot run under vmap either way)"
        if frozen
        else ", or freeze it (requires_grad_(False))"
    )
    raise ValueError(
        f"{path or '<root>'} ({kind}): per-example gradients through torch's fused "
        f"recurrent kernel failed under torch.func.vmap ({str(err)[:120]}); replace it with "
        f"{where}.{dp_kind} (the same layer built from nn.Linear, which mode='vmap' "
        f"handles){freeze}; a PackedSequence cannot run "
        f"under vmap at all: pass the padded batch and mask the padding by length"
    ) from err


_NO_VMAP_SUPPORT = ("must override the setup_context staticmethod", "does not have vmap support")


def _refuse_function_without_vmap(modules, err: RuntimeError) -> None:
    """Name the custom ``autograd.Function`` and the module applying it when ``vmap``
    failed on it: one without a ``setup_context`` staticmethod (``forward(ctx, x)``, the
    old style) or without a vmap rule. torch's message ("In order to use an
    autograd.Function with functorch transforms ... it must override the setup_context
    staticmethod") named neither the Function nor the module (stop 52). The innermost
    ``Function.apply`` frame of the traceback gives the Function, the innermost module
    forward above it the module (none: the loss function applied it); the original error
    is chained."""
    text = str(err)
    if not any(w in text for w in _NO_VMAP_SUPPORT):
        return
    owners = {id(m): (path, m) for path, m in modules}
    fn, owner, tb = None, None, err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        cls = frame.f_locals.get("cls") if frame.f_code.co_name == "apply" else None
        if isinstance(cls, type) and issubclass(cls, torch.autograd.Function):
            fn = cls
            break
        me = frame.f_locals.get("self")
        if id(me) in owners and owners[id(me)][1] is me:
            owner = owners[id(me)]
        tb = tb.tb_next
    if fn is None:
        return
    where = (
        "the loss function"
        if owner is None
        else f"the forward of {owner[0] or '<root>'} ({type(owner[1]).__name__})"
    )
    lacks = "setup_context staticmethod" if "setup_context" in text else "vmap rule"
    if fn.__module__.startswith("torch."):  # torch.utils.checkpoint(use_reentrant=True)
        fix = (
            f"{fn.__module__}.{fn.__qualname__} is torch's own (CheckpointFunction: "
            f"torch.utils.checkpoint with use_reentrant=True); drop it while taking DP steps, "
            f"or use mode='ghost', which handles checkpointing"
        )
    else:
        fix = (
            "Give it forward(*args) without ctx, setup_context(ctx, inputs, output), and a "
            "vmap staticmethod or generate_vmap_rule = True "
            "(https://pytorch.org/docs/stable/notes/extending.func.html), or use "
            "mode='ghost', which runs its backward on the whole batch (and refuses it if "
            "that backward mixes examples)"
        )
    raise ValueError(
        f"per-example gradients: the custom autograd.Function {fn.__qualname__}, applied in "
        f"{where}, has no {lacks}, which torch.func.vmap needs to run it one example at a "
        f"time (torch: {text[:90]}...). {fix}. No parameter changed"
    ) from err


_DATA_DEPENDENT = "data-dependent control flow"
_MASK_FIX = {  # transformers' attention-mask helpers that read the mask's values (stop 58)
    "_ignore_causal_mask_sdpa": (
        "this is transformers' sdpa attention checking whether the causal mask can be "
        "skipped (it reads the padding mask's values); load the model with "
        "attn_implementation='eager' (or call model.set_attn_implementation('eager')), "
        "whose causal mask is built without reading them"
    ),
    "_ignore_bidirectional_mask_sdpa": (
        "this is transformers checking whether a bidirectional (encoder) attention mask "
        "can be skipped (it reads the padding mask's values, in 'eager' attention too); "
        "hand the model the mask in its 4-d additive form, which it takes as it is: "
        "mask4 = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min "
        "inside your forward, model(input_ids=ids, attention_mask=mask4); a causal "
        "decoder's mask stays 2-d, with attn_implementation='eager'"
    ),
}


def _refuse_data_dependent_flow(err: RuntimeError) -> None:
    """Name the line when ``vmap`` failed on a tensor's value read by Python (``if t:``,
    ``t.item()``, ``t.all()`` in a condition). torch's message ("vmap: It looks like
    you're either (1) calling .item() on a Tensor or (2) ... data-dependent control
    flow") names no line; on a transformers model with an ``attention_mask`` it is the
    mask helpers (GPT-2, Llama, BERT, T5, BART, stop 58), whose fix is named. The
    innermost frame outside torch and tying is named; the original error is chained."""
    text = str(err)
    if _DATA_DEPENDENT not in text:
        return
    frame, tb = None, err.__traceback__
    while tb is not None:
        f = tb.tb_frame
        name = f.f_code.co_filename.replace("\\", "/")
        if "/torch/" not in name and "/tying/" not in name:
            frame = (f.f_code.co_filename, tb.tb_lineno, f.f_code.co_name)
        tb = tb.tb_next
    if frame is None:
        return
    import linecache

    path, line, func = frame
    code = linecache.getline(path, line).strip()
    fix = _MASK_FIX.get(func) or (
        "rewrite it without reading a tensor's value (torch.where for a branch, no .item()), "
        "or take the per-sample gradients with Opacus' hooks "
        "(tying.train.grad_sample_module), which run the forward on the whole batch"
    )
    raise ValueError(
        f"per-example gradients: the forward reads a tensor's value in Python in {func} "
        f"({path}:{line}: {code}), which torch.func.vmap cannot run one example at a time "
        f"(torch: {text[:60]}...); {fix}. No parameter changed"
    ) from err


def _refuse_buffer_in_place(modules, err: RuntimeError) -> None:
    """Name the module when ``vmap`` failed on an in-place write inside a module that
    holds buffers (a running statistic updated from the batch, which the probe of
    :class:`~tying.train._vetting.BufferWrites` did not see: a forward that writes only
    now and then, or one that fails on the whole batch). torch's own message ("vmap:
    inplace arithmetic(self, *extra_args) is not possible ...") names no module. The
    innermost frame of the traceback whose ``self`` is such a module is named; the
    original error is chained."""
    text = str(err)
    if not any(w in text for w in ("inplace", "in-place", "in place")):
        return
    owners = {id(m): (path, m) for path, m in modules if m._buffers}
    found, tb = None, err.__traceback__
    while tb is not None:
        me = tb.tb_frame.f_locals.get("self")
        if id(me) in owners and owners[id(me)][1] is me:
            found = owners[id(me)]
        tb = tb.tb_next
    if found is None:
        return
    path, mod = found
    raise ValueError(
        f"per-example gradients: {path or '<root>'} ({type(mod).__name__}) failed under "
        f"torch.func.vmap on an in-place write (torch: {text[:100]}...), most likely to one "
        f"of its buffers {sorted(mod._buffers)} from the batch: such a buffer would hold "
        f"un-noised statistics of the private data, which the privacy accounting (epsilon) "
        f"does not cover. No parameter changed. {BUFFER_FIX}"
    ) from err


def _refuse_in_place_renorm(modules) -> None:
    """Refuse an ``nn.Embedding``/``nn.EmbeddingBag`` with ``max_norm``, or a trainable
    one with ``sparse=True``, before anything runs.

    A ``max_norm`` forward renormalises rows of the weight in place
    (``torch.embedding_renorm_``), which ``torch.func.vmap`` cannot run (torch's
    "embedding_renorm_ ... is not possible because there exists a Tensor `other` ...",
    trainable weight or frozen), and which a probe forward on the batch would have applied
    to the model before that error (stop 33: an ``EmbeddingBag(max_norm=0.5)`` was left
    renormalised, rows moved by 1.7, by the call that failed). A sparse gradient has no
    per-example form here (torch's "Could not run 'aten::view' ... 'SparseCPU' backend",
    naming no layer).
    """
    for path, mod in modules:
        if not isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
            continue
        kind = type(mod).__name__
        if mod.max_norm is not None:
            raise ValueError(
                f"{path or '<root>'} ({kind}) has max_norm={mod.max_norm}: its forward "
                f"renormalises the weight in place, which per-example gradients "
                f"(torch.func.vmap) cannot run; set max_norm=None and renormalise after each "
                f"step instead (torch.embedding_renorm_ under torch.no_grad())"
            )
        if mod.sparse and mod.weight.requires_grad:
            raise ValueError(
                f"{path or '<root>'} ({kind}) has sparse=True: its gradient is a sparse "
                f"tensor, which per-example gradients (torch.func.vmap) cannot form; set "
                f"sparse=False (DP-SGD's noise makes every row's gradient dense anyway), or "
                f"freeze it (requires_grad_(False))"
            )


def _refuse_inference_mode(who: str) -> None:
    """Refuse a call under ``torch.inference_mode()`` (stop 38): no way to per-example
    gradients runs without autograd. ``mode="vmap"`` failed with torch's "element 0 of
    tensors does not require grad"; ghost clipping returned norms of 0 and a clipped sum
    of 0, so a DP step applied noise alone, with no error. (``torch.no_grad()`` is fine:
    both ways turn gradients on for their own computation, as ``torch.func.grad`` does.)
    """
    if torch.is_inference_mode_enabled():
        raise ValueError(
            f"{who}: called under torch.inference_mode(), where autograd records nothing, "
            f"so there is no per-example gradient to compute; call it outside the "
            f"inference_mode block (torch.no_grad() is fine), on inputs made outside it"
        )


def _refuse_batch_sized_loss(loss: torch.Tensor) -> None:
    """Refuse a loss that gives one example as many rows of losses as the batch (stop 36).

    Each example's loss is computed on a batch of one, so a loss that broadcasts against
    a tensor holding the whole batch (per-example weights captured from outside the call,
    ``ce(out, y) * w`` with ``w`` of shape ``(B,)``) returned ``(B,)`` for every example:
    the sum gave each example the gradient of its loss times ``w.sum()``, 4.2x off a
    per-example loop with no error. Ghost clipping applies the loss to the batch and is
    right for it.
    """
    raise ValueError(
        f"loss_fn returned shape {tuple(loss.shape)} for one example, as many rows as the "
        f"batch: per-example gradients apply the loss to each example alone (a batch of "
        f"one), so its losses must have that batch first, shape (1, ...) (or be 0-d). A "
        f"loss that broadcasts against a tensor of the whole batch captured outside the "
        f"call (per-example weights: ce(out, y) * w) gives every example all the batch's "
        f"losses; pass such a tensor in y (e.g. y = torch.stack([target, w], 1), split "
        f"inside loss_fn) or use mode='ghost', which applies the loss to the batch (a "
        f"loss with one row per token, as many as the batch, can sum them per example)"
    )


def losses_per_example(losses, B: int) -> torch.Tensor:
    """The rule both modes share (stop 54): ``loss_fn`` on the batch returns its losses
    batch first, ``(B, ...)``; any other dimension is summed per example, as the
    per-example loop's ``.sum()`` and ``mode="vmap"`` do. Returns ``(B,)``.

    Ghost clipping refused ``(B, D)`` and ``(B, T)`` rows that ``mode="vmap"`` summed, so
    the same loss ran in one mode and was refused in the other; it read a flat
    ``(B*T,)`` loss as B*T examples and blamed an input. A 0-d loss (``reduction=
    "mean"``/``"sum"``) on the batch has no per-example losses and is refused.
    """
    if not isinstance(losses, torch.Tensor):
        raise TypeError(
            f"loss_fn must return a tensor of one loss per example, shape (B,) = ({B},), got "
            f"{type(losses).__name__}; return the torch loss with reduction='none'"
        )
    if losses.dim() == 0 or losses.shape[0] != B:
        raise ValueError(
            f"loss_fn must return one loss per example, shape (B,) = ({B},) (or (B, ...), "
            f"summed per example), got shape {tuple(losses.shape)}; use reduction='none' "
            f"and keep the batch first, in the inputs and the loss (a 0-d loss, reduction='mean' or 'sum', has no "
            f"per-example losses to clip; a flat (B*T,) loss, view it as (B, T))"
        )
    # flatten(1), not reshape(B, -1): an empty batch's (0, T) has no -1 to infer (stop 60)
    return losses if losses.dim() == 1 else losses.flatten(1).sum(1)


def _refuse_batch_sized_output(out, B: int) -> None:
    """Refuse a forward whose output for one example has the whole batch's rows (stop 36).

    A forward that reads a tensor of the whole batch kept outside its inputs (a
    per-example scale or mask set as a plain attribute before the call) broadcast each
    example's batch of one to ``(B, ...)``: under a 0-d loss (``F.mse_loss``) every
    example got the gradient of the whole batch's broadcast outputs, 56 % off a
    per-example loop with no error. Checked on a tensor output and on the tensors of a
    tuple, list or dict output.
    """
    if isinstance(out, dict):
        leaves = tuple(out.values())
    elif isinstance(out, (tuple, list)):
        leaves = out
    else:
        leaves = (out,)
    for t in leaves:
        if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == B:
            raise ValueError(
                f"the forward returned shape {tuple(t.shape)} for one example of a batch of "
                f"{B}: per-example gradients run it on each example alone (a batch of one), "
                f"so its output must have that batch first, shape (1, ...). A forward that "
                f"broadcasts against a tensor of the whole batch kept outside its inputs (a "
                f"per-example mask or scale set as an attribute) gives every example the "
                f"whole batch's outputs; pass such a tensor as an input (x as a tuple, "
                f"batch first), or keep the batch dimension of a batch of one (squeeze(-1), "
                f"not squeeze())"
            )
