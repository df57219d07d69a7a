"""tying: parameter tying / weight sharing as a declared, checked, first-class thing.

Example:
    >>> import torch, tying
    >>> model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(100, 16),
    ...                              "lm_head": torch.nn.Linear(16, 100, bias=False)})
    >>> _ = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(model)
    >>> tying.count(model).ratio
    2.0
"""

from tying import soft
from tying.core import (
    AccidentalTie,
    ApplyReport,
    Count,
    Flipped,
    Group,
    Hashed,
    Mirrored,
    Plan,
    Relation,
    Rotated,
    Rule,
    Same,
    Scaled,
    TieError,
    TieInfo,
    Transposed,
    count,
    fan_in,
    find_accidental_ties,
    free,
    load,
    relation_from_spec,
    retie,
    save,
    share,
    ties,
    untie,
    verify,
)

__version__ = "0.1.0"

__all__ = [
    "AccidentalTie",
    "ApplyReport",
    "Count",
    "Flipped",
    "Group",
    "Hashed",
    "Mirrored",
    "Plan",
    "Relation",
    "Rotated",
    "Rule",
    "Same",
    "Scaled",
    "TieError",
    "TieInfo",
    "Transposed",
    "count",
    "fan_in",
    "find_accidental_ties",
    "free",
    "load",
    "relation_from_spec",
    "retie",
    "save",
    "share",
    "soft",
    "ties",
    "untie",
    "verify",
]
