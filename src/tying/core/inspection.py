"""Inspection: accidental ties (claim D7) and the fan-in of shared layers (claim B15)."""

from __future__ import annotations

import dataclasses
import math
import numbers

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RNN = (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)


def fan_in(module: nn.Module) -> int:
    """The number of inputs of ONE output unit of ``module`` (claim B15).

    A shared weight is reused at every position or time step, but each output
    unit still sums over the same inputs: fan-in is not multiplied by how often
    a weight is reused. Xavier/He initialisation should use this number.

    - Linear: ``in_features``; Bilinear: ``in1_features + in2_features``
    - ConvNd: ``in_channels / groups × kernel area``
    - ConvTransposeNd: ``in_channels / groups × kernel area`` (what one output pixel
      gathers at stride 1)
    - RNN/LSTM/GRU (and cells): ``input_size + hidden_size`` (``proj_size`` for an
      LSTM with projections)
    - Embedding, EmbeddingBag: 1 (each output reads one row)
    - transformers' ``Conv1D`` (GPT-2; weight stored ``(in, out)``): ``nx``
    - torch.ao's quantized Linear and ConvNd: as their float layers
    - any module with ``fan_in()`` or a ``weight`` of ≥ 2 dims: that method, or
      ``weight[0].numel()``.

    Args:
        module: the layer.

    Returns:
        The fan-in as an int.

    Raises:
        TypeError: for a module without weights, naming the supported types.
        ValueError: a lazy layer before its first forward (its input size is unknown), or
            a multi-layer RNN whose layers have different fan-ins.

    Example:
        >>> import torch, tying
        >>> tying.fan_in(torch.nn.Conv2d(3, 16, 5)), tying.fan_in(torch.nn.LSTM(10, 20))
        (75, 30)
    """
    if hasattr(module, "fan_in") and callable(module.fan_in):
        return int(module.fan_in())
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        # a lazy layer's in_features/in_channels is 0 until its first forward: a fan-in of
        # 0 makes a 1/sqrt(fan_in) init infinite (stop 32)
        raise ValueError(
            f"fan_in: {type(module).__name__} has not seen an input yet, so its input size is "
            f"unknown (0 until the first forward); run one forward first, then ask"
        )
    quantized = _quantized_layers()
    if isinstance(module, nn.Linear) or isinstance(module, quantized[0]):
        return module.in_features
    if isinstance(module, nn.Bilinear):
        return module.in1_features + module.in2_features
    if isinstance(module, (*_CONV, *quantized[1:])):
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, _CONV_T):
        # one output pixel gathers in_channels × kernel area inputs (stride 1); PyTorch's
        # own init uses out_channels here, a known quirk we do not copy
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, _RNN):
        # a gate reads the input and the previous output: h, or its projection (an LSTM
        # with proj_size > 0 reads proj_size values, not hidden_size; stop 32)
        recurrent = getattr(module, "proj_size", 0) or module.hidden_size
        first = module.input_size + recurrent
        layers = getattr(module, "num_layers", 1)
        if layers > 1:
            upper = recurrent * (2 if module.bidirectional else 1) + recurrent
            if upper != first:  # layers above the first read the layer below, not the input
                raise ValueError(
                    f"fan_in: {type(module).__name__} has {layers} layers whose fan-ins differ: "
                    f"{first} for layer 0 (input_size {module.input_size} + {recurrent}) and "
                    f"{upper} for layers 1+ (their input is the layer below's output); one "
                    f"number would be wrong for some layers: use the weights' own shapes "
                    f"(weight_ih_l{{k}}.shape[1] + weight_hh_l{{k}}.shape[1]) per layer"
                )
        return first
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        # an EmbeddingBag's weight is (num_embeddings, dim) too: weight[0].numel() below
        # gave dim, its fan-out (stop 35); torch initialises both N(0, 1), as for fan-in 1
        return 1
    weight = getattr(module, "weight", None)
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    if (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and isinstance(nx, int)
        and tuple(weight.shape) == (nx, nf)
    ):
        # transformers' Conv1D (GPT-2) stores its weight (in, out), transposed to nn.Linear:
        # weight[0].numel() below gave nf, its output width (stop 35)
        return nx
    if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
        return weight[0].numel()
    raise TypeError(
        f"fan_in: {type(module).__name__} has no weight to count; supported: Linear, Bilinear, "
        f"ConvNd, ConvTransposeNd, RNN/LSTM/GRU (and cells), Embedding, or a module with fan_in()"
    )


@dataclasses.dataclass(frozen=True)
class AccidentalTie:
    """Output units of one layer whose weights are identical: an accidental tie (claim D7).

    Attributes:
        path: the layer's module path.
        units: indices of the identical output units (one group, ≥ 2 units).
        next_layer: the following layer whose input columns were compared too ("" if none).
    """

    path: str
    units: tuple[int, ...]
    next_layer: str = ""


def find_accidental_ties(model: nn.Module, atol: float = 0.0) -> list[AccidentalTie]:
    """Find groups of neurons with identical weights: the symptom of a symmetric init.

    A neuron of a Linear/Conv/ConvTranspose layer is its incoming row (and bias); when the next
    layer in module order reads this one's outputs (its input width equals this
    layer's output width), the neuron's outgoing column must match too. Units
    that agree within ``atol`` get identical gradients forever: training cannot
    tell them apart. torch.ao's quantized Linear/ConvNd layers are compared by their
    dequantized weights.

    Args:
        model: the model to scan.
        atol: absolute tolerance for "identical" (0: bit-equal).

    Returns:
        A list of :class:`AccidentalTie`, one per group of identical units.

    Raises:
        TypeError: ``atol`` not a real number.
        ValueError: ``atol`` negative or NaN, or a layer on the meta device (no values), a
            lazy layer before its first forward, a sparse weight, or NaN weights (a NaN
            equals nothing: units holding one could never be found identical).

    Units of a grouped conv are compared within their group only (the groups read
    different input channels).

    Example:
        >>> import torch, tying
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        >>> for p in net.parameters():
        ...     _ = torch.nn.init.constant_(p, 0.5)
        >>> tying.find_accidental_ties(net)
        [AccidentalTie(path='0', units=(0, 1, 2, 3), next_layer='2')]
    """
    if isinstance(atol, bool) or not isinstance(atol, (numbers.Real, torch.Tensor)):
        raise TypeError(
            f"find_accidental_ties: atol must be a real number, got {type(atol).__name__} {atol!r}"
        )
    if not atol >= 0:  # a negative or NaN tolerance matched nothing: silently no ties
        raise ValueError(f"find_accidental_ties: atol must be >= 0, got {atol}")
    quantized = _quantized_layers()
    layers = [
        (path, m)
        for path, m in model.named_modules()
        # stop 56: transposed convs were left out, so a decoder of ConvTranspose layers
        # whose units a symmetric init made identical scanned as "no accidental ties"
        if isinstance(m, (nn.Linear, *_CONV, *_CONV_T))
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        or isinstance(m, quantized)
    ]
    found = []
    with torch.no_grad():
        for i, (path, layer) in enumerate(layers):
            w, bias = _weight_and_bias(path, layer)
            rows = [_incoming(layer, w)]
            out_units = rows[0].shape[0]
            prefix = f"{path}." if path else ""
            named = [(f"{prefix}weight", w)]
            if bias is not None:
                rows.append(bias.reshape(out_units, 1))
                named.append((f"{prefix}bias", bias))
            next_path = ""
            if i + 1 < len(layers):
                npath, nxt = layers[i + 1]
                nw = _weight_and_bias(npath, nxt)[0]
                # a transposed conv's weight is (in, out / groups, *kernel): its input
                # channels, this layer's units, are its first axis
                axis = 0 if isinstance(nxt, _CONV_T) else 1
                if nw.ndim >= 2 and nw.shape[axis] == out_units:
                    rows.append(nw.transpose(0, axis).reshape(out_units, -1))
                    named.append((f"{npath}.weight (the next layer)", nw))
                    next_path = npath
            if any(r.is_meta for r in rows):
                raise ValueError(
                    f"find_accidental_ties: {path or 'the model'} (or the layer after it) is "
                    f"on the meta device and has no values to compare; load or materialise "
                    f"the weights first (model.to_empty(device=...) and an init, or a load)"
                )
            # complex weights compared as complex: a cast to float64 dropped the imaginary
            # parts, so units differing there only were reported tied (stop 32)
            wide = torch.complex128 if any(r.is_complex() for r in rows) else torch.float64
            feats = torch.cat([r.to(wide) for r in rows], dim=1)  # (units, features)
            _refuse_nan(named)
            # units in different groups of a grouped conv read different input channels: a
            # depthwise conv whose channels all start as one kernel (dirac_, a fixed blur)
            # trains them apart (stop 35: they were reported as one accidental tie)
            groups = 1 if isinstance(layer, nn.Linear) else int(getattr(layer, "groups", 1))
            per_group = out_units // max(groups, 1) or 1
            group = torch.arange(out_units, device=feats.device) // per_group
            assigned = torch.zeros(out_units, dtype=torch.bool, device=feats.device)
            for u in range(out_units):
                if assigned[u]:
                    continue
                # equal entries match too: inf - inf is nan, so identical units with an
                # infinite weight were not found (stop 35)
                close = ((feats - feats[u]).abs() <= atol) | (feats == feats[u])
                same = close.all(dim=1) & (group == group[u])
                same &= ~assigned
                if int(same.sum()) > 1:
                    units = tuple(int(j) for j in torch.nonzero(same).flatten())
                    found.append(AccidentalTie(path, units, next_path))
                assigned |= same
    return found


def _incoming(layer: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """One row per output unit of ``layer``: the weights it reads, ``(units, features)``.

    A Linear's or conv's weight is ``(out, in / groups, *kernel)``; a transposed conv's is
    ``(in, out / groups, *kernel)``, so its unit ``o`` of group ``g`` reads
    ``w[g * in_g:(g + 1) * in_g, o % out_g]`` (units are compared within their group)."""
    if not isinstance(layer, _CONV_T):
        return w.reshape(w.shape[0], -1)
    groups = int(layer.groups)
    in_g, out_g = w.shape[0] // groups, w.shape[1]
    per = w.reshape(groups, in_g, out_g, -1).permute(0, 2, 1, 3)  # (groups, out_g, in_g, k)
    return per.reshape(groups * out_g, -1)


def _refuse_nan(named: list[tuple[str, torch.Tensor]]) -> None:
    """A NaN compares unequal to everything, itself included, so units holding one were
    never found identical: a diverged model scanned as "no accidental ties" (stop 35)."""
    for name, t in named:
        bad = int(t.isnan().sum()) if t.is_floating_point() or t.is_complex() else 0
        if bad:
            raise ValueError(
                f"find_accidental_ties: {name} has {bad} NaN entries, so its units cannot be "
                f"compared (NaN equals nothing, itself included); the weights diverged or "
                f"were never set: find where the NaN came from (e.g. "
                f"torch.autograd.set_detect_anomaly(True)), or scan a checkpoint from before"
            )


def _quantized_layers() -> tuple[type, ...]:
    """torch.ao's quantized Linear and ConvNd (static and dynamic): their weights are packed
    and read through ``weight()``; they are no ``nn.Linear``, and a scan of a quantized model
    found nothing, silently, where units were identical (stop 33)."""
    from torch.ao.nn import quantized as q

    return (q.Linear, q.Conv1d, q.Conv2d, q.Conv3d)


def _weight_and_bias(path: str, layer: nn.Module):
    """A layer's weight and bias (or None) as plain tensors, refusing what has no values."""
    weight, bias = layer.weight, getattr(layer, "bias", None)
    if callable(weight):  # torch.ao quantized: the values the layer computes with
        weight, bias = weight().dequantize(), bias() if callable(bias) else bias
    for name, t in (("weight", weight), ("bias", bias)):
        if isinstance(t, nn.parameter.UninitializedParameter):
            # torch's own error named no layer
            raise ValueError(
                f"find_accidental_ties: {path or 'the model'}.{name} is uninitialized (a lazy "
                f"{type(layer).__name__} before its first forward); run one forward with an "
                f"example input first"
            )
        if t is not None and t.layout != torch.strided:
            # torch failed in reshape ("not implemented for sparse tensors"), naming no layer
            raise ValueError(
                f"find_accidental_ties: {path or 'the model'}.{name} is a {t.layout} tensor; "
                f"units are compared as dense rows: pass a model with dense weights (a copy "
                f"whose weights are .to_dense())"
            )
    return weight.detach(), None if bias is None else bias.detach()
