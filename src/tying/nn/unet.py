"""A U-Net whose decoder filters are the encoder's, applied as transposed convolutions.

Claim B13 (``tied-unet``): the features an encoder needs to recognise a shape while
shrinking the image may be the ones its decoder needs to draw the shape's outline
while growing it back. Tie decoder level ``l`` to encoder level ``l``: the decoder
applies ``conv_transpose2d`` with the encoder's very weight tensor (its adjoint),
so the decoder's filters cost no parameters and segmentation quality holds.

Architecture (``widths = (w0, …, wL)``)::

    stem   conv k×k  in → w0                          (free)
    down.l maxpool 2, conv k×k  w_l → w_{l+1}, ReLU    l = 0 … L-1
    up.l   upsample 2, conv_transpose k×k  w_{l+1} → w_l, + skip, ReLU
    head   conv 1×1  w0 → out                         (free)

Skips are *added* (not concatenated) so that ``up.l`` is exactly the adjoint shape
of ``down.l``: a ``ConvTranspose2d(w_{l+1}, w_l)`` weight is ``(w_{l+1}, w_l, k, k)``,
the shape of ``Conv2d(w_l, w_{l+1})``'s weight, and the tie is
``tying.share("up.*.weight", like="down.*.weight")`` (``Same``: one tensor, no
overhead; autograd sums both uses' gradients). Decoder biases stay free (their
shape is ``w_l``, not ``w_{l+1}``). ``tied=False`` or ``tying.untie(model)`` gives the
untied U-Net with the same initial weights distribution (both use the encoder
conv's fan-in rule).

Example:
    >>> import torch, tying
    >>> net = TiedUNet(1, 2, widths=(8, 16, 32))
    >>> net(torch.randn(3, 1, 32, 32)).shape
    torch.Size([3, 2, 32, 32])
    >>> net.up[1].weight is net.down[1].weight
    True
    >>> c = tying.count(net); (c.logical, c.physical)
    (11690, 5930)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Plan, share
from tying.nn._args import flag, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting

__all__ = ["TiedUNet"]


class TiedUNet(nn.Module):
    """U-Net with decoder filters tied to the encoder's (transposed conv), claim B13.

    Args:
        in_channels: image channels.
        out_channels: output channels (e.g. 1 logit per class, or 1 for a binary mask).
        widths: channels per level, ``(w0, …, wL)``; ``L = len(widths) - 1`` down steps.
        kernel_size: odd kernel size of every encoder/decoder conv.
        tied: tie ``up.l.weight`` to ``down.l.weight``; False for the untied baseline.

    Shape:
        ``(B, in, H, W)`` → ``(B, out, H, W)`` with ``H`` and ``W`` divisible by ``2**L``;
        an unbatched image ``(in, H, W)`` (as ``nn.Conv2d`` takes it) → ``(out, H, W)``.

    Raises:
        ValueError: for fewer than two widths, non-positive widths, an even kernel,
            or an input of the wrong channels or a size not divisible by ``2**L``.

    Example:
        >>> net = TiedUNet(3, 1, widths=(4, 8), tied=False)
        >>> net(torch.randn(1, 3, 16, 16)).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: tuple[int, ...] = (16, 32, 64),
        *,
        kernel_size: int = 3,
        tied: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        error = f"widths must be at least two positive ints (w0, ..., wL), got {widths!r}"
        if len(widths) < 2:
            raise ValueError(error)
        widths = tuple(int_arg(w, 1, error) for w in widths)
        in_channels, out_channels = (
            int_arg(v, 1, f"{name} must be a positive int, got {v!r}")
            for name, v in (("in_channels", in_channels), ("out_channels", out_channels))
        )
        error = (
            f"kernel_size must be an odd positive int (so 'same' padding is symmetric), "
            f"got {kernel_size!r}"
        )
        kernel_size = int_arg(kernel_size, 1, error)
        if kernel_size % 2 == 0:
            raise ValueError(error)
        self.in_channels, self.out_channels, self.widths = in_channels, out_channels, widths
        self.tied = flag("TiedUNet", "tied", tied)
        pad = kernel_size // 2
        self.stem = nn.Conv2d(in_channels, widths[0], kernel_size, padding=pad)
        self.down = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size, padding=pad)
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size, padding=pad)
            for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if self.tied:
            # claim B13: decoder level l applies encoder level l's filters, transposed
            apply_plan(Plan([share("up.*.weight", like="down.*.weight")]), self)

    @property
    def levels(self) -> int:
        """Number of down (and up) steps ``L``."""
        return len(self.widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2**self.levels
        if x.ndim == 3 and x.shape[0] == self.in_channels:
            # one image (in, H, W), which nn.Conv2d takes; it was refused (stop 58)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TiedUNet expected (B, {self.in_channels}, H, W), got shape {tuple(x.shape)} "
                f"(one image is ({self.in_channels}, H, W))"
            )
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(
                f"TiedUNet with {self.levels} levels needs H and W divisible by {step}, got "
                f"{tuple(x.shape[-2:])}; pad or crop the input"
            )
        try:
            h = F.relu(self.stem(x))  # (B, w0, H, W)
            skips = [h]
            for conv in self.down:
                h = F.relu(conv(F.max_pool2d(h, 2)))  # (B, w_{l+1}, H/2^{l+1}, W/2^{l+1})
                skips.append(h)
            for level in reversed(range(self.levels)):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = F.relu(self.up[level](h) + skips[level])  # (B, w_l, H/2^l, W/2^l)
            return self.head(h)
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise

    def extra_repr(self) -> str:
        return f"widths={self.widths}, tied={tie_setting(self, self.tied)}"
