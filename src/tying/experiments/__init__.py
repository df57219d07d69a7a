"""Experiments: one registered function per claim id in CLAIMS.md.

Every module in this package is imported by :func:`load_all`, which is what
registers its experiments; a module that fails to import (a missing optional
extra, say) is recorded in :data:`IMPORT_ERRORS` instead of breaking the rest.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback

from tying.experiments.registry import (
    REGISTRY,
    SIZES,
    ExperimentSpec,
    Result,
    Table,
    experiment,
    get,
)

IMPORT_ERRORS: dict[str, str] = {}
_NOT_EXPERIMENTS = {"registry", "runner", "common", "claims", "output", "verdict"}
_LOADED: list[bool] = []


def load_all() -> dict[str, ExperimentSpec]:
    """Import every experiment module of this package (once) and return the registry."""
    if _LOADED:
        return REGISTRY
    _LOADED.append(True)
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_EXPERIMENTS or info.name.startswith("_"):
            continue
        name = f"{__name__}.{info.name}"
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional extra is missing
            IMPORT_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"
        # a broken module must not take the whole report down, nor a sys.exit() in it
        # (`tying report`, `tying list` ended before any experiment ran; exit 0 for sys.exit())
        except (Exception, SystemExit) as exc:
            IMPORT_ERRORS[info.name] = "".join(traceback.format_exception(exc)).rstrip()
    return REGISTRY


__all__ = [
    "REGISTRY",
    "SIZES",
    "ExperimentSpec",
    "IMPORT_ERRORS",
    "Result",
    "Table",
    "experiment",
    "get",
    "load_all",
]
