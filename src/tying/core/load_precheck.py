"""What ``load_state_dict`` would refuse at its end, found before anything is copied.

torch copies module after module and raises its size mismatches and missing/unexpected
keys only when every module is loaded: a refused load left a model that holds a tie or a
``tying.nn`` layer half-loaded (stop 53: a C4 ``GroupConv2d`` state dict into a D4 layer
copied the bias, then refused the weight). The root's check before loading
(:func:`tying.core.slot_loads._check_before_load`) runs :func:`refusals` first, with
torch's own rules (``nn.Module._load_from_state_dict``): same shape, except a 0-dim
entry given as ``[1]`` and a lazy parameter; under ``strict=True`` every parameter and
persistent buffer present, the extra state when the class keeps one, and no key that
lands nowhere (a tied slot's entry lands on the tie; tying stores it once).

A module whose load torch's rules do not describe (a ``_load_from_state_dict`` or a load
pre-hook of its own, other than tying's) may rewrite its part of the state dict: its
entries are left to torch, and a load post-hook anywhere (it may edit the missing and
unexpected keys) leaves the key checks to torch. Those cases are only as atomic as torch.
"""

from __future__ import annotations

import functools
import sys

import torch
from torch import nn

__all__ = ["refusals"]

_EXTRA = "_extra_state"
#: a batch norm's load fills this entry from an old file (its own ``_load_from_state_dict``)
_NORM_FILLS = ("num_batches_tracked",)
_NORM = nn.modules.batchnorm._NormBase
#: an instance norm's load refuses (and drops) running stats given to a layer that keeps
#: none, for a state dict with no version (its own ``_load_from_state_dict``)
_INSTANCE = nn.modules.instancenorm._InstanceNorm
#: torch's own ``_load_from_state_dict`` overrides whose rules :func:`refusals` applies
_TORCH_LOADS = (
    _NORM.__dict__["_load_from_state_dict"],
    _INSTANCE.__dict__["_load_from_state_dict"],
)
_STATS = ("running_mean", "running_var")
#: where a module keeps its ties (``tying.core.slots.SLOTS_ATTR``)
_SLOTS = "_tying_slots"
#: plain tensors: never lazy, always tensor-like (the common case, asked first)
_TENSORS = (torch.Tensor, nn.Parameter)


def _fills_batches_tracked(module: nn.Module, version) -> bool:
    """Whether a batch norm's load fills a missing ``num_batches_tracked`` (a state dict
    saved before the buffer existed: no version or version < 2, as torch decides)."""
    return (
        isinstance(module, _NORM)
        and bool(getattr(module, "track_running_stats", False))
        and (version is None or version < 2)
    )


def _instance_refusal(module: nn.Module, local: dict, prefix: str, version) -> str | None:
    """torch's refusal of running stats given to an instance norm that keeps none (a state
    dict with no version); the keys are dropped from ``local`` as torch drops them."""
    if not isinstance(module, _INSTANCE) or version is not None or module.track_running_stats:
        return None
    keys = [prefix + name for name in _STATS if prefix + name in local]
    if not keys:
        return None
    for key in keys:
        local.pop(key)
    return (
        "Unexpected running stats buffer(s) {names} for {klass} "
        "with track_running_stats=False. If state_dict is a "
        "checkpoint saved before 0.4.0, this may be expected "
        "because {klass} does not track running stats by default "
        "since 0.4.0. Please remove these keys from state_dict. If "
        "the running stats are actually needed, instead set "
        "track_running_stats=True in {klass} to enable them. See "
        "the documentation of {klass} for details.".format(
            names=" and ".join(f'"{k}"' for k in keys), klass=type(module).__name__
        )
    )


def _meta_copy_error() -> tuple:
    """The arguments of the error torch's copy raises for a meta entry copied into a real
    tensor (read from torch, so the message is torch's own)."""
    try:
        torch.empty(()).copy_(torch.empty((), device="meta"))
    except Exception as err:  # noqa: BLE001 - whatever torch raises, its args are the text
        return err.args
    return ()


def _running_load(root: nn.Module) -> tuple[bool, bool] | None:
    """``(strict, assign)`` of the ``load_state_dict`` on ``root`` that runs now (torch hands
    every module ``strict=True``); None when ``root`` is not loaded by
    ``nn.Module.load_state_dict`` (a library's own loader: nothing is pre-checked then)."""
    code = nn.Module.load_state_dict.__code__
    frame = sys._getframe(2)
    for _ in range(12):  # the hook is called a few frames below the load
        if frame is None:
            return None
        if frame.f_code is code:
            local = frame.f_locals
            if local.get("self") is not root:
                return None
            return bool(local.get("strict", True)), bool(local.get("assign", False))
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=4096)
def _class_rules(cls: type, own_loads: tuple) -> tuple[bool, bool, bool]:
    """``(plain, keeps_extra, versioned)`` of a module class, read once per class (a load
    of a 2,000-``nn.Linear`` model asks 2,000 times).

    ``plain``: every ``_load_from_state_dict`` on its class chain is torch's, tying's tied
    one, or a ``tying.nn`` layer's check then ``super()``. ``keeps_extra``: it defines
    ``set_extra_state``. ``versioned``: a torch norm whose load reads the state dict's
    version (:data:`_TORCH_LOADS`)."""
    plain = True
    for klass in cls.__mro__:
        load = klass.__dict__.get("_load_from_state_dict")
        if load is None or load in own_loads or load in _TORCH_LOADS:
            continue
        if "_tying_check_load" in klass.__dict__ and klass.__module__.startswith("tying."):
            continue  # check then super(): the check itself runs before (_own_checks)
        plain = False
        break
    keeps_extra = cls.set_extra_state is not nn.Module.set_extra_state
    return plain, keeps_extra, issubclass(cls, (_NORM, _INSTANCE))


def _own_hooks_only(module: nn.Module, own_hooks) -> bool:
    """Whether ``module``'s load pre-hooks are tying's only."""
    hooks = module._load_state_dict_pre_hooks
    return not hooks or all(getattr(h, "hook", h) in own_hooks for h in hooks.values())


def refusals(root: nn.Module, state_dict, slots_of, own_loads, own_hooks) -> list[str]:
    """torch's errors for loading ``state_dict`` into ``root``, in torch's words, found
    before anything is copied; empty when there are none (or ``root`` is not loaded by
    ``nn.Module.load_state_dict``).

    Args:
        root: the module ``load_state_dict`` is called on (its pre-hook runs this).
        state_dict: the whole state dict given to it.
        slots_of: ``module -> {name: slot}`` of its ties.
        own_loads: tying's and torch's ``_load_from_state_dict`` functions.
        own_hooks: tying's load pre-hooks.

    Returns:
        The messages torch would raise at the end: missing and unexpected keys first (only
        under ``strict=True``), then each size mismatch and each entry that is no tensor.
    """
    running = _running_load(root)
    if running is None:
        return []
    strict, assign = running
    metadata = getattr(state_dict, "_metadata", None) or {}
    errors: list[str] = []
    missing: list[str] = []
    unexpected: list[str] = []
    sure_of_keys = [strict]

    def visit(mod: nn.Module, local: dict, prefix: str) -> None:
        if mod._load_state_dict_post_hooks:
            sure_of_keys[0] = False
        plain, keeps_extra, versioned = _class_rules(type(mod), own_loads)
        if not plain or not _own_hooks_only(mod, own_hooks):
            return  # its own rules: its part is left to torch (it can only add errors)
        version = None
        if versioned:
            version = metadata.get(prefix[:-1], {}).get("version")
            refused = _instance_refusal(mod, local, prefix, version)
            if refused:
                errors.append(refused)
        slots = slots_of(mod) if _SLOTS in mod.__dict__ else {}
        filled = set()  # storages an untied model's entry of a slot fills
        for name, slot in slots.items():
            if prefix + name in local and "source" in slot.storage:
                filled.add(slot.storage["source"])
        skip = mod._non_persistent_buffers_set
        own = {n: v for n, v in mod._parameters.items() if v is not None}
        own.update((n, v) for n, v in mod._buffers.items() if v is not None and n not in skip)
        for name, param in own.items():
            key = prefix + name
            if key not in local:
                if name not in filled and not (
                    versioned and name in _NORM_FILLS and _fills_batches_tracked(mod, version)
                ):
                    missing.append(key)
                continue
            given = local[key]
            if type(given) not in _TENSORS and not torch.overrides.is_tensor_like(given):
                errors.append(
                    f'While copying the parameter named "{key}", expected torch.Tensor or '
                    f"Tensor-like object from checkpoint but received {type(given)}"
                )
                continue
            if type(param) not in _TENSORS and nn.parameter.is_lazy(param):
                continue
            shape, want = given.shape, param.shape
            if not want and len(shape) == 1 and shape[0] == 1:
                shape = torch.Size([])
            if shape != want:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {given.shape} from "
                    f"checkpoint, the shape in current model is {param.shape}."
                )
            elif given.is_meta and not assign and not param.is_meta:  # nothing to copy
                errors.append(
                    f'While copying the parameter named "{key}", whose dimensions in the model '
                    f"are {param.size()} and whose dimensions in the checkpoint are "
                    f"{given.size()}, an exception occurred : {_meta_copy_error()}."
                )
        extra = prefix + _EXTRA
        if keeps_extra and extra not in local:
            missing.append(extra)
        children: dict[str, dict] = {}
        for key, value in local.items():
            rest = key[len(prefix) :]
            head, dot, _ = rest.partition(".")
            if dot:
                if head in mod._modules:
                    children.setdefault(head, {})[key] = value
                else:
                    unexpected.append(key)
            elif key == extra:
                if not keeps_extra:
                    unexpected.append(key)
            elif head not in own and head not in slots:
                unexpected.append(key)
        for name, child in mod._modules.items():
            if child is not None:
                visit(child, children.get(name, {}), prefix + name + ".")

    visit(root, dict(state_dict), "")
    out = []
    if sure_of_keys[0]:
        if missing:
            out.append(
                "Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing))
            )
        if unexpected:
            out.append(
                "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)
                )
            )
    return out + errors
