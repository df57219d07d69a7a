"""Graph-mode quantization of tied models: FX (``prepare_fx``) and PT2E (``prepare_pt2e``).

Both flows trace the model into one graph, so a tie is one tensor read at every
use, but three things went wrong with a Plan-tied model (torch 2.13, torchao 0.18;
stop 32, round 4):

- **tied uses left in float, no error.** A tied module is an instance of a
  ``Tied<Base>`` subclass, and both flows pick modules by exact class: PT2E's
  quantizers (``X86InductorQuantizer``) match the class named in each node's
  ``nn_module_stack``, FX's ``QConfigMapping.set_object_type(nn.Linear, ...)``
  the class of the scope. A tied stack of three ``nn.Linear`` came back with the
  two tied layers float (PT2E with the default config; FX with an object-type
  mapping), while an untied copy was quantized at every layer.
- **the source fused under the tie (FX), no error.** FX traces through a tied
  module and reads the source's tensor by path (``get_attr c1.weight``). Its
  fusion replaces the source module: a ``Conv2d`` + ``BatchNorm2d`` source became
  a ``Conv2d`` holding the BN-folded weight, which the tied use then read:
  outputs 0.45 away from the eager model, also with an empty ``QConfigMapping``.
- **a crash naming nothing (FX).** A ``Linear`` + ``ReLU`` source became a
  ``LinearReLU`` (``AttributeError: 'LinearReLU' object has no attribute
  'weight'`` at the first call), and ``convert_fx`` swapped the source for a
  quantized module whose ``weight`` is a method (``TypeError:
  quantize_per_channel(): argument 'input' (position 1) must be Tensor, not
  method``).

:func:`prepare_fx`, :func:`prepare_qat_fx` and :func:`prepare_pt2e` fix the three:
a tied module is selected as its base class would be (FX: its object-type qconfig;
PT2E: its ``nn_module_stack`` names the base class), and FX's reads of a tie's
source are re-pointed to the model's own Parameter (held by the graph module under
``_tying_<path>``), which neither fusion nor ``convert_fx`` replaces. QAT trains
the one Parameter; after ``convert_fx`` / ``convert_pt2e`` every use is
quantized as an untied copy's would be. A tie through a relation (``Transposed``,
``Scaled``) or from a source pruned by ``torch.nn.utils.prune`` is quantized after
the relation and the mask, as the untied layer: FX's observers on the ops between
the source and its use (per tensor, as activations) are dropped, so the weight is
observed once (stop 39; before, 0.010-0.029 from the untied copy, and a pruned
source failed with ``AttributeError: ... 'weight_orig'``). In PT2E the ops that
compute a weight from stored tensors are left out of the layer's partition (a pruned
source failed in ``X86InductorQuantizer`` with "to is not an aten linear operator").

Example:
    >>> import warnings, torch, tying
    >>> from torch.ao.quantization import get_default_qconfig_mapping
    >>> from torch.ao.quantization.quantize_fx import convert_fx
    >>> from tying.interop.graph_quantization import prepare_fx
    >>> _ = torch.manual_seed(0)
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8)).eval()
    >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
    >>> x = torch.randn(4, 8)
    >>> engine = torch.backends.quantized.engine  # its own qconfig: "qnnpack" on x86 saturates
    >>> with warnings.catch_warnings():  # torch.ao's deprecation notices
    ...     warnings.simplefilter("ignore")
    ...     prepared = prepare_fx(m, get_default_qconfig_mapping(engine), (x,))
    ...     _ = prepared(x)  # calibrate
    ...     q = convert_fx(prepared)
    >>> bool((q(x) - m(x)).abs().max() < 0.05)
    True
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from tying.core.errors import TieError
from tying.core.inventory import Inventory
from tying.core.relations import Flipped, Rotated, Same, Scaled, Transposed
from tying.core.slots import base_class


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _tied_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{path: module}`` for every module a tie switched to a ``Tied<Base>`` class."""
    return {p: m for p, m in model.named_modules() if type(m) is not base_class(m)}


def _tie_sources(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{path: tensor}`` of every tensor stored in a module that holds a tie source.

    The traced tied use reads its source by path. That is the slot itself
    (``0.weight``), but a source pruned by ``torch.nn.utils.prune`` is read as
    ``0.weight_orig`` and ``0.weight_mask``, and a parametrized one as
    ``0.parametrizations.weight.original``: fusion replaced module ``0`` and the
    first calibration call failed with ``AttributeError: 'LinearReLU' object has no
    attribute 'weight_orig'`` (stop 39). Every tensor of the source's module is
    therefore a candidate.
    """
    inv = Inventory(model)
    holders: set[str] = set()
    for info in inv.slots.values():
        if not info.is_tied:
            continue
        for path in (info.source, inv.root_of(info.path)):
            if path:
                holders.add(
                    inv.slots[path].module_path if path in inv.slots else path.rsplit(".", 1)[0]
                )
    out: dict[str, torch.Tensor] = {}
    for prefix in sorted(holders):
        if prefix not in inv.modules:
            continue
        mod = inv.modules[prefix]
        tensors = [
            *mod.named_parameters(remove_duplicate=False),
            *mod.named_buffers(remove_duplicate=False),
        ]
        for name, tensor in tensors:
            out[f"{prefix}.{name}" if prefix else name] = tensor
    return out


# relations both flows trace and quantize as the untied layer (tests/interop/
# test_relation_sweep_stop42b.py); a failure with only these ties is not blamed on them
_TRACED = (Same, Transposed, Scaled, Flipped, Rotated)


def _relation_ties(model: nn.Module, traced: tuple = _TRACED) -> list[str]:
    """``"target <- source (relation)"`` for each tie read through a relation outside ``traced``."""
    inv = Inventory(model)
    return [
        f"{i.path} <- {i.source or 'its own storage'} ({i.tie.relation!r})"
        for i in inv.slots.values()
        if i.is_tied and type(i.tie.relation) not in traced
    ]


def _traced(what: str, model: nn.Module, run):
    """Run torch's tracing/preparing ``run()``; a failure on a relation tie names the tie.

    Some relations compute their layout from the shape (``Mirrored`` indexes a shape
    with a traced value) or gather by a hashed index (``Hashed``): FX failed with
    ``TypeError: tuple indices must be integers or slices, not Proxy`` or ``KeyError:
    _2_weight_physical``, and X86InductorQuantizer with ``AttributeError: 'int' object
    has no attribute 'op'``, none naming the tie (stop 42). The model is not changed
    by either flow, so the caller can untie and retry.
    """
    try:
        return run()
    except Exception as err:
        ties = _relation_ties(model)
        if not ties:
            raise
        first = ties[0].split(" <- ", 1)[0]
        raise TieError(
            f"{what}: torch failed to trace or quantize the model ({type(err).__name__}: "
            f"{str(err)[:200]}), which reads {len(ties)} tie(s) through a relation: "
            f"{'; '.join(ties[:4])}. Graph quantization reads Same, Transposed, Scaled, "
            f"Flipped and Rotated ties as the untied layer; give the others their own "
            f"weight first (tying.Plan([tying.free({first!r})]).apply(model)), or quantize "
            f"with the other flow (prepare_fx or prepare_pt2e). Its tensors are unchanged"
        ) from err


def _mapping_for_tied(model: nn.Module, qconfig_mapping: Any) -> Any:
    """A copy of ``qconfig_mapping`` in which each tied class takes its base class's entry.

    FX looks a traced-through module's class up in ``object_type`` exactly
    (``TiedLinear`` is not ``nn.Linear``); a module-name or regex entry still wins
    over it, as for any module.
    """
    from torch.ao.quantization import QConfigMapping

    if isinstance(qconfig_mapping, dict):
        qconfig_mapping = QConfigMapping.from_dict(qconfig_mapping)
    if not isinstance(qconfig_mapping, QConfigMapping):
        raise TypeError(
            f"prepare_fx: qconfig_mapping must be a torch.ao.quantization.QConfigMapping "
            f"(e.g. get_default_qconfig_mapping('x86')), got {type(qconfig_mapping).__name__}"
        )
    mapping = copy.deepcopy(qconfig_mapping)
    types = mapping.object_type_qconfigs
    for mod in _tied_modules(model).values():
        cls, base = type(mod), base_class(mod)
        if base in types and cls not in types:
            mapping.set_object_type(cls, types[base])
    return mapping


def _keep_source_reads(
    prepared: torch.fx.GraphModule, sources: dict[str, torch.Tensor]
) -> set[torch.fx.Node]:
    """Re-point the graph's reads of a tie source to the model's own tensors.

    The traced tied use reads ``get_attr <source path>``; fusion and ``convert_fx``
    replace the module at that path (folded, fused or packed weights), so the read
    is moved to an attribute of the root that holds the Parameter (or the buffer:
    a pruning mask) itself. Returns the re-pointed read nodes.
    """
    alias: dict[str, str] = {}
    reads: set[torch.fx.Node] = set()
    for node in prepared.graph.nodes:
        if node.op != "get_attr" or node.target not in sources:
            continue
        reads.add(node)
        if node.target not in alias:
            name = base = "_tying_" + node.target.replace(".", "_")
            k = 1
            while hasattr(prepared, name):
                name, k = f"{base}_{k}", k + 1
            tensor = sources[node.target]
            if isinstance(tensor, nn.Parameter):
                prepared.register_parameter(name, tensor)
            else:
                prepared.register_buffer(name, tensor)
            alias[node.target] = name
        _fold_dtype_reads(prepared.graph, node, sources[node.target].dtype)
        node.meta["tying_source"] = node.target
        node.target = alias[node.target]
    for node in list(reads):
        reads |= _read_per_use(prepared.graph, node)
    return reads


def _read_per_use(graph: torch.fx.Graph, read: torch.fx.Node) -> set[torch.fx.Node]:
    """Give every user of a tie-source read but the first a ``get_attr`` node of its own.

    FX's tracer makes one ``get_attr`` node per Parameter, however many tied uses read it.
    When the qconfig quantizes some of those uses only (a whole-block tie with
    ``set_module_name("1.2", None)``), ``convert_fx`` folded the read into the quantized
    use's packed weight and erased it, and the float use still pointed at it:
    ``KeyError: '_0_2_weight'`` after calibration, naming no tie (stop 50). Untied layers
    read one node each; so does each tied use now. Returns the new nodes.
    """
    out = set()
    for user in list(read.users)[1:]:
        with graph.inserting_before(user):
            copy_ = graph.get_attr(read.target)
        copy_.meta.update(read.meta)
        user.replace_input_with(read, copy_)
        out.add(copy_)
    return out


def _drop_inner_observers(prepared: torch.fx.GraphModule, reads: set[torch.fx.Node]) -> None:
    """Keep only the last observer on the way from a tie source to the op that uses it.

    A tied use computes its weight from the source (``transpose``, ``* scale``, or
    ``weight_mask * weight_orig`` for a pruned source), and FX observed each of those
    ops as an *activation* (per tensor, quint8) before the weight observer (per
    channel): the tied use was quantized three times, 0.005-0.02 from the untied
    copy, with no error (stop 32 "seen and left"; stop 39). An untied layer's weight
    is observed once, as a weight: so is the tied use's now. Only observers whose
    input and every user are computed from tie-source reads alone are dropped.
    """
    from torch.ao.quantization import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    def is_observer(node: torch.fx.Node) -> bool:
        return node.op == "call_module" and isinstance(
            prepared.get_submodule(node.target), (ObserverBase, FakeQuantizeBase)
        )

    constant: set[torch.fx.Node] = set()
    for node in prepared.graph.nodes:  # topological order
        inputs = node.all_input_nodes
        if (
            node in reads
            or (node.op in ("call_function", "call_method") or is_observer(node))
            and inputs
            and all(i in constant for i in inputs)
        ):
            constant.add(node)
    for node in list(prepared.graph.nodes):
        if node in constant and is_observer(node) and all(u in constant for u in node.users):
            node.replace_all_uses_with(node.args[0])
            prepared.graph.erase_node(node)
            prepared.delete_submodule(node.target)


def _fold_dtype_reads(graph: torch.fx.Graph, read: torch.fx.Node, dtype: torch.dtype) -> None:
    """Replace ``getattr(<source read>, "dtype")`` nodes with the dtype itself.

    A pruned source is read as ``weight_mask.to(dtype=weight_orig.dtype) * weight_orig``.
    ``convert_fx`` folds a weight's producer nodes into a module but does not follow
    the argument of a ``getattr`` node, and failed with ``KeyError: _0_weight_orig``
    (stop 39). The dtype of a stored tensor is a constant of the model anyway.
    """
    for user in list(read.users):
        if not (
            user.op == "call_function" and user.target is getattr and user.args[1:] == ("dtype",)
        ):
            continue
        for consumer in list(user.users):
            consumer.args = torch.fx.node.map_aggregate(
                consumer.args, lambda a, u=user, d=dtype: d if a is u else a
            )
            consumer.kwargs = torch.fx.node.map_aggregate(
                consumer.kwargs, lambda a, u=user, d=dtype: d if a is u else a
            )
        graph.erase_node(user)


def _qconfig_helpers() -> tuple[Any, Any, Any]:
    """torch's ``(_get_flattened_qconfig_dict, qconfig_equals, propagate_qconfig_)``, each
    replaced by the equivalent below where this torch lacks it.

    The first is private (``torch.ao.quantization.fx.qconfig_mapping_utils``) and all three
    live in ``torch.ao.quantization``, which torch deprecates in favour of torchao: a
    release that moves one must not turn the check into an ``ImportError`` (imported
    here, at call time, never when this module is imported). Each fallback does what
    torch 2.4-2.13 does (``tests/interop/test_graph_quant_stop50.py`` compares them).
    """
    try:
        from torch.ao.quantization.fx.qconfig_mapping_utils import (
            _get_flattened_qconfig_dict as flatten,
        )
    except ImportError:
        flatten = _flattened_qconfig_dict
    try:
        from torch.ao.quantization.qconfig import qconfig_equals
    except ImportError:
        qconfig_equals = _qconfig_equals
    try:
        from torch.ao.quantization.quantize import propagate_qconfig_
    except ImportError:
        propagate_qconfig_ = _propagate_qconfig
    return flatten, qconfig_equals, propagate_qconfig_


def _flattened_qconfig_dict(mapping: Any) -> dict[Any, Any]:
    """``{"": global, <class>: qconfig, <module name>: qconfig}`` of a ``QConfigMapping``
    (regex and order entries left out, as torch's ``propagate_qconfig_`` ignores them)."""
    flat: dict[Any, Any] = {"": mapping.global_qconfig}
    flat.update(mapping.object_type_qconfigs)
    flat.update(mapping.module_name_qconfigs)
    return flat


def _ctr_equals(a: Any, b: Any) -> bool:
    """Two observer / fake-quant constructors alike: ``with_args`` partials by function,
    arguments and keywords (their ``observer=`` keyword compared the same way)."""
    pa, pb = getattr(a, "p", None), getattr(b, "p", None)
    if not (hasattr(pa, "func") and hasattr(pb, "func")):
        return a == b
    ka, kb = dict(pa.keywords), dict(pb.keywords)
    same = True
    if "observer" in ka and "observer" in kb:
        same = _ctr_equals(ka.pop("observer"), kb.pop("observer"))
    return same and ka == kb and pa.func == pb.func and pa.args == pb.args


def _qconfig_equals(q1: Any, q2: Any) -> bool:
    """torch's ``qconfig_equals``: activation and weight constructors alike."""
    if q1 is None or q2 is None:
        return q1 == q2
    try:
        return _ctr_equals(q1.activation, q2.activation) and _ctr_equals(q1.weight, q2.weight)
    except AttributeError:
        return q1 == q2


def _propagate_qconfig(module: nn.Module, flat: dict[Any, Any], parent: Any = None, prefix=""):
    """torch's ``propagate_qconfig_``: each module's qconfig by its name, else its class,
    else its parent's; a ``qconfig`` the module holds wins (the device check left out:
    the result is only compared with ``qconfig_equals``)."""
    from torch.nn.utils.parametrize import type_before_parametrizations

    mine = flat.get(type_before_parametrizations(module), parent)
    mine = flat.get(prefix, mine)
    mine = getattr(module, "qconfig", mine)
    module.qconfig = mine
    for name, child in module.named_children():
        _propagate_qconfig(child, flat, mine, f"{prefix}.{name}" if prefix else name)


def _refuse_prepared_before(what: str, model: nn.Module, mapping: Any) -> None:
    """Refuse a model whose modules carry a ``qconfig`` other than ``mapping`` gives them.

    torch's FX prepare leaves a ``qconfig`` on the modules and reads it before the
    mapping's the next time (for QAT swaps and ``convert_fx``): a second prepare of one
    model silently ran with the first call's settings (stop 49: ``prepare_fx(x86)`` then
    ``prepare_qat_fx(qnnpack)`` gave layer 0 a PerChannelMinMaxObserver, not a fake-quant,
    outputs 0.005 from a fresh model's). A ``copy.deepcopy`` taken after a prepare carries
    it too. A leftover equal to what the mapping assigns changes nothing and is kept.
    """
    left = {p: m.qconfig for p, m in model.named_modules() if getattr(m, "qconfig", None)}
    if not left:
        return
    flatten, qconfig_equals, propagate_qconfig_ = _qconfig_helpers()
    fresh = copy.deepcopy(model)  # what the mapping alone assigns, on a copy
    for m in fresh.modules():
        m.__dict__.pop("qconfig", None)
    propagate_qconfig_(fresh, flatten(mapping))
    want = dict(fresh.named_modules())
    stale = [
        p or "<root>"
        for p, q in left.items()
        if p not in want or not qconfig_equals(q, getattr(want[p], "qconfig", None))
    ]
    if stale:
        shown = ", ".join(repr(p) for p in stale[:4]) + (", ..." if len(stale) > 4 else "")
        raise ValueError(
            f"{what}: {len(stale)} module(s) of the model carry a qconfig other than the "
            f"qconfig_mapping gives them ({shown}), left by an earlier prepare_fx/prepare_qat_fx "
            f"(or copied with the model after one, or set by hand); torch reads it before the "
            f"mapping, so this call would quantize them with those settings. Prepare each flow "
            f"from a copy of the float model taken before the first prepare (float_model = "
            f"copy.deepcopy(model)), or drop the attribute on a copy (for m in copy.modules(): "
            f"m.__dict__.pop('qconfig', None)); nothing was changed"
        )


def _prepare_fx(model, qconfig_mapping, example_inputs, qat: bool, **kwargs):
    from torch.ao.quantization import quantize_fx

    what = "prepare_qat_fx" if qat else "prepare_fx"
    mapping = _mapping_for_tied(model, qconfig_mapping)
    _refuse_prepared_before(what, model, mapping)
    before = {m: m.__dict__["qconfig"] for m in model.modules() if "qconfig" in m.__dict__}
    sources = _tie_sources(model)
    fn = quantize_fx.prepare_qat_fx if qat else quantize_fx.prepare_fx
    try:
        with warnings.catch_warnings():
            # torch.ao's notice that FX mode moves to torchao; the caller chose this flow
            warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
            prepared = _traced(
                fn.__name__, model, lambda: fn(model, mapping, example_inputs, **kwargs)
            )
        reads = _keep_source_reads(prepared, sources)
        # a relation's own parameters (Scaled's scale) live on the tied module, read in place
        tied = tuple(p + "." for p in _tied_modules(model) if p)
        reads |= {
            n for n in prepared.graph.nodes if n.op == "get_attr" and n.target.startswith(tied)
        }
        _drop_inner_observers(prepared, reads)
        _refuse_computed_dtype(fn.__name__, prepared, reads, model)
        _warn_unfused_bn(fn.__name__, prepared, model)
        prepared.recompile()
    except BaseException:
        # a failed prepare leaves no qconfig of its own behind, so the model can be fixed
        # (untie the relation the refusal names) and prepared again
        for m in model.modules():
            if m in before:
                m.__dict__["qconfig"] = before[m]
            else:
                m.__dict__.pop("qconfig", None)
        raise
    return prepared


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _warn_unfused_bn(what: str, prepared: torch.fx.GraphModule, model: nn.Module) -> None:
    """Warn for each quantized tied conv / linear that a BatchNorm of its own follows.

    FX fuses an untied ``Conv2d`` with the ``BatchNorm2d`` after it (the BN folded into
    a copy of the weight, quantized once, one output observer). A tied use is traced
    through to a functional call reading its source's weight, which FX does not fuse:
    the BN runs as its own quantized op after the quantized conv. The converted outputs
    differ from the untied copy's by about the quantization error (0.0066 ``prepare_fx``,
    0.016 ``prepare_qat_fx``, on outputs of 0.43; stop 50 open, stop 51), and nothing
    said so. Folding the BN into the one shared weight would change the other uses, so
    the tie is named with the way to torch's fusion (untie that use).
    """
    from torch.ao.quantization import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    def is_observer(node: Any) -> bool:
        return (
            isinstance(node, torch.fx.Node)
            and node.op == "call_module"
            and isinstance(prepared.get_submodule(node.target), (ObserverBase, FakeQuantizeBase))
        )

    def source_of(node: torch.fx.Node) -> str | None:
        seen, todo = set(), [node]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if "tying_source" in n.meta:
                return n.meta["tying_source"]
            todo.extend(n.all_input_nodes)
        return None

    found: list[str] = []
    inv = None
    for bn in prepared.graph.nodes:
        if bn.op != "call_module" or not bn.args:
            continue
        if not isinstance(prepared.get_submodule(bn.target), _BATCH_NORMS):
            continue
        node, observed = bn.args[0], False
        while is_observer(node) and len(node.users) == 1:
            node, observed = node.args[0], True
        name = getattr(getattr(node, "target", None), "__name__", "")
        if not observed or node.op != "call_function" or name not in _FOLDABLE:
            continue
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        source = source_of(weight) if isinstance(weight, torch.fx.Node) else None
        if source is None:
            continue
        inv = inv or Inventory(model)
        uses = [i.path for i in inv.slots.values() if i.is_tied and i.source == source]
        stack = node.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack.values()))[0] if stack else None
        mine = [u for u in uses if scope and u.rsplit(".", 1)[0] == scope] or uses
        found.append(
            f"{' or '.join(repr(u) for u in mine) or 'a use'} (tied to {source!r}) before "
            f"BatchNorm {bn.target!r}"
        )
    if found:
        first = found[0].split("'")[1] if "'" in found[0] else "<slot>"
        warnings.warn(
            f"{what}: {len(found)} tied conv/linear use(s) followed by a BatchNorm of their "
            f"own are not fused with it: {'; '.join(found[:4])}. torch's FX folds the "
            f"BatchNorm into an untied layer's weight (quantized once); a tied use reads its "
            f"source's weight, so the BatchNorm runs as its own quantized op after it, and the "
            f"converted outputs differ from an untied copy's by about the quantization error "
            f"(0.0066 prepare_fx / 0.016 prepare_qat_fx on outputs of 0.43 measured). For "
            f"torch's fusion, give that use its own weight before preparing "
            f"(tying.Plan([tying.free({first!r})]).apply(model)); prepare_pt2e fuses it as the "
            f"untied layer",
            UserWarning,
            stacklevel=4,
        )


def _refuse_computed_dtype(
    what: str, prepared: torch.fx.GraphModule, reads: set[torch.fx.Node], model: nn.Module
) -> None:
    """Refuse a tied weight that reads ``.dtype`` of a tensor computed from its storage.

    ``Hashed`` gathers its buckets (``w[idx]``) and casts the signs to that gather's
    dtype; ``convert_fx`` folds the weight's producers but not the ``getattr`` node,
    and failed with ``KeyError: _2_weight_physical``, naming no tie, after the user
    had calibrated (stop 42). Refused at prepare time instead.
    """
    constant: set[torch.fx.Node] = set()
    for node in prepared.graph.nodes:
        inputs = node.all_input_nodes
        if node in reads or (
            node.op in ("call_function", "call_method")
            and inputs
            and all(i in constant for i in inputs)
        ):
            constant.add(node)
    for node in prepared.graph.nodes:
        if (
            node.op == "call_function"
            and node.target is getattr
            and node.args[1:] == ("dtype",)
            and node.args[0] in constant
        ):
            ties = _relation_ties(model)
            first = ties[0].split(" <- ", 1)[0] if ties else "the tied slot"
            raise TieError(
                f"{what}: a tied weight reads the dtype of a tensor computed from its "
                f"storage ({node.args[0].name}.dtype), which torch's convert_fx cannot fold: "
                f"it would fail after calibration (KeyError). Ties through a relation: "
                f"{'; '.join(ties[:4]) or 'none'}. Give it its own weight first "
                f"(tying.Plan([tying.free({first!r})]).apply(model)), then quantize. Its "
                f"tensors are unchanged"
            )


def prepare_fx(
    model: nn.Module, qconfig_mapping: Any, example_inputs: tuple, **kwargs
) -> torch.fx.GraphModule:
    """``torch.ao.quantization.quantize_fx.prepare_fx`` for a (possibly tied) model.

    Calibrate the result and convert it with torch's ``convert_fx`` as usual.

    Args:
        model: the float model, in eval mode. Its tensors are not changed, but torch
            leaves a ``qconfig`` attribute on its modules and reads it before the
            mapping in a later prepare: preparing the same model again with another
            mapping is refused (``ValueError``); prepare each flow from a fresh copy of
            the float model.
        qconfig_mapping: a ``QConfigMapping`` (or its dict form); an
            ``object_type`` entry for a class serves the tied modules of that class too.
        example_inputs: passed to torch.
        **kwargs: passed to torch (``prepare_custom_config``, ``backend_config``).

    Returns:
        The prepared graph module; every tied use reads the model's own source
        Parameter (also after fusion and ``convert_fx``) and is quantized as an
        untied module of its class would be.

    Raises:
        TypeError: when ``qconfig_mapping`` is not a ``QConfigMapping`` or dict.
        TieError: when torch cannot trace or convert a tie read through a relation
            (``Mirrored``, ``Hashed``), naming the tie and the fix; its tensors are unchanged.
        ValueError: when a module of ``model`` carries a ``qconfig`` other than the
            mapping gives it (left by an earlier call of this function or
            :func:`prepare_qat_fx`, or copied with the model after one): torch would read
            it instead of the mapping; naming the modules; nothing is changed.

    Example:
        >>> import torch, tying
        >>> from torch.ao.quantization import QConfigMapping, get_default_qconfig
        >>> from tying.interop.graph_quantization import prepare_fx
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).eval()
        >>> _ = tying.Plan([tying.share("1", like="0")]).apply(m)
        >>> qm = QConfigMapping().set_object_type(torch.nn.Linear, get_default_qconfig("qnnpack"))
        >>> p = prepare_fx(m, qm, (torch.randn(2, 4),))
        >>> sum("activation_post_process" in n.name for n in p.graph.nodes)  # both layers observed
        4
    """
    return _prepare_fx(model, qconfig_mapping, example_inputs, False, **kwargs)


def prepare_qat_fx(
    model: nn.Module, qconfig_mapping: Any, example_inputs: tuple, **kwargs
) -> torch.fx.GraphModule:
    """``torch.ao.quantization.quantize_fx.prepare_qat_fx`` for a (possibly tied) model.

    Args and Raises as :func:`prepare_fx`; ``model`` in train mode.

    Returns:
        The prepared graph module: one Parameter per physical tensor, fake-quantized
        at every use; ``convert_fx`` then works as for an untied model.

    Example:
        >>> import torch, tying
        >>> from torch.ao.quantization import get_default_qat_qconfig_mapping
        >>> from tying.interop.graph_quantization import prepare_qat_fx
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> p = prepare_qat_fx(m, get_default_qat_qconfig_mapping("qnnpack"), (torch.randn(2, 4),))
        >>> len(list(p.parameters()))  # one weight and one bias
        2
    """
    return _prepare_fx(model, qconfig_mapping, example_inputs, True, **kwargs)


def _mutates(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _name_base_classes(graph_module: torch.fx.GraphModule, model: nn.Module) -> None:
    """Make each node's ``nn_module_stack`` name a tied module's base class."""
    tied = _tied_modules(model)
    by_path = {p: (_qualname(type(m)), _qualname(base_class(m))) for p, m in tied.items()}
    # the ops that compute a weight from stored tensors (a relation, a pruning mask) are
    # no part of the layer's op. A pruned source's mask.to(dtype) is one node that the
    # tied use reads too: inside the source's nn.Linear partition, it became an output
    # of it, and X86InductorQuantizer failed with "to is not an aten linear operator"
    # (stop 39). They are left out of every module's partition.
    # An in-place op on stored tensors (a training BatchNorm's ``num_batches_tracked.add_(1)``)
    # computes no weight and keeps its stack: torchao's convert_pt2e finds that node by the
    # BatchNorm class in its stack, and failed with ``KeyError: 'nn_module_stack'`` after
    # QAT of any model with a BatchNorm, tied or not (stop 51).
    constant: set[torch.fx.Node] = set()
    for node in graph_module.graph.nodes:
        inputs = node.all_input_nodes
        if node.op == "get_attr" or (
            node.op == "call_function"
            and not _mutates(node)
            and inputs
            and all(i in constant for i in inputs)
        ):
            constant.add(node)
    for node in graph_module.graph.nodes:
        if node in constant and node.op == "call_function":
            node.meta.pop("nn_module_stack", None)
            node.meta.pop("source_fn_stack", None)
            continue
        stack = node.meta.get("nn_module_stack")
        if stack:
            for key, (fqn, cls) in list(stack.items()):
                if isinstance(cls, type) and "_tying_base" in cls.__dict__:
                    stack[key] = (fqn, cls._tying_base)
                elif fqn in by_path and cls == by_path[fqn][0]:
                    stack[key] = (fqn, by_path[fqn][1])
        source_fn = node.meta.get("source_fn_stack")
        if source_fn:
            node.meta["source_fn_stack"] = [
                (
                    name,
                    fn._tying_base if isinstance(fn, type) and "_tying_base" in fn.__dict__ else fn,
                )
                for name, fn in source_fn
            ]


_FOLDABLE = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "linear")  # fmt: skip


def _packet_name(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "_overloadpacket", None)
    return getattr(packet, "__name__", "") if node.op == "call_function" else ""


def _private_bn_reads(graph_module: torch.fx.GraphModule, model: nn.Module) -> None:
    """Give a conv / linear that a BatchNorm follows reads of its own of a shared tensor.

    torchao folds a BN into the conv before it (``prepare_pt2e``; ``convert_pt2e`` after
    QAT) by assigning the folded weight to the attribute the conv's ``get_attr`` names.
    A tie is one attribute read by every use, so the fold reached the uses that no BN
    follows: a tied ``Conv2d`` + its own ``BatchNorm2d`` (or a tie source followed by
    one) gave the other use the BN-folded weight, outputs 0.24 from the eager model
    already after ``prepare_pt2e``, no error (stop 51). Each such conv now reads the one
    Parameter under a name of its own, so the fold replaces that name only (an untied
    layer's fold); QAT still trains the one Parameter. A weight computed through a relation
    (``Scaled``) has no attribute to fold into: torchao failed with a bare ``ValueError:
    Expected get_attr node, got call_function``; it is a ``TieError`` naming the tie.
    """
    graph = graph_module.graph
    readers: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            readers[node.target] = readers.get(node.target, 0) + len(node.users)
    for bn in list(graph.nodes):
        if "batch_norm" not in _packet_name(bn) or not bn.args:
            continue
        conv = bn.args[0]
        if not isinstance(conv, torch.fx.Node) or _packet_name(conv) not in _FOLDABLE:
            continue
        for index in (1, 2):
            read = conv.args[index] if len(conv.args) > index else None
            if not isinstance(read, torch.fx.Node):
                continue
            if read.op != "get_attr":
                ties = _relation_ties(model, traced=(Same,))
                if not ties:  # a parametrization of an untied layer: torchao's to say
                    continue
                first = ties[0].split(" <- ", 1)[0]
                raise TieError(
                    f"prepare_pt2e: the {_packet_name(conv)} before BatchNorm node "
                    f"{bn.name!r} computes its {'weight' if index == 1 else 'bias'} "
                    f"({read.name}), as a tie through a relation does ({'; '.join(ties[:4])}); "
                    f"torchao folds a BatchNorm into the attribute the layer reads and fails "
                    f"on a computed one (ValueError: Expected get_attr node). Give that use "
                    f"its own weight first (tying.Plan([tying.free({first!r})]).apply(model)), "
                    f"or quantize with prepare_fx; the model is unchanged"
                )
            if readers.get(read.target, 0) < 2:
                continue  # read by this conv alone: the fold changes nothing else
            tensor = _attr(graph_module, read.target)
            name = base = "_tying_bn_" + read.target.replace(".", "_")
            k = 1
            while hasattr(graph_module, name):
                name, k = f"{base}_{k}", k + 1
            if isinstance(tensor, nn.Parameter):
                graph_module.register_parameter(name, tensor)
            else:
                graph_module.register_buffer(name, tensor)
            with graph.inserting_before(conv):
                own = graph.get_attr(name)
            own.meta = dict(read.meta)
            conv.replace_input_with(read, own)
            readers[read.target] -= 1
    graph_module.recompile()


def _attr(module: nn.Module, target: str) -> Any:
    for atom in target.split("."):
        module = getattr(module, atom)
    return module


def prepare_pt2e(
    model: nn.Module,
    args: tuple,
    quantizer: Any,
    *,
    kwargs: dict | None = None,
    qat: bool = False,
    **export_kwargs,
) -> torch.fx.GraphModule:
    """Export ``model`` and run torchao's ``prepare_pt2e`` (or ``prepare_qat_pt2e``) on it.

    Use it for ``torch.export.export(model, args).module()`` followed by
    ``prepare_pt2e(exported, quantizer)``; calibrate (or train) the result and
    convert it with torchao's ``convert_pt2e`` as usual.

    Args:
        model: the (possibly tied) float model (not changed).
        args: example positional inputs for ``torch.export.export``.
        quantizer: a torchao PT2E quantizer (``X86InductorQuantizer()`` ...).
        kwargs: example keyword inputs for ``torch.export.export``.
        qat: ``prepare_qat_pt2e`` instead of ``prepare_pt2e``.
        **export_kwargs: passed to ``torch.export.export`` (``dynamic_shapes``, ``strict``).

    Returns:
        The prepared graph module, a tied module annotated as its base class
        (a tied ``nn.Linear`` as an ``nn.Linear``), one tensor per physical parameter.

    Raises:
        ImportError: without torchao (``pip install torchao``).
        TieError: when torch fails on a model that reads a tie through a relation
            (``Hashed``), or a BatchNorm follows a layer whose weight a relation computes
            (torchao cannot fold it), naming the tie and the fix; its tensors are unchanged.

    Example:
        >>> import warnings, torch, tying
        >>> with warnings.catch_warnings():  # torch.jit deprecations in its imports
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        >>> from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
        >>> from tying.interop.graph_quantization import prepare_pt2e
        >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8)).eval()
        >>> _ = tying.Plan([tying.share("2", like="0")]).apply(m)
        >>> x = torch.randn(4, 8)
        >>> q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        >>> p = prepare_pt2e(m, (x,), q)
        >>> _ = p(x)  # calibrate
        >>> c = convert_pt2e(p)
        >>> linears = [n for n in c.graph.nodes if n.target == torch.ops.aten.linear.default]
        >>> [n.args[1].op for n in linears]  # both weights dequantized, none read float
        ['call_function', 'call_function']
    """
    try:
        from torchao.quantization.pt2e import quantize_pt2e
    except ImportError as err:  # pragma: no cover - exercised only without torchao
        raise ImportError(
            "tying.interop.graph_quantization.prepare_pt2e needs torchao: pip install torchao"
        ) from err
    exported = _traced(
        "prepare_pt2e",
        model,
        lambda: torch.export.export(model, args, kwargs, **export_kwargs).module(),
    )
    _name_base_classes(exported, model)
    _private_bn_reads(exported, model)
    fn = quantize_pt2e.prepare_qat_pt2e if qat else quantize_pt2e.prepare_pt2e
    return _traced(fn.__name__, model, lambda: fn(exported, quantizer))
