"""A 1-D convolution with palindromic filters: ``w[i] == w[k-1-i]``, stored as ``ceil(k/2)`` values.

Claim B4 (``symmetric-filter``): tie each filter tap to its mirror image and the
filter is even about its centre. It then sees only the symmetric part of every
window it reads — ``w·x = w·(x + x̃)/2`` where ``x̃`` is the window reversed — so a
signal that is antisymmetric about the window centre gives exactly zero response:
the filter is deaf to antisymmetric noise and passes symmetric signals.

The tie is a :class:`tying.Mirrored` re-parametrisation of ``weight`` applied with a
:class:`tying.Plan`: the module stores ``weight_physical`` of shape
``(C_out, C_in/groups, ceil(k/2))`` and reads ``weight`` as its palindrome, so
``tying.count`` reports ``k`` logical taps against ``ceil(k/2)`` physical ones and
``tying.save``/``tying.untie`` work.

Example:
    >>> import torch, tying
    >>> conv = SymmetricConv1d(1, 1, 5, bias=False)
    >>> w = conv.weight[0, 0]
    >>> bool(torch.equal(w, w.flip(0)))
    True
    >>> anti = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 2.0]]])   # odd about its centre
    >>> conv(anti).abs().item() < 1e-6
    True
    >>> c = tying.count(conv); (c.logical, c.physical)
    (5, 3)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tying.core import Mirrored, Plan, share
from tying.core.slot_loads import guard_layer
from tying.nn._args import check_conv1d_geometry, flag, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting

__all__ = ["SymmetricConv1d"]

# The key under which a tied layer's state-dict metadata records its filter length (stop 32)
KERNEL_METADATA_KEY = "tying.kernel_size"


class SymmetricConv1d(nn.Conv1d):
    """``nn.Conv1d`` whose every filter is a palindrome (claim B4).

    Args:
        *args: ``in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias, padding_mode, device, dtype``, as for :class:`torch.nn.Conv1d`.
        tied: False builds a plain ``Conv1d`` of the same shape (the untied baseline).

    Attributes:
        weight: the logical palindromic filters ``(C_out, C_in/groups, k)`` (read-only
            when tied; train ``weight_physical``).
        weight_physical: the stored half ``(C_out, C_in/groups, ceil(k/2))`` when tied.

    Raises:
        ValueError: as ``nn.Conv1d`` for bad sizes; on an input that is not
            ``(B, C_in, L)`` or ``(C_in, L)``; in ``load_state_dict``, for a state dict
            saved from a tied layer of another filter length (recorded in its metadata).

    Example:
        >>> conv = SymmetricConv1d(2, 4, 7, padding=3)
        >>> conv(torch.randn(8, 2, 50)).shape, tuple(conv.weight_physical.shape)
        (torch.Size([8, 4, 50]), (4, 2, 4))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        tied: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        k = (
            kernel_size[0]
            if isinstance(kernel_size, tuple) and len(kernel_size) == 1
            else kernel_size
        )
        # nn.Conv1d takes 0 and our reset_parameters then divided by zero
        kernel_size = int_arg(
            k, 1, f"SymmetricConv1d: kernel_size must be a positive int, got {kernel_size!r}"
        )
        stride, padding, dilation = check_conv1d_geometry(
            "SymmetricConv1d", stride, padding, dilation
        )
        # NumPy ints stored as ints; 0 channels divided by zero in reset_parameters, and
        # groups=True was read as 1 group
        in_channels, out_channels, groups = (
            int_arg(
                value, minimum, f"SymmetricConv1d: {name} must be a positive int, got {value!r}"
            )
            for name, value, minimum in (
                ("in_channels", in_channels, 1),
                ("out_channels", out_channels, 1),
                ("groups", groups, 1),
            )
        )
        bias = flag("SymmetricConv1d", "bias", bias)
        tied = flag("SymmetricConv1d", "tied", tied)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.tied = tied
        if self.tied:
            apply_plan(Plan([share("weight", relation=Mirrored(dim=-1))]), self)
            self.reset_parameters()
        guard_layer(self)  # holds no module: nothing else checks a load into it first

    def reset_parameters(self) -> None:
        """U(±1/√fan_in) on the stored taps (and bias), ``fan_in = C_in/groups × k``.

        Drawing the stored half directly keeps every logical tap at the scale
        ``nn.Conv1d`` uses; averaging a dense draw into the half would shrink it.
        The fan-in counts the logical taps one output reads, not the stored ones.
        """
        bound = 1.0 / math.sqrt(self.in_channels // self.groups * self.kernel_size[0])
        weight = self._parameters.get("weight_physical", self._parameters.get("weight"))
        with torch.no_grad():
            if weight is not None:
                weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None and "weight_physical" in self._parameters:  # kept by torch.save
            meta.setdefault(prefix[:-1], {})[KERNEL_METADATA_KEY] = self.kernel_size[0]

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a state dict with a saved kernel length that differs (raises ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``): refused inside a container,
        the load changes nothing (stop 51; it had loaded the modules before this one).
        """
        # kernel_size 5 and 6 both store 3 taps: the taps of one loaded into the other
        # made another filter ([a, b, c, b, a] read as [a, b, c, c, b, a]) with no error
        # (stop 32). A state dict without the record (older, or a plain dict) loads as before.
        # Only a load that holds the taps is checked (stop 50): a partial load (strict=False)
        # of the bias alone was refused as if the filters were loaded, where nn.Conv1d loads
        # the bias and reports the weight missing.
        saved = local_metadata.get(KERNEL_METADATA_KEY) if local_metadata else None
        tied = "weight_physical" in self._parameters
        key = prefix + "weight_physical"
        if saved is not None and tied and saved != self.kernel_size[0] and key in state_dict:
            raise ValueError(
                f"SymmetricConv1d at {prefix[:-1] or '<root>'!r}: the state dict's "
                f"weight_physical holds the stored half of palindromes of length {saved}, and "
                f"this layer's filters have length {self.kernel_size[0]} (both store "
                f"{math.ceil(saved / 2)} taps), so every filter would change; build the layer "
                f"with kernel_size={saved} and load into that"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(
                f"SymmetricConv1d expected (B, {self.in_channels}, L) or ({self.in_channels}, L), "
                f"got shape {tuple(x.shape)}"
            )
        try:
            return super().forward(x)
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tied={tie_setting(self, self.tied)}"
