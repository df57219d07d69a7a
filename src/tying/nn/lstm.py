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
from tying.core.slot_loads import guard_layer
from tying.nn._args import flag, int_arg
from tying.nn._input_errors import CAUGHT, InputDtypeError, dtype_detail, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting
from tying.nn._lstm_names import refuse_lstm_keywords, refuse_lstm_positionals

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
        TypeError: for ``nn.LSTM``'s ``num_layers``, ``bidirectional``, ``bias``,
            ``dropout``, ``proj_size``, ``device``, ``dtype`` (by keyword or position),
            naming what to do here.

    Example:
        >>> lstm = TiedGateLSTM(3, 5, tie_gates=False)
        >>> lstm.weight_ih_i is lstm.weight_ih_f
        False
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *lstm_args: object,
        tie_gates: bool = True,
        batch_first: bool = True,
        **lstm_names: object,
    ) -> None:
        super().__init__()
        if lstm_args:  # nn.LSTM's num_layers, bias, ... by position (stop 60)
            refuse_lstm_positionals(lstm_args)
        refuse_lstm_keywords(lstm_names)  # nn.LSTM's keywords, each named (stop 60)
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
            plan = Plan(
                [
                    share("weight_ih_i", like="weight_ih_f"),
                    share("weight_ih_o", like="weight_ih_f"),
                ]
            )
            apply_plan(plan, self)
        guard_layer(self)  # holds no module: nothing else checks a load into it first

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
            x: ``(B, T, input_size)`` (``(T, B, input_size)`` when not ``batch_first``), or
                one unbatched sequence ``(T, input_size)`` as ``nn.LSTM`` takes it.
            state: optional ``(h0, c0)``, each ``(B, hidden_size)`` (``(hidden_size,)`` for
                an unbatched sequence; a tuple or list; one stacked tensor is refused).

        Returns:
            ``(output, (h_T, c_T))`` with ``output`` ``(B, T, hidden_size)`` (or time-first;
            ``(T, hidden_size)`` and states ``(hidden_size,)`` for an unbatched sequence).

        Raises:
            TypeError: for an input that is not a tensor (a ``PackedSequence`` included);
                for an input or state (``h0``/``c0``) of another dtype than the layer's
                parameters outside autocast (as ``nn.LSTM``), an empty sequence included.
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
        if x.ndim == 2 and x.shape[-1] == self.input_size:
            return self._unbatched(x, state)
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            layout = "(batch, seq, " if self.batch_first else "(seq, batch, "
            raise ValueError(
                f"TiedGateLSTM: expected input of shape {layout}{self.input_size}), got "
                f"{tuple(x.shape)} (one unbatched sequence is (seq, {self.input_size}))"
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
                fix = ""
                if tuple(h.shape) == tuple(c.shape) == (1, b, hs):
                    # nn.LSTM's (num_layers, B, H) state, the one it returns: name the fix
                    # (stop 60; the refusal named the shape only)
                    fix = (
                        "; that is nn.LSTM's (num_layers=1, B, H) layout: pass "
                        "state=(h0[0], c0[0]) (this layer returns (B, H) states)"
                    )
                raise ValueError(
                    f"TiedGateLSTM: expected state (h0, c0) of shape ({b}, {hs}) each, "
                    f"got {tuple(h.shape)} and {tuple(c.shape)}{fix}"
                )
            w_dtype = self.weight_hh.dtype
            if not torch.is_autocast_enabled(x.device.type):  # autocast casts as nn.LSTM's
                for name, v in (("h0", h), ("c0", c)):
                    if v.dtype != w_dtype:
                        # nn.LSTM refuses it; here a c0 of another dtype was promoted with no
                        # error (float64 c0, one step: a float64 output from a float32
                        # layer; bfloat16 c0 read as float32) or passed through an empty
                        # sequence (stop 56)
                        detail = dtype_detail(v.dtype, w_dtype, name)
                        raise InputDtypeError(f"TiedGateLSTM: {detail}", self, detail)
        if t == 0:  # no step: the state passes through (torch.stack refused an empty list)
            out = x.new_zeros((b, 0, hs) if self.batch_first else (0, b, hs))
            # as copies: the caller's own h0/c0 came back, so an in-place edit of h_T
            # (h_T.zero_() before the next chunk) rewrote h0 too (stop 49)
            return out, (h.clone(), c.clone())
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
            # stacked in the caller's layout: a contiguous (T, B, H) time-first, as
            # nn.LSTM's, from the one copy the stack takes (a transposed (B, T, H) view
            # failed out.view(-1, H), stop 60)
            out = torch.stack(outs, dim=1 if self.batch_first else 0)
        except CAUGHT as e:
            raise_if_mismatched(
                self, e, x, *(() if state is None else state), names=("x", "h0", "c0")
            )
            raise
        return out, (h, c)

    def _unbatched(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One sequence ``(T, input_size)``, as ``nn.LSTM`` takes it: state ``(H,)`` each.

        It was refused as "expected input of shape (batch, seq, ...)" (stop 59b), where
        ``nn.LSTM`` reads a 2-D input as one unbatched sequence whatever ``batch_first``.
        """
        hs = self.hidden_size
        if state is not None:
            if not (
                isinstance(state, tuple | list)
                and len(state) == 2
                and all(isinstance(v, torch.Tensor) and tuple(v.shape) == (hs,) for v in state)
            ):
                got = (
                    ", ".join(
                        str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__
                        for v in state
                    )
                    if isinstance(state, tuple | list)
                    else f"{type(state).__name__}"
                    + (f" of shape {tuple(state.shape)}" if isinstance(state, torch.Tensor) else "")
                )
                raise ValueError(
                    f"TiedGateLSTM: for one unbatched sequence ({x.shape[0]}, {self.input_size}) "
                    f"the state must be a pair (h0, c0) of tensors of shape ({hs},) each (nn.LSTM's "
                    f"(1, {hs}) without its layer dim), got {got}; pass state=(h0[0], c0[0]) for "
                    f"nn.LSTM-shaped states"
                )
            state = (state[0].unsqueeze(0), state[1].unsqueeze(0))  # (1, H) each
        dim = 0 if self.batch_first else 1  # where the forward reads the batch
        out, (h, c) = self.forward(x.unsqueeze(dim), state)
        return out.squeeze(dim), (h.squeeze(0), c.squeeze(0))

    def to_lstm(self) -> nn.LSTM:
        """An :class:`torch.nn.LSTM` with the same outputs: the tie written out.

        Its ``weight_ih_l0`` stacks the four gates' input weights (the tied three as
        copies of one matrix), ``bias_ih_l0`` is ``bias`` and ``bias_hh_l0`` zeros; it
        is an independent copy (training it does not keep ``W_f = W_i = W_o``). Its
        state is ``(1, B, H)`` per tensor where this layer's is ``(B, H)``.

        Returns:
            ``nn.LSTM(input_size, hidden_size, batch_first=...)`` on this layer's
            device and dtype.

        Example:
            >>> import torch
            >>> tied = TiedGateLSTM(3, 4)
            >>> x = torch.randn(2, 5, 3)
            >>> torch.allclose(tied.to_lstm()(x)[0], tied(x)[0], atol=1e-6)
            True
        """
        w = self.weight_hh
        lstm = nn.LSTM(
            self.input_size,
            self.hidden_size,
            batch_first=self.batch_first,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(torch.cat([getattr(self, f"weight_ih_{g}") for g in _GATES]))
            lstm.weight_hh_l0.copy_(w)
            lstm.bias_ih_l0.copy_(self.bias)
            lstm.bias_hh_l0.zero_()
        return lstm

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, *, tie_gates: bool = True) -> TiedGateLSTM:
        """A :class:`TiedGateLSTM` with the outputs of a one-layer :class:`torch.nn.LSTM`.

        Args:
            lstm: an ``nn.LSTM`` with ``num_layers=1``, one direction and ``proj_size=0``.
            tie_gates: tie ``W_f = W_i = W_o`` (default). The tie is a fact about the
                weights, not a projection: it is refused unless the three gates' input
                weights of ``lstm`` are equal (an LSTM made by :meth:`to_lstm` of a tied
                layer, untrained since).

        Returns:
            A new layer on ``lstm``'s device and dtype; ``bias`` is ``bias_ih + bias_hh``
            (zeros for ``bias=False``).

        Raises:
            TypeError: for anything but an ``nn.LSTM``.
            ValueError: for a stacked, bidirectional or projected LSTM, or unequal gate
                weights under ``tie_gates=True``; ``lstm`` is unchanged.

        Example:
            >>> import torch
            >>> ref = torch.nn.LSTM(3, 4, batch_first=True)
            >>> x = torch.randn(2, 5, 3)
            >>> ours = TiedGateLSTM.from_lstm(ref, tie_gates=False)
            >>> torch.allclose(ours(x)[0], ref(x)[0], atol=1e-6)
            True
        """
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(
                f"TiedGateLSTM.from_lstm: expected a torch.nn.LSTM, got {type(lstm).__name__}"
            )
        tie_gates = flag("TiedGateLSTM.from_lstm", "tie_gates", tie_gates)
        if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
            raise ValueError(
                f"TiedGateLSTM.from_lstm: TiedGateLSTM is one layer, one direction, no "
                f"projection; got num_layers={lstm.num_layers}, bidirectional="
                f"{lstm.bidirectional}, proj_size={lstm.proj_size}; convert each layer of a "
                f"one-directional stack by itself"
            )
        w_ih = lstm.weight_ih_l0.detach()
        hs = lstm.hidden_size
        gates = dict(zip(_GATES, w_ih.split(hs), strict=True))  # (H, in) each
        if tie_gates:
            off = max(float((gates[g] - gates["f"]).abs().max()) for g in ("i", "o"))
            if off != 0.0:
                raise ValueError(
                    f"TiedGateLSTM.from_lstm: tie_gates=True needs the input weights of the "
                    f"input, forget and output gates equal (rows 0:{hs}, {hs}:{2 * hs} and "
                    f"{3 * hs}:{4 * hs} of weight_ih_l0), got them {off:.3g} apart; pass "
                    f"tie_gates=False for an untied copy (or tie them in lstm first)"
                )
        w = lstm.weight_hh_l0
        layer = cls(lstm.input_size, hs, tie_gates=tie_gates, batch_first=lstm.batch_first)
        layer.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for g in _GATES:
                if g in ("i", "o") and tie_gates:
                    continue  # read from weight_ih_f through the tie
                getattr(layer, f"weight_ih_{g}").copy_(gates[g])
            layer.weight_hh.copy_(w)
            if lstm.bias:
                layer.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
            else:
                layer.bias.zero_()
        return layer

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, "
            f"tie_gates={tie_setting(self, self.tie_gates)}, "
            f"batch_first={self.batch_first}"
        )
