"""The inputs Opacus' functorch way hands a layer (stop 56).

Opacus samples a module with trainable parameters of its own and no grad sampler of its
class (and every such module under ``force_functorch=True``) with ``torch.func``: at the
backward it calls the module again on the **first positional input** it recorded, and on
nothing else (``opacus.grad_sample.functorch.ft_compute_per_sample_gradient`` takes
``activations[0]``; a forward hook never sees keyword arguments). So:

- ``nn.Bilinear(3, 4, 2)`` (``forward(input1, input2)``) failed at the backward with
  ``TypeError: Bilinear.forward() missing 1 required positional argument: 'input2'``,
  after the forward had run and Opacus had recorded it, naming no layer;
- a layer called with a second input that has a default (``m(x, mask)``,
  ``m(x, scale=3.0)``) was re-run on its default: per-sample gradients of another
  function than the one trained, with no error.

:func:`refuse_multi_input_units` refuses the first kind by name before anything is
wrapped; :func:`input_guards` refuses the second at the call, before the layer runs, and
takes back what Opacus recorded earlier in that forward.
"""

from __future__ import annotations

import inspect
import numbers

import torch
from torch import nn

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_FIX = (
    "use tying.train.DPSGD (mode='vmap') or per_example_grads, which differentiate the "
    "layer as called, or give it one input tensor (a module holding its parameters whose "
    "forward takes one tensor, e.g. the inputs concatenated, split inside)"
)


def functorch_units(model: nn.Module, samplers, force_functorch: bool) -> list:
    """``(path, module)`` of the modules Opacus samples with functorch, walked as Opacus'
    ``GradSampleModule.iterate_submodules`` walks them."""
    from opacus.layers import DPGRU, DPLSTM, DPRNN

    skip = (DPRNN, DPLSTM, DPGRU)
    units: list = []

    def walk(path: str, mod: nn.Module) -> None:
        own = any(p.requires_grad for p in mod.parameters(recurse=False))
        if own and type(mod) not in skip and (force_functorch or type(mod) not in samplers):
            units.append((path or "<root>", mod))
        if own and type(mod) not in samplers and type(mod) not in skip:
            return  # Opacus does not go inside a module it samples whole
        for name, child in mod.named_children():
            walk(f"{path}.{name}" if path else name, child)

    walk("", model)
    return units


def _signature(module: nn.Module):
    try:
        return inspect.signature(module.forward)
    except (TypeError, ValueError):  # a forward without a signature: nothing to read
        return None


def refuse_multi_input_units(units) -> None:
    """Refuse a functorch-sampled module whose ``forward`` needs more than one input.

    Raises:
        ValueError: naming the module, its class and the inputs its forward requires.
    """
    for path, module in units:
        sig = _signature(module)
        if sig is None:
            continue
        need = [
            n
            for n, p in sig.parameters.items()
            if p.default is inspect.Parameter.empty
            and (p.kind in _POSITIONAL or p.kind is inspect.Parameter.KEYWORD_ONLY)
        ]
        if len(need) > 1:
            fix = _FIX
            if isinstance(module, nn.MultiheadAttention):
                fix = (
                    "swap it for opacus.layers.DPMultiheadAttention (opacus.validators."
                    "ModuleValidator.fix(model) does), whose Linear layers Opacus samples; "
                    "or " + _FIX
                )
            raise ValueError(
                f"grad_sample_module: {path} ({type(module).__name__}) needs the inputs "
                f"{', '.join(need)}, and Opacus samples it with functorch from its first "
                f"input only (it has no grad sampler for the class, so the backward fails "
                f"with 'missing ... argument' after the forward ran); {fix}"
            )


def _extra_inputs(sig, args, kwargs) -> list[str]:
    """The inputs of a call beyond the first positional one that are not the forward's
    own defaults (which functorch's re-run would use anyway)."""
    if sig is None:
        return [f"input {i}" for i in range(1, len(args))] + sorted(kwargs)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:  # the forward itself raises its own error
        return []
    extra = []
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0 and len(args) > 0:
            continue
        default = sig.parameters[name].default
        # a positional one reaches Opacus' forward hook, which calls .detach() on it; a
        # keyword equal to the forward's default is what functorch's re-run uses anyway
        same = (
            value is default
            or (
                type(value) is type(default) and isinstance(value, (bool, str)) and value == default
            )
            or (
                # a number equal to the default is the default (scale=1 for 1.0, np.float64(1.0))
                isinstance(value, numbers.Real)
                and isinstance(default, numbers.Real)
                and not isinstance(value, bool)
                and not isinstance(default, bool)
                and value == default
            )
        )
        if i >= len(args) and same:
            continue
        extra.append(name)
    return extra


def _first_by_keyword(sig, args, kwargs) -> str | None:
    """The name of the forward's first positional parameter when a call with no
    positional input hands it by keyword (``a(x=x)``), else None."""
    if args or sig is None:
        return None
    names = [n for n, p in sig.parameters.items() if p.kind in _POSITIONAL]
    return names[0] if names and names[0] in kwargs else None


def input_guards(gsm, units, take_back) -> list:
    """Forward pre-hooks (one per unit) refusing a call that hands the unit more than its
    first positional input; ``take_back()`` undoes Opacus' records of the forward so far.

    Returns:
        The hook handles (for ``gsm.autograd_grad_sample_hooks``).
    """
    handles = []
    for path, module in units:
        sig = _signature(module)

        def hook(mod, args, kwargs, path=path, sig=sig):
            if not (gsm.hooks_enabled and mod.training and torch.is_grad_enabled()):
                return
            extra = _extra_inputs(sig, args, kwargs)
            first = _first_by_keyword(sig, args, kwargs)
            if first is not None:
                # stop 57: a(x=x) was said to hand x "beyond its first positional input"
                take_back()
                raise ValueError(
                    f"grad_sample_module: {path} ({type(mod).__name__}) is called with its "
                    f"first input by keyword ({first}=...), and Opacus' hooks record a "
                    f"layer's positional inputs only (its functorch re-run would have no "
                    f"input); call it positionally, {path.rsplit('.', 1)[-1]}({first}), or " + _FIX
                )
            if extra:
                take_back()
                got = ", ".join(extra)
                raise ValueError(
                    f"grad_sample_module: {path} ({type(mod).__name__}) is called with "
                    f"{got} beyond its first positional input, and Opacus samples it with "
                    f"functorch from that first input alone (the others are dropped and "
                    f"their defaults used: per-sample gradients of another function, no "
                    f"error); {_FIX}"
                )

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles
