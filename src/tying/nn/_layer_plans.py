"""The plans tying.nn layers apply to themselves (stop 55).

Two things happen after such a plan is applied (:func:`apply_plan`):

**A tied slot looked up as a stored parameter names its tie.** A tied slot
(``HashedLinear.weight``, ``TiedGateLSTM.weight_ih_i``, a group-conv bank's rotated
block...) is served by the tie and is not in its module's ``_parameters``. The old-style
``torch.nn.utils.weight_norm`` / ``spectral_norm`` look the slot up there
(``module._parameters[name]``, ``del module._parameters[name]``) and died on a bare
``KeyError: 'weight'`` that said nothing of the tie or what to do. Each module holding
tied slots keeps ``_parameters`` as a :class:`SlotParameters`: a plain ``dict`` in every
respect except that a look-up or deletion of a *missing* key that is one of its tied
slots raises :class:`TiedSlotLookupError` (a ``TieError`` and a ``KeyError``, so handlers
of torch's ``KeyError`` still catch it) naming the layer, the slot, what it reads and the
fix. Present keys, iteration, pickling and ``torch.compile`` are unchanged; the call is
refused before torch changes anything. ``torch.nn.utils.parametrizations.weight_norm`` /
``spectral_norm`` ask ``name in module._parameters`` and raise torch's own
``ValueError``, whose text prints the module with its ties (``tied: weight <- its own
storage via Hashed(...)``).

**A module re-tied whole drops the ties it declared for itself.** ``Siamese`` ties its
right tower to the left one, ``share_layers`` every layer to the first, each with
``share(module, like=module)``: every parameter of the copy then reads the first one's
(``Same``). A tower or layer with ties of its own (a ``TiedAutoencoder``'s transposed
decoder, a ``HashedLinear``'s hash) carried its own declarations of those slots along
(deep-copied), which no longer described it: ``tying.verify`` refused the model
("right.decoder.weight: relation is Same(), declared Transposed") though every value was
right. ``Plan.apply`` now drops the declarations a plan supersedes, for any model.
"""

from __future__ import annotations

from torch import nn

from tying.core import TieError
from tying.core.plan import DECLARED_ATTR
from tying.core.slots import slots_of
from tying.core.spectral_guard import TiedParams

__all__ = ["SlotParameters", "TiedSlotLookupError", "apply_plan", "tie_setting"]

# Set on a layer whose own plan tied something (``tying.untie`` drops the ties but not this
# mark: together they tell a layer untied since from one that had nothing to tie)
OWN_TIES_ATTR = "_tying_nn_own_ties"


class TiedSlotLookupError(TieError, KeyError):
    """A tied slot was looked up (or deleted) as a stored parameter of its module."""

    def __str__(self) -> str:  # KeyError's own str() prints the repr of its argument
        return str(self.args[0]) if self.args else ""


class SlotParameters(TiedParams):
    """``module._parameters`` that names a tied slot looked up as a stored parameter.

    A :class:`~tying.core.spectral_guard.TiedParams` (what ``Plan.apply`` gives any tied
    module), so torch's walks over a part of the model that holds only a slot's reading
    end (``zero_grad``, ``requires_grad_``, ``clip_grad_norm_``, ``parameters_to_vector``)
    reach the Parameter the slot reads, as with
    a hand tie (:mod:`tying.core.part_walks`), and torch.ao's ``fuse_modules`` is refused
    by name. As a plain ``dict`` subclass, these layers' decoders, heads and tied gates
    were left out of those walks (stop 57: ``clip_grad_norm_(ae.decoder.parameters())``
    measured 0.0 for 54.0; ``SGD(ae.decoder.parameters())`` was refused as empty).

    Args:
        params: the module's parameters (name -> ``nn.Parameter`` or ``None``).
        tied: tied slot name -> (the slot's full name, what it reads, the relation).

    Raises:
        TiedSlotLookupError: from ``d[name]`` or ``del d[name]`` when ``name`` is a tied
            slot and not stored; any other missing name raises ``KeyError`` as a dict does.

    Example:
        >>> import torch
        >>> from tying.nn import HashedLinear
        >>> layer = HashedLinear(8, 4, buckets=10)
        >>> try:
        ...     torch.nn.utils.spectral_norm(layer)
        ... except KeyError as e:
        ...     print(str(e)[:44])
        HashedLinear.weight is tied (it reads weight
    """

    def __init__(self, params, tied: dict[str, tuple[str, str, str]]) -> None:
        super().__init__(params)
        self.tied = dict(tied)

    def __reduce__(self):
        return (type(self), (dict(self), self.tied))

    def __setitem__(self, key, value) -> None:
        # a name stored again (tying.untie registers the slot's value) is no longer tied
        self.tied.pop(key, None)
        super().__setitem__(key, value)

    def __missing__(self, key):
        self._refuse(key)
        raise KeyError(key)

    def __delitem__(self, key) -> None:
        if key not in self:
            self._refuse(key)
        super().__delitem__(key)

    def _refuse(self, key) -> None:
        if key not in self.tied:
            return
        full, source, relation = self.tied[key]
        raise TiedSlotLookupError(
            f"{full} is tied (it reads {source} via {relation}) and is not a stored "
            f"parameter of its module, so torch.nn.utils.weight_norm / spectral_norm cannot "
            f"re-parametrise it; a norm on {source} is refused at the layer's next read too "
            f"(the tie would bypass it). To normalise, untie first (tying.untie(layer)) and "
            f"apply the norm to the untied parameter; the layer is unchanged"
        )


def name_tied_slots(layer: nn.Module) -> None:
    """Make each module of ``layer`` holding tied slots keep a :class:`SlotParameters`."""
    label = type(layer).__dict__.get("_tying_base", type(layer)).__name__
    # paths from ``layer`` (a slot's own paths are from the module its plan was applied
    # to: the left tower's decoder of a Siamese would read as "Siamese.decoder.weight")
    where = {id(m): p for p, m in layer.named_modules()}
    for prefix, module in layer.named_modules():
        slots = slots_of(module)
        if not slots:
            continue
        tied = {}
        for name, slot in slots.items():
            src, src_name = slot.source_module, slot.source_name
            if src is module and src_name == name:
                src_name = slot.storage.get("source", name)  # its own storage
            at = where.get(id(src))
            source = ".".join(p for p in (at, src_name) if p) if at is not None else None
            source = source or slot.target_and_source(name)[1]  # outside ``layer``
            target = ".".join(p for p in (label, prefix, name) if p)
            tied[name] = (target, source, repr(slot.relation))
        module.__dict__["_parameters"] = SlotParameters(module._parameters, tied)


def apply_plan(plan, layer: nn.Module):
    """``plan.apply(layer)`` (which drops the declarations it supersedes), then name its
    tied slots (see :func:`name_tied_slots`).

    Args:
        plan: a :class:`tying.Plan`.
        layer: the module the plan ties.

    Returns:
        What ``plan.apply`` returns.

    Raises:
        TieError: as ``plan.apply``.

    Example:
        >>> from tying import Plan, share
        >>> m = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
        >>> _ = apply_plan(Plan([share("b", like="a")]), m)
        >>> type(m.b._parameters).__name__
        'SlotParameters'
    """
    applied = plan.apply(layer)
    name_tied_slots(layer)
    if _holds_ties(layer):
        layer.__dict__[OWN_TIES_ATTR] = True
    return applied


def _holds_ties(layer: nn.Module) -> bool:
    """Whether any module of ``layer`` has a tied slot or declares a tie. A slot counts
    without a declaration: the right tower of a ``Siamese`` reads the left one's slots
    though its own declarations were superseded (``Plan.apply`` drops them)."""
    return any(slots_of(m) or m.__dict__.get(DECLARED_ATTR) for m in layer.modules())


def tie_setting(layer: nn.Module, built_tied: bool) -> str:
    """How a layer's ``extra_repr`` prints its tie setting: ``"False (untied)"`` once
    ``tying.untie`` has undone the ties the layer made for itself, else ``built_tied``.

    After ``tying.untie(layer)`` a layer built with ``tied=True`` printed ``tied=True`` (and
    a ``HashedLinear`` its hash) though every slot had its own parameter (stop 55): a printed
    model told a reader the weights were shared when they were not.

    Args:
        layer: the layer (its own plan went through :func:`apply_plan`).
        built_tied: the setting it was built with (``tied``, ``tie_gates``, ``shared``).

    Returns:
        ``"True"``, ``"False"`` or ``"False (untied)"``.

    Example:
        >>> import tying
        >>> m = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
        >>> _ = apply_plan(tying.Plan([tying.share("b", like="a")]), m)
        >>> tie_setting(m, True), (tying.untie(m), tie_setting(m, True))[1]
        ('True', 'False (untied)')
    """
    if built_tied and layer.__dict__.get(OWN_TIES_ATTR) and not _holds_ties(layer):
        return "False (untied)"
    return str(built_tied)
