"""RDKit, imported once with an error that names the extra to install."""

from __future__ import annotations

import contextlib

from tying.chem.errors import missing_extra

try:
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdqueries
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise missing_extra("RDKit", _err) from _err

__all__ = ["Chem", "quiet", "rdqueries"]


@contextlib.contextmanager
def quiet():
    """Silence RDKit's own stderr messages while we turn its failures into our errors."""
    block = rdBase.BlockLogs()
    try:
        yield
    finally:
        del block
