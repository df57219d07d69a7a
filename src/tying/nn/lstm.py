"""An LSTM whose forget, input and output gates read one input weight matrix.

Claim B11 (``lstm-tied-gates``): tying the gates' input weights
``W_f = W_i = W_o`` (recurrent weights, the cell candidate's ``W_g`` and all
biases stay free) makes the three gates decide from one learned feature of the
input. It removes ``2·hidden·input`` parameters: a regulariser that costs
expressiveness. The tie is a :class:`tying.Plan` on this module
(``share("weight_ih_i", like="weight_ih_f")``, likewise ``weight_ih_o``), so
``tying.count`` reports it and ``tying.untie`` switches it off.

Gate order and equations follow :class:`torch.nn.LSTM` (``i, f, g, o``); with
``tie_gates=False`` and the same weights the outputs equal ``nn.LSTM``'s.

Example:
    >>> import torch, tying
    >>> lstm = TiedGateLSTM(10, 20)
    >>> out, (h, c) = lstm(torch.randn(4, 7, 10))
    >>> tuple(out.shape), tuple(h.shape)
    ((4, 7, 20), (4, 20))
    >>> c = tying.count(lstm); (c.logical, c.physical)
    (2480, 2080)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Plan, share
from tying.nn._args import flag, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched

__all__ = ["TiedGateLSTM"]

_GATES = ("i", "f", "g", "o")


class TiedGateLSTM(nn.Module):
    """Single-layer LSTM with ``W_f = W_i = W_o`` on the input side, switchable (claim B11).

    Args:
        input_size: input features per step.
        hidden_size: hidden units.
        tie_gates: True (default) ties the input weights of the forget, input and
            output gates to one matrix; False is an ordinary LSTM.
        batch_first: inputs are ``(B, T, input_size)`` (default) or ``(T, B, input_size)``.

    Attributes:
        weight_ih_i, weight_ih_f, weight_ih_g, weight_ih_o: input weights ``(H, input_size)``
            per gate; when tied ``weight_ih_i`` and ``weight_ih_o`` read ``weight_ih_f``.
        weight_hh: recurrent weights of all gates ``(4H, H)``, rows in order ``i, f, g, o``.
        bias: ``(4H,)``, same order.

    Raises:
        ValueError: for non-positive sizes; on an input or state of the wrong shape.

    Example:
        >>> lstm = TiedGateLSTM(3, 5, tie_gates=False)
        >>> lstm.weight_ih_i is lstm.weight_ih_f
        False
    """

    def __init__(
        self, input_size: int, hidden_size: int, *, tie_gates: bool = True, batch_first: bool = True
    ) -> None:
        super().__init__()
        input_size, hidden_size = (
            int_arg(value, 1, f"TiedGateLSTM: {name} must be a positive int, got {value!r}")
            for name, value in (("input_size", input_size), ("hidden_size", hidden_size))
        )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.batch_first = flag("TiedGateLSTM", "batch_first", batch_first)
        self.tie_gates = flag("TiedGateLSTM", "tie_gates", tie_gates)
        for gate in _GATES:
            self.register_parameter(
                f"weight_ih_{gate}", nn.Parameter(torch.empty(hidden_size, input_size))
            )
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()
        if self.tie_gates:
            Plan(
                [
                    share("weight_ih_i", like="weight_ih_f"),
                    share("weight_ih_o", like="weight_ih_f"),
                ]
            ).apply(self)

    def fan_in(self) -> int:
        """Inputs of one gate unit: ``input_size + hidden_size`` (tying does not change it)."""
        return self.input_size + self.hidden_size

    def reset_parameters(self) -> None:
        """U(±1/√fan_in) on every stored weight and bias, ``fan_in = input_size + hidden_size``.

        A gate unit sums ``input_size`` inputs and ``hidden_size`` recurrent values;
        the tied matrix is read by three gates but each of its rows still feeds one
        unit with that fan-in (claim B15), so tied and untied use one bound.
        (``nn.LSTM`` uses ``1/√hidden_size``, ignoring the input side.)
        """
        bound = 1.0 / math.sqrt(self.fan_in())
        with torch.no_grad():
            for p in self._parameters.values():  # tied slots are not here: drawn once
                if p is not None:
                    p.uniform_(-bound, bound)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the sequence.

        Args:
            x: ``(B, T, input_size)`` (``(T, B, input_size)`` when not ``batch_first``).
            state: optional ``(h0, c0)``, each ``(B, hidden_size)`` (a tuple or list; one
                stacked tensor is refused).

        Returns:
            ``(output, (h_T, c_T))`` with ``output`` ``(B, T, hidden_size)`` (or time-first).

        Raises:
            TypeError: for an input that is not a tensor (a ``PackedSequence`` included).
            ValueError: on an input or state of the wrong shape.
        """
        if not isinstance(x, torch.Tensor):
            # a PackedSequence (what nn.LSTM takes) died on "'PackedSequence' object has no
            # attribute 'ndim'" (stop 39)
            packed = isinstance(x, nn.utils.rnn.PackedSequence)
            raise TypeError(
                f"TiedGateLSTM: input must be a tensor (batch, seq, {self.input_size}) (or "
                f"time-first), got {type(x).__name__}"
                + (
                    "; packed sequences are not supported: pass the padded batch "
                    "(nn.utils.rnn.pad_packed_sequence) and read each sequence's last state "
                    "from output[i, length_i - 1]"
                    if packed
                    else ""
                )
            )
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            layout = "(batch, seq, " if self.batch_first else "(seq, batch, "
            raise ValueError(
                f"TiedGateLSTM: expected input of shape {layout}{self.input_size}), got {tuple(x.shape)}"
            )
        if not self.batch_first:
            x = x.transpose(0, 1)
        b, t, _ = x.shape
        hs = self.hidden_size
        if state is None:
            h = x.new_zeros(b, hs)
            c = x.new_zeros(b, hs)
        else:
            # a tensor of shape (2, B, H) unpacked into h = state[0], c = state[1] with no
            # error: a bidirectional nn.LSTM's h0 (or h0 alone) read its rows as (h, c) (stop 33)
            if not (
                isinstance(state, tuple | list)
                and len(state) == 2
                and all(isinstance(v, torch.Tensor) for v in state)
            ):
                got = (
                    f"a tensor of shape {tuple(state.shape)}"
                    if isinstance(state, torch.Tensor)
                    else f"{type(state).__name__} of length {len(state)}"
                    if isinstance(state, tuple | list)
                    else type(state).__name__
                )
                raise ValueError(
                    f"TiedGateLSTM: state must be a pair (h0, c0) of tensors of shape "
                    f"({b}, {hs}) each, got {got}; pass state=(h0, c0)"
                )
            h, c = state
            if tuple(h.shape) != (b, hs) or tuple(c.shape) != (b, hs):
                raise ValueError(
                    f"TiedGateLSTM: expected state (h0, c0) of shape ({b}, {hs}) each, "
                    f"got {tuple(h.shape)} and {tuple(c.shape)}"
                )
        if t == 0:  # no step: the state passes through (torch.stack refused an empty list)
            out = x.new_zeros(b, 0, hs)
            # as copies: the caller's own h0/c0 came back, so an in-place edit of h_T
            # (h_T.zero_() before the next chunk) rewrote h0 too (stop 49)
            return (out if self.batch_first else out.transpose(0, 1)), (h.clone(), c.clone())
        try:
            w_ih = torch.cat([getattr(self, f"weight_ih_{g}") for g in _GATES])  # (4H, in)
            xw = F.linear(x, w_ih, self.bias)  # (B, T, 4H): the input side of every step at once
            outs = []
            for step in range(t):
                gates = xw[:, step] + F.linear(h, self.weight_hh)  # (B, 4H)
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            out = torch.stack(outs, dim=1)  # (B, T, H)
        except CAUGHT as e:
            raise_if_mismatched(
                self, e, x, *(() if state is None else state), names=("x", "h0", "c0")
            )
            raise
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, tie_gates={self.tie_gates}"
