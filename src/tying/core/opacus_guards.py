"""Opacus (and torch's Expanded Weights) meeting a tied model: named, and left clean.

Both run on a failure's path only, never on a read or a copy that goes through:

- :func:`expanded_weight_error`: Opacus' ``grad_sample_mode="ew"`` (torch's
  ``call_for_per_sample_grads``) swaps each parameter for an ``ExpandedWeight`` for the
  call; a tied read of one failed inside torch with "Expanded Weights encountered but
  cannot handle function __get__", naming no tie and no route (stop 55). The slot's
  property turns that failure into a :class:`~tying.TieError` naming both.
- :func:`release_opacus_wrapper`: Opacus' ``GradSampleModule.__init__`` puts hooks on
  the model and marks its parameters, then deep-copies a layer it has no sampler for;
  core refuses that copy of a tied layer (``part_copies``), and the half-built wrapper,
  which no one holds, left its hooks and marks on the user's model (stop 55). They are
  taken off before the refusal is raised.
"""

from __future__ import annotations

import sys

from torch import nn

from tying.core.errors import TieError


def _is_expanded_weight(t: object) -> bool:
    mod = sys.modules.get("torch.nn.utils._expanded_weights.expanded_weights_impl")
    cls = getattr(mod, "ExpandedWeight", None)
    if cls is not None and isinstance(t, cls):
        return True
    return type(t).__name__ == "ExpandedWeight"


def expanded_weight_error(slot, module: nn.Module, name: str, err: Exception) -> TieError | None:
    """The :class:`~tying.TieError` for ``err``, raised by a read of ``slot`` (``name`` on
    ``module``) whose source torch's Expanded Weights has swapped for an
    ``ExpandedWeight``; None when that is not why it failed (the error is then re-raised
    as it is).

    Args:
        slot: the :class:`~tying.core.slots.Slot` being read.
        module: the tied module that holds it.
        name: the slot's name on ``module``.
        err: what the read raised.

    Returns:
        The error to raise instead, or None.

    Example:
        >>> import torch, tying
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
        >>> _ = tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
        >>> from tying.core.slots import slots_of
        >>> expanded_weight_error(slots_of(m.b)["weight"], m.b, "weight", RuntimeError()) is None
        True
    """
    if not isinstance(err, RuntimeError):
        return None
    try:
        src = slot.source_module._parameters.get(slot.source_name)
        if src is None:
            src = slot.source_module.__dict__.get(slot.source_name)
        if not _is_expanded_weight(src):
            return None
        target, source = slot.target_and_source(name)
    except Exception:  # never let the explanation hide the failure
        return None
    return TieError(
        f"{target} reads {source} through a tie ({slot.relation!r}), but torch's Expanded "
        f"Weights (torch.nn.utils._per_sample_grad.call_for_per_sample_grads, which Opacus' "
        f"grad_sample_mode='ew' runs) replaced {source} by an ExpandedWeight for this call: "
        f"a tied read of one fails inside torch, and its per-sample gradients could not "
        f"count this use. Use tying.train.grad_sample_module(model) (Opacus' hooks, which "
        f"count every tied use) or tying.train.DPSGD, and leave grad_sample_mode out"
    )


def release_opacus_wrapper(depth: int = 80) -> bool:
    """Take the hooks and parameter marks of the Opacus wrapper whose constructor is on
    this stack off its model (the constructor is about to fail, and no one could close
    the wrapper).

    Never raises. Returns whether it found the wrapper and ``cleanup()`` ran through
    (False: an Opacus version whose internals differ; the caller's message then keeps
    saying the model may hold Opacus' hooks).

    Args:
        depth: how many frames up to look for the wrapper.

    Returns:
        True when the model was released.

    Example:
        >>> release_opacus_wrapper()  # no Opacus constructor running here
        False
    """
    try:
        base = getattr(
            sys.modules.get("opacus.grad_sample.gsm_base"), "AbstractGradSampleHooks", None
        )
        if base is None:
            return False
        frame = sys._getframe(1)
        for _ in range(depth):
            if frame is None:
                return False
            obj = frame.f_locals.get("self")
            # its constructor only: a wrapper the user holds (a later add_hooks, any
            # other method) is theirs to close, never undone behind their back
            if frame.f_code.co_name == "__init__" and isinstance(obj, base):
                return _cleanup(obj)
            frame = frame.f_back
    except Exception:
        pass
    return False


def _cleanup(gsm) -> bool:
    model = getattr(gsm, "_module", None)
    cleanup = getattr(gsm, "cleanup", None)
    if not isinstance(model, nn.Module) or not callable(cleanup):
        return False
    try:
        cleanup()  # its hooks (remove_hooks), then grad_sample / _forward_counter / ...
    except Exception:
        return False
    for m in model.modules():  # its functorch fallback's per-layer function
        m.__dict__.pop("ft_compute_sample_grad", None)
    left = any(
        hasattr(p, a)
        for p in model.parameters()
        for a in ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample")
    )
    return not left and not hasattr(model, "autograd_grad_sample_hooks")


__all__ = ["expanded_weight_error", "release_opacus_wrapper"]
