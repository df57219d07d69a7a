"""Sparse COO construction with the invariant check chosen here, never torch's default.

Some torch releases inside the supported range (2.11, on a CUDA machine) warn "Sparse
invariant checks are implicitly disabled" from inside ``sparse_coo_tensor`` even when
``check_invariants`` is passed: a warning about a choice that was made, and an error under
``-W error`` (pytest's ``filterwarnings = error``). The choice is always passed here, so
that one warning, and only it, is silenced for the construction.
"""

from __future__ import annotations

import warnings

import torch

_IMPLICIT = "Sparse invariant checks are implicitly disabled"


def sparse_coo(
    indices: torch.Tensor,
    values: torch.Tensor,
    shape: tuple[int, ...],
    *,
    check_invariants: bool,
    is_coalesced: bool | None = None,
    coalesce: bool = False,
) -> torch.Tensor:
    """``torch.sparse_coo_tensor`` with ``check_invariants`` chosen (required here), then
    ``coalesce()`` when asked, with torch's "implicitly disabled" warning silenced."""
    kw = {} if is_coalesced is None else {"is_coalesced": is_coalesced}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_IMPLICIT, category=UserWarning)
        out = torch.sparse_coo_tensor(
            indices, values, shape, check_invariants=check_invariants, **kw
        )
        return out.coalesce() if coalesce else out
