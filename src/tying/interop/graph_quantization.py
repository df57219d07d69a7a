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
quantized as an untied copy's would be. A tie through a relation (``Transposed``)
is quantized after its relation in PT2E (as the untied layer), while FX observes
the source before the relation (per tensor): it runs, quantized more coarsely.

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

from tying.core.inventory import Inventory
from tying.core.slots import base_class


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _tied_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{path: module}`` for every module a tie switched to a ``Tied<Base>`` class."""
    return {p: m for p, m in model.named_modules() if type(m) is not base_class(m)}


def _tie_sources(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{path: Parameter}`` of every tie source (and root source) stored in ``model``."""
    inv = Inventory(model)
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for info in inv.slots.values():
        if not info.is_tied:
            continue
        for path in (info.source, inv.root_of(info.path)):
            if path and path in params:
                out[path] = params[path]
    return out


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


def _keep_source_reads(prepared: torch.fx.GraphModule, sources: dict[str, nn.Parameter]) -> None:
    """Re-point the graph's reads of a tie source to the model's own Parameter.

    The traced tied use reads ``get_attr <source path>``; fusion and ``convert_fx``
    replace the module at that path (folded, fused or packed weights), so the read
    is moved to an attribute of the root that holds the Parameter itself.
    """
    alias: dict[str, str] = {}
    for node in prepared.graph.nodes:
        if node.op != "get_attr" or node.target not in sources:
            continue
        if node.target not in alias:
            name = base = "_tying_" + node.target.replace(".", "_")
            k = 1
            while hasattr(prepared, name):
                name, k = f"{base}_{k}", k + 1
            prepared.register_parameter(name, sources[node.target])
            alias[node.target] = name
        node.target = alias[node.target]
    if alias:
        prepared.recompile()


def _prepare_fx(model, qconfig_mapping, example_inputs, qat: bool, **kwargs):
    from torch.ao.quantization import quantize_fx

    mapping = _mapping_for_tied(model, qconfig_mapping)
    sources = _tie_sources(model)
    fn = quantize_fx.prepare_qat_fx if qat else quantize_fx.prepare_fx
    with warnings.catch_warnings():
        # torch.ao's notice that FX mode moves to torchao; the caller chose this flow
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        prepared = fn(model, mapping, example_inputs, **kwargs)
    _keep_source_reads(prepared, sources)
    return prepared


def prepare_fx(
    model: nn.Module, qconfig_mapping: Any, example_inputs: tuple, **kwargs
) -> torch.fx.GraphModule:
    """``torch.ao.quantization.quantize_fx.prepare_fx`` for a (possibly tied) model.

    Calibrate the result and convert it with torch's ``convert_fx`` as usual.

    Args:
        model: the float model, in eval mode (not changed).
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


def _name_base_classes(graph_module: torch.fx.GraphModule, model: nn.Module) -> None:
    """Make each node's ``nn_module_stack`` name a tied module's base class."""
    tied = _tied_modules(model)
    by_path = {p: (_qualname(type(m)), _qualname(base_class(m))) for p, m in tied.items()}
    for node in graph_module.graph.nodes:
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
    exported = torch.export.export(model, args, kwargs, **export_kwargs).module()
    _name_base_classes(exported, model)
    fn = quantize_pt2e.prepare_qat_pt2e if qat else quantize_pt2e.prepare_pt2e
    return fn(exported, quantizer)
