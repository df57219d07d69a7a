"""A layer Opacus samples that is called on other rows than the batch's (stop 58).

Opacus' hooks take example b's per-sample gradient from row b of a layer's recorded input
and of its output gradient (``batch_first=True``). A layer called on a table shared by
every example has one row where the batch has B: GPT-2's position embedding
(``transformer.wpe``, called on ``position_ids`` of shape ``(1, T)`` that broadcast over
the batch) got a per-sample gradient of one row (the batch's sum, 3.54 off each
example's loop gradient, whose entries reach 1.92), in plain Opacus and in
:func:`~tying.train.grad_sample_module` alike, with no error until Opacus' DPOptimizer
failed on "stack expects each tensor to be equal size", naming no layer (T5's
``relative_attention_bias`` on its ``(T, T)`` table: "The size of tensor a (7) must match
the size of tensor b (4)" at the backward). A forward pre-hook on every
layer Opacus samples refuses such a call by name before the layer runs; what Opacus
recorded earlier in that forward is taken back.

Stop 58 review: the batch was the row count of the forward's first tensor input, so a
forward whose first input is not the batch (``model(t, x)`` with a time ``t`` of shape
``(1,)``, ``model(scale=s, ids=ids)``) had every layer refused, where Opacus' per-sample
gradients were right (0 off a loop); and the count outlived the forward, so a sampled
layer called on its own afterwards (``model.head(z)`` on another batch size) was refused
against the last forward's batch. A layer is now refused only when its rows are those of
none of the forward's tensor inputs (a single row beside more is a shared table, not the
batch), and only inside the model's forward.
"""

from __future__ import annotations

import torch
from torch import nn

from tying.train._vetting import tensors_in


def _input_rows(args, kwargs) -> frozenset | None:
    """The row counts of the call's tensor inputs (``None`` when it has none): any of them
    may be the batch (``model(t, x)`` with ``t`` of shape ``(1,)`` has its batch second),
    but one row beside more is a table shared by the batch (``position_ids`` of shape
    ``(1, T)`` passed to the forward), not the batch."""
    rows = {t.shape[0] for t in tensors_in(args, kwargs) if t.dim() >= 1}
    if len(rows) > 1:
        rows.discard(1)
    return frozenset(rows) or None


def sampled_layers(model: nn.Module, samplers, extra) -> list:
    """``(path, module)`` of the layers whose rows Opacus' hooks read: a module with
    trainable parameters of its own (Opacus does not go inside one it samples whole with
    functorch) and the tied uses ``extra`` (modules tying's hooks sample)."""
    extra_ids = {id(m) for m in extra}
    out: list = []

    def walk(path: str, mod: nn.Module) -> None:
        own = any(p.requires_grad for p in mod.parameters(recurse=False))
        if own or id(mod) in extra_ids:
            out.append((path or "<root>", mod))
        if own and type(mod) not in samplers:
            return
        for name, child in mod.named_children():
            walk(f"{path}.{name}" if path else name, child)

    walk("", model)
    return out


def row_guards(gsm, model: nn.Module, layers, take_back) -> list:
    """Forward pre-hooks refusing a sampled layer's call, inside the model's forward, whose
    first input has other rows than every tensor input of the model's call;
    ``take_back()`` undoes what Opacus recorded earlier in the forward.

    Returns:
        The hook handles (for ``gsm.autograd_grad_sample_hooks``).
    """
    batch: list = [None]

    def model_hook(mod, args, kwargs):
        batch[0] = _input_rows(args, kwargs) if torch.is_grad_enabled() else None

    def model_done(mod, args, output):  # also when the forward raised
        batch[0] = None

    handles = [
        model.register_forward_pre_hook(model_hook, with_kwargs=True),
        model.register_forward_hook(model_done, always_call=True),
    ]
    for path, layer in layers:
        if layer is model:
            continue

        def hook(mod, args, path=path):
            B = batch[0]
            if B is None or not (gsm.hooks_enabled and mod.training and torch.is_grad_enabled()):
                return
            a = args[0] if args else None
            if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] in B:
                return
            take_back()
            raise ValueError(
                f"grad_sample_module: {path} ({type(mod).__name__}) is called on an input "
                f"of {a.shape[0]} rows (shape {tuple(a.shape)}) where the batch has "
                f"{' or '.join(map(str, sorted(B)))} (the model's inputs' rows), and "
                f"Opacus' hooks take example b's per-sample gradient from row b of a layer's "
                f"input (a table shared by every example, such as position ids of shape "
                f"(1, T), gives per-sample gradients of the wrong rows); expand "
                f"that input to one row per example before the call where you pass it "
                f"(GPT-2: position_ids=torch.arange(T).expand(B, T)); a layer called on "
                f"rows of several examples at once (h.reshape(B * T, F)) on the batch-first "
                f"shape instead (Linear, Embedding, LayerNorm take (B, T, ...)); or use "
                f"tying.train.DPSGD(mode='vmap') or per_example_grads, which take the "
                f"gradient through the layer as called"
            )

        handles.append(layer.register_forward_pre_hook(hook))
    return handles
