"""Eager-mode ``torch.ao.quantization`` on a tied module: refused by name, never left float.

torch's eager flows (``prepare_qat``, ``prepare`` + ``convert``, ``quantize``,
``quantize_qat``, ``quantize_dynamic``) look a module's *exact* class up in their
mappings (``type_before_parametrizations(mod) in mapping``). A Plan-tied module's class
is a generated subclass (``TiedLinear``), found in none of them: torch gave it no
qconfig (``quantize_dynamic``) or no observer and no swap (the others), and the module
stayed float with no error, where the hand-tied model's is quantized (stop 56: a tiny
Llama with a Plan-tied head, QAT logits 0.006 off the untied copy's and HF's own tie's).

Each of these flows first propagates the qconfig (``propagate_qconfig_``), which sets
``module.qconfig`` on every module; the tied class's ``__setattr__`` calls
:func:`check_qconfig_set` there, which refuses when the module's plain class would have
been quantized, naming the tied module, the tool and the fix. With ``inplace=False``
(the default of each tool) torch works on a deep copy and the caller's model is
untouched; no weight or module class has changed either way. FX and PT2E (which keep
the tie, see ``tying.interop``) propagate through their own frames and are let through.

Example:
    >>> import warnings, torch, tying
    >>> import torch.ao.quantization as tq
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     try:
    ...         tq.quantize_dynamic(m, {torch.nn.Linear})
    ...     except tying.TieError as err:
    ...         print(str(err)[:60])
    torch.ao.quantization.quantize_dynamic: '1' is a tied module
"""

from __future__ import annotations

import sys

from torch import nn

from tying.core.errors import TieError
from tying.core.root_advice import free_call

_AO = "torch.ao.quantization.quantize"
_HELPER = "_propagate_qconfig_helper"
_TOOLS = ("quantize_dynamic", "quantize_qat", "prepare_qat", "quantize", "prepare")
# graph-mode flows propagate through eager's helper too; they trace tied modules
# through and keep the tie (tying.interop's FX / PT2E support, which also calls
# propagate_qconfig_ itself to compare qconfigs, and its quantize_dynamic). Only
# tying.interop: with any "tying." frame let through, a call from code run by another
# tying module (a doctest of this one, a callback) went unchecked and stayed float
_GRAPH = (
    "torch.ao.quantization.fx",
    "torch.ao.quantization.quantize_fx",
    "torchao.",
    "tying.interop.",
)


def _would_quantize(tool: str, frames: dict) -> set:
    """The plain classes ``tool`` observes or swaps (the keys of its mapping)."""
    from torch.ao.quantization import quantization_mappings as qm

    if tool == "quantize_dynamic":
        mapping = frames[tool].f_locals.get("mapping")
        return set(
            mapping if mapping is not None else qm.get_default_dynamic_quant_module_mappings()
        )
    classes = set(qm.get_default_qconfig_propagation_list())
    if "prepare" in frames and frames["prepare"].f_locals.get("allow_list") is not None:
        classes = set(frames["prepare"].f_locals["allow_list"])
    if "prepare_qat" in frames:
        mapping = frames["prepare_qat"].f_locals.get("mapping")
        classes |= set(mapping if mapping is not None else qm.get_default_qat_module_mappings())
    if tool == "propagate_qconfig_":
        classes |= set(qm.get_default_dynamic_quant_module_mappings())
    return classes


def check_qconfig_set(module: nn.Module, value, base: type, slots: dict) -> None:
    """Refuse torch.ao's eager qconfig propagation onto a tied module it would leave float.

    Called by the tied class's ``__setattr__`` for ``qconfig``; does nothing unless
    torch's ``_propagate_qconfig_helper`` is the caller.

    Args:
        module: the tied module being given a qconfig.
        value: the qconfig torch sets (``None`` where its exact class was not found).
        base: the module's plain class (``nn.Linear`` for a ``TiedLinear``).
        slots: the module's tied slots, ``{name: Slot}``.

    Raises:
        TieError: the plain class would have been given a qconfig and quantized.
    """
    helper = sys._getframe(2)  # 0: here, 1: the tied class's __setattr__
    if helper.f_code.co_name != _HELPER or helper.f_globals.get("__name__") != _AO:
        return
    frames: dict = {}
    f = helper
    while f is not None:
        mod = f.f_globals.get("__name__") or ""
        if mod.startswith(_GRAPH):
            return
        if mod == _AO and (f.f_code.co_name in _TOOLS or f.f_code.co_name == "propagate_qconfig_"):
            frames.setdefault(f.f_code.co_name, f)
        f = f.f_back
    tool = next((t for t in _TOOLS if t in frames), "propagate_qconfig_")
    loc = helper.f_locals
    qconfig_dict = loc.get("qconfig_dict") or {}
    prefix = loc.get("prefix", "")
    # what torch would have given the plain class: the same lookups, by its class
    wanted = qconfig_dict.get(base, loc.get("qconfig_parent"))
    wanted = qconfig_dict.get(prefix, wanted)
    wanted = module.__dict__.get("qconfig", wanted)
    if wanted is None and value is None:
        return
    if base not in _would_quantize(tool, frames):
        return
    name = sorted(slots)[0]
    target, source = slots[name].target_and_source(name)
    raise TieError(
        f"torch.ao.quantization.{tool}: {prefix!r} is a tied module ({type(module).__name__}, "
        f"a {base.__name__} whose {target} reads {source} via {slots[name].relation!r}); torch "
        f"looks modules up by their exact class, so it would leave it in float without a word "
        f"while the same model tied by hand is quantized. Nothing was quantized (with "
        f"inplace=True the modules visited before it keep the qconfig torch gave them). "
        f"Quantize with FX or PT2E instead (prepare_fx / prepare_qat_fx + convert_fx, or "
        f"prepare_pt2e), which keep the tie, or with "
        f"tying.interop.quantization.quantize_dynamic; or untie first (tying.untie(model))"
    )


_FUSE = "torch.ao.quantization.fuse_modules"
_GETATTR = nn.Module.__getattr__.__code__


def check_fuse_lookup(frame) -> None:
    """Refuse torch.ao's eager ``fuse_modules`` on a tied module, by name.

    ``fuse_known_modules`` looks a fuser method up by each module's exact class
    (``type_before_parametrizations``, which first asks the module for
    ``parametrizations``): a tied ``TiedConv2d`` is in no mapping, and torch failed with a
    bare ``AssertionError: did not find fuser method for: (TiedConv2d, BatchNorm2d)``
    naming no tie (stop 57). Fusing would also fold the batch norm into a weight of the
    layer's own (as ``fuse_conv_bn_eval`` does), leaving the tie. Called by a tied
    module's ``_parameters`` when asked whether it holds ``parametrizations``; does
    nothing unless ``fuse_modules`` is the one asking.

    Args:
        frame: the frame that asked (``nn.Module.__getattr__`` of the module, when the
            lookup comes from an attribute read).

    Raises:
        TieError: ``fuse_modules`` is fusing a tied module.
    """
    if frame.f_code is not _GETATTR:
        return
    f = frame.f_back
    for _ in range(4):  # is_parametrized, type_before_parametrizations, the genexpr, ...
        if f is None:
            return
        if f.f_globals.get("__name__") == _FUSE:
            break
        f = f.f_back
    else:
        return
    module = frame.f_locals.get("self")
    slots = getattr(module, "__dict__", {}).get("_tying_slots") or {}
    if not slots:
        return
    name = sorted(slots)[0]
    target, source = slots[name].target_and_source(name)
    base = type(module).__dict__.get("_tying_base", type(module))
    raise TieError(
        f"torch.ao.quantization.fuse_modules: {target} is a tied slot ({type(module).__name__}, "
        f"a {base.__name__} whose {target} reads {source} via {slots[name].relation!r}); "
        f"torch looks fuser methods up by the exact class, so it cannot fuse it, and fusing "
        f"would fold the batch norm into a weight of the layer's own and leave the tie. "
        f"Nothing was fused (with inplace=True the groups listed before it are fused "
        f"already). To fuse, untie that slot first "
        f"({free_call(module, slots[name], target)}), or leave it unfused"
    )
