"""tying.core: the tie engine — rules, relations, plans, counting, files, inspection.

Names are resolved lazily (PEP 562), so that torch-free modules of the engine
(``tying.core.patterns``, ``tying.core.errors``) can be imported by the NumPy-only
packages without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types

#: public name -> the module that defines it
_WHERE = {
    "AccidentalTie": "tying.core.inspection",
    "ApplyReport": "tying.core.plan",
    "Count": "tying.core.count",
    "Flipped": "tying.core.relations",
    "ConvergenceWarning": "tying.core.errors",
    "Group": "tying.core.count",
    "Hashed": "tying.core.relations",
    "Mirrored": "tying.core.relations",
    "Plan": "tying.core.plan",
    "Relation": "tying.core.relations",
    "Rotated": "tying.core.relations",
    "Rule": "tying.core.rules",
    "Same": "tying.core.relations",
    "Scaled": "tying.core.relations",
    "TieError": "tying.core.errors",
    "TieInfo": "tying.core.verify",
    "Transposed": "tying.core.relations",
    "count": "tying.core.count",
    "fan_in": "tying.core.inspection",
    "find_accidental_ties": "tying.core.inspection",
    "free": "tying.core.rules",
    "load": "tying.core.checkpoint",
    "relation_from_spec": "tying.core.relations",
    "reset_relations": "tying.core.reset",
    "retie": "tying.core.verify",
    "save": "tying.core.checkpoint",
    "share": "tying.core.rules",
    "ties": "tying.core.verify",
    "untie": "tying.core.verify",
    "verify": "tying.core.verify",
}

__all__ = sorted(_WHERE)  # every public name, one list to keep


class _Package(types.ModuleType):
    """Keeps a public function from being shadowed by its own submodule.

    Importing a submodule sets it as an attribute of its package, so after
    ``tying.core.count`` (the module) is imported, ``tying.core.count`` would
    no longer be the function of that name. Eager imports used to overwrite it
    again; with lazy names the package refuses that one assignment instead.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tying.core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
