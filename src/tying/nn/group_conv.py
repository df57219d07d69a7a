"""C4 and D4 group convolutions: one learned kernel, its rotated (and mirrored) copies tied to it.

Claim B2 (``c4-equivariance``): a convolution whose kernels are the rotated copies of
one learned kernel is rotation equivariant: rotating the input rotates every feature
map and cyclically permutes the orientation channels. Claim B3
(``c4-sample-efficiency``): a net built from such layers needs far fewer samples on
rotation-symmetric data.

The groups act on the square pixel lattice, so the symmetry is exact: ``torch.rot90``
and ``torch.flip`` permute pixels, and the layers are equivariant to float round-off.

- ``C4``: the four rotations by multiples of 90°, named ``e, r, r2, r3``.
- ``D4``: C4 plus the mirror ``m`` (``flip`` along the width) and ``rm, r2m, r3m``
  (mirror first, then rotate).

Layers (feature maps with an orientation axis are 5-D: ``(B, C, |G|, H, W)``):

- :class:`LiftingConv2d`: image ``(B, C_in, H, W)`` → ``(B, C_out, |G|, H', W')``.
  Kernel ``g`` is ``g·W``: the one physical kernel transformed by ``g``.
- :class:`GroupConv2d`: ``(B, C_in, |G|, H, W)`` → ``(B, C_out, |G|, H', W')``. The
  block read by output orientation ``g`` from input orientation ``h`` is
  ``g·W[g⁻¹h]``: rotate the kernel spatially and cyclically permute its input
  orientation axis.
- :class:`GroupPool`: max or mean over the orientation axis → invariant channels.

How the tie is stored: every logical kernel block is a slot of a ``kernels``
submodule, tied with a :class:`tying.Plan` to the identity blocks ``kernels.e_*``
through ``Rotated(k)`` and ``Flipped`` (the ``r^k m`` blocks read the ``m`` block
rotated). So ``tying.count`` reports the logical bank (|G| blocks per lifting
layer, |G|² per group layer) against the physical kernel, ``tying.save`` and
``tying.untie`` work, and ``tied=False`` builds the same layer with independent
blocks (the untied baseline of claim B2). The forward pass builds the full filter
bank from the physical kernel in one ``index_select`` (its index is found once by
reading the tied slots, which stay the reference) and calls ``F.conv2d`` once; the
bias is one gather too. An eager step on a bank of 131,072 entries or more builds it,
and sums its gradient, with two numba loops instead when numba is installed
(:mod:`tying.nn._group_conv_tie`; the same bits). An eager training step asks whether the tie is still the
layer's own only when a bank's slots or parameter count change (the answer is kept
with them); in eval mode without autograd the bank and bias are cached until a
parameter moves.
The layers follow their input's memory format (a channels-last input gives a
channels-last output) and never convert it. ``algorithm="winograd"`` (opt-in, 3×3
kernels on the CPU) replaces that one ``F.conv2d`` by a Winograd F(4×4, 3×3)
convolution of the same bank (:mod:`tying.nn._winograd`): fewer multiplies, faster on
large batches of tiles, slower on small layers, about ten times the float32 round-off.

Requirements for exact equivariance: the transform must map the sampling grid onto
itself, so padding must be symmetric (an int, or ``"same"`` with an odd kernel) and
the stride is 1. Rotating a non-square image swaps its height and width; to compare
an input with its rotation in one batch, use square inputs. Pointwise
nonlinearities and :class:`GroupPool` keep equivariance; a 2×2 spatial pooling does
when the side is even.

Example:
    >>> import torch
    >>> from tying.nn import LiftingConv2d, GroupConv2d, group_act
    >>> lift, conv = LiftingConv2d(1, 4, 3, group="C4"), GroupConv2d(4, 4, 3, group="C4")
    >>> x = torch.randn(2, 1, 9, 9)
    >>> y = conv(lift(x).relu())                                  # (B, C, |G|, H, W)
    >>> y_rot = conv(lift(group_act(x, "r", "C4")).relu())
    >>> torch.allclose(y_rot, group_act(y, "r", "C4"), atol=1e-5)
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Flipped, Plan, Rotated, share
from tying.core.slots import SLOTS_ATTR, SLOTS_GENERATION_ATTR, slots_of
from tying.nn import _group_conv_tie, _layer_plans, _winograd
from tying.nn._args import flag, int_arg, refuse_foreign_keywords
from tying.nn._group_conv_args import public_arguments
from tying.nn._group_conv_loads import GroupRecord
from tying.nn._group_conv_writes import READ_FLAG, refuse_block_writes, watch_block_reads
from tying.nn._group_elements import (  # noqa: F401  (public names re-exported)
    GROUPS,
    _check_group,
    _mirror_and_turns,
    _spatial,
    _tables,
    group_act,
    group_elements,
)
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._reparam import refresh

__all__ = [
    "GROUPS",
    "GroupConv2d",
    "GroupPool",
    "LiftingConv2d",
    "group_act",
    "group_elements",
]

ALGORITHMS = ("direct", "winograd")


def _check_algorithm(algorithm: str, kernel_size: int) -> str:
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "winograd":
        if kernel_size != 3:
            raise ValueError(
                f"algorithm='winograd' (F(4x4, 3x3)) serves kernel_size=3 only, got "
                f"kernel_size={kernel_size}; use algorithm='direct'"
            )
        _winograd.require_numba()
    return algorithm


def _check_args(in_channels, out_channels, kernel_size, padding) -> tuple[int, int, int, int]:
    """``(in_channels, out_channels, kernel_size, padding)`` as plain ints (NumPy's taken)."""
    in_channels, out_channels = (
        int_arg(v, 1, f"{name} must be a positive int, got {v!r}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels))
    )
    kernel_size = int_arg(
        kernel_size,
        1,
        f"kernel_size must be one positive int (group convs need square kernels), got "
        f"{kernel_size!r}",
    )
    if isinstance(padding, str) and padding == "same":
        if kernel_size % 2 == 0:
            raise ValueError(
                f"padding='same' with an even kernel_size={kernel_size} pads asymmetrically and "
                f"breaks equivariance; use an odd kernel_size or an int padding"
            )
        return in_channels, out_channels, kernel_size, kernel_size // 2
    padding = int_arg(
        padding,
        0,
        f"padding must be 'same' or a non-negative int (the same on every side), got {padding!r}",
    )
    return in_channels, out_channels, kernel_size, padding


class _Bank(nn.Module):
    """Holds kernel blocks (or biases) as named slots, so a Plan can tie them."""

    def extra_repr(self) -> str:
        return f"{len(self._parameters)} physical tensor(s)"


def _uniform_(params, bound: float) -> None:
    with torch.no_grad():
        for p in params:
            p.uniform_(-bound, bound)


def _stacked(physical) -> torch.Tensor:
    """The physical blocks stacked for one gather; a lifting layer's one block as it is
    (a stack of one is a copy and two more autograd operations, for the same entries)."""
    return physical[0] if len(physical) == 1 else torch.stack(physical)


def _cacheable(layer: nn.Module) -> bool:
    """Eval mode without autograd, outside ``torch.compile``: a bank may be kept."""
    return not (torch.is_grad_enabled() or layer.training or torch.compiler.is_compiling())


# e2cnn R2Conv / torch Conv2d keywords with no counterpart here, and what a ported
# script uses instead: they were Python's bare "unexpected keyword argument" (stop 56)
_R2CONV_NAMES = {
    "stride": "the layer runs at stride 1: y[..., ::s, ::s] of its output is the strided "
    "conv's output with the same padding",
    "dilation": "dilated kernels are not provided (square, undilated kernels only)",
    "groups": "grouped convs are not provided (every output channel reads every input channel)",
    "padding_mode": "only zero padding ('same' or an int): pad H, W yourself (F.pad over the "
    "last two dims, mode='circular') and pass padding=0",
    "initialize": "the layer is always initialised (reset_parameters())",
    "basisexpansion": "the kernel is a free k x k array whose rotated copies are tied, not "
    "e2cnn's steerable basis",
}


class _GroupConvBase(GroupRecord):  # the group travels with the state dict (stop 57)
    """Shared machinery: the banks, their plan, init, and the one ``F.conv2d`` call."""

    in_orientations: int  # 1 for lifting, |G| for group conv

    @property
    def algorithm(self) -> str:
        """``"direct"`` or ``"winograd"``; assigning it is checked as the argument is."""
        # a layer pickled before the argument existed has neither key: it ran the direct one
        d = self.__dict__
        return d.get("_algorithm", d.get("algorithm", "direct"))

    @algorithm.setter
    def algorithm(self, value: str) -> None:
        # checked like the argument: a misspelt name used to run "direct" without a word
        self.__dict__["_algorithm"] = _check_algorithm(value, self.kernel_size)

    @public_arguments  # "LiftingConv2d() takes 3 positional ...", not _GroupConvBase (stop 59)
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        group: str = "C4",
        padding: int | str = "same",
        bias: bool = True,
        tied: bool = True,
        algorithm: str = "direct",
        device=None,
        dtype=None,
        _probe: bool = False,
        **e2cnn: object,
    ) -> None:
        super().__init__()
        refuse_foreign_keywords(type(self).__name__, e2cnn, _R2CONV_NAMES)
        names = _check_group(group)
        bias = flag(type(self).__name__, "bias", bias)
        in_channels, out_channels, kernel_size, self.padding = _check_args(
            in_channels, out_channels, kernel_size, padding
        )
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.algorithm = algorithm  # checked by the property's setter
        self.group, self.tied = group, flag(type(self).__name__, "tied", tied)
        self.elements = names
        kw = {"device": device, "dtype": dtype}
        self.kernels = _Bank()
        for key in self._block_keys():
            shape = (out_channels, in_channels, kernel_size, kernel_size)
            self.kernels.register_parameter(key, nn.Parameter(torch.empty(shape, **kw)))
        self.biases: nn.Module | None = None
        if bias:
            self.biases = _Bank()
            for g in names:
                self.biases.register_parameter(g, nn.Parameter(torch.empty(out_channels, **kw)))
        self.reset_parameters()
        if self.tied:
            _layer_plans.apply_plan(Plan(self._rules()), self)
            watch_block_reads(self.kernels)  # a write into a read block: refused (stop 62)
            # the ties the one-gather path reproduces; another plan applied later (other
            # relations under the same names) sends the layer down the slot path
            self.__dict__["_own_ties"] = {m: self._ties_of(m) for m in ("kernels", "biases")}
            self._fast_ready()  # records the check, for compiled calls
            if not _probe:  # found once, here, so torch.compile never traces the search
                self._gather_index()
                self._make_flat_index()
                self._tie_tables()

    def __setstate__(self, state) -> None:  # unpickled: its bank class may be a fresh one
        super().__setstate__(state)
        watch_block_reads(self.__dict__.get("_modules", {}).get("kernels"))

    # -- what subclasses define -------------------------------------------------------
    def _block_keys(self) -> list[str]:
        raise NotImplementedError

    def _kernel_rules(self) -> list:
        raise NotImplementedError

    def _rules(self) -> list:
        rules = self._kernel_rules()
        if self.biases is not None:
            # one bias per output channel, read by every orientation (a Same tie)
            rules += [share(f"biases.{g}", like="biases.e") for g in self.elements[1:]]
        return rules

    # -- public -------------------------------------------------------------------------
    def fan_in(self) -> int:
        """Inputs of one output unit: ``C_in × orientations in × k²`` (claim B15).

        Not multiplied by the |G| (or H·W) places the kernel is reused.
        """
        return self.in_channels * self.in_orientations * self.kernel_size**2

    def reset_parameters(self) -> None:
        """Re-draw the physical parameters: U(±1/√fan_in), the rule of ``nn.Conv2d``.

        With ``tied=False`` every block and bias is drawn independently.
        """
        bound = 1.0 / math.sqrt(self.fan_in())
        _uniform_(self.kernels._parameters.values(), bound)
        if self.biases is not None:
            _uniform_(self.biases._parameters.values(), bound)

    def bias_bank(self) -> torch.Tensor | None:
        """The bias of every output channel ``c·|G| + g`` (None without bias).

        In eval mode without autograd the layer keeps it like :meth:`filter_bank`, and
        returns a copy of the kept one: an in-place edit of the returned tensor cannot
        reach the layer's later calls.
        """
        bias = self._bias_bank()
        return bias.clone() if bias is not None and _cacheable(self) else bias

    def _bias_bank(self) -> torch.Tensor | None:
        """:meth:`bias_bank` itself, the kept tensor in eval mode (for the forward)."""
        if self.biases is None:
            return None
        refresh(self._modules["biases"])  # a pruned/normed bias: its hook, as a call would
        if self._fast_ready():
            if not _cacheable(self):  # build the bias alone, not the bank beside it
                return self._fast_bias(self._modules["biases"]._parameters["e"])
            return self._banks()[1]
        slots = [getattr(self.biases, g) for g in self.elements]

        def build() -> torch.Tensor:
            return torch.stack(slots, dim=1).reshape(-1)  # (C_out, |G|) -> (C_out·|G|,)

        return self._eval_cached("_bias_cache", slots, build)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"group={self.group}, padding={self.padding}, bias={self.biases is not None}, "
            f"tied={_layer_plans.tie_setting(self, self.tied)}"
            + (f", algorithm={self.algorithm!r}" if self.algorithm != "direct" else "")
        )

    # -- the expanded bank in one gather (issue 19) -------------------------------------
    def _physical_keys(self) -> list[str]:
        """The kernel blocks that stay physical when the layer is tied."""
        raise NotImplementedError

    def _tie_intact(self) -> bool:
        # Tied slots are served from their owner and are not in ``_parameters``; after
        # ``tying.untie`` every block is a parameter again and the gather would be wrong.
        keys = self.__dict__.get("_physical_set")
        if keys is None:
            keys = self.__dict__["_physical_set"] = frozenset(self._physical_keys())
        return (
            self.tied
            and self._modules["kernels"]._parameters.keys() == keys
            and self._own_ties_hold("kernels")
        )

    def _fast_ready(self) -> bool:
        """The kernel tie and the bias's Same tie are intact: bank and bias come from
        the physical parameters alone (one gather, one stack)."""
        biases = self._modules.get("biases")
        return self._tie_intact() and (
            biases is None or (biases._parameters.keys() == {"e"} and self._own_ties_hold("biases"))
        )

    def _ties_of(self, name: str) -> dict | None:
        """``{slot: (source module, source name, relation, extras)}`` of one bank."""
        bank = self._modules.get(name)
        if bank is None:
            return None
        owner = {id(m): n for n, m in self._modules.items()}
        return {
            slot: (owner.get(id(s.source_module)), s.source_name, s.relation, dict(s.storage))
            for slot, s in slots_of(bank).items()
        }

    def _own_ties_hold(self, name: str) -> bool:
        """Whether ``name``'s slots are still the ties this layer made itself.

        The same names can be tied by another plan (``tying.untie`` then other
        relations): the gather would then silently compute the layer's own relations.
        Checked once per set of slots (installing or removing a slot makes a new dict).
        """
        seen = self.__dict__.get(f"_ties_seen_{name}")
        bank = self._modules[name]
        if torch.compiler.is_compiling():
            # dynamo traces neither the identity test nor the comparison: it reads the
            # answer the last eager check recorded for this slot generation, a constant of
            # the graph guarded on the bank's generation (any re-tie changes it: the graph
            # is re-traced). No record for this generation: the slot path, always right.
            # (Passing the layer to an assume_constant_result function instead failed to
            # trace on torch 2.11: a module is not a constant there.)
            record = self.__dict__.get(f"_own_ties_at_{name}")
            generation = bank.__dict__.get(SLOTS_GENERATION_ATTR, 0)
            return record is not None and record[0] == generation and record[1]
        slots = slots_of(bank)
        if seen is not None and seen[0] is slots:
            return seen[1]
        own = self.__dict__.get("_own_ties")
        if own is None:  # a layer pickled before this record existed: ask a fresh one
            fresh = self._fresh_probe(bias=self.biases is not None, device="meta")
            own = self.__dict__["_own_ties"] = fresh.__dict__["_own_ties"]
        ok = self._ties_of(name) == own[name]
        self.__dict__[f"_ties_seen_{name}"] = (slots, ok)
        self.__dict__[f"_own_ties_at_{name}"] = (bank.__dict__.get(SLOTS_GENERATION_ATTR, 0), ok)
        return ok

    def _fresh_probe(self, *, bias: bool, device, dtype=None) -> _GroupConvBase:
        """A fresh tied layer of this one's shape and group, without the gather search."""
        return type(self)(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            group=self.group,
            padding=self.padding,
            bias=bias,
            tied=True,
            device=device,
            dtype=dtype,
            _probe=True,
        )

    def _banks(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(filter_bank, bias_bank)`` of the intact tie: built per call when training,
        under autograd or ``torch.compile``; in eval mode without autograd cached
        together until a parameter moves (one stamp and one comparison for both)."""
        biases = self._modules.get("biases")
        physical = self._physical_params()
        bias = None if biases is None else biases._parameters["e"]

        def build() -> tuple[torch.Tensor, torch.Tensor | None]:
            return self._fast_bank(physical), self._fast_bias(bias)

        if not _cacheable(self):
            return build()  # the common training path: no stamp, no comparison
        return self._eval_cached(
            "_bank_cache", physical if bias is None else [*physical, bias], build
        )

    def _physical_params(self) -> list[torch.Tensor]:
        """The physical kernel blocks (plain parameters while the tie is intact)."""
        params = self._modules["kernels"]._parameters
        return [params[key] for key in self._physical_tuple()]

    def _physical_tuple(self) -> tuple[str, ...]:
        keys = self.__dict__.get("_physical_keys_cached")
        if keys is None:
            keys = self.__dict__["_physical_keys_cached"] = tuple(self._physical_keys())
        return keys

    def _gather_index(self) -> torch.Tensor:
        """For each entry of the logical bank, the flat index of the physical entry it reads.

        Found once per layer by reading the tied slots of a probe whose physical
        entries are their own flat indices, so the gather reproduces exactly what the
        Plan's ``Rotated``/``Flipped`` ties compute (the slot path stays the reference).
        """
        index = getattr(self, "_bank_index", None)
        if index is None:
            probe = self._fresh_probe(bias=False, device="cpu", dtype=torch.float64)
            per_block = self.out_channels * self.in_channels * self.kernel_size**2
            with torch.no_grad():
                for i, key in enumerate(self._physical_keys()):
                    block = getattr(probe.kernels, key)
                    # device="cpu" everywhere: under ``with torch.device("meta")`` a bare
                    # arange is a meta tensor with no values to copy
                    ramp = torch.arange(per_block, dtype=torch.float64, device="cpu")
                    block.copy_(ramp.view_as(block))
                    block.add_(i * per_block)
                index = probe._slot_bank().round().long()
            # a plain attribute, not a buffer: nothing to save, load or count
            self._bank_index = index
        return index

    def _fast_bank(self, physical: list | None = None) -> torch.Tensor:
        if physical is None:
            physical = self._physical_params()
        stacked = _stacked(physical)  # (n_physical, C_out, C_in, k, k), or one block
        index = self._flat_index_on(stacked.device)
        # one gather; its backward is one index_add into the physical kernel
        # (index_select: about half the cost of advanced indexing, fwd+bwd, on CPU;
        # a custom autograd.Function whose backward gathers and sums, or scatter_adds,
        # a 0/1 matmul, a row gather with permutes, rot90/roll of the stacked kernel,
        # and numba loops all measured slower or no faster in a small or mid-size
        # step; from 131,072 entries an eager step takes _group_conv_tie's loops)
        shape = self.__dict__.get("_bank_shape")
        if shape is None:
            shape = self.__dict__["_bank_shape"] = tuple(self._gather_index().shape)
        # reshape: no copy for the usual contiguous blocks; blocks moved to channels_last
        # (model.to(memory_format=...)) stack non-contiguously, where view(-1) raised
        return torch.index_select(stacked.reshape(-1), 0, index).view(shape)

    def _fast_bias(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        # the Same tie: every orientation of channel c reads biases.e[c]; one gather (one
        # autograd node; its backward adds the |G| gradients in the order the old
        # |G|-way stack's did, so the bias gradient keeps its bits)
        if bias is None:
            return None
        return torch.index_select(bias, 0, self._bias_index_on(bias.device))  # (C_out·|G|,)

    def _bias_index_on(self, device: torch.device) -> torch.Tensor:
        """``[0]*|G| + [1]*|G| + …``: output channel ``c·|G| + g`` reads bias ``c``.

        Made eagerly like the bank's index (see :meth:`_flat_index_on`).
        """
        index = self.__dict__.get("_bias_index")
        if index is None or (index.is_meta and device.type != "meta"):
            # built before this attribute existed (unpickled), or made on the meta device
            # and the parameters since given values without ``_apply`` (assign=True)
            index = self._make_flat_index(bank=False)
        if index.device == device:
            return index
        if index.is_meta:  # the layer's own parameters are still meta: values from the CPU
            n = len(self.elements)
            index = torch.arange(self.out_channels, device="cpu").repeat_interleave(n)
        return index.to(device)

    def _flat_index_on(self, device: torch.device) -> torch.Tensor:
        """The gather index, flat, on ``device``.

        It is made eagerly (at construction and in ``_apply``, i.e. ``.to()``/``.cuda()``),
        never inside a forward: a tensor first made under a ``torch.func`` transform
        is a transform wrapper and must not be kept. Parameters swapped onto another
        device without ``_apply`` (``functional_call``, ``assign=True``) get a copy per call.
        """
        index = self.__dict__.get("_bank_flat_index")
        if index is None or (index.is_meta and device.type != "meta"):
            # built before this attribute existed (unpickled), or made on the meta device
            # and the parameters since given values without ``_apply``
            # (``load_state_dict(..., assign=True)``): a meta index has no values to copy
            index = self._make_flat_index()
        if index.device == device:
            return index
        if index.is_meta:  # the layer's own parameters are still meta: values from the CPU
            index = self._cpu_flat_index()
        return index.to(device)

    def _cpu_flat_index(self) -> torch.Tensor:
        """The flat gather index on the CPU, int32 where every entry fits."""
        index = self._gather_index().reshape(-1)
        n_physical = (
            self.out_channels * self.in_channels * self.kernel_size**2 * len(self._physical_keys())
        )  # every index is below this (static: no data-dependent branch under compile)
        if n_physical < 2**31:
            # int32 halves the index's memory traffic: a 256-channel C4 step measured
            # 3.5-5 % faster, a 64-channel one unchanged (issue 19)
            index = index.to(torch.int32)
        return index

    def _make_flat_index(self, bank: bool = True) -> torch.Tensor:
        """Make the bank's flat gather index and the bias's index on the parameters' device;
        return the bank's (``bank=True``) or the bias's."""
        self.__dict__.pop("_lean_seen", None)  # it holds the indices made here
        first = self.kernels._parameters.get(self._physical_keys()[0])
        device = first.device if first is not None else torch.device("cpu")
        n = len(self.elements)
        bias_index = torch.arange(self.out_channels, device=device).repeat_interleave(n)
        self.__dict__["_bias_index"] = bias_index
        if not bank:
            return bias_index
        self.__dict__["_bank_shape"] = tuple(self._gather_index().shape)
        index = self._cpu_flat_index()
        physical = self.kernels._parameters.get(self._physical_keys()[0])
        if physical is not None:
            index = index.to(physical.device)
        self.__dict__["_bank_flat_index"] = index
        return index

    def _apply(self, fn, recurse: bool = True):
        module = super()._apply(fn, recurse)
        if "_bank_flat_index" in self.__dict__:
            self._make_flat_index()  # follow the parameters' device
        return module

    def _slot_bank(self) -> torch.Tensor:
        raise NotImplementedError

    def filter_bank(self) -> torch.Tensor:
        """The full bank ``F.conv2d`` uses: ``(C_out·|G|, C_in·orientations_in, k, k)``.

        Output channel ``c·|G| + g`` is orientation ``g`` of channel ``c``; input
        channels are ordered the same way. When tied it is one gather from the
        physical kernel; in eval mode without autograd it is cached until a
        parameter changes, and this returns a copy of the kept bank (a ``bank.mul_``
        on what it returned changed every later output, stop 52).

        Returns:
            A tensor the caller owns; under autograd it carries the graph to the
            physical kernel.

        Example:
            >>> layer = LiftingConv2d(1, 2, 3, group="C4").eval()
            >>> with torch.no_grad():
            ...     layer.filter_bank().zero_().shape  # the layer's own bank stays intact
            torch.Size([8, 1, 3, 3])
            >>> bool(layer.filter_bank().abs().sum() > 0)
            True
        """
        if READ_FLAG in self._modules["kernels"].__dict__:
            refuse_block_writes(self._modules["kernels"])
        bank = self._filter_bank()
        return bank.clone() if _cacheable(self) else bank

    def _filter_bank(self) -> torch.Tensor:
        """:meth:`filter_bank` itself, the kept tensor in eval mode (for the forward)."""
        # the bank is read, never called: run its prune/weight_norm/spectral_norm hooks
        # here, or a reparametrised block keeps its value from when it was reparametrised
        refresh(self._modules["kernels"])
        if self._fast_ready():
            return self._fast_bank() if not _cacheable(self) else self._banks()[0]
        if not self._tie_intact():
            return self._slot_bank()
        return self._eval_cached("_bank_only_cache", self._physical_params(), self._fast_bank)

    def _eval_cached(self, name: str, params: list, build) -> torch.Tensor:
        """``build()``, kept in eval mode without autograd until a parameter moves.

        Training, autograd and ``torch.compile`` always rebuild (the result must carry
        the graph). The stamp is each parameter's storage, version counter, device and
        dtype, so an in-place update, ``load_state_dict`` or ``.to()`` rebuilds; a
        copy of the parameters' values catches a write through ``.data`` (an EMA
        update ``p.data.mul_(d)``, hand-loaded weights), which moves no counter.
        """
        if not _cacheable(self):
            return build()
        try:
            stamp = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)
        except (RuntimeError, NotImplementedError):
            # no storage to stamp (torch.func transforms: vmap over an ensemble's
            # stacked parameters): build, and never cache a transform's tensor
            return build()
        if any(p.is_meta for p in params):
            return build()  # no values to compare
        cached = self.__dict__.get(name)
        if (
            cached is None
            or cached[0] != stamp
            or not all(torch.equal(a, p) for a, p in zip(cached[1], params, strict=True))
        ):
            cached = (stamp, [p.detach().clone() for p in params], build())
            self.__dict__[name] = cached
        return cached[2]

    def train(self, mode: bool = True):
        for name in ("_bank_cache", "_bank_only_cache", "_bias_cache"):
            self.__dict__.pop(name, None)
        return super().train(mode)

    def _lean_check(self, kernels: nn.Module, biases: nn.Module | None) -> tuple:
        """Ask :meth:`_fast_ready` and keep its answer with what it depends on."""
        pieces = None
        d = self.__dict__
        if self._fast_ready() and all(
            d.get(k) is not None for k in ("_bank_flat_index", "_bias_index", "_bank_shape")
        ):  # (a layer unpickled from before these existed: the general path makes them)
            pieces = (
                self._physical_tuple(),
                d["_bank_flat_index"],
                d["_bank_shape"],
                d["_bias_index"],
                self._tie_tables(),
            )
        seen = (
            kernels.__dict__.get(SLOTS_ATTR),
            None if biases is None else biases.__dict__.get(SLOTS_ATTR),
            len(kernels._parameters),
            pieces,
        )
        d["_lean_seen"] = seen
        watch_block_reads(kernels)  # a bank re-tied or unpickled in this process
        return seen

    def _kept_banks(self, physical: list, bias: torch.Tensor | None) -> tuple:
        """:meth:`_banks`'s eval cache read without its checks (the caller's record holds
        them): the kept pair when no parameter moved, else ``_banks()`` rebuilds it."""
        cached = self.__dict__.get("_bank_cache")
        params = physical if bias is None else [*physical, bias]
        try:
            if (
                cached is not None
                and cached[0]
                == tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)
                and all(torch.equal(a, p) for a, p in zip(cached[1], params, strict=True))
            ):
                return cached[2]
        except (RuntimeError, NotImplementedError):  # no storage (torch.func): _banks decides
            pass
        return self._banks()

    def _tie_tables(self) -> _group_conv_tie.Tables | None:
        """The numba loops' tables for this layer's bank (None: the bank is too small or
        has no per-channel pattern), found once from the gather index."""
        d = self.__dict__
        if "_tables_kept" not in d:
            if torch._C._are_functorch_transforms_active():
                return None  # made under a transform, its tensors would be wrappers
            k, n_src = self.kernel_size, len(self._physical_keys())
            index = self._gather_index()
            d["_tables_kept"] = _group_conv_tie.tables_for(
                index, self.out_channels, self.in_channels, k, n_src
            )
        return d["_tables_kept"]

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """The bank, the bias and the one convolution.

        An eager step with autograd or in training while the tie is intact takes the
        lean path: whether the tie is the layer's own can change only when a bank's
        slots are installed or removed (each installs a new slots dict) or its
        parameters are added or removed, so the answer of :meth:`_fast_ready` is kept
        with those (:meth:`_lean_check`) and asked again only when one of them moved.
        The parameters themselves are read on every call. The path is written out
        here, in one function: right after a convolution every Python line and call
        runs cold, several times its warm cost (issue 19: in a small layer's step the
        calls around these operations cost tens of µs, stops 22 and 23).
        In eval mode without autograd the same record serves the kept bank
        (:meth:`_kept_banks`). Everything else (compiled, untied, re-tied, moved) takes
        the general path.
        """
        # x: (B, C_in·orientations_in, H, W) -> (B, C_out, |G|, H', W')
        d = self.__dict__
        kernels = d["_modules"]["kernels"]
        if READ_FLAG in kernels.__dict__:  # a tied block was read: was it written? (stop 62)
            refuse_block_writes(kernels)
        bank = None
        if d["tied"] and not torch.compiler.is_compiling():
            biases = d["_modules"].get("biases")
            kp, seen = kernels._parameters, d.get("_lean_seen")
            if (
                seen is None
                or seen[0] is not kernels.__dict__.get(SLOTS_ATTR)
                or seen[2] != len(kp)
                or (
                    biases is not None
                    and (
                        seen[1] is not biases.__dict__.get(SLOTS_ATTR)
                        or len(biases._parameters) != 1
                    )
                )
            ):
                seen = self._lean_check(kernels, biases)
            lean = seen[3]
            if lean is not None:
                keys, index, shape, bias_index, tables = lean
                physical = [kp[key] for key in keys if key in kp]
                bias = None if biases is None else biases._parameters["e"]
                # a block renamed behind the same count, or parameters swapped onto another
                # device without _apply (copied per call there): the general path
                if len(physical) != len(keys) or index.device != physical[0].device:
                    pass
                elif d["training"] or torch.is_grad_enabled():
                    if tables is not None and _group_conv_tie.usable(physical):
                        # a large bank: two vectorised loops, the same bits (stop 23)
                        bank = _group_conv_tie.tie_bank(tables, physical)
                    else:  # the same operations as _fast_bank, without its look-ups
                        stacked = physical[0] if len(physical) == 1 else torch.stack(physical)
                        bank = torch.index_select(stacked.reshape(-1), 0, index).view(shape)
                    if bias is not None:
                        bias = torch.index_select(bias, 0, bias_index)
                else:  # eval without autograd: the kept bank while its stamp and values hold
                    bank, bias = self._kept_banks(physical, bias)
        if bank is None and self._fast_ready():
            bank, bias = self._banks()  # both from one check (and one eval cache)
        elif bank is None:
            bank, bias = self._filter_bank(), self._bias_bank()
        if self.algorithm == "winograd":
            y = _winograd.winograd_conv2d(x, bank, bias, self.padding)
        else:
            y = F.conv2d(x, bank, bias, padding=d["padding"])
        s = y.shape  # a view, as unflatten (a Python wrapper) makes
        return y.view(s[0], d["out_channels"], len(d["elements"]), s[2], s[3])


# What a 4-D field given to GroupConv2d or GroupPool most likely is, and the fix that works
_UNBATCHED_FIELD = (
    "a 4-D field is what LiftingConv2d returns for one unbatched image (C_in, H, W): "
    "GroupConv2d and GroupPool take batches only ((C, |G|, H, W) cannot be told from an "
    "image batch), so give the network the image as a batch of one, net(x.unsqueeze(0))[0] "
    "(under torch.func.vmap, call net on the batch itself)"
)


class LiftingConv2d(_GroupConvBase):
    """Lift an image to orientation channels: one learned kernel and its |G| transformed copies.

    Output orientation ``g`` of channel ``c`` is the image correlated with ``g·W_c``
    (claim B2). Rotating (or, for D4, mirroring) the input by ``a`` gives
    ``group_act(y, a)``: the maps move and the orientation axis permutes.

    Args:
        in_channels: image channels ``C_in``.
        out_channels: output channels ``C_out`` (each with |G| orientations).
        kernel_size: one odd or even int (square kernels only).
        group: ``"C4"`` (rotations) or ``"D4"`` (rotations and mirrors).
        padding: ``"same"`` (odd kernels) or an int applied on every side.
        bias: one learned bias per output channel, shared by its orientations.
        tied: False gives every orientation its own independent kernel and bias
            (the untied baseline: same shapes, no equivariance).
        algorithm: ``"direct"`` (``F.conv2d``, the default) or ``"winograd"``: Winograd
            F(4×4, 3×3), 2.25× fewer multiplies, for 3×3 kernels on the CPU in
            float32/float64 (needs numba). Faster on some shapes only, with about ten
            times the float32 round-off of ``"direct"``, spread over each 6×6 tile: one
            input value far above the rest spoils the outputs beside it too (use
            ``"direct"`` for such inputs); see docs/nn.md.
        device, dtype: where and how the parameters are created.

    Shape:
        input ``(B, C_in, H, W)`` → output ``(B, C_out, |G|, H', W')``; an unbatched
        image ``(C_in, H, W)`` (as ``nn.Conv2d`` takes it) → ``(C_out, |G|, H', W')``.

    Raises:
        ValueError: on bad sizes or padding, an unknown ``algorithm``, an input of the
            wrong shape, or ``algorithm="winograd"`` with another kernel size, device
            or dtype than it serves (the message says to use ``"direct"``); in
            ``load_state_dict``, for a state dict saved over another ``group``.
        TypeError: for e2cnn's / ``Conv2d``'s ``stride``, ``dilation``, ``groups``,
            ``padding_mode``, ``initialize``, ``basisexpansion``, naming what to use here.
        ImportError: ``algorithm="winograd"`` without numba (``pip install 'tying[fast]'``).

    Example:
        >>> import tying
        >>> layer = LiftingConv2d(3, 8, 5, group="D4")
        >>> layer(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 8, 16, 16])
        >>> c = tying.count(layer); (c.logical, c.physical)
        (4864, 608)
    """

    in_orientations = 1

    def _block_keys(self) -> list[str]:
        return list(self.elements)

    def _kernel_rules(self) -> list:
        rules = []
        for g in self.elements[1:]:
            mirror, turns = _mirror_and_turns(g)
            if mirror and turns == 0:
                rules.append(share(f"kernels.{g}", like="kernels.e", relation=Flipped((-1,))))
            else:  # r^k reads e rotated, r^k m reads m rotated
                src = "kernels.m" if mirror else "kernels.e"
                rules.append(share(f"kernels.{g}", like=src, relation=Rotated(turns)))
        return rules

    def _physical_keys(self) -> list[str]:
        return ["e"]

    def _slot_bank(self) -> torch.Tensor:
        blocks = [getattr(self.kernels, g) for g in self.elements]  # |G| × (C_out, C_in, k, k)
        return torch.stack(blocks, dim=1).flatten(0, 1)  # (C_out·|G|, C_in, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3 and x.shape[0] == self.in_channels:
            # one image (C_in, H, W), which nn.Conv2d takes; it was refused (stop 58)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"LiftingConv2d expected an image batch (B, {self.in_channels}, H, W), got "
                f"shape {tuple(x.shape)} (one image is ({self.in_channels}, H, W))"
            )
        try:
            return self._conv(x)
        except (*CAUGHT, ValueError) as e:  # winograd's dtype/device checks are ValueErrors
            raise_if_mismatched(self, e, x)
            raise


class GroupConv2d(_GroupConvBase):
    """Orientation channels to orientation channels, kernels tied under the group action.

    The block that output orientation ``g`` reads from input orientation ``h`` is
    ``g·W[g⁻¹h]``: the physical kernel ``W`` (one ``(C_out, C_in, k, k)`` block per
    input orientation) rotated/mirrored by ``g``, with its orientation axis permuted
    (for C4 a cyclic shift). This makes ``conv(group_act(x, a)) == group_act(conv(x), a)``
    (claim B2). The physical parameters are ``kernels.e_<h>`` (and ``biases.e``);
    the other |G|² − |G| blocks are tied slots.

    Args:
        in_channels: input channels ``C_in`` (each with |G| orientations).
        out_channels: output channels ``C_out`` (each with |G| orientations).
        kernel_size: one int (square kernels only).
        group: ``"C4"`` or ``"D4"``.
        padding: ``"same"`` (odd kernels) or an int applied on every side.
        bias: one learned bias per output channel, shared by its orientations.
        tied: False gives every block its own independent kernel (untied baseline).
        algorithm: ``"direct"`` (``F.conv2d``, the default) or ``"winograd"`` (3×3
            kernels, CPU, float32/float64, needs numba; see :class:`LiftingConv2d`).
        device, dtype: where and how the parameters are created.

    Shape:
        input ``(B, C_in, |G|, H, W)`` → output ``(B, C_out, |G|, H', W')``.

    Raises:
        ValueError: on bad sizes or padding, an unknown ``algorithm``, an input of the
            wrong shape, or ``algorithm="winograd"`` with another kernel size, device
            or dtype than it serves (the message says to use ``"direct"``); in
            ``load_state_dict``, for a state dict saved over another ``group``.
        TypeError: for e2cnn's / ``Conv2d``'s ``stride``, ``dilation``, ``groups``,
            ``padding_mode``, ``initialize``, ``basisexpansion``, naming what to use here.
        ImportError: ``algorithm="winograd"`` without numba (``pip install 'tying[fast]'``).

    Example:
        >>> import tying
        >>> layer = GroupConv2d(4, 6, 3, group="C4")
        >>> layer(torch.randn(2, 4, 4, 10, 10)).shape
        torch.Size([2, 6, 4, 10, 10])
        >>> fast = GroupConv2d(4, 6, 3, group="C4", algorithm="winograd")
        >>> fast.load_state_dict(layer.state_dict())
        <All keys matched successfully>
        >>> x = torch.randn(2, 4, 4, 10, 10)
        >>> torch.allclose(fast(x), layer(x), rtol=1e-4, atol=1e-5)
        True
        >>> c = tying.count(layer); (c.logical, c.physical, c.ratio)
        (3480, 870, 4.0)
    """

    @property
    def in_orientations(self) -> int:
        return len(self.elements)

    def _block_keys(self) -> list[str]:
        return [f"{g}_{h}" for g in self.elements for h in self.elements]

    def _kernel_rules(self) -> list:
        names = self.elements
        mul, inv = _tables(self.group)
        m = names.index("m") if "m" in names else None
        rules = []
        for gi, g in enumerate(names[1:], start=1):
            mirror, turns = _mirror_and_turns(g)
            for hi, h in enumerate(names):
                src_h = mul[inv[gi]][hi]  # block (g, h) = g·W[g⁻¹h]
                if not mirror:
                    like, rel = f"kernels.e_{names[src_h]}", Rotated(turns)
                elif turns == 0:
                    like, rel = f"kernels.e_{names[src_h]}", Flipped((-1,))
                else:  # (r^k m)·W[x] = r^k·(m·W[x]) = r^k · block(m, m·x)
                    like, rel = f"kernels.m_{names[mul[m][src_h]]}", Rotated(turns)
                rules.append(share(f"kernels.{g}_{h}", like=like, relation=rel))
        return rules

    def _physical_keys(self) -> list[str]:
        return [f"e_{h}" for h in self.elements]

    def _slot_bank(self) -> torch.Tensor:
        k = self.kernels
        rows = [
            torch.stack([getattr(k, f"{g}_{h}") for h in self.elements], dim=2)
            for g in self.elements
        ]  # |G| × (C_out, C_in, |G|, k, k)
        bank = torch.stack(rows, dim=1)  # (C_out, |G|, C_in, |G|, k, k)
        return bank.flatten(2, 3).flatten(0, 1)  # (C_out·|G|, C_in·|G|, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.elements)
        if x.ndim != 5 or x.shape[1] != self.in_channels or x.shape[2] != n:
            # since LiftingConv2d takes one image (stop 58), a net given one image reached
            # here with a lifted field and was told to lift it (stop 58 review)
            fix = (
                _UNBATCHED_FIELD
                if x.ndim == 4 and tuple(x.shape[:2]) == (self.in_channels, n)
                else "lift an image with LiftingConv2d first"
            )
            raise ValueError(
                f"GroupConv2d expected a field (B, {self.in_channels}, {n}, H, W) "
                f"({self.group} has {n} orientations), got shape {tuple(x.shape)}; {fix}"
            )
        try:
            return self._conv(x.flatten(1, 2))
        except (*CAUGHT, ValueError) as e:  # winograd's dtype/device checks are ValueErrors
            raise_if_mismatched(self, e, x)
            raise


class GroupPool(nn.Module):
    """Pool over the orientation axis: equivariant fields become invariant channels.

    ``GroupPool()(group_act(y, a)) == group_act(GroupPool()(y), a)`` spatially, and a
    further global spatial pool makes the features invariant (claim B3's classifier).

    Args:
        mode: ``"max"`` or ``"mean"``.

    Shape:
        ``(B, C, |G|, H, W)`` → ``(B, C, H, W)``.

    Raises:
        ValueError: for an unknown mode or an input that is not 5-D.

    Example:
        >>> GroupPool("max")(torch.randn(2, 3, 4, 5, 5)).shape
        torch.Size([2, 3, 5, 5])
    """

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "mean"):
            raise ValueError(f"GroupPool mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            fix = f"; {_UNBATCHED_FIELD}" if x.ndim == 4 and x.shape[1] in (4, 8) else ""
            raise ValueError(
                f"GroupPool expected a field (B, C, |G|, H, W), got shape {tuple(x.shape)}{fix}"
            )
        return x.amax(dim=2) if self.mode == "max" else x.mean(dim=2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
