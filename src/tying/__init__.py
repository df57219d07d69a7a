"""tying: parameter tying / weight sharing as a declared, checked, first-class thing.

The public names are those of :mod:`tying.core` (the tie engine) plus
:mod:`tying.soft`; domain packages (``tying.nn``, ``tying.hmm``, ``tying.fit``,
``tying.chem``, ``tying.train``, ``tying.distributed``) are imported by name.

Example:
    >>> import torch, tying
    >>> model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(100, 16),
    ...                              "lm_head": torch.nn.Linear(16, 100, bias=False)})
    >>> _ = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(model)
    >>> tying.count(model).ratio
    2.0
"""

from tying import soft
from tying.core import *  # noqa: F403 - the engine's public names, listed in tying.core.__all__
from tying.core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "soft"]
