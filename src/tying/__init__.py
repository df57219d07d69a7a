"""tying: parameter tying / weight sharing as a declared, checked, first-class thing.

The public names are those of :mod:`tying.core` (the tie engine) plus
:mod:`tying.soft`; domain packages (``tying.nn``, ``tying.hmm``, ``tying.fit``,
``tying.chem``, ``tying.train``, ``tying.distributed``) are imported by name.

The engine's names are resolved lazily (PEP 562): ``import tying.chem`` or
``import tying.hmm`` does not import torch, which the NumPy-only packages do not
need; ``tying.Plan`` imports :mod:`tying.core` (and torch) on first use.

Example:
    >>> import torch, tying
    >>> model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(100, 16),
    ...                              "lm_head": torch.nn.Linear(16, 100, bias=False)})
    >>> _ = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(model)
    >>> tying.count(model).ratio
    2.0
"""

from __future__ import annotations

import importlib

from tying.core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "soft"]


def __getattr__(name: str):
    if name == "soft":
        module = importlib.import_module("tying.soft")
        globals()[name] = module
        return module
    if name in _core_all:
        core = importlib.import_module("tying.core")
        value = getattr(importlib.import_module(core._WHERE[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'tying' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
