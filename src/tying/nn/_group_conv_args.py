"""Positional-argument errors of the group convs, by the public class's name (stop 59).

``LiftingConv2d(1, 2, 5, 0)`` (padding by position, as e2cnn's ``R2Conv`` takes it)
failed with Python's "_GroupConvBase.__init__() takes 4 positional arguments but 5
were given": a private class that the user never wrote, and no word that the other
arguments are keyword-only. :func:`public_arguments` wraps the shared ``__init__`` so
that a call whose arguments do not bind is refused before anything is built, naming
the class called, its positional arguments, its keywords and (for extra positionals)
the call with them as ``R2Conv`` reads them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

__all__ = ["public_arguments"]

# e2cnn's R2Conv(in_type, out_type, kernel_size, padding, stride, dilation,
# padding_mode, groups, bias, ...): what its positionals after kernel_size are
_R2CONV_ORDER = ("padding", "stride", "dilation", "padding_mode", "groups", "bias")


def _advice(owner: str, sig: inspect.Signature, args: tuple, err: TypeError) -> str:
    params = list(sig.parameters.values())[1:]  # without self
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = [p.name for p in params if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_")]
    head = f"{owner}() takes {len(positional)} positional arguments ({', '.join(positional)})"
    kw = f"the others are keyword-only: {', '.join(k + '=' for k in keywords)}"
    if len(args) <= len(positional):  # missing or repeated: inspect's words, our class
        return f"{owner}(): {err}; {head}, {kw}"
    extra = args[len(positional) :]
    # the extras read as R2Conv does (torch's Conv2d reads a 4th as stride, not taken here)
    named = dict(zip(_R2CONV_ORDER, extra))
    ours = {k: v for k, v in named.items() if k in keywords}
    call = ", ".join(
        [*map(repr, args[: len(positional)]), *(f"{k}={v!r}" for k, v in ours.items())]
    )
    others = [k for k in named if k not in keywords]
    not_here = (
        f" (R2Conv's {', '.join(others)} there: not taken here; pass by keyword to see why)"
        if others
        else ""
    )
    return (
        f"{head} but {len(args)} were given; {kw} (e2cnn's R2Conv takes padding 4th; torch's "
        f"Conv2d takes stride there, which this layer does not: it runs at stride 1): pass "
        f"{owner}({call}){not_here}"
    )


def public_arguments(init: Callable) -> Callable:
    """Wrap a shared ``__init__`` so that arguments that do not bind name the class called.

    Raises:
        TypeError: too many positional arguments (naming the keyword-only ones and the
            call with them as keywords), a missing or a repeated one.
    """
    sig = inspect.signature(init)

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        try:
            sig.bind(self, *args, **kwargs)
        except TypeError as err:
            raise TypeError(_advice(type(self).__name__, sig, args, err)) from None
        init(self, *args, **kwargs)

    return checked
