"""One example's loss broadcast against a tensor of the whole batch, then reduced (stop 60).

Per-example gradients apply ``loss_fn`` to each example alone, a batch of one. A loss
that reads a tensor of the whole batch captured outside the call (per-example weights
``w`` of shape ``(B,)``, a target table) broadcasts the example's ``(1,)`` losses against
its ``B`` rows. Unreduced, that returns ``(B,)`` for one example and was refused (stop 36,
:func:`~tying.train.per_example_refusals._refuse_batch_sized_loss`); reduced,
``(w * ce(out, y)).sum()``, it returned one number, so every example got the gradient of
its loss times ``w.sum()`` instead of ``w[b]`` (4.2x-5.4x off a per-example loop at
B = 6), with no error. :class:`BatchBroadcast` watches the calls of one example's loss and
refuses the broadcast where it happens, whatever the loss does with the result.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from tying.train._vetting import METADATA_CALLS, func_name, tensors_in


class BatchBroadcast(TorchFunctionMode):
    """Notes a call in one example's loss whose result has the batch's ``B`` rows while
    one of its operands of that rank has 1 row (the example's) and another ``B`` rows.

    Args:
        batch: the batch size ``B`` (> 1; with 1 the example's rows are the batch's).

    After the loss ran, :meth:`refuse` raises for the first such call: the loss returned
    ``(B,)`` for one example is refused first with its own message (stop 36).

    Example:
        >>> import torch
        >>> w, loss = torch.rand(4), torch.rand(1)   # (B,) weights, one example's loss
        >>> with BatchBroadcast(4) as watch:
        ...     ok = (loss * 2.0).sum()
        >>> watch.refuse()
        >>> with BatchBroadcast(4) as watch:
        ...     bad = (w * loss).sum()
        >>> try:
        ...     watch.refuse()
        ... except ValueError as err:
        ...     print(str(err)[:60])
        per-example gradients: loss_fn broadcasts one example's (1,)
    """

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch
        self.found: tuple | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (
            self.found is None
            and isinstance(out, torch.Tensor)
            and func not in METADATA_CALLS
            and out.dim()
            and out.shape[0] == self.batch
        ):
            rows = {tuple(t.shape) for t in tensors_in(args, kwargs) if t.dim() == out.dim()}
            mine = [s for s in rows if s[0] == 1]
            if mine and any(s[0] == self.batch for s in rows):
                self.found = (func, mine[0])
        elif self.found is None and func in _CONTRACTIONS:
            # einsum('b,b->', w, ce(out, y)) broadcasts the same way but returns no B rows:
            # 6.48x the loop at B = 6, no error (final read of stop 60)
            shapes = [tuple(t.shape) for t in tensors_in(args, kwargs) if t.dim()]
            for s in shapes:
                if s[0] == 1 and any(o[0] == self.batch and len(o) == len(s) for o in shapes):
                    self.found = (func, s)
                    break
        return out

    def refuse(self) -> None:
        """Raise ``ValueError`` for the broadcast noted, if any.

        Raises:
            ValueError: naming the call and the fix (pass the tensor in ``y``, or
                ``mode='ghost'``).
        """
        if self.found is not None:
            func, shape = self.found
            raise ValueError(_message(func, shape, self.batch))


#: calls that contract their operands' leading dimensions (their result need not have B rows)
_CONTRACTIONS = frozenset({torch.einsum, torch.tensordot})


def _message(func, shape: tuple, batch: int) -> str:
    return (
        f"per-example gradients: loss_fn broadcasts one example's {shape} against a tensor "
        f"of the whole batch's {batch} rows in {func_name(func)}: each example's loss is "
        f"computed alone (a batch of one), so a tensor captured outside the call (per-"
        f"example weights w in (w * ce(out, y)).sum(), a target table) gives every example "
        f"all {batch} rows, and after a sum its gradient times w.sum() instead of w[b], "
        f"with no error. Pass such a tensor in y (e.g. y = torch.stack([target, w], 1), "
        f"split inside loss_fn, and return the (B,) losses), or use mode='ghost', which "
        f"applies the loss to the batch. A table of the loss's own that happens to have "
        f"{batch} rows (prototypes, a codebook) is read per example with the example's "
        f"rows unsqueezed first: out[:, None] - table"
    )
