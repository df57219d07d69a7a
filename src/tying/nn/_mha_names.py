"""``nn.MultiheadAttention``'s call, refused by :class:`Attention` with the call here (stop 60).

A port of ``mha(q, k, v)``, ``mha(x, x, x, need_weights=False)`` or
``mha(x, x, x, is_causal=True, attn_mask=m)`` got Python's bare "takes from 2 to 3
positional arguments" or "unexpected keyword argument": it named neither that keys and
values are one ``context`` here nor that the result is a tensor, not ``(output,
weights)``, nor that causality is the layer's ``causal=``.
"""

from __future__ import annotations

import torch

from tying.nn._args import is_default

__all__ = ["refuse_mha_call"]

_RETURN = (
    "this layer returns the output tensor alone (nn.MultiheadAttention(...)[0], no "
    "attention weights): do not unpack it"
)
_NAMES = {
    "need_weights": f"{_RETURN}; drop need_weights=",
    "average_attn_weights": f"{_RETURN}; drop average_attn_weights=",
    "is_causal": "causality is the layer's setting: build it with Attention(..., "
    "causal=True), or pass attn_mask=torch.ones(T, S, dtype=torch.bool).tril() (True = may "
    "attend)",
    "query": "the queries are the first argument x",
    "key": "keys and values are one context here: pass it as the second argument",
    "value": "keys and values are one context here: pass it as the second argument",
}


def _is_causal_advice(value: object, causal: bool) -> str:
    """``is_causal=`` advice that holds when followed: ``False`` (``nn.MultiheadAttention``'s
    default) is not causality to switch on, and ``True`` came with the ``attn_mask`` that
    ``nn.MultiheadAttention`` requires beside it, whose bool ``True`` means masked."""
    if is_default(value, False) or is_default(value, 0):  # np.False_ too (final read)
        state = "this layer is causal (causal=True)" if causal else "this layer is not causal"
        return f"is_causal=False is nn.MultiheadAttention's default; {state}: drop is_causal="
    if causal:
        where = "this layer is already causal (causal=True): drop is_causal="
    else:
        where = _NAMES["is_causal"]
    return (
        f"{where}; nn.MultiheadAttention needs the causal attn_mask beside is_causal=True: "
        "with causal=True drop that attn_mask, or pass ~attn_mask for a bool one (there True "
        "= masked, here True = may attend; a float mask is additive in both)"
    )


def refuse_mha_call(
    x: object, context: object, rest: tuple, given: dict, causal: bool = False
) -> None:
    """Refuse ``nn.MultiheadAttention``'s extra positionals and keywords by name
    (``causal``: the layer's setting, for the ``is_causal=`` advice).

    Raises:
        TypeError: whenever ``rest`` or ``given`` is not empty.
    """
    for name in given:
        if name == "is_causal":
            advice = _is_causal_advice(given[name], causal)
            raise TypeError(f"Attention: no keyword 'is_causal' here; {advice}")
        if name in _NAMES:
            raise TypeError(f"Attention: no keyword {name!r} here; {_NAMES[name]}")
        raise TypeError(f"Attention.forward() got an unexpected keyword argument {name!r}")
    value = rest[0]
    if value is None and all(v is None for v in rest):
        # attn(x, None, None): the old advice named attn(query, key) for a None "key"
        raise TypeError(
            f"Attention takes (x, context=None) by position and masks by keyword only, got "
            f"{2 + len(rest)} positional arguments (a 3rd, None); drop the trailing None(s): "
            f"attn(x{'' if context is None else ', context'}) (masks: attn_mask=, "
            f"key_padding_mask=); {_RETURN}"
        )
    if (
        isinstance(value, torch.Tensor)
        and value is not x
        and value is not context
        and (context is None or value.dtype == torch.bool or value.ndim in (2, 4))
    ):
        # attn(x, None, mask) or attn(x, ctx, bool_mask): a mask by position, read as the
        # "separate value tensor" the call is not (stop 61); it is a keyword here
        shape = tuple(value.shape)
        raise TypeError(
            f"Attention takes (x, context=None) by position and masks by keyword only, got "
            f"{2 + len(rest)} positional arguments (a 3rd, {shape} {value.dtype}); pass "
            f"attn(x{'' if context is None else ', context'}, attn_mask=mask) (True = may "
            f"attend, as F.scaled_dot_product_attention; a bool nn.MultiheadAttention "
            f"attn_mask is the opposite: ~mask), or key_padding_mask=mask for a (B, S) mask "
            f"with True = padding; {_RETURN}"
        )
    if value is context and context is x:
        call = "attn(x) (self-attention)"
    elif value is context:
        call = "attn(query, key) (the key tensor also gives the values)"
    else:
        call = (
            "attn(query, context) with one tensor for both; separate key and value "
            "tensors are not supported"
        )
    more = ""
    if len(rest) > 1:
        more = (
            "; nn.MultiheadAttention's 4th positional is key_padding_mask: pass "
            "key_padding_mask= by keyword"
        )
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
    raise TypeError(
        f"Attention takes (x, context=None): keys and values are one context, got "
        f"{2 + len(rest)} positional arguments (a 3rd, {shape}, as nn.MultiheadAttention's "
        f"(query, key, value)); pass {call}{more}; {_RETURN}"
    )
