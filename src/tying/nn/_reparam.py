"""Keep a reparametrised weight current in a submodule whose forward never runs.

``torch.nn.utils.prune``, ``weight_norm`` and ``spectral_norm`` store ``w`` as other
tensors (``w_orig`` and a mask, ``w_g`` and ``w_v``, ``w_orig`` and ``u``/``v``) and
write the attribute ``w`` in a forward pre-hook of the module that owns it. The
group convolutions' ``kernels``/``biases`` banks and ``MultiHopGraphConv``'s hop
``Linear`` modules are read by their parent, never called: ``w`` stayed what it was
when it was reparametrised, so after an optimizer step an eval call used the old
weight (a wrong output, no error) and a training call failed on a freed graph
(stop 35). The parent now runs those hooks, once per call, before reading.
"""

from __future__ import annotations

from functools import cache

from torch import nn


@cache
def _hook_types() -> tuple[type, ...]:
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return (BasePruningMethod, WeightNorm, SpectralNorm)


def refresh(module: nn.Module | None) -> None:
    """Run ``module``'s prune / ``weight_norm`` / ``spectral_norm`` pre-hooks (as its own
    call would), so its reparametrised attributes hold the current value.

    Other pre-hooks are left alone: they expect the module's inputs. A module without
    pre-hooks costs one dict test.

    Args:
        module: the module whose attributes are about to be read (None: nothing to do).

    Example:
        >>> import torch
        >>> from torch.nn.utils import prune
        >>> lin = prune.l1_unstructured(torch.nn.Linear(3, 2), "weight", amount=0.5)
        >>> with torch.no_grad():
        ...     _ = lin.weight_orig.add_(1.0)  # an optimizer step; lin has not run since
        >>> refresh(lin)
        >>> torch.equal(lin.weight, lin.weight_orig * lin.weight_mask)
        True
    """
    if module is None or not module._forward_pre_hooks:
        return
    kinds = _hook_types()
    for hook in tuple(module._forward_pre_hooks.values()):
        if isinstance(hook, kinds):
            hook(module, ())
