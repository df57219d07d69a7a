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
  parameters by the base class's formula (no deep copy).

Then ``p.grad_sample`` of every physical parameter is the sum over all its uses,
and Opacus' ``DPOptimizer`` clips and noises the right vector. Opacus wrapping a
Plan-tied model any other way is refused at the first forward pass with a
``TieError`` naming the slot (a one-line check in :mod:`tying.core.slots`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import vjp, vmap

from tying.core.errors import TieError
from tying.core.relations import Same
from tying.core.slots import GRAD_SAMPLE_HOOKED_ATTR, base_class, slots_of
from tying.train._vetting import batch_rows, buffers_kept, forward_key, refuse_mixing_forward

# The key that tells tying.core.slots this module's tied uses are counted.
HOOKED_ATTR = GRAD_SAMPLE_HOOKED_ATTR  # the mark core.slots checks at every read
_SUPPORTED = (nn.Linear, nn.Embedding)


def _uses(model: nn.Module) -> list[tuple[str, nn.Module, str, object]]:
    """(path, module, slot name, slot) of every tied slot whose source is another module's."""
    out = []
    for path, module in model.named_modules():
        for name, slot in slots_of(module).items():
            if "source" in slot.storage:
                continue  # the physical tensor is the module's own: Opacus hooks it itself
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


def _own_params_sampler(base: type):
    """An Opacus grad sampler for a tied class: its *own* parameters, by the base formula."""

    def sampler(module, activations, backprops):
        a = activations[0]
        own = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        return {p: _slot_grad_sample(module, n, a, backprops) for n, p in own.items()}

    return sampler


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
            parameter (the model is left unwrapped).
        ValueError: ``batch_first=False``.
        ImportError: Opacus is not installed (names the extra).

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
    uses = _uses(model)  # refuses before anything is registered or wrapped
    for path, module in model.named_modules():
        weight = module._parameters.get("weight") if isinstance(module, nn.Embedding) else None
        if weight is not None and weight.requires_grad and module.padding_idx is not None:
            # stop 30 review: Opacus' Embedding sampler ignores padding_idx, so the padding
            # row got per-sample gradients (1.55 off per-example autograd, and grad_sample
            # did not even sum to .grad), with no error
            raise ValueError(
                f"grad_sample_module: {path or '<root>'} is an Embedding with padding_idx="
                f"{module.padding_idx}, and Opacus' per-sample gradient of an Embedding "
                f"ignores padding_idx (the padding row gets gradients autograd gives it none "
                f"of); use tying.train.DPSGD or per_example_grads (they follow autograd), or "
                f"padding_idx=None"
            )
    for _, module, _, _ in uses:  # Opacus' documented extension point, per class
        cls = type(module)
        if any(True for _ in module.parameters(recurse=False)):
            GradSampleModule.GRAD_SAMPLERS.setdefault(cls, _own_params_sampler(base_class(module)))
    gsm = GradSampleModule(model, loss_reduction=loss_reduction, **kwargs)

    by_module: dict[int, tuple[nn.Module, list]] = {}
    for _, module, name, slot in uses:
        by_module.setdefault(id(module), (module, []))[1].append((name, slot))

    def active(module, slots):
        out = []
        for name, slot in slots:
            src = getattr(slot.source_module, slot.source_name)
            if src.requires_grad and hasattr(src, "_forward_counter"):
                out.append((name, slot, src))
        return out

    def forward_hook(module, inputs, output):
        if not (gsm.hooks_enabled and module.training and torch.is_grad_enabled()):
            return
        uses_now = active(module, by_module[id(module)][1])
        if not (uses_now and isinstance(output, torch.Tensor) and output.requires_grad):
            return
        for _, _, src in uses_now:  # Opacus promotes a gradient once every use is counted
            src._forward_counter += 1
        a = inputs[0].detach()
        # A hook on the output tensor, not a module backward hook: it sees the same
        # gradient and does not make torch warn when the input needs no gradient.
        output.register_hook(lambda g: backward(module, uses_now, a, g))

    def backward(module, uses_now, a, g):
        g = g.detach()  # (B, ..., out)
        if gsm.loss_reduction == "mean":  # as Opacus: per-example gradients of the sum
            g = g * g.shape[0]
        for name, slot, src in uses_now:
            gs = _to_physical(module, slot, src, _slot_grad_sample(module, name, a, g))
            create_or_accumulate_grad_sample(param=src, grad_sample=gs, max_batch_len=g.shape[0])
            src._forward_counter -= 1
            if src._forward_counter == 0:
                promote_current_grad_sample(src)

    for module, _ in by_module.values():
        gsm.autograd_grad_sample_hooks.append(module.register_forward_hook(forward_hook))
        module.__dict__[HOOKED_ATTR] = True
    gsm.autograd_grad_sample_hooks.append(
        model.register_forward_pre_hook(_mixing_vet(gsm, model), with_kwargs=True)
    )
    return gsm


def _mixing_vet(gsm, model: nn.Module):
    """A forward pre-hook refusing a forward that mixes the examples of a batch (stop 31).

    Opacus' hooks take example b's per-sample gradient from row b of each layer's
    activations and output gradients; a layer that reads the batch (``h - h.mean(0)``,
    which Opacus' validator lets through: it has no parameters) spreads every example
    over every row, and the clipped gradients were wrong with no error. The probe is
    :func:`~tying.train._vetting.refuse_mixing_forward`, once per input signature and set
    of training flags, before the forward runs (a refusal leaves the model as it was).
    """
    vetted: set = set()
    modules = list(model.modules())
    probing = [False]

    def hook(module, args, kwargs):
        if probing[0] or not (gsm.hooks_enabled and torch.is_grad_enabled()):
            return
        B = batch_rows(args)
        if B is None:
            return
        names = sorted(kwargs)
        key = (forward_key((*args, *(kwargs[n] for n in names)), modules), tuple(names))
        if key in vetted:
            return
        probing[0] = True
        try:
            with buffers_kept(model):
                # an error of a probe forward is no verdict: the forward itself raises it
                done = refuse_mixing_forward(
                    model, args, B, "grad_sample_module", _OPACUS, True, kwargs
                )
        finally:
            probing[0] = False
        if done:
            vetted.add(key)

    return hook


_OPACUS = " (Opacus' hooks read example b's gradient from row b of every layer)"


__all__ = ["HOOKED_ATTR", "grad_sample_module"]
