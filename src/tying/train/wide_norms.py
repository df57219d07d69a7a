"""Per-example norms that overflow only where the gradient does (stop 51).

``torch.linalg.vector_norm`` sums the squares in the tensor's own dtype, unscaled: a
finite per-example gradient with entries around 1e20 in float32 has squares of 1e40,
past float32's 3.4e38, and its norm came out ``inf``. The DP step then refused it as
"not finite", although clipping it is well defined (its clipped form is finite), and
:func:`~tying.train.per_example_norms` returned ``inf`` with no error.

The fast norms are kept (one pass, no copy). Where one of them is not finite, the
norms of that batch are taken again in float64 with each example scaled by its largest
entry first (``s_b · ‖g_b / s_b‖``, as LAPACK's ``nrm2`` does), which overflows only if
the norm itself is past float64's range. A gradient with an inf or NaN entry still gives
a norm that is not finite (``inf / inf`` is NaN), and is refused as before. A finite
gradient whose norm is past the norms' dtype (float32: 3.4e38) is refused with its own
message: no clipping factor can be computed from it in that dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def row_scales(rows: list[torch.Tensor]) -> torch.Tensor:
    """The largest ``|entry|`` of each example over (B, P_k) matrices, float64 (B,), with
    0 (an all-zero example) read as 1 so that dividing by it is harmless.

    Example:
        >>> import torch
        >>> row_scales([torch.tensor([[1.0, -3.0], [0.0, 0.0]]), torch.tensor([[2.0], [0.0]])])
        tensor([3., 1.], dtype=torch.float64)
    """
    peaks = [torch.linalg.vector_norm(r, ord=math.inf, dim=1).double() for r in rows]
    s = peaks[0] if len(peaks) == 1 else torch.stack(peaks, 1).amax(1)
    return torch.where(s > 0, s, torch.ones_like(s))


def scaled_norms(rows: list[torch.Tensor]) -> torch.Tensor:
    """``‖g_b‖`` of (B, P_k) matrices taken together, in float64, each row scaled by its
    largest entry before the squares are summed (no overflow short of float64's range).

    Example:
        >>> import torch
        >>> g = torch.tensor([[3e20, 4e20]])            # float32: its squares overflow
        >>> float(torch.linalg.vector_norm(g, dim=1)), f"{float(scaled_norms([g])):.4g}"
        (inf, '5e+20')
    """
    s = row_scales(rows)  # (B,)
    per = [torch.linalg.vector_norm(r.double() / s[:, None], dim=1) for r in rows]
    total = per[0] if len(per) == 1 else torch.linalg.vector_norm(torch.stack(per, 1), dim=1)
    return s * total


def combine(norms: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(Σ_k n_k²)`` of float64 (B,) norms, scaled by their largest first.

    Example:
        >>> import torch
        >>> f64 = torch.float64
        >>> combine([torch.tensor([3e200, 0.0], dtype=f64), torch.tensor([4e200, 0.0], dtype=f64)])
        tensor([5.0000e+200, 0.0000e+00], dtype=torch.float64)
    """
    per = torch.stack(norms, 1)  # (B, k)
    s = per.amax(1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s * torch.linalg.vector_norm(per / s[:, None], dim=1)


def finite_or_rescaled(norms: torch.Tensor, scaled: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``norms`` as they are where all are finite (one read-back); else again by ``scaled``.

    Args:
        norms: the fast per-example norms, shape (B,).
        scaled: returns the same norms in float64 without overflow (called only when
            some fast norm is not finite).

    Returns:
        ``norms``, with the entries that were not finite replaced by the scaled ones
        (still not finite where the gradient has an inf or NaN entry: refused later).

    Raises:
        ValueError: a finite gradient whose norm is past the largest value of the
            norms' dtype, naming the examples and the norms.

    Example:
        >>> import torch
        >>> g = torch.tensor([[3e20, 4e20], [1.0, 0.0]])
        >>> finite_or_rescaled(torch.linalg.vector_norm(g, dim=1), lambda: scaled_norms([g]))
        tensor([5.0000e+20, 1.0000e+00])
    """
    return rescued(norms, scaled)[0]


def rescued(norms: torch.Tensor, scaled: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """:func:`finite_or_rescaled`, and whether every norm is finite (a DP step refuses
    the batch otherwise, and is spared a second read-back to find out)."""
    if norms.numel() == 0 or math.isfinite(float(norms.amax())):
        return norms, True
    wide = scaled()  # float64 (B,)
    # an inf/NaN entry keeps the fast norm (inf stays inf: the scaled one is NaN there)
    use = ~torch.isfinite(norms) & torch.isfinite(wide)
    out = torch.where(use, wide.to(norms.dtype), norms)
    past = (use & ~torch.isfinite(out)).nonzero().flatten()
    if past.numel():
        raise ValueError(
            f"the per-example gradient norms of examples {past[:5].tolist()} "
            f"({[f'{v:.3g}' for v in wide[past[:5]].tolist()]}) are past {norms.dtype}'s "
            f"largest value ({torch.finfo(norms.dtype).max:.3g}), so no clipping factor can be "
            f"computed in it; the step is refused and the model left unchanged. Scale the "
            f"loss down (its gradient scales with it) or train in float64"
        )
    return out, bool(torch.isfinite(out).all())
