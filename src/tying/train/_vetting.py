"""What per-example gradients vet in a model before each call: hooks and overrides.

Both ways to per-example gradients (:mod:`tying.train.dp`'s ``vmap`` and
:mod:`tying.train.ghost`) compute what a module *type* does, not what the module
object does at run time. A method shadowed on the instance (``lin.forward = f``), a
forward hook that returns a new output, or a gradient hook on a parameter changes the
latter without changing the type, and can be added after the first step; so these
checks run at every call, over a list of modules made once (~1 µs a module).
"""

from __future__ import annotations

import torch
from torch import nn

_T = torch.Tensor
# torch calls that read a tensor's metadata only, never its values
METADATA_CALLS = frozenset(
    {
        _T.dim, _T.size, _T.__len__, _T.shape.__get__, _T.ndim.__get__, _T.dtype.__get__,
        _T.device.__get__, _T.requires_grad.__get__, _T.is_floating_point, _T.numel,
        _T.nelement, _T.stride, _T.is_contiguous, _T.element_size, _T.is_complex,
        _T.is_cuda.__get__, _T.layout.__get__, _T.is_sparse.__get__, _T.is_meta.__get__,
        _T.itemsize.__get__, _T.nbytes.__get__, _T.data_ptr, _T._version.__get__,
        _T.is_inference, _T.storage_offset,
    }
)  # fmt: skip


def tensors_in(args, kwargs):
    """The tensors among a call's arguments (recursing into lists, tuples and dicts)."""
    todo = [args, kwargs.values()] if kwargs else [args]
    while todo:
        for a in todo.pop():
            if isinstance(a, torch.Tensor):
                yield a
            elif isinstance(a, (list, tuple)):
                todo.append(a)
            elif isinstance(a, dict):
                todo.append(a.values())


def params_behind(t: torch.Tensor, names: dict[int, str]) -> list[int]:
    """Ids (keys of ``names``) of the parameters ``t``'s autograd graph reaches."""
    found, seen, todo = [], set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        var = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if var is not None and id(var) in names:
            found.append(id(var))
        todo.extend(nxt for nxt, _ in node.next_functions)
    return found


def func_name(func) -> str:
    """A torch function's name for an error message (``TensorBase.matmul``, ``linear``)."""
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))


def callable_overrides(mod: nn.Module) -> list[str]:
    """Instance attributes of ``mod`` that shadow a method of its class.

    ``mod.forward = f``, ``mod._conv_forward = f``, and ``mod.compile()``'s
    ``_compiled_call_impl``: code the module's type was not tested with.
    """
    cls = type(mod)
    found = [k for k, v in vars(mod).items() if callable(v) and callable(getattr(cls, k, None))]
    if mod.__dict__.get("_compiled_call_impl") is not None:
        found.append("_compiled_call_impl")
    return found


def refuse_parameter_hooks(names, params) -> None:
    """Refuse a gradient hook on a trainable parameter (``Tensor.register_hook``).

    Per-example gradients are taken on substitutes of the parameters (``vmap``) or
    from activations (ghost clipping), so the hook never runs and whatever it changes
    would be missing from every example's gradient (3.5 off a per-example loop on a
    6-8-3 MLP whose hook tripled a gradient, found in stop 18).
    """
    for name, p in zip(names, params):
        if p._backward_hooks:
            raise ValueError(
                f"parameter {name} has a gradient hook (Tensor.register_hook): per-example "
                f"gradients do not run it, so its change would be missing from every "
                f"example's gradient; remove it (handle.remove()) and apply its change to "
                f"the model instead"
            )
