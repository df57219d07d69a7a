"""A locally connected 2-D layer: a convolution whose per-position filters are untied.

``LocallyConnected2d`` slides a window over the input like :class:`torch.nn.Conv2d`,
but every output position ``(i, j)`` has its own filter. It is the untied baseline
of claim A2 (``conv-is-tied-lc``): a conv layer is this layer with all per-position
filters tied to one. :meth:`LocallyConnected2d.from_conv` unties a conv into it,
:meth:`LocallyConnected2d.to_conv` ties it back when all its filters are equal, and
:meth:`LocallyConnected2d.tie_filters` ties the layer in place: one physical filter
that every position reads.
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from tying.core.slot_loads import guard_layer
from tying.nn._args import flag, int_arg, is_bool, is_int, refuse_foreign_defaults
from tying.nn._input_errors import CAUGHT, InputDeviceError, raise_if_mismatched
from tying.nn._lc_names import LC_DEFAULTS, LC_FOREIGN_NAMES

__all__ = ["LocallyConnected2d"]

# The key under which a layer's state-dict metadata records where its windows sit (stop 58)
WINDOWS_METADATA_KEY = "tying.windows"


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``value`` (an int, or a tuple or list of two) as a pair of plain ints; NumPy ints
    are taken as ``nn.Conv2d`` takes them, bools refused (the sign is checked by the
    caller)."""
    pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2 or not all(is_int(v, -math.inf) for v in pair):
        raise TypeError(
            f"LocallyConnected2d: {name}: expected an int or a pair of ints, got {value!r}"
        )
    return (int(pair[0]), int(pair[1]))


class _SharedAcrossPositions(nn.Module):
    """Parametrization: one stored filter (or bias), read by every output position."""

    def __init__(self, output_size: tuple[int, int], name: str = "weight") -> None:
        super().__init__()
        self.output_size = output_size
        self.name = name
        self.item_shape: tuple[int, ...] | None = None  # one position's, set when tied

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        # (C_out, ...) -> (out_h, out_w, C_out, ...): a view, so autograd sums the
        # per-position gradients into the one stored tensor (claim B5)
        return shared.expand(*self.output_size, *shared.shape)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        if self.item_shape is None:  # tie_filters: position (0, 0)'s, by design
            self.item_shape = tuple(value.shape[2:])
            return value[0, 0].clone()
        # an assignment to the tied slot (layer.weight = value): it kept position (0, 0)'s
        # filter and dropped the others with no error (7.6 off the assigned per-position
        # layer), and a conv-shaped (C_out, C_in, kh, kw) value stored its [0, 0] (kh, kw)
        # slice as the filter (stop 59b)
        n = self.name
        full = (*self.output_size, *self.item_shape)
        untie = (
            f"for per-position values untie first: torch.nn.utils.parametrize."
            f"remove_parametrizations(layer, {n!r}), then layer.{n} = nn.Parameter(value)"
        )
        if tuple(value.shape) != full:
            raise ValueError(
                f"LocallyConnected2d: {n} is tied across positions (tie_filters) and reads as "
                f"{full}, got a value of shape {tuple(value.shape)}; assign one position's "
                f"{n} {self.item_shape} spread to every position "
                f"(value.expand({', '.join(map(str, full))})), or {untie}"
            )
        first = value[0, 0]
        if value.is_meta:  # no values to compare (deferred init): the shape is all there is
            return first.clone()
        # equal positions, NaN and inf included (a NaN or inf filter spread to every
        # position read "position (0, 0) differs from position (0, 0) by inf")
        same = (value == first) | (value.isnan() & first.isnan())  # (out_h, out_w, ...)
        diff = (value - first).abs().nan_to_num(nan=torch.inf, posinf=torch.inf)
        diff = torch.where(same, 0, diff).flatten(2).amax(dim=2)  # (out_h, out_w)
        if bool(diff.max() > 0):
            pos = divmod(int(diff.argmax()), self.output_size[1])
            raise ValueError(
                f"LocallyConnected2d: {n} is tied across positions (tie_filters): every "
                f"position reads one stored {n}, but the value's position {pos} differs from "
                f"position (0, 0)'s by {float(diff.max()):.3g}, and only position (0, 0)'s "
                f"would be kept; assign a value whose positions are equal, or {untie}"
            )
        return first.clone()


class LocallyConnected2d(nn.Module):
    """2-D locally connected layer: one filter (and bias) per output position.

    Args:
        in_channels: channels of the input, ``C_in``.
        out_channels: channels of the output, ``C_out``.
        input_size: spatial size ``(H, W)`` of the input (an int for square inputs);
            the layer needs it because it owns one filter per output position.
        kernel_size: window size ``(kh, kw)``.
        stride: window stride.
        padding: zero padding added to both sides of each spatial dimension, or
            ``"valid"`` (0) or ``"same"`` (stride 1 and odd kernels: ``(k - 1) / 2``), as
            ``nn.Conv2d`` reads them.
        bias: whether each position and output channel has a bias.
        device, dtype: where and how the parameters are created.

    Attributes:
        weight: ``(out_h, out_w, C_out, C_in, kh, kw)``, the filter of every position.
        bias: ``(out_h, out_w, C_out)``, or ``None``.
        output_size: ``(out_h, out_w)``.

    Raises:
        ValueError: on non-positive sizes, or a window that does not fit the
            padded input.
        TypeError: on sizes that are not ints or pairs of ints; for ``nn.Conv2d``'s
            ``dilation``, ``groups``, ``padding_mode`` and Keras' ``filters``, ``strides``,
            ``use_bias``, ``data_format``, ``activation``, ``implementation``, naming what
            to do here.

    Example:
        >>> layer = LocallyConnected2d(3, 16, input_size=32, kernel_size=3, padding=1)
        >>> tuple(layer.weight.shape), layer.output_size
        ((32, 32, 16, 3, 3, 3), (32, 32))
        >>> layer(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **foreign: object,
    ) -> None:
        super().__init__()
        # nn.Conv2d's and Keras' keywords name what to do here (stop 61)
        refuse_foreign_defaults(
            "LocallyConnected2d", foreign, LC_FOREIGN_NAMES, LC_DEFAULTS, "nn.Conv2d (or Keras)"
        )
        bias = flag("LocallyConnected2d", "bias", bias)
        in_channels, out_channels = (
            int_arg(value, 1, f"{name} must be a positive int, got {value!r}")
            for name, value in (("in_channels", in_channels), ("out_channels", out_channels))
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_size = _pair(input_size, "input_size")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        if isinstance(padding, str):  # nn.Conv2d's 'valid'/'same' (stop 60: a bare refusal)
            padding = _padding_numbers(padding, self.kernel_size, self.stride)
        self.padding = _pair(padding, "padding")
        for name, pair, low in (
            ("input_size", self.input_size, 1),
            ("kernel_size", self.kernel_size, 1),
            ("stride", self.stride, 1),
            ("padding", self.padding, 0),
        ):
            if min(pair) < low:
                raise ValueError(
                    f"LocallyConnected2d: {name} must be >= {low} in both dimensions, got {pair}"
                )
        out = []
        for axis, (size, k, s, p) in enumerate(
            zip(self.input_size, self.kernel_size, self.stride, self.padding)
        ):
            if size + 2 * p < k:
                raise ValueError(
                    f"LocallyConnected2d: kernel_size {self.kernel_size} does not fit the padded input "
                    f"{self.input_size} with padding {self.padding} (axis {axis}: "
                    f"{size} + 2*{p} < {k}); use a smaller kernel or more padding"
                )
            out.append((size + 2 * p - k) // s + 1)
        self.output_size: tuple[int, int] = (out[0], out[1])
        factory = {"device": device, "dtype": dtype}
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(
            torch.empty(*self.output_size, out_channels, in_channels, kh, kw, **factory)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(*self.output_size, out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        guard_layer(self)  # holds no module: nothing else checks a load into it first

    def fan_in(self) -> int:
        """Inputs of one output unit: ``C_in * kh * kw`` (as for the conv it unties).

        ``tying.fan_in(layer)`` calls this; it is not multiplied by the number of
        positions (claim B15).

        Example:
            >>> LocallyConnected2d(4, 8, input_size=6, kernel_size=3).fan_in()
            36
        """
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """Initialise like :class:`torch.nn.Conv2d`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        ``nn.init.kaiming_uniform_`` would read a fan-in of ``C_out * C_in * kh * kw``
        off the 6-D weight; one output unit only sees ``C_in * kh * kw`` inputs
        (claim B15), so the bound is computed from :meth:`fan_in`.
        """
        bound = 1.0 / math.sqrt(self.fan_in())
        with torch.no_grad():
            for name in ("weight", "bias"):
                if getattr(self, name) is None:
                    continue
                if parametrize.is_parametrized(self, name):  # tied: draw the one filter
                    getattr(self.parametrizations, name).original.uniform_(-bound, bound)
                else:
                    getattr(self, name).uniform_(-bound, bound)

    def _windows(self) -> dict[str, list[int]]:
        """Where position ``(i, j)``'s window starts: ``(i, j)·stride − padding``."""
        return {"stride": list(self.stride), "padding": list(self.padding)}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None:  # kept by torch.save, read back by _tying_check_load
            # the input size is kept for the advice only (the windows do not depend on it)
            record = {**self._windows(), "input_size": list(self.input_size)}
            meta.setdefault(prefix[:-1], {})[WINDOWS_METADATA_KEY] = record

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse per-position filters saved from a layer whose windows sit elsewhere
        (raises ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``), so a refused load changes
        nothing. Only an untied ``weight`` is checked: a tied layer's one filter is a
        convolution's, which ``nn.Conv2d`` loads across strides and paddings too.
        """
        # LocallyConnected2d(1, 2, 8, 3) and LocallyConnected2d(1, 2, 13, 3, stride=2) both
        # hold 6 x 6 filters: the filter learned for the window at rows 1..3 was applied at
        # rows 2..4, and so on, with no error (stop 58). The input size is not compared: at
        # the same stride and padding every window is the same. A state dict without the
        # record (older, or a plain dict) loads as before.
        saved = local_metadata.get(WINDOWS_METADATA_KEY) if local_metadata else None
        if saved is None or prefix + "weight" not in state_dict or "weight" not in self._parameters:
            return
        mine = self._windows()
        size = tuple(int(v) for v in saved.get("input_size", self.input_size))
        saved = {k: [int(v) for v in saved.get(k, ())] for k in mine}
        # On an axis with one output position the only window starts at -padding whatever
        # the stride: LocallyConnected2d(2, 3, 5, 5) and the same layer with stride=2 (or a
        # (1, W) strip at stride (2, s) and (1, s)) compute one function; their loads were
        # refused (stop 58 review). A saved grid of more positions there is refused by shape.
        for axis, n in enumerate(self.output_size):
            if n == 1 and len(saved["stride"]) == 2:
                saved["stride"][axis] = mine["stride"][axis]
        if saved == mine:
            return
        diff = ", ".join(
            f"{k}={tuple(saved[k])} (this layer: {tuple(mine[k])})"
            for k in mine
            if saved[k] != mine[k]
        )
        raise ValueError(
            f"LocallyConnected2d at {prefix[:-1] or '<root>'!r}: the state dict's weight holds "
            f"one filter per position of a layer with {diff}, so each filter would be applied "
            f"to another window of the input (position (i, j) reads the window starting at "
            f"(i, j)·stride − padding): another function, no error; build the layer as it was "
            f"saved, input_size={size}, stride={tuple(saved['stride'])}, "
            f"padding={tuple(saved['padding'])}, and load into that (to move the filters on "
            f"purpose, e.g. padding=p as padding=0 on inputs you pad by p yourself, load "
            f"dict(state_dict), which carries no record)"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    @property
    def is_tied(self) -> bool:
        """True after :meth:`tie_filters`: all positions read one stored filter."""
        return parametrize.is_parametrized(self, "weight")

    def tie_filters(self) -> LocallyConnected2d:
        """Tie every position's filter and bias to position (0, 0)'s, in place.

        Afterwards the layer stores one ``(C_out, C_in, kh, kw)`` filter (and one
        ``(C_out,)`` bias); ``weight`` is a view that repeats it over positions, so
        the layer computes exactly the convolution with that filter, and its
        gradient is the sum of the per-position gradients. Tying again is a no-op.

        Returns:
            ``self``.

        Example:
            >>> lc = LocallyConnected2d(3, 4, input_size=8, kernel_size=3).tie_filters()
            >>> sum(p.numel() for p in lc.parameters()) == 4 * (3 * 3 * 3 + 1)
            True
        """
        if self.is_tied:
            return self
        for name in ("weight", "bias"):
            if getattr(self, name) is not None:
                parametrize.register_parametrization(
                    self, name, _SharedAcrossPositions(self.output_size, name)
                )
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every position's filter to its window.

        Args:
            x: ``(B, C_in, H, W)`` or unbatched ``(C_in, H, W)``.

        Returns:
            ``(B, C_out, out_h, out_w)`` (or ``(C_out, out_h, out_w)``).

        Raises:
            ValueError: when ``x`` does not have the channels and spatial size the
                layer was built for.
        """
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        expected = (self.in_channels, *self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"LocallyConnected2d: expected input (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}) or ({expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(x.shape) if not unbatched else tuple(x.shape[1:])}; the layer owns "
                f"one filter per position, so build it with the input_size you feed it"
            )
        if x.is_meta and not self.weight.is_meta:
            # torch.einsum of a meta and a CPU tensor returns a CPU tensor of uninitialised
            # memory (torch 2.13), where nn.Conv2d returns meta: refuse, as another device
            detail = (
                f"the input is on meta but the layer's parameters are on {self.weight.device}; "
                f"move one to the other: x.to({str(self.weight.device)!r}) or layer.to('meta')"
            )
            raise InputDeviceError(f"LocallyConnected2d: {detail}", self, detail)
        try:
            out_h, out_w = self.output_size
            patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
            # (B, C_in*kh*kw, L) with L = out_h*out_w; unfold orders channels as (C_in, kh, kw)
            patches = patches.transpose(1, 2)  # (B, L, K)
            weight = self.weight.reshape(out_h * out_w, self.out_channels, -1)  # (L, C_out, K)
            out = torch.einsum("blk,lok->blo", patches, weight)  # (B, L, C_out)
            if self.bias is not None:
                # in the product's dtype: under autocast a float32 bias made a bfloat16 product
                # float32, where nn.Conv2d returns bfloat16 (no-op otherwise: the same bits)
                out = out + self.bias.reshape(out_h * out_w, self.out_channels).to(out.dtype)
            # contiguous, as nn.Conv2d's output: the transposed view failed a later
            # out.view(B, -1), the flatten idiom of conv nets, where Conv2d's passed (stop 62)
            out = out.transpose(1, 2).reshape(x.shape[0], self.out_channels, out_h, out_w)
            out = out.contiguous()
            return out.squeeze(0) if unbatched else out
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: int | tuple[int, int]) -> LocallyConnected2d:
        """Untie a conv: a layer whose every position holds a copy of ``conv``'s filter.

        Args:
            conv: a ``Conv2d`` with ``groups=1``, ``dilation=1`` and zero padding: numbers,
                ``"valid"``, or ``"same"`` with an odd kernel (symmetric: ``(k - 1) / 2``).
            input_size: spatial size ``(H, W)`` of the inputs the layer will see.

        Returns:
            A ``LocallyConnected2d`` computing the same function as ``conv`` on inputs
            of that size, with independent (untied) per-position copies of the filter.

        Raises:
            TypeError: when ``conv`` is not a ``Conv2d``.
            ValueError: for grouped, dilated or non-zero-padded convs, and ``"same"``
                padding of an even kernel (uneven sides; the message says how to pad).

        Example:
            >>> conv = nn.Conv2d(3, 4, 3, padding=1)
            >>> lc = LocallyConnected2d.from_conv(conv, input_size=8)
            >>> x = torch.randn(2, 3, 8, 8)
            >>> torch.allclose(lc(x), conv(x), atol=1e-6)
            True
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv: expected an nn.Conv2d, got {type(conv).__name__}")
        problems = []
        if conv.groups != 1:
            problems.append(f"groups={conv.groups} (need 1)")
        if tuple(conv.dilation) != (1, 1):
            problems.append(f"dilation={tuple(conv.dilation)} (need (1, 1))")
        padding = conv.padding
        if isinstance(padding, str) and not problems:
            # padding='valid'/'same' (the string forms nn.Conv2d takes) were refused as
            # "need explicit numbers" (stop 59): 'valid' is 0 and 'same' of an odd kernel
            # is (k - 1) / 2 on each side, the windows this layer makes from numbers
            padding, problem = _string_padding(conv)
            if problem:
                problems.append(problem)
        if conv.padding_mode != "zeros":
            problems.append(f"padding_mode={conv.padding_mode!r} (need 'zeros')")
        if problems:
            raise ValueError("from_conv: unsupported conv: " + ", ".join(problems))
        w = conv.weight
        lc = cls(
            conv.in_channels,
            conv.out_channels,
            input_size,
            tuple(conv.kernel_size),
            stride=tuple(conv.stride),
            padding=tuple(padding),
            bias=conv.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            lc.weight.copy_(w.detach().expand_as(lc.weight))
            if conv.bias is not None:
                lc.bias.copy_(conv.bias.detach().expand_as(lc.bias))
        return lc

    def to_conv(self, atol: float = 0.0) -> nn.Conv2d:
        """Tie back: the ``Conv2d`` with the one filter all positions share.

        Args:
            atol: largest absolute difference allowed between any position's filter
                (or bias) and position (0, 0)'s.

        Returns:
            A ``Conv2d`` with position (0, 0)'s filter and bias.

        Raises:
            ValueError: when some position's filter or bias differs from position
                (0, 0)'s by more than ``atol``, naming the position and the difference;
                when one holds a NaN or inf; when ``atol`` is negative or NaN.

        Example:
            >>> lc = LocallyConnected2d.from_conv(nn.Conv2d(1, 2, 3), input_size=5)
            >>> lc.to_conv().weight.shape
            torch.Size([2, 1, 3, 3])
        """
        if is_bool(atol) or not isinstance(atol, numbers.Real) or not atol >= 0:
            raise ValueError(f"to_conv: atol must be a non-negative number, got {atol!r}")
        checks = [("weight", self.weight)]
        if self.bias is not None:
            checks.append(("bias", self.bias))
        for name, tensor in checks:
            t = tensor.detach()
            diff = (t - t[0, 0]).abs().flatten(2).amax(dim=2)  # (out_h, out_w)
            # a NaN (or an inf filter, whose difference is NaN) compares False with atol:
            # name it as the worst position rather than pass it and drop its output
            diff = torch.where(diff.isnan(), torch.inf, diff)
            worst = float(diff.max())
            if not t.isfinite().all():
                flat = int((~t.isfinite()).flatten(2).any(dim=2).flatten().int().argmax())
                pos = divmod(flat, self.output_size[1])
                raise ValueError(
                    f"to_conv: the {name} of position {pos} holds a non-finite value; "
                    f"a conv cannot reproduce it (fix or re-initialise that position first)"
                )
            if worst > atol:
                flat = int(diff.argmax())
                pos = divmod(flat, self.output_size[1])
                raise ValueError(
                    f"to_conv: the {name} of position {pos} differs from position (0, 0)'s "
                    f"by {worst:.3g} > atol={atol:g}; the filters are not tied, so this "
                    f"layer is not a convolution (raise atol to tie them anyway)"
                )
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.weight[0, 0])
            if self.bias is not None:
                conv.bias.copy_(self.bias[0, 0])
        return conv

    def __reduce_ex__(self, protocol):
        """Pickle a tied layer (``torch.save(layer)``, ``pickle``) as the tie it is.

        ``tie_filters`` ties through ``torch.nn.utils.parametrize``, whose modules refuse
        pickling ("Serialization of parametrized modules is only supported through
        state_dict()", stop 54): a tied layer could not be saved whole, though an untied
        one could. It is pickled as the untied layer (its weight a zero-stride view of
        the one filter: one filter's bytes) and tied again on load, so the loaded layer
        computes the same, stores one filter and keeps its hooks and mode. Other
        parametrizations (``weight_norm`` on top of the tie) are refused by name.
        """
        if not parametrize.is_parametrized(self):
            return super().__reduce_ex__(protocol)
        others = {
            name: [type(p).__name__ for p in plist if not isinstance(p, _SharedAcrossPositions)]
            for name, plist in self.parametrizations.items()
        }
        others = {
            name: kinds for name, kinds in others.items() if kinds or name not in ("weight", "bias")
        }
        if others or len(self.parametrizations.weight) != 1:
            raise TypeError(
                f"LocallyConnected2d: pickling (torch.save(layer)) supports the layer's own "
                f"tie (tie_filters) only, got parametrizations {others or 'stacked on weight'} "
                f"beside it, which torch.nn.utils.parametrize cannot pickle; save "
                f"layer.state_dict() (or tying.save) and load it into a layer built the same "
                f"way, or remove them first (parametrize.remove_parametrizations)"
            )
        state, shared = self._untied_state()
        for name, original in shared.items():
            # every position's value, a zero-stride view of the one filter: its bytes only
            state["_parameters"][name] = self._spread(original)
        return (_tied_again, (state,))

    def __deepcopy__(self, memo):
        # torch's deepcopy of a parametrized module shares the class parametrize made
        # for it, so parametrize.remove_parametrizations(copy, "weight") deleted the
        # original's weight too ("has no attribute 'weight'", stop 54): a tied copy is
        # tied again by itself, on its own class
        own_tie = parametrize.is_parametrized(self) and all(
            name in ("weight", "bias")
            and len(plist) == 1
            and isinstance(plist[0], _SharedAcrossPositions)
            for name, plist in self.parametrizations.items()
        )
        cls = LocallyConnected2d if own_tie else type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        if not own_tie:
            # untied, or other parametrizations beside the tie: as torch copies (the
            # latter still on the shared class: remove those before copying to be safe)
            new.__dict__ = copy.deepcopy(self.__dict__, memo)
            return new
        state, shared = self._untied_state()
        state = copy.deepcopy(state, memo)
        for name, original in shared.items():
            state["_parameters"][name] = self._spread(copy.deepcopy(original, memo))
        new.__setstate__(state)
        return new.tie_filters()

    def _untied_state(self) -> tuple[dict, dict]:
        """This tied layer's ``__dict__`` without its parametrizations, and the stored
        filter and bias (built beside the layer, which is left as it is)."""
        state = dict(self.__dict__)
        state["_modules"] = {k: m for k, m in self._modules.items() if k != "parametrizations"}
        state["_parameters"] = dict(self._parameters)
        shared = {name: plist.original for name, plist in self.parametrizations.items()}
        return state, shared

    def _spread(self, original: torch.Tensor) -> nn.Parameter:
        """``original`` read by every position: the untied parameter, as a zero-stride view."""
        return nn.Parameter(
            original.detach().expand(*self.output_size, *original.shape),
            requires_grad=original.requires_grad,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"bias={self.bias is not None}"
        )


def _padding_numbers(padding: str, kernel_size: tuple, stride: tuple) -> tuple[int, int]:
    """``padding='valid'``/``'same'`` as ``nn.Conv2d`` reads them, in numbers; ``'same'``
    needs stride 1 (as ``nn.Conv2d``) and odd kernels (this layer pads both sides alike)."""
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ValueError(
            f"LocallyConnected2d: padding must be an int, a pair of ints, 'valid' or 'same', "
            f"got {padding!r}"
        )
    if min(kernel_size) < 1:
        return (0, 0)  # the kernel_size check refuses it by name (not as uneven padding)
    if stride != (1, 1):
        raise ValueError(
            f"LocallyConnected2d: padding='same' needs stride 1 (as nn.Conv2d), got stride "
            f"{stride}; pass padding as numbers (an odd k with padding k // 2 gives ceil(H / stride) "
            f"positions)"
        )
    kh, kw = kernel_size
    if not (kh % 2 and kw % 2):
        (top, bottom), (left, right) = (((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw))
        raise ValueError(
            f"LocallyConnected2d: padding='same' with kernel_size {kernel_size} pads unevenly "
            f"in nn.Conv2d (top/bottom {top}/{bottom}, left/right {left}/{right}) and this "
            f"layer pads both sides alike: build it with padding=0 and input_size=(H + "
            f"{kh - 1}, W + {kw - 1}), and call it on F.pad(x, ({left}, {right}, {top}, "
            f"{bottom}))"
        )
    return ((kh - 1) // 2, (kw - 1) // 2)


def _string_padding(conv: nn.Conv2d) -> tuple[tuple[int, int], str | None]:
    """The numbers of ``conv``'s ``padding='valid'``/``'same'`` (undilated, stride 1),
    or a problem naming what a layer with symmetric zero padding cannot reproduce."""
    if conv.padding == "valid":
        return (0, 0), None
    kh, kw = conv.kernel_size
    if kh % 2 and kw % 2:  # 'same' pads (k - 1) / 2 on both sides of each axis
        return ((kh - 1) // 2, (kw - 1) // 2), None
    # torch pads (k - 1) // 2 before and the rest after: this layer pads both sides alike
    (top, bottom), (left, right) = (((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw))
    return (0, 0), (
        f"padding='same' with kernel_size {(kh, kw)} (pads top/bottom {top}/{bottom}, "
        f"left/right {left}/{right}; this layer pads both sides alike): untie a copy with "
        f"padding=0, input_size=(H + {kh - 1}, W + {kw - 1}), and call it on "
        f"F.pad(x, ({left}, {right}, {top}, {bottom}))"
    )


def _tied_again(state: dict) -> LocallyConnected2d:
    """Unpickling a tied layer: the untied layer it was saved as, tied again."""
    layer = LocallyConnected2d.__new__(LocallyConnected2d)
    layer.__setstate__(state)
    return layer.tie_filters()
