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
"""

from __future__ import annotations

import torch
from torch import nn


def _first_rows(args, kwargs) -> int | None:
    """The row count of the call's first tensor input (positional first, then keyword)."""
    for t in (*args, *kwargs.values()):
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            return t.shape[0]
    return None


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
    """Forward pre-hooks refusing a sampled layer's call whose first input has other rows
    than the batch (the model's first tensor input); ``take_back()`` undoes what Opacus
    recorded earlier in the forward.

    Returns:
        The hook handles (for ``gsm.autograd_grad_sample_hooks``).
    """
    batch: list = [None]

    def model_hook(mod, args, kwargs):
        batch[0] = _first_rows(args, kwargs) if torch.is_grad_enabled() else None

    handles = [model.register_forward_pre_hook(model_hook, with_kwargs=True)]
    for path, layer in layers:
        if layer is model:
            continue

        def hook(mod, args, path=path):
            B = batch[0]
            if B is None or not (gsm.hooks_enabled and mod.training and torch.is_grad_enabled()):
                return
            a = args[0] if args else None
            if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] == B:
                return
            take_back()
            raise ValueError(
                f"grad_sample_module: {path} ({type(mod).__name__}) is called on an input "
                f"of {a.shape[0]} rows (shape {tuple(a.shape)}) where the batch has {B}, and "
                f"Opacus' hooks take example b's per-sample gradient from row b of a layer's "
                f"input (a table shared by every example, such as position ids of shape "
                f"(1, T), gives per-sample gradients of the wrong rows); expand "
                f"that input to one row per example before the call where you pass it "
                f"(GPT-2: position_ids=torch.arange(T).expand(B, T)), or use "
                f"tying.train.DPSGD(mode='vmap') or per_example_grads, which take the "
                f"gradient through the layer as called"
            )

        handles.append(layer.register_forward_pre_hook(hook))
    return handles
