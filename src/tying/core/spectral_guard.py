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

from tying.core.errors import TieError

_SPECTRAL = "torch.nn.utils.spectral_norm"
SLOTS_ATTR = "_tying_slots"  # slots.SLOTS_ATTR (slots imports this module)


class TiedParams(dict):
    """A tied module's ``_parameters``: a ``dict`` that names the tie on a slot's key."""

    __slots__ = ()

    def __missing__(self, key):
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == _SPECTRAL:
            module = caller.f_locals.get("module")
            slots = getattr(module, "__dict__", {}).get(SLOTS_ATTR) or {}
            if key in slots:
                slot = slots[key]
                where, src = slot.target_and_source(key)
                raise TieError(
                    f"torch.nn.utils.spectral_norm: {where} is a tied slot (reads {src} via "
                    f"{slot.relation!r}); spectral_norm would replace it with parameters of "
                    f"its own ({key}_orig, {key}_u, {key}_v) and break the tie, so nothing "
                    f"was changed. Untie it first to give it a weight of its own "
                    f"(tying.Plan([tying.free({where!r})]).apply(model))"
                )
        raise KeyError(key)
