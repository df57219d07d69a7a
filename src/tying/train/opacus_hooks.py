"""Opacus' hook-based per-sample gradients on a model tied with ``tying`` (issue 15).

Opacus' ``GradSampleModule`` finds the modules to hook by their *own*
trainable parameters (``module.parameters(recurse=False)``), and credits each
module's per-sample gradient to those parameters. A slot tied by a ``tying``
Plan is served by a property on the tied module's class, not registered on it,
so Opacus never sees that use: the output layer of an LM whose ``lm_head.weight``
reads ``embed.weight`` gets no hook, and the embedding's per-sample gradients
hold only the lookup part (the clipped gradient was 96 % off, silently). A tied
module that still owns a parameter (a bias beside a tied weight) fares worse:
Opacus' functorch fallback deep-copies it to the meta device, the source module
included.

:func:`grad_sample_module` wraps the model with Opacus' own ``GradSampleModule``
(hooks mode) and adds what Opacus cannot see:

- a forward/backward hook pair on every module with a tied slot: the slot's
  per-sample gradient (the ``Linear``/``Embedding`` formulas Opacus uses), mapped
  back through the relation (``Transposed``, ``Rotated``, ...) with a vector-Jacobian
  product, and *added* to the physical parameter's per-sample gradient with
  Opacus' own accumulation; the use is counted in Opacus' ``_forward_counter``,
  so the gradient is complete before Opacus hands it on, whatever the order of
  the uses;
- Opacus' registered grad sampler for the tied classes, computing their own
  parameters by the base class's formula (no deep copy), and a tensor a slot's relation
  reads on its own module (its physical tensor under ``Mirrored``/``Hashed``, ``Scaled``'s
  scale) through the relation.

Then ``p.grad_sample`` of every physical parameter is the sum over all its uses,
and Opacus' ``DPOptimizer`` clips and noises the right vector. Opacus wrapping a
Plan-tied model any other way is refused at the first forward pass with a
``TieError`` naming the slot (a one-line check in :mod:`tying.core.slots`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import vjp, vmap
from torch.overrides import TorchFunctionMode

from tying.core.errors import TieError
from tying.core.relations import Same
from tying.core.slots import GRAD_SAMPLE_HOOKED_ATTR, base_class, slots_of
from tying.train._functorch_inputs import functorch_units, input_guards, refuse_multi_input_units
from tying.train._opacus_probe import _BackwardProbe
from tying.train._opacus_rows import row_guards, sampled_layers
from tying.train._opacus_wrapping import hooks_kwargs, opacus_undo
from tying.train._vetting import (
    METADATA_CALLS,
    batch_rows,
    buffers_kept,
    callable_overrides,
    compiled_in_place,
    compiled_wrapper,
    cuda_devices,
    forward_key,
    func_name,
    gradless,
    refuse_mixing_forward,
    tensors_in,
    undo_overrides,
)
from tying.train.ghost import _autocast_off, reads_no_size

# The key that tells tying.core.slots this module's tied uses are counted.
HOOKED_ATTR = GRAD_SAMPLE_HOOKED_ATTR  # the mark core.slots checks at every read
_SUPPORTED = (nn.Linear, nn.Embedding)


def _tied_slots(model: nn.Module) -> list[tuple[str, nn.Module, str, object]]:
    """(path, module, slot name, slot) of every tied slot, each checked as the hooks need.

    A slot whose physical tensor is its module's own (``share("b.weight",
    relation=Mirrored())``) is Opacus' to hook, by the tied class's sampler
    (:func:`_own_params_sampler`); one reading another module's tensor gets tying's hooks.
    """
    out = []
    for path, module in model.named_modules():
        for name, slot in slots_of(module).items():
            where = f"{path + '.' if path else ''}{name}"
            base = base_class(module)
            if not issubclass(base, _SUPPORTED) or (
                base is nn.Linear and name not in ("weight", "bias")
            ):
                raise TieError(
                    f"{where}: tying.train.grad_sample_module counts tied uses in nn.Linear "
                    f"(weight, bias) and nn.Embedding (weight) only, got {base.__name__}.{name}; "
                    f"use tying.train.DPSGD(mode='vmap'), whose per-example gradients are right "
                    f"for any tie"
                )
            plain = nn.Embedding if issubclass(base, nn.Embedding) else nn.Linear
            own = [f"{base.__name__}.forward"] if type(module).forward is not plain.forward else []
            own += [f"{n} set on the instance" for n in callable_overrides(module)]
            if own:
                # stop 31: the tied use's per-sample gradient is the plain layer's formula
                # (x Wᵀ + b, or a row lookup); a subclass computing anything else got it
                # anyway (40 off a per-example loop, with no error), where Opacus' functorch
                # fallback is exact for the same untied subclass
                undo = undo_overrides(module, path)  # stop 62: .compile() was told none
                raise TieError(
                    f"{where}: tying.train.grad_sample_module computes a tied use's per-sample "
                    f"gradient by nn.{plain.__name__}'s own forward, but {path or '<root>'} runs "
                    f"{' and '.join(own)}; "
                    + (f"remove it ({undo}), " if undo else "")
                    + f"tie a plain nn.{plain.__name__} (keep the extra "
                    f"computation in a parent module), or use tying.train.DPSGD(mode='vmap'), "
                    f"whose per-example gradients are right for any forward"
                )
            if issubclass(base, nn.Embedding) and (
                module.max_norm is not None or module.scale_grad_by_freq
            ):
                raise TieError(
                    f"{where}: an Embedding with max_norm or scale_grad_by_freq mixes the examples "
                    f"of a batch, so it has no per-example gradient; drop the option or use "
                    f"tying.train.DPSGD"
                )
            src = getattr(slot.source_module, slot.source_name)
            if not isinstance(src, nn.Parameter):
                raise TieError(
                    f"{where}: its source {slot.paths[1] or slot.source_name!r} is not a parameter "
                    f"(a chain of ties?); per-sample gradients need the physical parameter"
                )
            out.append((path, module, name, slot))
    return out


def _slot_grad_sample(module: nn.Module, name: str, a: torch.Tensor, g: torch.Tensor):
    """Per-example gradient (B, *slot shape) of the slot ``name`` of a Linear/Embedding."""
    B = g.shape[0]
    if B == 0:
        # An empty batch: Opacus' DPDataLoader (Poisson sampling, make_private's default)
        # draws them, and its own samplers return (0, *shape); reshape(0, -1, ...) cannot
        # infer -1 from no elements, so the step failed (stop 31).
        if isinstance(module, nn.Embedding):
            shape = (module.num_embeddings, module.embedding_dim)
        else:
            shape = (module.out_features, module.in_features)[: 1 if name == "bias" else 2]
        return g.new_zeros((0, *shape))
    if isinstance(module, nn.Embedding):  # (B, ...) indices, (B, ..., d) output grads
        d = module.embedding_dim
        gs = torch.zeros(B, module.num_embeddings, d, dtype=g.dtype, device=g.device)
        idx = a.reshape(B, -1, 1).expand(-1, -1, d)
        gs.scatter_add_(1, idx, g.reshape(B, -1, d))
        if module.padding_idx is not None:  # autograd gives the padding row no gradient
            gs[:, module.padding_idx] = 0
        return gs
    g3 = g.reshape(B, -1, g.shape[-1])  # (B, T, out)
    if name == "bias":
        return g3.sum(1)
    a3 = a.reshape(B, -1, a.shape[-1]).to(g.dtype)  # (B, T, in)
    return torch.einsum("bto,bti->boi", g3, a3)  # (B, out, in)


def _to_physical(module: nn.Module, slot, src: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
    """Map per-example gradients of the logical slot to the physical tensor (vjp of the relation)."""
    if type(slot.relation) is Same:
        return gs
    extras = {
        role: getattr(module, n).detach() for role, n in slot.storage.items() if role != "source"
    }
    _, pullback = vjp(lambda p: slot.relation(p, shape=slot.shape, **extras), src.detach())
    return vmap(pullback)(gs)[0]


def _to_role(module: nn.Module, slot, role: str, gs: torch.Tensor) -> torch.Tensor:
    """Per-example gradients of one tensor the relation reads (its source or an extra such
    as ``Scaled``'s scale), from the logical slot's ``gs`` (B, *slot shape): a vjp of the
    relation in that tensor, the others held fixed."""
    if "source" in slot.storage:
        src = getattr(module, slot.storage["source"])
    else:
        src = getattr(slot.source_module, slot.source_name)
    held = {"source": src.detach()}
    held.update({r: getattr(module, n).detach() for r, n in slot.storage.items() if r != "source"})

    def logical(t):
        args = {**held, role: t}
        return slot.relation(args.pop("source"), shape=slot.shape, **args)

    _, pullback = vjp(logical, held[role])
    return vmap(pullback)(gs)[0]


def _own_params_sampler(base: type):
    """An Opacus grad sampler for a tied class: its *own* parameters, by the base formula.

    A parameter that a tied slot's relation reads (the physical tensor a slot keeps on its
    own module, ``Mirrored``'s half or ``Hashed``'s buckets; ``Scaled``'s scale) gets the
    slot's per-example gradient mapped through the relation. Stop 34: the base formula
    gave a ``Scaled`` tie's scalar scale a (B, out, in) weight gradient, and Opacus'
    ``DPOptimizer`` failed with torch's "shape '[]' is invalid for input of size 36".
    """

    def sampler(module, activations, backprops):
        a = activations[0]
        roles = {
            pname: (sname, slot, role)
            for sname, slot in slots_of(module).items()
            for role, pname in slot.storage.items()
        }
        out = {}
        with _autocast_off(backprops.device):  # in each parameter's dtype (see backward)
            for n, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                g = backprops.to(p.dtype)
                _widen_current(p, p.dtype)
                if n in roles:
                    sname, slot, role = roles[n]
                    out[p] = _to_role(module, slot, role, _slot_grad_sample(module, sname, a, g))
                else:
                    out[p] = _slot_grad_sample(module, n, a, g)
        return out

    return sampler


def _widen_current(p: torch.Tensor, dtype: torch.dtype) -> None:
    """Widen a per-sample gradient Opacus began in a lower precision (its own sampler of
    another use, under autocast) to ``dtype`` before a use in ``dtype`` is added to it:
    Opacus adds in place, which would round the sum back to bfloat16 (stop 35)."""
    cur = getattr(p, "_current_grad_sample", None)
    if cur is not None and cur.dtype.itemsize < dtype.itemsize:
        p._current_grad_sample = cur.to(dtype)


def _refuse_functorch_units(model: nn.Module, uses, samplers) -> None:
    """Refuse a tied use inside a module Opacus samples as a whole with functorch.

    Opacus hands a module that holds trainable parameters of its own and has no grad
    sampler of its class (a root with ``self.pos = nn.Parameter(...)``) to functorch as
    one unit: every parameter under it, through every use, tie included, and it hooks
    nothing inside. The tied-use hooks added the use a second time (stop 31: 1.36 off a
    per-example loop on an embedding-tied LM whose root held a position table, no error).
    """
    from opacus.layers import DPGRU, DPLSTM, DPRNN

    units: list[tuple[str, nn.Module]] = []

    def walk(path: str, mod: nn.Module) -> None:  # as Opacus' iterate_submodules
        own = any(p.requires_grad for p in mod.parameters(recurse=False))
        if own and type(mod) not in samplers and type(mod) not in (DPRNN, DPLSTM, DPGRU):
            units.append((path, mod))
            return
        for name, child in mod.named_children():
            walk(f"{path}.{name}" if path else name, child)

    walk("", model)
    for upath, unit in units:
        own = ", ".join(n for n, p in unit.named_parameters(recurse=False) if p.requires_grad)
        seen: dict[int, str] = {}
        for n, p in unit.named_parameters(remove_duplicate=False):
            if p.requires_grad and id(p) in seen:
                # Opacus' functorch copy of such a unit gave garbage (1.43 off, NaN in
                # another run) where the untied unit is exact (stop 31)
                full = f"{upath}.{n}" if upath else n
                first = f"{upath}.{seen[id(p)]}" if upath else seen[id(p)]
                raise TieError(
                    f"{full}: one nn.Parameter with {first} (a hand-made tie) inside "
                    f"{upath or 'the model'!r} ({type(unit).__name__}), which Opacus samples "
                    f"as a whole with functorch (it holds the parameter(s) {own} itself and "
                    f"Opacus has no grad sampler for its class); functorch's copy of a "
                    f"hand tie gives wrong per-sample gradients; move {own} into a child "
                    f"module (e.g. an nn.Embedding for a position table), or use "
                    f"tying.train.DPSGD(mode='vmap')"
                )
            seen.setdefault(id(p), n)
        inside = {id(m) for m in unit.modules()}
        for path, module, name, slot in uses:
            if id(module) in inside or id(slot.source_module) in inside:
                where = f"{path + '.' if path else ''}{name}"
                raise TieError(
                    f"{where}: Opacus samples {upath or 'the model'!r} "
                    f"({type(unit).__name__}) as a whole with functorch (it holds the "
                    f"parameter(s) {own} itself and Opacus has no grad sampler for its "
                    f"class), which covers this tie's uses already, so tying's hooks would "
                    f"count them twice; move {own} into a child module (e.g. an nn.Embedding "
                    f"for a position table), or use tying.train.DPSGD(mode='vmap')"
                )


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _refuse_embedding_bag(model: nn.Module) -> None:
    """Refuse a trainable ``nn.EmbeddingBag``: Opacus' sampler writes each bag's rows with
    ``gsm[i][index] += g`` (a token repeated in a bag counted once) and skips
    ``mode="max"``, ``per_sample_weights`` and ``padding_idx``; per-sample gradients were
    0.031 (mean), 0.19 (sum) and 3.09 (max) off a per-example loop on a bag with a
    repeated token, with no error (stop 42). Its functorch way refuses the class, and a
    2-D input failed with "not enough values to unpack"."""
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        if isinstance(module, nn.EmbeddingBag) and weight is not None and weight.requires_grad:
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is an nn.EmbeddingBag (mode="
                f"{module.mode!r}), and Opacus' per-sample gradient of it counts a token "
                f"repeated in one bag once and ignores mode='max', per_sample_weights and "
                f"padding_idx (off autograd's with no error); use tying.train.DPSGD or "
                f"per_example_grads with the bags as a (B, L) tensor (they follow "
                f"autograd), or freeze it"
            )


def _refuse_max_norm(model: nn.Module) -> None:
    """Refuse a trainable ``nn.Embedding`` with ``max_norm``: its forward renormalises, in
    place and without noise, the rows the batch reads, so the weights released after a
    step show which tokens the private batch held, outside epsilon (stop 57b: taken, the
    rows written at the forward; ``DPSGD`` in either mode and a tied one here refuse it).
    """
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        if (
            isinstance(module, nn.Embedding)
            and module.max_norm is not None
            and weight is not None
            and weight.requires_grad
        ):
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is an Embedding with max_norm="
                f"{module.max_norm}, whose forward renormalises the rows the batch reads in "
                f"place (the private batch's tokens written into the weights without noise, "
                f"outside epsilon); set max_norm=None and renormalise every row after each "
                f"step (weight.data.renorm_(2, 0, max_norm)), or freeze it"
            )


def _refuse_fused_recurrent(model: nn.Module) -> None:
    """Refuse a trainable ``nn.RNN``/``nn.LSTM``/``nn.GRU``: Opacus has no grad sampler
    for them and samples them with functorch, which fails inside torch's fused recurrent
    kernel with a shape error that names no layer ("output with shape [1, 20] doesn't
    match the broadcast shape [7, 1, 20]", at the backward, stop 42)."""
    for path, module in model.named_modules():
        if isinstance(module, nn.RNNBase) and any(p.requires_grad for p in module.parameters()):
            dp = {"LSTM": "DPLSTM", "GRU": "DPGRU"}.get(type(module).__name__, "DPRNN")
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is an nn.{type(module).__name__}, "
                f"whose fused recurrent kernel Opacus cannot sample per example (functorch "
                f"fails on it at the backward); swap it for opacus.layers.{dp} "
                f"(opacus.validators.ModuleValidator.fix(model) does), or freeze it"
            )


def _refuse_samplers_that_drop_a_setting(model: nn.Module) -> None:
    """Refuse a layer whose per-sample gradient Opacus' own sampler computes without one of
    its settings (stop 33): a ``Conv1d/2d/3d`` with ``padding_mode`` ``"circular"``,
    ``"reflect"`` or ``"replicate"`` (the sampler unfolds the input with zero padding:
    28-66 % off a per-example loop) and an ``Embedding`` with ``scale_grad_by_freq`` (the
    sampler does not scale: 46 % off); and (stop 55) a ``LayerNorm(bias=False)``, whose
    sampler reads ``layer.bias.requires_grad`` and failed at the backward with an
    ``AttributeError`` naming no layer. Only the exact classes are sampled that way; a
    subclass, and every layer under ``force_functorch=True``, goes through
    ``torch.func``, which follows autograd."""
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is None or not weight.requires_grad:
            continue
        what, why = None, "its per-sample gradients would be off autograd's with no error"
        if (
            type(module) in _CONVS
            and module.padding_mode != "zeros"
            and any(module._reversed_padding_repeated_twice)
        ):
            what = f"a {type(module).__name__} with padding_mode={module.padding_mode!r}"
            wrong = "pads the input with zeros"
        elif type(module) is nn.Embedding and module.scale_grad_by_freq:
            what = "an Embedding with scale_grad_by_freq=True"
            wrong = "does not scale by the tokens' frequency"
        elif type(module) is nn.LayerNorm and module.bias is None:
            # stop 55: Opacus 1.6's sampler reads layer.bias.requires_grad, so the backward
            # failed with "'NoneType' object has no attribute 'requires_grad'", naming no layer
            what = "a LayerNorm with bias=False"
            wrong = "reads the bias it lacks"
            why = "it fails at the backward with an AttributeError naming no layer"
        if what is not None:
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is {what}, and Opacus' per-sample "
                f"gradient of that layer {wrong} ({why}); pass force_functorch=True (Opacus then "
                f"follows autograd), or use tying.train.DPSGD or per_example_grads"
            )


def _refuse_compiled_relation(model: nn.Module, slots) -> None:
    """Refuse ``torch.compile``'s wrapper of a model with a relation tie (stop 61): its
    first forward under Opacus' hooks ended in a RecursionError inside dynamo, naming
    neither the tie nor a fix (an untied or ``Same``-tied compiled model runs)."""
    if not compiled_wrapper(model):
        _refuse_compiled_part(model, slots)
        return
    related = [
        f"{path}.{name}" if path else name
        for path, _, name, slot in slots
        if type(slot.relation).__name__ != "Same"
    ]
    if related:
        raise ValueError(
            f"grad_sample_module: the model is torch.compile's wrapper of a model whose "
            f"slot {related[0]} is computed through a relation, which Opacus' hooks cannot "
            f"run under dynamo (a RecursionError at the first forward); wrap the module "
            f"itself, grad_sample_module(model._orig_mod, ...), which runs it eagerly"
        )


def _refuse_compiled_part(model: nn.Module, slots) -> None:
    """Refuse a compiled part holding a relation tie: ``module.compile()`` in place, or a
    ``torch.compile`` wrapper held as a child (review 61: the same RecursionError at the
    first forward as the wrapper of the whole model); and ``model.compile()`` on the model
    wrapped, tied or not (stop 62: dynamo's InternalTorchDynamoError or a RecursionError
    at the first forward, naming neither the cause nor a fix)."""
    for where, mod in model.named_modules():
        wrapper = compiled_wrapper(mod) and bool(where)
        in_place = compiled_in_place(mod)
        if not (wrapper or in_place):
            continue
        inside = f"{where}." if where else ""
        related = [
            f"{path}.{name}" if path else name
            for path, _, name, slot in slots
            if type(slot.relation).__name__ != "Same" and f"{path}.".startswith(inside)
        ]
        if not related:
            continue
        at = f"model.get_submodule({where!r})" if where else "model"
        parent, _, attr = where.rpartition(".")
        holder = f"model.get_submodule({parent!r})" if parent else "model"
        fix = (
            f"setattr({holder}, {attr!r}, {at}._orig_mod) puts back the module it compiled"
            if wrapper
            else f"{at}._compiled_call_impl = None undoes its .compile()"
        )
        what = "torch.compile's wrapper" if wrapper else "compiled in place (.compile())"
        raise ValueError(
            f"grad_sample_module: {where or 'the model'} is {what}, and its slot "
            f"{related[0]} is computed through a relation, which Opacus' hooks cannot run "
            f"under dynamo (a RecursionError at the first forward); wrap the model with that "
            f"part uncompiled: {fix}"
        )

    if compiled_in_place(model):
        raise ValueError(
            "grad_sample_module: the model was compiled in place (model.compile()), and "
            "Opacus' hooks cannot run its compiled forward (dynamo fails at the first "
            "forward); wrap it uncompiled: model._compiled_call_impl = None undoes its "
            ".compile(), or use tying.train.DPSGD, whose "
            "per-example gradients run a compiled model eagerly"
        )


def grad_sample_module(model: nn.Module, *, loss_reduction: str = "mean", **kwargs):
    """Opacus' ``GradSampleModule`` (hooks mode) whose per-sample gradients count tied uses.

    Args:
        model: a model tied with ``tying`` (Plan ties of ``nn.Linear`` weight/bias and
            ``nn.Embedding`` weight, with any relation) or by hand; batch first.
        loss_reduction: ``"mean"`` or ``"sum"``, as for Opacus.
        **kwargs: passed to ``opacus.GradSampleModule`` (``batch_first`` must stay True).

    Returns:
        The ``GradSampleModule``; use it as Opacus documents (``DPOptimizer``, or
        ``PrivacyEngine.make_private(module=...)``, which keeps a module already wrapped).

    Raises:
        TieError: a tied slot on a module other than ``nn.Linear``/``nn.Embedding``, an
            Embedding with ``max_norm``/``scale_grad_by_freq``, or a source that is not a
            parameter (the model is left unwrapped); at the backward, a tied use whose
            module is in eval mode (Opacus' hooks skip it, so its use would be missing).
        ValueError: ``batch_first=False``; ``loss_reduction`` not ``"mean"``/``"sum"``;
            a ``grad_sample_mode`` other than ``"hooks"`` or ``"functorch"`` (and
            ``force_functorch=True`` where a tied module holds parameters of its own);
            a model an Opacus wrapper holds already; ``torch.compile``'s wrapper of a
            model with a relation tie (wrap ``model._orig_mod``; stop 61); a layer
            Opacus' own sampler gets wrong (an Embedding with ``padding_idx`` or
            ``scale_grad_by_freq``, a Conv with a ``padding_mode`` other than
            ``"zeros"``, a ``LayerNorm(bias=False)``), or that it cannot sample (a trainable
            ``nn.RNN``/``nn.LSTM``/``nn.GRU``, an ``nn.EmbeddingBag``), naming it; a
            trainable Embedding with ``max_norm`` (its forward writes the batch's rows); a
            layer Opacus samples with functorch (no sampler of its class) whose forward
            needs several inputs (``nn.Bilinear``, ``nn.MultiheadAttention``), and, at its
            call, one handed more than its first positional input; a
            forward that mixes examples; at a forward, a custom ``autograd.Function``
            whose backward mixes them (naming it; Opacus' records of that forward taken back);
            at a backward, a custom ``autograd.Function`` in the loss applied to the
            model's output (naming it, "in the loss"; nothing written), or a loss whose
            own node reduces the batch otherwise than ``loss_reduction`` says (a torch loss
            with ``reduction="sum"`` under ``"mean"``, a full ``.mean()`` under ``"sum"``;
            per-sample gradients B times or 1/B of the examples' own; nothing written; a
            loss scaled by hand, ``loss.sum() / B``, is taken as written), or a torch
            ``cross_entropy``/``nll_loss`` mean whose divisor the batch sets: a class
            weight, or examples keeping different numbers of targets (``ignore_index``
            over padding, rows masked out; stop 59), or any mean over the output entries
            a mask kept (``F.mse_loss(out[mask], y[mask])``) where the examples keep
            different numbers (stop 62). A layer handed
            its first input by keyword (``a(x=x)``) is told to take it positionally.
            A model compiled in place (``model.compile()``; stop 62).
        ImportError: Opacus is not installed (names the extra).

    Whatever fails, the model is left as it was: an error Opacus raises halfway through
    its wrapping (its ``validate``, a copy ``tying.core`` refuses) takes back the hooks
    and parameter marks it had added, and the grad samplers registered here.

    Example:
        >>> import torch, tying
        >>> from tying.train import grad_sample_module
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
        >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(net)
        >>> gsm = grad_sample_module(net, loss_reduction="sum")
        >>> tok = torch.tensor([[0, 1], [2, 3]])
        >>> loss = torch.nn.functional.cross_entropy(gsm(tok).flatten(0, 1), tok.flatten(), reduction="sum")
        >>> import warnings
        >>> with warnings.catch_warnings():  # torch's note on Opacus' hook on the first layer
        ...     warnings.filterwarnings("ignore", message="Full backward hook is firing")
        ...     loss.backward()
        >>> w = net[0].weight     # both uses summed: the per-example gradients add up to the batch gradient
        >>> torch.allclose(w.grad_sample.sum(0), w.grad, atol=1e-6)
        True
    """
    try:
        from opacus import GradSampleModule
        from opacus.grad_sample.grad_sample_module import (
            create_or_accumulate_grad_sample,
            promote_current_grad_sample,
        )
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tying.train.grad_sample_module wraps Opacus, which is not installed; install it "
            "with: pip install 'tying[privacy]'"
        ) from err
    if not kwargs.get("batch_first", True):
        raise ValueError("batch_first must be True: tying's tied-use hooks read the batch first")
    if not isinstance(loss_reduction, str) or loss_reduction not in ("mean", "sum"):
        # stop 55: Opacus takes any value here and raises at the first backward, after
        # the forward's activations were recorded
        raise ValueError(
            f"grad_sample_module: loss_reduction must be 'mean' or 'sum' (how the loss "
            f"reduced the batch), got {loss_reduction!r}"
        )
    kwargs = hooks_kwargs(kwargs)
    if "autograd_grad_sample_hooks" in model.__dict__:
        # stop 55: Opacus' constructor reset every parameter's grad_sample to None and its
        # forward counter to 0 before it found its own hooks ("Trying to add hooks twice"),
        # wiping the live wrapper's per-sample gradients
        raise ValueError(
            f"grad_sample_module: the model ({type(model).__name__}) is wrapped by an Opacus "
            f"GradSampleModule already (it holds autograd_grad_sample_hooks); use that "
            f"wrapper, or release it first (gsm._close() or gsm.to_standard_module())"
        )
    slots = _tied_slots(model)  # refuses before anything is registered or wrapped
    _refuse_compiled_relation(model, slots)
    uses = [u for u in slots if "source" not in u[3].storage]
    # modules whose slots keep their physical tensor (or a relation's extra, Scaled's scale)
    # on the module itself: Opacus hooks them, by the sampler registered below
    keepers = {id(m): m for _, m, _, slot in slots if slot.storage}
    for path, module in model.named_modules():
        weight = module._parameters.get("weight") if isinstance(module, nn.Embedding) else None
        if weight is not None and weight.requires_grad and module.padding_idx is not None:
            # stop 30 review: Opacus' Embedding sampler ignores padding_idx, so the padding
            # row got per-sample gradients (1.55 off per-example autograd, and grad_sample
            # did not even sum to .grad), with no error
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is an Embedding with padding_idx="
                f"{module.padding_idx}, and Opacus' per-sample gradient of an Embedding "
                f"ignores padding_idx (it gives the padding row per-sample gradients, where "
                f"autograd gives it none); use tying.train.DPSGD or per_example_grads (they "
                f"follow autograd), or set padding_idx=None"
            )
    _refuse_fused_recurrent(model)
    _refuse_embedding_bag(model)
    _refuse_max_norm(model)
    if not kwargs.get("force_functorch", False):
        _refuse_samplers_that_drop_a_setting(model)
    tied_modules = [m for _, m, _, _ in uses] + list(keepers.values())
    ours = {type(m) for m in tied_modules if any(True for _ in m.parameters(recurse=False))}
    _refuse_functorch_units(model, uses, {*GradSampleModule.GRAD_SAMPLERS, *ours})
    units = functorch_units(
        model, {*GradSampleModule.GRAD_SAMPLERS, *ours}, bool(kwargs.get("force_functorch"))
    )
    refuse_multi_input_units(units)  # stop 56: nn.Bilinear failed at the backward
    if kwargs.get("force_functorch", False):
        owners = [
            path
            for path, m, _, _ in slots
            if any(p.requires_grad for p in m.parameters(recurse=False))  # Opacus samples it
        ]
        if owners:
            # stop 55: functorch samples a module from a copy of it, and a copy of a tied
            # module is refused by tying.core halfway through Opacus' wrapping, in a
            # message that sent the user back to this function
            raise ValueError(
                f"grad_sample_module: force_functorch=True (grad_sample_mode='functorch') "
                f"samples every layer from a functorch copy, but {owners[0] or '<root>'} "
                f"holds a tied slot beside parameters of its own, and a copy cannot keep "
                f"the tie; leave force_functorch out (Opacus' hooks then sample it with "
                f"tying's tied-use hooks)"
            )
    added = []
    for module in tied_modules:  # Opacus' documented extension point, per class
        cls = type(module)
        if any(True for _ in module.parameters(recurse=False)) and cls not in (
            GradSampleModule.GRAD_SAMPLERS
        ):
            GradSampleModule.GRAD_SAMPLERS[cls] = _own_params_sampler(base_class(module))
            added.append(cls)
    try:
        # stop 55: Opacus marks every parameter and hooks module after module before a
        # later one fails (a BatchNorm its validate refuses, a tied module under
        # force_functorch=True); the model kept them, so every later plain forward was
        # refused as wrapped by an Opacus no one held. Now taken back on any failure.
        with opacus_undo(model):
            gsm = GradSampleModule(model, loss_reduction=loss_reduction, **kwargs)
    except BaseException:
        for cls in added:
            GradSampleModule.GRAD_SAMPLERS.pop(cls, None)
        raise

    by_module: dict[int, tuple[nn.Module, list]] = {}
    paths: dict[int, str] = {}
    for path, module, name, slot in uses:
        by_module.setdefault(id(module), (module, []))[1].append((name, slot))
        paths[id(module)] = path or "<root>"

    def active(module, slots):
        out = []
        for name, slot in slots:
            src = getattr(slot.source_module, slot.source_name)
            if src.requires_grad and hasattr(src, "_forward_counter"):
                out.append((name, slot, src))
        return out

    def forward_hook(module, inputs, output):
        if not (gsm.hooks_enabled and torch.is_grad_enabled()):
            return
        uses_now = active(module, by_module[id(module)][1])
        if not (uses_now and isinstance(output, torch.Tensor) and output.requires_grad):
            return
        if not module.training:
            # stop 39: Opacus skips a module in eval mode, and refuses at the backward the
            # parameters it owns ("No activations detected"); a tied use in eval mode was
            # skipped with no error, so the source's grad_sample missed it (TinyLM with
            # lm_head.eval(): 2.24 off a per-example loop). Refused at the same moment:
            # a forward in eval mode that is never backpropagated stays allowed.
            output.register_hook(lambda g: _refuse_eval_use(paths[id(module)], uses_now))
            return
        for _, _, src in uses_now:  # Opacus promotes a gradient once every use is counted
            src._forward_counter += 1
        a = inputs[0].detach()
        # A hook on the output tensor, not a module backward hook: it sees the same
        # gradient and does not make torch warn when the input needs no gradient.
        output.register_hook(lambda g: backward(module, uses_now, a, g))

    def backward(module, uses_now, a, g):
        if not gsm.hooks_enabled:  # as Opacus' own hooks (and the backward probe's runs)
            return
        g = g.detach()  # (B, ..., out)
        for name, slot, src in uses_now:
            # in the parameter's dtype, autocast off (stop 35): under bfloat16 autocast the
            # use's per-sample gradient was made in bfloat16 (the float32 input cast down),
            # so Opacus' DPOptimizer took its norm in bfloat16 and a clipped example reached
            # 1.006 C, over the bound the accounting assumes; float32 models: bit for bit
            with _autocast_off(g.device):
                gw = g.to(src.dtype)
                if gsm.loss_reduction == "mean":  # as Opacus: per-example gradients of the sum
                    gw = gw * gw.shape[0]
                gs = _to_physical(module, slot, src, _slot_grad_sample(module, name, a, gw))
            _widen_current(src, gs.dtype)
            create_or_accumulate_grad_sample(param=src, grad_sample=gs, max_batch_len=g.shape[0])
            src._forward_counter -= 1
            if src._forward_counter == 0:
                promote_current_grad_sample(src)

    marked = [module for module, _ in by_module.values()] + list(keepers.values())
    for module, _ in by_module.values():
        gsm.autograd_grad_sample_hooks.append(module.register_forward_hook(forward_hook))
    for module in marked:  # keepers: Opacus' own hooks and counter serve their slots
        module.__dict__[HOOKED_ATTR] = True
    # Opacus' cleanup (``to_standard_module``, ``_close``) removes every handle in this
    # list; the marks go with them (stop 36: they stayed, so a plain Opacus
    # GradSampleModule wrapped around the same model later was let through, 86 % off)
    gsm.autograd_grad_sample_hooks.append(_Unmark(marked))
    gsm.autograd_grad_sample_hooks.append(
        model.register_forward_pre_hook(_vet(gsm, model, slots), with_kwargs=True)
    )
    probe = _BackwardProbe(gsm, model)
    gsm.autograd_grad_sample_hooks.append(model.register_forward_pre_hook(probe.before))
    gsm.autograd_grad_sample_hooks.append(
        model.register_forward_hook(probe.after, with_kwargs=True)
    )
    gsm.autograd_grad_sample_hooks.extend(input_guards(gsm, units, probe._take_back))
    layers = sampled_layers(model, {*GradSampleModule.GRAD_SAMPLERS, *ours}, marked)
    gsm.autograd_grad_sample_hooks.extend(row_guards(gsm, model, layers, probe._take_back))
    return gsm


def _refuse_eval_use(path: str, uses_now) -> None:
    """Raised from the backward through a tied use whose module is in eval mode."""
    where = "" if path == "<root>" else f"{path}."
    names = ", ".join(
        f"{where}{name} (reads {slot.paths[1] or slot.source_name})" for name, slot, _ in uses_now
    )
    raise TieError(
        f"grad_sample_module: {path} is in eval mode and a backward runs through its tied "
        f"use of {names}: Opacus' hooks skip a module in eval mode, so that use's per-sample "
        f"gradient would be missing from the source's grad_sample while .grad holds it "
        f"(Opacus refuses an eval-mode module that owns its parameters the same way); put "
        f"the model in training mode (model.train()) for the forward you backpropagate, or "
        f"run evaluation under torch.no_grad()"
    )


class _Unmark:
    """A handle in Opacus' hook list whose ``remove`` takes the grad-sample mark off.

    :func:`grad_sample_module` marks each module whose tied uses it hooks, and
    ``core.slots`` lets a tied read through under an Opacus counter only on a marked
    module. Opacus removes the handles in ``autograd_grad_sample_hooks`` when it
    cleans up; this one makes the marks leave with the hooks they vouch for.
    """

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules

    def remove(self) -> None:
        for module in self.modules:
            module.__dict__.pop(HOOKED_ATTR, None)


class _ReadsOutside(TorchFunctionMode):
    """Refuses a torch call reading a trainable parameter outside the forward of a module
    that Opacus' hooks (or tying's) credit with that use: one holding it, or reading it
    through a tie.

    Opacus takes a parameter's per-sample gradient from the forwards of the modules that
    hold it; a read anywhere else (``F.linear(h, model.lm_head.weight)`` for a tied output
    layer, ``h @ model.embed.weight.T``) adds to the gradient a term no hook sees. Reads
    under ``torch.no_grad()``, of metadata, and ``detach()`` carry no gradient: allowed.
    """

    def __init__(self, names: dict[int, str], owned: dict[int, frozenset], paths: dict[int, str]):
        super().__init__()
        self.names, self.owned, self.paths = names, owned, paths
        self.inside: list[nn.Module] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in METADATA_CALLS or gradless(func):
            return func(*args, **kwargs)
        mod = self.inside[-1] if self.inside else None
        mine = self.owned.get(id(mod), frozenset())
        for t in tensors_in(args, kwargs):
            if id(t) in self.names and id(t) not in mine:
                where = (
                    f"the forward of {self.paths[id(mod)]!r}"
                    if mod is not None
                    else ("no module's forward")
                )
                raise _Outside(
                    f"grad_sample_module: trainable parameter {self.names[id(t)]} is read by "
                    f"{func_name(func)} in {where}, which neither holds it nor reads it "
                    f"through a tie (e.g. F.linear(h, model.lm_head.weight) as a tied output "
                    f"layer, or h @ model.embed.weight.T); Opacus' hooks take a parameter's "
                    f"per-sample gradient from the forwards of its modules only, so this "
                    f"use's share of every example's gradient would be missing. Call the "
                    f"module instead (model.lm_head(h); an output layer tied with "
                    f"tying.share('lm_head.weight', like='embed.weight')), or use "
                    f"tying.train.DPSGD, whose per-example gradients count every read"
                )
        return func(*args, **kwargs)


class _Outside(ValueError):
    pass


def _refuse_reads_outside(gsm, model: nn.Module, modules, args, kwargs) -> bool:
    """One forward (hooks off, random state and buffers kept) watching every parameter read.

    Returns whether the forward ran (an error of its own is no verdict: the real forward
    raises it); raises ValueError on a read no hook would count.
    """
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    if not names:
        return True
    owned, paths = {}, {}
    for path, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), path or "<root>")
        mine = {id(p) for p in mod._parameters.values() if p is not None}
        for slot in slots_of(mod).values():
            if "source" not in slot.storage:
                mine.add(id(getattr(slot.source_module, slot.source_name)))
        owned[id(mod)] = frozenset(mine)
    watch = _ReadsOutside(names, owned, paths)

    def enter(mod, args) -> None:
        watch.inside.append(mod)

    def leave(mod, args, out) -> None:  # None: the output stays the forward's
        watch.inside.pop()

    handles = []
    for mod in modules:
        handles.append(mod.register_forward_pre_hook(enter))
        handles.append(mod.register_forward_hook(leave, always_call=True))
    cuda = cuda_devices(model, args, kwargs)
    was = gsm.hooks_enabled
    gsm.disable_hooks()
    try:
        with torch.random.fork_rng(devices=cuda), buffers_kept(model), watch:
            model(*args, **kwargs)  # with gradients: a read under no_grad() carries none
    except _Outside as err:
        raise ValueError(str(err)) from None
    except Exception:  # noqa: BLE001 - the forward's own error is raised by the forward
        return False
    finally:
        gsm.hooks_enabled = was
        for h in handles:
            h.remove()
    return True


def _vet(gsm, model: nn.Module, uses):
    """A forward pre-hook refusing, before the forward runs (a refusal leaves the model
    as it was), what Opacus' hooks would get wrong with no error:

    - a tied module whose forward was replaced on the instance after wrapping (every call;
      the tied use's gradient is the plain layer's formula);
    - a parameter read outside the forward of the modules credited with it (stop 31; see
      :class:`_ReadsOutside`), once per input signature and set of training flags;
    - a forward that mixes the examples of a batch (stop 31): Opacus' hooks take example
      b's per-sample gradient from row b of each layer's activations and output gradients;
      a layer that reads the batch (``h - h.mean(0)``, which Opacus' validator lets
      through: it has no parameters) spreads every example over every row, and the
      clipped gradients were wrong with no error. The probe is
      :func:`~tying.train._vetting.refuse_mixing_forward`, once per input signature and
      set of training flags, and again (example 0 and the last moved) at each batch size
      not probed before.
    """
    vetted: set = set()
    sized: set = set()  # the (signature, batch size) pairs probed
    reads_vetted: set = set()
    modules = list(model.modules())
    tied = {id(module): (path, module) for path, module, _, _ in uses}
    probing = [False]

    def hook(module, args, kwargs):
        if probing[0] or not (gsm.hooks_enabled and torch.is_grad_enabled()):
            return
        for path, mod in tied.values():
            over = callable_overrides(mod)
            if over:
                raise TieError(
                    f"{path}: tying.train.grad_sample_module computes its tied use's "
                    f"per-sample gradient by "
                    f"{'nn.Embedding' if isinstance(mod, nn.Embedding) else 'nn.Linear'}'s "
                    f"own forward, but {', '.join(over)} is set on the instance; remove it "
                    f"({undo_overrides(mod, path)}), or use tying.train.DPSGD(mode='vmap')"
                )
        names = sorted(kwargs)
        key = (forward_key((*args, *(kwargs[n] for n in names)), modules), tuple(names))
        if key not in reads_vetted:
            probing[0] = True
            try:
                if _refuse_reads_outside(gsm, model, modules, args, kwargs):
                    reads_vetted.add(key)
            finally:
                probing[0] = False
        B = batch_rows(args)
        if B is None:
            return
        if key in vetted and ((key, B) in sized or reads_no_size(modules)):
            return
        probing[0] = True
        try:
            with buffers_kept(model):
                # an error of a probe forward is no verdict: the forward itself raises it.
                # Again at each batch size not probed before, example 0 and the last
                # moved only: a forward that mixes only past some size passed the first
                # batch's probe and then trained on rows that were no example's (stop 49);
                # one that mixes at one size inside the range probed (``x.shape[0] ==
                # 6``, probed at 3 and 9) did so too at that size (stop 50)
                done = refuse_mixing_forward(
                    model,
                    args,
                    B,
                    "grad_sample_module",
                    _OPACUS,
                    True,
                    kwargs,
                    groups=key not in vetted,
                )
        finally:
            probing[0] = False
        if done:
            vetted.add(key)
            sized.add((key, B))

    return hook


_OPACUS = " (Opacus' hooks read example b's gradient from row b of every layer)"


__all__ = ["HOOKED_ATTR", "grad_sample_module"]
