"""Opacus' accountant keywords given to :func:`epsilon` / :func:`noise_for_epsilon` (stop 59).

A script ported from Opacus' ``get_noise_multiplier(target_epsilon=, target_delta=,
sample_rate=, epochs=)`` or its ``compute_rdp(q=, noise_multiplier=, steps=)`` got
Python's bare "unexpected keyword argument 'epochs'", naming neither our keyword nor
how Opacus turns epochs into steps. :func:`refuse_opacus_keywords` wraps the two
functions so that such a call is refused before any accounting, naming each keyword's
counterpart (or that there is none) and the call in our names, with Opacus' own
``steps = int(epochs / sample_rate)`` worked out, so that it gives Opacus' figure.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable

__all__ = ["refuse_opacus_keywords"]

# Opacus' name -> ours, where the meaning is the same
_RENAMED = {"target_delta": "delta", "q": "sample_rate", "sigma": "noise_multiplier"}
# Opacus' names with no counterpart here, and why
_NONE = {
    "epsilon_tolerance": "there is none: σ is found to 0.1 % of itself (Opacus' search stops "
    "within epsilon_tolerance of the budget in ε)",
    "alphas": "there is none: the RDP orders are Opacus' defaults, widened when the best is "
    "the largest",
    "orders": "there is none: the RDP orders are Opacus' defaults, widened when the best is "
    "the largest",
    "eps_error": "there is none: PRV runs at Opacus' default eps_error=0.01",
    "delta_error": "there is none: PRV runs at Opacus' default delta_error",
}


def _plain(value: object) -> object:
    """A NumPy scalar as a Python number, so that the call printed runs as written."""
    return value.item() if type(value).__module__ == "numpy" and hasattr(value, "item") else value


def _advice(name: str, params: list[str], args: tuple, kwargs: dict) -> str:
    given = {**dict(zip(params, args)), **kwargs}
    notes, fixed = [], dict(given)
    for key in [k for k in kwargs if k in _RENAMED or k in _NONE or k == "epochs"]:
        value = fixed.pop(key)
        if key in _NONE:
            notes.append(f"{key!r}: {_NONE[key]}")
            continue
        if key == "epochs":
            rate = fixed.get("sample_rate", given.get("q"))
            if "steps" in given:
                notes.append("'epochs': give steps only (Opacus too takes one of the two)")
            elif isinstance(rate, numbers.Real) and isinstance(value, numbers.Real) and rate > 0:
                fixed["steps"] = steps = int(value / rate)
                # 7 / 0.07 is 99.99999999999999: Opacus' int() runs 99 steps, not 100
                bit = round(value / rate)
                off = (
                    f"; {value!r} / {rate!r} is {value / rate!r} in floating point, so Opacus "
                    f"counts {steps} steps where a loop of {value!r} epochs takes {bit}"
                    if bit != steps and abs(value / rate - bit) < 1e-9 * bit
                    else ""
                )
                notes.append(
                    f"'epochs': ours is steps= (as Opacus' get_noise_multiplier, steps = "
                    f"int(epochs / sample_rate) = int({value!r} / {rate!r}) = {steps}{off})"
                )
            else:
                notes.append("'epochs': ours is steps= int(epochs / sample_rate), as Opacus")
            continue
        ours = _RENAMED[key]
        if ours not in params:
            notes.append(f"{key!r}: there is no such argument here")
            continue
        if ours in given:
            notes.append(f"{key!r}: ours is {ours}=, which is given already")
            continue
        fixed[ours] = value
        notes.append(f"{key!r}: ours is {ours}=")
    missing = [p for p in params if p not in fixed and p != "accountant" and not p.startswith("_")]
    call = ", ".join(f"{p}={_plain(fixed[p])!r}" for p in params if p in fixed)
    fix = f"; pass {name}({call})" if not missing and set(fixed) <= set(params) else ""
    return f"{name}() got Opacus' keyword(s): " + "; ".join(notes) + fix


def refuse_opacus_keywords(fn: Callable) -> Callable:
    """Wrap an accountant function so that Opacus' keywords name ours before anything runs.

    Raises:
        TypeError: a keyword of Opacus' (``target_delta``, ``epochs``, ``q``, ``sigma``,
            ``epsilon_tolerance``, ``alphas``, ``orders``, ``eps_error``,
            ``delta_error``), naming ours (or that there is none) and the call in our names.
    """
    params = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        if any(k in _RENAMED or k in _NONE or k == "epochs" for k in kwargs):
            raise TypeError(_advice(fn.__name__, params, args, kwargs))
        return fn(*args, **kwargs)

    return checked
