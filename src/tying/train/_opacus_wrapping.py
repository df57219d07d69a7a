"""What ``grad_sample_module`` takes of Opacus' wrapping, and takes back (stop 55).

:func:`hooks_kwargs` resolves Opacus' ``grad_sample_mode`` for the hooks-mode wrapper
(``"hooks"``, ``"functorch"``) and refuses the others by name.

Opacus' ``GradSampleModule.__init__`` marks every trainable parameter
(``grad_sample``, ``_forward_counter``) before it validates the model, and registers
its hooks module by module before a later module can fail (a ``BatchNorm`` refused
by its ``validate``, a tied module whose functorch copy ``tying.core`` refuses). The
exception left those marks and hooks behind, with no object to close them: every
later plain forward of a tied model was then refused as "a tie that Opacus'
GradSampleModule cannot see", though nothing wrapped it any more.
:func:`opacus_undo` records the model as it is and, used as a context manager,
puts it back exactly (hooks, attributes, parameter marks) when the body raises.
"""

from __future__ import annotations

import contextlib

from torch import nn

_OTHER_MODES = {  # Opacus' grad_sample_mode: why tying's hooks cannot run it, and what can
    "ew": "torch's Expanded Weights (call_for_per_sample_grads) swap every parameter for an "
    "ExpandedWeight and fail on a tied slot's read ('cannot handle function __get__') "
    "without naming it; no hook of ours counts the tied use there",
    "ghost": "Opacus' ghost clipping has no norm sampler for a tied use (its norms miss "
    "the cross terms between the uses)",
    "ghost_fsdp": "Opacus' ghost clipping has no norm sampler for a tied use (its norms "
    "miss the cross terms between the uses)",
    "no_op": "it computes no per-sample gradients",
}


def hooks_kwargs(kwargs: dict) -> dict:
    """``kwargs`` for Opacus' ``GradSampleModule`` with ``grad_sample_mode`` resolved.

    Stop 55: ``grad_sample_module(model, grad_sample_mode="ew")`` failed inside Opacus
    ("unexpected keyword argument 'grad_sample_mode'"), a name of Opacus' ``make_private``
    it had every reason to try; ``"hooks"`` is what this function runs and ``"functorch"``
    is Opacus' ``force_functorch=True``; every other mode is refused by name, before
    anything is registered or wrapped.
    """
    if "grad_sample_mode" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    mode = kwargs.pop("grad_sample_mode")
    if mode == "functorch":
        kwargs["force_functorch"] = True
    elif mode != "hooks":
        why = _OTHER_MODES.get(mode) if isinstance(mode, str) else None
        raise ValueError(
            f"grad_sample_module: grad_sample_mode={mode!r} is not a mode whose per-sample "
            f"gradients count a tied use"
            + (f" ({why})" if why else "")
            + "; tying.train.grad_sample_module runs Opacus' 'hooks' mode (or 'functorch', "
            "as force_functorch=True): leave grad_sample_mode out, or use "
            "tying.train.DPSGD(mode='ghost') for ghost clipping of a tied model"
        )
    return kwargs


# what Opacus sets on a parameter (opacus.grad_sample.gsm_base), and on a module
_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_MISSING = object()


def _record(model: nn.Module) -> tuple[list, list]:
    modules = []
    for module in model.modules():
        hooks = {d: set(getattr(module, d)) for d in _HOOK_DICTS}
        modules.append((module, set(module.__dict__), module._is_full_backward_hook, hooks))
    params = []
    for p in model.parameters():
        params.append((p, {a: p.__dict__.get(a, _MISSING) for a in _PARAM_ATTRS}))
    return modules, params


def _restore(modules: list, params: list) -> None:
    for module, keys, full, hooks in modules:
        for d, before in hooks.items():
            table = getattr(module, d)
            for key in [k for k in table if k not in before]:
                del table[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
        for key in [k for k in module.__dict__ if k not in keys]:
            del module.__dict__[key]
        module._is_full_backward_hook = full
    for p, attrs in params:
        for a, value in attrs.items():
            if value is _MISSING:
                p.__dict__.pop(a, None)
            else:
                p.__dict__[a] = value


@contextlib.contextmanager
def opacus_undo(model: nn.Module):
    """Run the body; if it raises, put ``model`` back as it was before, then re-raise.

    Args:
        model: the model an Opacus wrapper is about to be built on.

    Raises:
        whatever the body raises, unchanged.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> try:
        ...     with opacus_undo(net):
        ...         net.weight._forward_counter = 0
        ...         _ = net.register_forward_hook(lambda *a: None)
        ...         raise RuntimeError("late failure")
        ... except RuntimeError:
        ...     pass
        >>> hasattr(net.weight, "_forward_counter"), len(net._forward_hooks)
        (False, 0)
    """
    record = _record(model)
    try:
        yield
    except BaseException:
        _restore(*record)
        raise
