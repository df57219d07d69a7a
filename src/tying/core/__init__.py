"""tying.core: the tie engine — rules, relations, plans, counting, files, inspection."""

from tying.core.checkpoint import load, save
from tying.core.count import Count, Group, count
from tying.core.errors import TieError
from tying.core.inspection import AccidentalTie, fan_in, find_accidental_ties
from tying.core.plan import ApplyReport, Plan
from tying.core.relations import (
    Flipped,
    Hashed,
    Mirrored,
    Relation,
    Rotated,
    Same,
    Scaled,
    Transposed,
    relation_from_spec,
)
from tying.core.rules import Rule, free, share
from tying.core.verify import TieInfo, retie, ties, untie, verify

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
    "ties",
    "untie",
    "verify",
]
