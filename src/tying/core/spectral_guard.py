"""Old-style ``torch.nn.utils.spectral_norm`` on a tied slot: refused naming the tie.

``SpectralNorm.apply`` takes the weight straight from ``module._parameters[name]``,
where a tied slot is not (its property serves it): the call failed with a bare
``KeyError: 'weight'`` that named no tie (stop 56). Unlike ``weight_norm`` it never reads
the slot, so the refusal sits on the missing key: a tied module's ``_parameters`` is a
:class:`TiedParams`, a plain ``dict`` whose ``__missing__`` (run only for a key that is
absent, so a read of a slot or of any parameter pays nothing) names the tie when
``spectral_norm`` asks for a slot, and raises the usual ``KeyError`` otherwise.

Example:
    >>> import warnings, torch, tying
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    >>> _ = tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     try:
    ...         torch.nn.utils.spectral_norm(m[1])
    ...     except tying.TieError as err:
    ...         print(str(err)[:58])
    torch.nn.utils.spectral_norm: 1.weight is a tied slot (rea
"""

from __future__ import annotations

import sys

import torch

from tying.core.eager_quant import check_fuse_lookup
from tying.core.errors import TieError
from tying.core.part_walks import walked_items
from tying.core.root_advice import free_call

_SPECTRAL = "torch.nn.utils.spectral_norm"
_PARAMETRIZE = "torch.nn.utils.parametrize"
SLOTS_ATTR = "_tying_slots"  # slots.SLOTS_ATTR (slots imports this module)


class TiedParams(dict):
    """A tied module's ``_parameters``: a ``dict`` that names the tie on a slot's key.

    Its ``items`` also serves torch's walks over a part of the model
    (:mod:`tying.core.part_walks`), and its ``__contains__`` refuses torch.ao's eager
    ``fuse_modules`` by name (:func:`tying.core.eager_quant.check_fuse_lookup`) and
    ``torch.nn.utils.parametrize`` on a slot (:func:`parametrize_refusal`).
    """

    __slots__ = ()

    def __contains__(self, key):
        if key == "parametrizations" and not torch.compiler.is_compiling():
            # torch.ao's fuse_modules asks it first (stop 57). A parametrized tensor's
            # property asks it at every read: dynamo cannot trace sys._getframe, so a tied
            # module with a parametrized bias failed torch.compile(fullgraph=True)
            check_fuse_lookup(sys._getframe(1))
        if dict.__contains__(self, key):
            return True
        if torch.compiler.is_compiling():  # dynamo cannot trace sys._getframe (a miss in a
            return False  # compiled forward: HashedEmbeddingBag's); no parametrize runs there
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == _PARAMETRIZE:
            # register_parametrization looks the slot up here, misses it (its property
            # serves it) and raised torch's ValueError "does not have a parameter ... named
            # 'weight'", naming no fix (stop 59); the new-style spectral_norm, weight_norm
            # and orthogonal come through here too
            module = caller.f_locals.get("module")
            slots = getattr(module, "__dict__", {}).get(SLOTS_ATTR) or {}
            if key in slots:
                raise parametrize_refusal(slots[key], key, module)
        return False

    def items(self):
        # torch's walks of a part (zero_grad, requires_grad_, clip_grad_norm_, ...) reach
        # the sources this module's slots read, as with a hand tie (see part_walks). Not
        # while dynamo traces: it cannot trace sys._getframe, and a forward that walks its
        # parameters (HF's self.dtype) broke fullgraph=True; no walker runs in a graph
        if torch.compiler.is_compiling():
            return dict.items(self)
        return walked_items(self, sys._getframe(1))

    def __missing__(self, key):
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == _SPECTRAL:
            module = caller.f_locals.get("module")
            slots = getattr(module, "__dict__", {}).get(SLOTS_ATTR) or {}
            if key in slots:
                raise norm_refusal(
                    "spectral_norm", slots[key], key, f"{key}_orig, {key}_u, {key}_v", module
                )
        raise KeyError(key)


def parametrize_refusal(slot, name: str, module) -> TieError:
    """The refusal of ``torch.nn.utils.parametrize.register_parametrization`` (and of the
    ``torch.nn.utils.parametrizations`` built on it) on the tied slot ``name``."""
    where, src = slot.target_and_source(name)
    return TieError(
        f"torch.nn.utils.parametrize: {where} is a tied slot of {type(module).__name__} "
        f"(reads {src} via {slot.relation!r}): the module {module!r} does not have a "
        f"parameter of its own with name {name!r}, so it cannot be parametrized; a "
        f"parametrization would "
        f"give it a tensor of its own "
        f"(parametrizations.{name}.original) and break the tie. Nothing was changed. "
        f"Untie it first ({free_call(module, slot, where)}), then register the "
        f"parametrization"
    )


def norm_refusal(tool: str, slot, name: str, own: str, module=None) -> TieError:
    """The refusal of an old-style ``torch.nn.utils.<tool>`` on the tied slot ``name``,
    which would replace it with parameters of its own (``own``) and break the tie."""
    where, src = slot.target_and_source(name)
    return TieError(
        f"torch.nn.utils.{tool}: {where} is a tied slot (reads {src} via "
        f"{slot.relation!r}); {tool} would replace it with parameters of its own "
        f"({own}) and break the tie, so nothing was changed. Untie it first to give it a "
        f"weight of its own ({free_call(module, slot, where)})"
    )
